// The weighted multi-task objective f(θ) = Σ_i α_i f_i(θ) + (λ/2)‖θ‖², f_i the mean row loss
// over task i's chosen rows: value, gradient, per-task losses and gradients, Hessian-vector
// products. Parallel over the plan's reduction blocks, summed in block order (reduction.hpp).
#pragma once

#include <algorithm>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <vector>

#include "metacore/losses.hpp"
#include "metacore/net.hpp"
#include "metacore/net_pass.hpp"
#include "metacore/reduction.hpp"
#include "metacore/sizes.hpp"
#include "metacore/tasks.hpp"
#include "metacore/threading.hpp"
#include "metacore/unit_kernels.hpp"

namespace metacore {

template <class T>
class Objective {
   public:
    Objective(NetSpec net, TaskData<T> data, Rows rows)
        : net_(std::move(net)), data_(data), rows_(rows) {
        if (data_.X.cols != net_.n_features())
            throw std::invalid_argument("X has " + std::to_string(data_.X.cols) +
                                        " features but the model expects " +
                                        std::to_string(net_.n_features()));
        if (data_.y.cols != (net_.loss() == Loss::mse ? net_.n_outputs() : 1))
            throw std::invalid_argument("y has " + std::to_string(data_.y.cols) +
                                        " columns, which does not fit the model's loss head");
        if (net_.n_heads() > 1) {
            if (!data_.heads) throw std::invalid_argument("task_ids are needed for task heads");
            for (std::int64_t i = 0; i < data_.n_tasks; ++i)
                if (data_.heads[i] < 0 || data_.heads[i] >= net_.n_heads())
                    throw std::invalid_argument(
                        "task_ids: task " + std::to_string(i) + " has id " +
                        std::to_string(data_.heads[i]) + ", outside the model's " +
                        std::to_string(net_.n_heads()) + " task heads");
        }
        if (net_.loss() == Loss::cross_entropy)
            check_class_labels(data_.y.data, data_.y.rows, data_.y.cols, net_.n_outputs());
        plan_ = plan_work(data_, rows_, net_.n_params());
        if (net_.rows_coupled()) plan_ = whole_tasks(plan_);
    }

    const NetSpec& net() const { return net_; }
    const WorkPlan& plan() const { return plan_; }
    const TaskData<T>& data() const { return data_; }
    Rows rows() const { return rows_; }
    std::int64_t n_params() const { return net_.n_params(); }
    std::int64_t n_tasks() const { return data_.n_tasks; }

    // Returns f(θ); writes ∇f when grad is not null and the unweighted f_i when losses is not null.
    double value_and_grad(const T* theta, const T* weights, T l2, T* grad, T* losses,
                          int n_threads) const {
        return value_and_grad(plan_, theta, weights, l2, grad, losses, n_threads);
    }

    // The same over another plan of the same data (a sampled batch of tasks and rows): f sums
    // α_i f_i over the plan's tasks only, f_i the mean loss over the plan's rows of task i.
    // losses (T entries) is NaN for tasks the plan leaves out.
    double value_and_grad(const WorkPlan& plan, const T* theta, const T* weights, T l2, T* grad,
                          T* losses, int n_threads) const {
        const std::int64_t P = n_params(), nb = plan.n_blocks();
        std::vector<T> parts(grad ? nb * P : 0, T(0));
        const std::vector<double> task_loss =
            block_partials(plan, theta, weights, grad ? parts.data() : nullptr, n_threads);
        return combine(parts.data(), nb, P, task_loss.data(), plan.task_rows.data(), weights,
                       n_tasks(), theta, l2, grad, losses, team_size(plan, n_threads));
    }

    // The parallel half of value_and_grad: adds α_i ∇f_i's share of every unit into its block's
    // row of parts (n_blocks × P, zeroed by the caller; null for no gradient) and returns the
    // unweighted mean loss per task (NaN for tasks the plan leaves out). A distributed run calls
    // it on each machine's consecutive blocks and combines them all as one machine would.
    std::vector<double> block_partials(const WorkPlan& plan, const T* theta, const T* weights,
                                       T* parts, int n_threads) const {
        return task_means(plan,
                          unit_partials(plan, 0, plan.n_blocks(), theta, weights, parts, n_threads));
    }

