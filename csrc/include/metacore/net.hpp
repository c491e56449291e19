// The one net kind: dense layers over a flat θ, an activation between layers, a loss head, and
// optionally a normalisation of every hidden layer (Linear → Norm → activation; never on the
// output layer). θ layout: per layer W (fan_out × fan_in, row-major) then b (fan_out), and for a
// normalised hidden layer then γ (fan_out) and β (fan_out); with per-task heads the hidden (trunk)
// layers come first, then one output layer per head; with bias-only heads (Head::bias) the trunk, one
// shared output W, then one output bias b per head.
#pragma once

#include <cstdint>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include "metacore/sizes.hpp"

namespace metacore {

enum class Activation { relu, tanh };
enum class Loss { mse, logistic, cross_entropy };
// batch: statistics over the rows of one forward pass (per unit); layer: over the units of a row.
enum class Norm { none, batch, layer };
// What each task's head owns: a whole output layer (W, b) or only the output bias b (W shared).
enum class Head { full, bias };
constexpr double kNormEps = 1e-5;  // added to the variance (PyTorch's default)

class NetSpec {
   public:
    NetSpec(std::vector<std::int64_t> sizes, Activation activation, Loss loss,
            std::int64_t n_heads, Norm norm = Norm::none, Head head = Head::full)
        : sizes_(std::move(sizes)), activation_(activation), loss_(loss), n_heads_(n_heads),
          norm_(norm), head_(head) {
        if (sizes_.size() < 2) throw std::invalid_argument("layer_sizes needs at least 2 entries");
        for (auto s : sizes_)
            if (s < 1) throw std::invalid_argument("layer_sizes entries must be >= 1");
        if (n_heads_ < 1) throw std::invalid_argument("task_heads must be >= 1");
        if (loss_ == Loss::logistic && n_outputs() != 1)
            throw std::invalid_argument("loss 'logistic' needs exactly one output");
        if (loss_ == Loss::cross_entropy && n_outputs() < 2)
            throw std::invalid_argument("loss 'cross_entropy' needs at least two outputs");
        // Every size below is checked: a product past int64 would be undefined behaviour.
        std::int64_t off = 0;
        for (int l = 0; l + 1 < n_layers(); ++l) {
            layer_offset_.push_back(off);
            off = checked_add(off, layer_params(l), "layer_sizes");
        }
        // Bias-only heads: the output W joins the shared part and a head is its fan_out biases.
        const std::int64_t out_w = checked_mul(n_outputs(), fan_in(n_layers() - 1), "layer_sizes");
        trunk_params_ = head_ == Head::bias ? checked_add(off, out_w, "layer_sizes") : off;
        head_params_ = head_ == Head::bias ? n_outputs() : layer_params(n_layers() - 1);
        checked_add(trunk_params_, checked_mul(head_params_, n_heads_, "layer_sizes"), "layer_sizes");
        max_width_ = 0;
        for (auto s : sizes_) max_width_ = s > max_width_ ? s : max_width_;
    }

    int n_layers() const { return static_cast<int>(sizes_.size()) - 1; }
    std::int64_t fan_in(int l) const { return sizes_[l]; }
    std::int64_t fan_out(int l) const { return sizes_[l + 1]; }
    std::int64_t n_features() const { return sizes_.front(); }
    std::int64_t n_outputs() const { return sizes_.back(); }
    std::int64_t n_heads() const { return n_heads_; }
    std::int64_t n_params() const { return trunk_params_ + head_params_ * n_heads_; }
    std::int64_t max_width() const { return max_width_; }
    std::int64_t hidden_width_sum() const {
        std::int64_t s = 0;
        for (int l = 1; l < n_layers(); ++l) s += sizes_[l];
        return s;
    }
    Activation activation() const { return activation_; }
    Loss loss() const { return loss_; }
    Norm norm() const { return norm_; }
    Head head() const { return head_; }
    // Whether layer l's outputs are normalised (hidden layers only) and a row's outputs depend on
    // the other rows of its forward pass (batch statistics).
    bool normalised(int l) const { return norm_ != Norm::none && l + 1 < n_layers(); }
    bool rows_coupled() const { return norm_ == Norm::batch && n_layers() > 1; }
    const std::vector<std::int64_t>& sizes() const { return sizes_; }

    // Offset of layer l's W in θ for a task using output head `head`; b follows W.
    std::int64_t weight_offset(int l, std::int64_t head) const {
        if (l + 1 < n_layers()) return layer_offset_[l];
        if (head_ == Head::bias) return trunk_params_ - fan_out(l) * fan_in(l);
        return trunk_params_ + head_params_ * head;
    }
    std::int64_t bias_offset(int l, std::int64_t head) const {
        if (l + 1 == n_layers() && head_ == Head::bias) return trunk_params_ + head_params_ * head;
        return weight_offset(l, head) + fan_out(l) * fan_in(l);
    }
    // γ and β of a normalised hidden layer l (fan_out each) follow its b.
    std::int64_t gamma_offset(int l) const { return bias_offset(l, 0) + fan_out(l); }
    std::int64_t beta_offset(int l) const { return gamma_offset(l) + fan_out(l); }

   private:
    std::int64_t layer_params(int l) const {
        const std::int64_t wb =
            checked_add(checked_mul(fan_out(l), fan_in(l), "layer_sizes"), fan_out(l), "layer_sizes");
        return normalised(l) ? checked_add(wb, checked_mul(2, fan_out(l), "layer_sizes"), "layer_sizes")
                             : wb;
    }

    std::vector<std::int64_t> sizes_;
    Activation activation_;
    Loss loss_;
    std::int64_t n_heads_;
    Norm norm_;
    Head head_;
    std::vector<std::int64_t> layer_offset_;
    std::int64_t trunk_params_ = 0;
    std::int64_t head_params_ = 0;
    std::int64_t max_width_ = 0;
};

// Whether two specs describe the same net (sizes, activation, loss head, heads, normalisation).
inline bool same_net(const NetSpec& a, const NetSpec& b) {
    return a.sizes() == b.sizes() && a.activation() == b.activation() && a.loss() == b.loss() &&
           a.n_heads() == b.n_heads() && a.norm() == b.norm() && a.head() == b.head();
}

}  // namespace metacore
