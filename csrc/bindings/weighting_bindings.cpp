// Bindings of the task-weighting strategies (weighting.hpp): the configuration the train state's
// loop runs, and the strategies' single updates on caller-owned arrays (what the tests compare
// with metacore.reference.weighting).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "arrays.hpp"
#include "metacore/weighting.hpp"

namespace metacore::bindings {

namespace {

WeightingConfig make_weighting(const std::string& kind, double temperature, std::int64_t window,
                               bool classification, double lr, double asymmetry, double c,
                               const std::string& norm, double beta, double gamma, bool dtp,
                               std::int64_t max_iter) {
    WeightingConfig w;
    w.kind = parse_choice<WeightingKind>(
        "weighting kind", kind,
        {{"fixed", WeightingKind::fixed}, {"eval_driven", WeightingKind::eval_driven},
         {"dwa", WeightingKind::dwa}, {"uncertainty", WeightingKind::uncertainty},
         {"rlw", WeightingKind::rlw}, {"famo", WeightingKind::famo},
         {"gradnorm", WeightingKind::gradnorm}, {"mgda", WeightingKind::mgda},
         {"pcgrad", WeightingKind::pcgrad}, {"cagrad", WeightingKind::cagrad},
         {"imtlg", WeightingKind::imtlg}, {"nashmtl", WeightingKind::nashmtl},
         {"aligned_mtl", WeightingKind::aligned_mtl}, {"gradvac", WeightingKind::gradvac}});
    w.norm = parse_choice<MgdaNorm>("normalization", norm,
                                    {{"none", MgdaNorm::none}, {"l2", MgdaNorm::l2},
                                     {"loss", MgdaNorm::loss}, {"loss+l2", MgdaNorm::loss_l2}});
    if (!(temperature > 0.0)) throw py::value_error("temperature must be > 0");
    if (window < 1) throw py::value_error("window must be >= 1");
    if (!(lr > 0.0)) throw py::value_error("lr must be > 0");
    if (!(asymmetry >= 0.0)) throw py::value_error("alpha (asymmetry) must be >= 0");
    if (!(c >= 0.0)) throw py::value_error("c must be >= 0");
    if (!(beta > 0.0 && beta <= 1.0)) throw py::value_error("beta must be in (0, 1]");
    if (!(gamma >= 0.0)) throw py::value_error("gamma must be >= 0");
    if (max_iter < 1) throw py::value_error("max_iter must be >= 1");
    w.temperature = temperature;
    w.window = window;
    w.classification = classification;
    w.lr = lr;
    w.asymmetry = asymmetry;
    w.c = c;
    w.beta = beta;
    w.gamma = gamma;
    w.dtp = dtp;
    w.max_iter = max_iter;
    return w;
}

double* state_arg(const WeightingConfig& c, const py::handle& state, std::int64_t n) {
    auto s = checked<double>(state, "state", {static_cast<py::ssize_t>(c.state_size(n))});
    if (!s.writeable()) throw py::value_error("state must be writeable (it is updated in place)");
    return s.mutable_data();
}

template <class T>
py::tuple combine_typed(const WeightingConfig& c, const py::array& G_obj, const py::handle& L_obj,
                        const py::handle& state_obj, std::uint64_t seed, std::int64_t step,
                        std::int64_t n_shared, std::optional<int> n_threads) {
    if (!c.uses_grads()) throw py::value_error("not a gradient-based weighting");
    auto G = checked<T>(G_obj, "grads", {-1, -1});
    const std::int64_t n = G.shape(0), P = G.shape(1);
    if (n < 1) throw py::value_error("grads needs at least one task");
    auto L = checked<T>(L_obj, "losses", {n});
    if (n_shared < 0) n_shared = P;
    if (n_shared > P) throw py::value_error("n_shared must be <= the number of parameters");
    double* s = state_arg(c, state_obj, n);
    const int threads = threads_arg(n_threads);
    py::array_t<double> beta(n);
    py::array_t<T> grad(P);
    double* b = beta.mutable_data();
    T* g = grad.mutable_data();
    {
        py::gil_scoped_release release;
        std::vector<double> r = combine(c, G.data(), n, P, n_shared, L.data(), s, seed, step, threads);
        std::copy(r.begin(), r.end(), b);
        combine_grads(G.data(), n, P, n_shared, r, c.weights_heads(), g, threads);
    }
    return py::make_tuple(beta, grad);
}

}  // namespace

void register_weighting(py::module_& m) {
    py::class_<WeightingConfig>(m, "WeightingConfig")
        .def(py::init(&make_weighting), py::kw_only(), py::arg("kind"),
             py::arg("temperature") = 2.0, py::arg("window") = 1, py::arg("classification") = false,
             py::arg("lr") = 0.01, py::arg("asymmetry") = 1.5, py::arg("c") = 0.5,
             py::arg("normalization") = "none", py::arg("beta") = 0.01, py::arg("gamma") = 2.0,
             py::arg("dtp") = false, py::arg("max_iter") = 250)
        .def("state_size", &WeightingConfig::state_size, py::arg("n_tasks"))
        .def_property_readonly("uses_grads", &WeightingConfig::uses_grads);

    m.def(
        "weighting_before",
        [](const WeightingConfig& c, const py::handle& state, std::uint64_t seed, std::int64_t step,
           const py::handle& losses) {
            auto L = checked<double>(losses, "losses", {-1});
            const std::int64_t n = L.shape(0);
            double* s = state_arg(c, state, n);
            py::array_t<double> alpha(n);
            std::fill(alpha.mutable_data(), alpha.mutable_data() + n, 1.0 / n);
            before_step(c, s, n, seed, step, L.data(), alpha.mutable_data());
            return alpha;
        },
        py::arg("config"), py::arg("state"), py::arg("seed"), py::arg("step"), py::arg("losses"));
    m.def(
        "weighting_after",
        [](const WeightingConfig& c, const py::handle& state, std::int64_t step,
           const py::handle& losses) {
            auto L = checked<double>(losses, "losses", {-1});
            after_step(c, state_arg(c, state, L.shape(0)), L.shape(0), step, L.data());
        },
        py::arg("config"), py::arg("state"), py::arg("step"), py::arg("losses"));
    m.def(
        "weighting_evaluate",
        [](const WeightingConfig& c, const py::handle& state, const py::handle& losses,
           const py::handle& scores) {
            auto L = checked<double>(losses, "losses", {-1});
            const std::int64_t n = L.shape(0);
            auto S = checked<double>(scores, "scores", {n});
            py::array_t<double> alpha(n);
            evaluate(c, state_arg(c, state, n), n, L.data(), S.data(), alpha.mutable_data());
            return alpha;
        },
        py::arg("config"), py::arg("state"), py::arg("losses"), py::arg("scores"));
    m.def(
        "weighting_combine",
        [](const WeightingConfig& c, const py::array& G, const py::handle& losses,
           const py::handle& state, std::uint64_t seed, std::int64_t step, std::int64_t n_shared,
           std::optional<int> n_threads) {
            if (is_float32(G, "grads"))
                return combine_typed<float>(c, G, losses, state, seed, step, n_shared, n_threads);
            return combine_typed<double>(c, G, losses, state, seed, step, n_shared, n_threads);
        },
        py::arg("config"), py::arg("grads"), py::arg("losses"), py::arg("state"), py::arg("seed"),
        py::arg("step"), py::arg("n_shared") = -1, py::arg("n_threads") = py::none());
}

}  // namespace metacore::bindings