    // Blocks [b0, b1) of the plan only (a worker's share of a drawn batch, distributed_step.hpp):
    // parts ((b1 − b0) × P, zeroed by the caller; null for no gradient) and the summed row loss
    // of each unit of those blocks, in unit order.
    std::vector<double> unit_partials(const WorkPlan& plan, std::int64_t b0, std::int64_t b1,
                                      const T* theta, const T* weights, T* parts,
                                      int n_threads) const {
        check_whole_tasks(plan);
        const std::int64_t P = n_params(), u0 = plan.block_start[b0];
        const int threads = team_size(plan, n_threads);
        std::vector<double> unit_loss(plan.block_start[b1] - u0);
        std::vector<NetPass<T>> passes;
        std::vector<RowGather<T>> gathers;
        NetPass<T>::make(passes, net_, false, threads);
        for (int t = 0; t < threads; ++t) gathers.emplace_back(data_.X.cols, data_.y.cols);
        for (auto& pass : passes) pass.prepare(theta);  // θ is fixed for this call
        accumulate_blocks(b1 - b0, P, parts, threads, [&](std::int64_t k, int tid, T* g) {
            const std::int64_t b = b0 + k;
            for (std::int64_t u = plan.block_start[b]; u < plan.block_start[b + 1]; ++u) {
                check_interrupt();
                const WorkUnit& w = plan.units[u];
                const T scale = weights[w.task] / static_cast<T>(plan.task_rows[w.task]);
                const WorkUnit* next = u + 1 < plan.block_start[b + 1] ? &w + 1 : nullptr;
                unit_loss[u - u0] =
                    w.rows ? unit_value_grad_gathered(passes[tid], theta, data_, w, next,
                                                      head(w.task), scale, g, gathers[tid])
                           : unit_value_grad(passes[tid], theta, data_, w, head(w.task), scale, g);
            }
        });
        return unit_loss;
    }

    // Mean row loss per task from every unit's summed loss (added in unit order); NaN for tasks
    // with no rows in the plan.
    static std::vector<double> task_means(const WorkPlan& plan,
                                          const std::vector<double>& unit_loss) {
        const auto n = static_cast<std::int64_t>(plan.task_rows.size());
        std::vector<double> task_loss(n, 0.0);
        for (std::size_t u = 0; u < unit_loss.size(); ++u)
            task_loss[plan.units[u].task] += unit_loss[u];
        for (std::int64_t i = 0; i < n; ++i)
            task_loss[i] = plan.task_rows[i] > 0
                               ? task_loss[i] / static_cast<double>(plan.task_rows[i])
                               : std::numeric_limits<double>::quiet_NaN();
        return task_loss;
    }

    // The serial half: f = Σ_i α_i f_i (tasks with rows, in task order) + (λ/2)‖θ‖² and, when
    // grad is not null, ∇f = Σ_b parts[b] (in block order) + λθ; losses (optional) = f_i.
    static double combine(const T* parts, std::int64_t nb, std::int64_t P,
                          const double* task_loss, const std::int64_t* task_rows,
                          const T* weights, std::int64_t n_tasks, const T* theta, T l2, T* grad,
                          T* losses, int threads) {
        double value = 0.0;
        for (std::int64_t i = 0; i < n_tasks; ++i) {
            if (task_rows[i] > 0) value += static_cast<double>(weights[i]) * task_loss[i];
            if (losses) losses[i] = static_cast<T>(task_loss[i]);
        }
        // no penalty at λ = 0: 0 × ‖θ‖² is NaN once ‖θ‖² overflows (|θ_k| ≳ 1.3e154 in float64)
        if (l2 != T(0)) value += 0.5 * static_cast<double>(l2) * squared_norm(theta, P);
        if (grad) {
            sum_partials(parts, nb, P, grad, threads);
            add_scaled(l2, theta, grad, P);
        }
        return value;
    }

    // out (T × P) row i = ∇f_i (no weight, no L2); losses (optional) = f_i.
    void task_grads(const T* theta, T* out, T* losses, int n_threads) const {
        check_whole_tasks(plan_);
        const std::int64_t P = n_params(), T_ = n_tasks();
        const std::int64_t n_units = static_cast<std::int64_t>(plan_.units.size());
        const int threads = team_size(plan_, n_threads);
        std::vector<NetPass<T>> passes;
        NetPass<T>::make(passes, net_, false, threads);
        for (auto& pass : passes) pass.prepare(theta);  // θ is fixed for this call
        std::vector<double> unit_loss(n_units);
        // One unit per task writes straight into its row; split tasks go through per-unit rows.
        const bool split = n_units > T_;
        const std::int64_t n_scratch = split ? checked_mul(n_units, P, "task_grads") : 0;
        require_elements("task_grads", n_scratch, sizeof(T), "for its per-unit gradients");
        std::vector<T> scratch(n_scratch, T(0));
        std::fill(out, out + T_ * P, T(0));
        parallel_for(n_units, threads, [&](std::int64_t u, int tid) {
            const WorkUnit& w = plan_.units[u];
            const T scale = T(1) / static_cast<T>(plan_.task_rows[w.task]);
            T* g = split ? scratch.data() + u * P : out + w.task * P;
            unit_loss[u] = unit_value_grad(passes[tid], theta, data_, w, head(w.task), scale, g);
        });
        if (split) {
            // Task i's units are consecutive: its row is their sum, in unit order.
            std::vector<std::int64_t> first(T_ + 1, n_units);
            for (std::int64_t u = n_units - 1; u >= 0; --u) first[plan_.units[u].task] = u;
            parallel_for(T_, team_for(n_units * P, threads, T_), [&](std::int64_t i, int) {
                const std::int64_t n = std::max<std::int64_t>(0, first[i + 1] - first[i]);
                sum_blocks(scratch.data() + first[i] * P, n, P, 0, P, out + i * P);
            });
        }
        if (losses) {
            std::vector<double> task_loss = task_means(plan_, unit_loss);
            for (std::int64_t i = 0; i < T_; ++i) losses[i] = static_cast<T>(task_loss[i]);
        }
    }

