// Bindings of the net: its spec as a Python object, and prediction.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <optional>
#include <string>

#include "arrays.hpp"
#include "signals.hpp"
#include "metacore/net.hpp"
#include "metacore/predict.hpp"

namespace metacore::bindings {

namespace {

Activation parse_activation(const std::string& s) {
    return parse_choice<Activation>("activation", s,
                                    {{"relu", Activation::relu}, {"tanh", Activation::tanh}});
}

Loss parse_loss(const std::string& s) {
    return parse_choice<Loss>("loss", s,
                              {{"mse", Loss::mse}, {"logistic", Loss::logistic},
                               {"cross_entropy", Loss::cross_entropy}});
}

Norm parse_norm(const std::optional<std::string>& s) {
    if (!s) return Norm::none;
    return parse_choice<Norm>("norm", *s, {{"batch", Norm::batch}, {"layer", Norm::layer}});
}

Head parse_head(const std::string& s) {
    return parse_choice<Head>("head", s, {{"full", Head::full}, {"bias", Head::bias}});
}

template <class T>
py::array_t<T> predict_typed(const NetSpec& net, const py::array& theta_obj,
                             const py::array& X_obj, std::int64_t head,
                             std::optional<int> n_threads) {
    auto theta = checked<T>(theta_obj, "theta", {net.n_params()});
    auto X = checked<T>(X_obj, "X", {-1, net.n_features()});
    if (head < 0 || head >= net.n_heads())
        throw py::value_error("task must be in [0, " + std::to_string(net.n_heads()) + "), got " +
                              std::to_string(head));
    const int threads = threads_arg(n_threads);
    auto out = output<T>("predict", {static_cast<py::ssize_t>(X.shape(0)),
                                     static_cast<py::ssize_t>(net.n_outputs())});
    T* o = out.mutable_data();
    without_gil([&] {
        predict<T>(net, theta.data(), {X.data(), X.shape(0), X.shape(1)}, head, o, threads);
    });
    return out;
}

}  // namespace

void register_net(py::module_& m) {
    py::class_<NetSpec>(m, "Net")
        .def(py::init([](std::vector<std::int64_t> sizes, const std::string& activation,
                         const std::string& loss, std::int64_t n_heads,
                         const std::optional<std::string>& norm, const std::string& head) {
                 return NetSpec(std::move(sizes), parse_activation(activation), parse_loss(loss),
                                n_heads, parse_norm(norm), parse_head(head));
             }),
             py::arg("layer_sizes"), py::arg("activation"), py::arg("loss"), py::arg("n_heads"),
             py::arg("norm") = py::none(), py::arg("head") = "full")
        .def_property_readonly("n_params", &NetSpec::n_params)
        .def_property_readonly("layer_sizes", &NetSpec::sizes)
        .def(
            "predict",
            [](const NetSpec& net, const py::array& theta, const py::array& X, std::int64_t head,
               std::optional<int> n_threads) -> py::array {
                if (is_float32(theta, "theta"))
                    return predict_typed<float>(net, theta, X, head, n_threads);
                return predict_typed<double>(net, theta, X, head, n_threads);
            },
            py::arg("theta"), py::arg("X"), py::arg("head") = 0,
            py::arg("n_threads") = py::none());
}

}  // namespace metacore::bindings