    // out = Σ_i α_i ∇²f_i(θ) v + λ v.
    void hvp(const T* theta, const T* v, const T* weights, T l2, T* out, int n_threads) const {
        check_whole_tasks(plan_);
        const std::int64_t P = n_params(), nb = plan_.n_blocks();
        const int threads = team_size(plan_, n_threads);
        std::vector<NetPass<T>> passes;
        NetPass<T>::make(passes, net_, true, threads);
        for (auto& pass : passes) pass.prepare(theta, v);  // θ and v are fixed for this call
        std::vector<T> parts;
        ordered_reduce(nb, P, threads, parts, out, [&](std::int64_t b, int tid, T* row) {
            for (std::int64_t u = plan_.block_start[b]; u < plan_.block_start[b + 1]; ++u) {
                check_interrupt();
                const WorkUnit& w = plan_.units[u];
                const T scale = weights[w.task] / static_cast<T>(plan_.task_rows[w.task]);
                unit_hvp(passes[tid], theta, v, data_, w, head(w.task), scale, row);
            }
        });
        add_scaled(l2, v, out, P);
    }

   private:
    // Batch statistics make a task's chosen rows one forward pass: its consecutive units merged
    // into one (the activations of all its rows are then held at once).
    WorkPlan whole_tasks(const WorkPlan& plan) const {
        WorkPlan out;
        out.task_rows = plan.task_rows;
        out.total_rows = plan.total_rows;
        for (const WorkUnit& w : plan.units) {
            WorkUnit* last = out.units.empty() ? nullptr : &out.units.back();
            if (last && last->task == w.task && last->end == w.begin && last->rows == w.rows)
                last->end = w.end;
            else
                out.units.push_back(w);
        }
        assign_blocks(out, n_params(), static_cast<std::int64_t>(sizeof(T)));
        return out;
    }

    // ... and refuse a sampled plan that splits a task (more than kUnitRows rows drawn).
    void check_whole_tasks(const WorkPlan& plan) const {
        if (!net_.rows_coupled()) return;
        for (const WorkUnit& w : plan.units)
            if (w.end - w.begin != plan.task_rows[w.task])
                throw std::invalid_argument(
                    "norm='batch' takes the rows drawn from a task as one forward pass of at "
                    "most " + std::to_string(kUnitRows) + " rows; task " + std::to_string(w.task) +
                    " has " + std::to_string(plan.task_rows[w.task]) +
                    " in this batch (pass batch_rows <= " + std::to_string(kUnitRows) + ")");
    }

    std::int64_t head(std::int64_t task) const {
        return net_.n_heads() > 1 ? data_.heads[task] : 0;
    }

    // Work ≈ rows × parameters multiply-adds; one thread per block (per unit for task_grads).
    int team_size(const WorkPlan& plan, int requested) const {
        const std::int64_t items = plan.n_blocks() > 1
                                       ? plan.n_blocks()
                                       : static_cast<std::int64_t>(plan.units.size());
        return team_for(saturating_mul(plan.total_rows, n_params()), requested, items);
    }

    static double squared_norm(const T* x, std::int64_t n) {
        double s = 0.0;
        for (std::int64_t j = 0; j < n; ++j) s += static_cast<double>(x[j]) * x[j];
        return s;
    }

    static void add_scaled(T alpha, const T* x, T* y, std::int64_t n) {
        if (alpha != T(0)) axpy(alpha, x, y, n);
    }

    NetSpec net_;
    TaskData<T> data_;
    Rows rows_;
    WorkPlan plan_;
};

}  // namespace metacore
