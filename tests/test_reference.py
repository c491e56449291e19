"""metacore.reference against independent checks: central finite differences, the Hessian's
symmetry, closed forms and hand-computed values. Everything here runs in float64."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest

from metacore import reference as ref
from metacore.models import MLP
from numerics import central_diff, random_targets

FD_STEP = 1e-6      # central differences of the loss: truncation O(h²), rounding O(ε/h)
HVP_STEP = 1e-5     # central differences of the gradient
RTOL = 1e-6


# --- a stand-in TaskSet: only the duck-typed attributes the reference reads --------------------
@dataclass
class Tasks:
    X: np.ndarray
    y: np.ndarray
    offsets: np.ndarray
    n_support: np.ndarray
    task_ids: np.ndarray

    @property
    def n_tasks(self):
        return len(self.offsets) - 1


def make_tasks(model, sizes, n_support, task_ids=None, seed=0):
    rng = np.random.default_rng(seed)
    sizes = np.asarray(sizes, dtype=np.int64)
    n = int(sizes.sum())
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    ids = np.arange(len(sizes)) if task_ids is None else np.asarray(task_ids)
    return Tasks(X=rng.normal(size=(n, model.n_features)), y=random_targets(rng, model, n),
                 offsets=offsets, n_support=np.asarray(n_support, dtype=np.int64),
                 task_ids=ids.astype(np.int64))


def random_theta(model, seed=0):
    """An initial θ moved off zero biases so that every parameter matters."""
    rng = np.random.default_rng(seed + 100)
    return model.init(seed=seed) + 0.3 * rng.normal(size=model.n_params)


def random_rows(model, n, seed=0):
    rng = np.random.default_rng(seed + 200)
    return rng.normal(size=(n, model.n_features)), random_targets(rng, model, n)


# --- finite differences ---------------------------------------------------------------------------
def fd_grad(f, theta, h=FD_STEP):
    return central_diff(f, theta, h)


def fd_hvp(grad, theta, v, h=HVP_STEP):
    """(∇f(θ + h v) − ∇f(θ − h v)) / 2h ≈ ∇²f(θ) v."""
    return (grad(theta + h * v) - grad(theta - h * v)) / (2 * h)


def assert_close(actual, expected, rtol=RTOL):
    """Entrywise relative error, with a floor at rtol times the vector's largest entry."""
    scale = np.max(np.abs(expected))
    assert scale > 0
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * scale)


# --- the nets under test --------------------------------------------------------------------------
NETS = {
    "linear-mse": MLP([3, 1], loss="mse"),
    "linear-mse-3-outputs": MLP([3, 3], loss="mse"),
    "logistic": MLP([4, 1], loss="logistic"),
    "softmax": MLP([4, 3], loss="cross_entropy"),
    "relu-1-mse": MLP([3, 5, 1], activation="relu", loss="mse"),
    "tanh-1-logistic": MLP([3, 5, 1], activation="tanh", loss="logistic"),
    "tanh-2-mse-2-outputs": MLP([3, 5, 4, 2], activation="tanh", loss="mse"),
    "relu-2-cross-entropy": MLP([2, 6, 5, 4], activation="relu", loss="cross_entropy"),
    "tanh-3-cross-entropy": MLP([3, 4, 4, 3, 3], activation="tanh", loss="cross_entropy"),
    "relu-3-logistic": MLP([3, 6, 5, 4, 1], activation="relu", loss="logistic"),
    "heads-linear-softmax": MLP([3, 2], loss="cross_entropy", task_heads=3),
    "heads-tanh-mse": MLP([3, 4, 2], activation="tanh", loss="mse", task_heads=3),
    "heads-relu-logistic": MLP([3, 5, 4, 1], activation="relu", loss="logistic", task_heads=2),
}
NET_IDS = list(NETS)


def last_head(model):
    return (model.task_heads or 1) - 1


# --- single-task loss: gradient and Hessian-vector product ----------------------------------------
@pytest.mark.parametrize("name", NET_IDS)
def test_loss_grad_matches_finite_differences(name):
    model = NETS[name]
    theta = random_theta(model)
    X, y = random_rows(model, 7)
    task = last_head(model)
    value, grad = ref.loss_and_grad(model, theta, X, y, task=task)
    outputs = ref.predict(model, theta, X, task=task)
    assert value == pytest.approx(np.mean(ref.row_losses(model, outputs, y)), rel=1e-14)
    assert_close(grad, fd_grad(lambda t: ref.loss_and_grad(model, t, X, y, task=task)[0], theta))


@pytest.mark.parametrize("name", NET_IDS)
def test_loss_hvp_matches_finite_differences_of_grad(name):
    model = NETS[name]
    theta = random_theta(model)
    X, y = random_rows(model, 7)
    v = np.random.default_rng(1).normal(size=model.n_params)
    task = last_head(model)
    hv = ref.loss_hvp(model, theta, X, y, v, task=task)
    assert_close(hv, fd_hvp(lambda t: ref.loss_and_grad(model, t, X, y, task=task)[1], theta, v))


@pytest.mark.parametrize("name", NET_IDS)
def test_loss_hvp_is_symmetric(name):
    # the Hessian is symmetric: u·(Hv) = v·(Hu)
    model = NETS[name]
    theta = random_theta(model)
    X, y = random_rows(model, 7)
    rng = np.random.default_rng(2)
    u, v = rng.normal(size=model.n_params), rng.normal(size=model.n_params)
    task = last_head(model)
    uhv = u @ ref.loss_hvp(model, theta, X, y, v, task=task)
    vhu = v @ ref.loss_hvp(model, theta, X, y, u, task=task)
    assert uhv == pytest.approx(vhu, rel=1e-10)


def test_linear_mse_hessian_has_closed_form():
    # one output: L = (1/n) Σ (w·x + b − y)², so ∇²L = (2/n) [X 1]ᵀ[X 1] whatever θ and y
    model = NETS["linear-mse"]
    theta = random_theta(model)
    X, y = random_rows(model, 9)
    A = np.hstack([X, np.ones((9, 1))])
    H = 2.0 / 9 * A.T @ A
    for j in range(model.n_params):
        e = np.zeros(model.n_params)
        e[j] = 1.0
        np.testing.assert_allclose(ref.loss_hvp(model, theta, X, y, e), H[:, j],
                                   rtol=1e-13, atol=1e-14)


def test_loss_hvp_is_linear_in_v():
    model = NETS["tanh-2-mse-2-outputs"]
    theta = random_theta(model)
    X, y = random_rows(model, 5)
    rng = np.random.default_rng(3)
    u, v = rng.normal(size=model.n_params), rng.normal(size=model.n_params)
    hvp = lambda w: ref.loss_hvp(model, theta, X, y, w)  # noqa: E731
    np.testing.assert_allclose(hvp(2.0 * u - 3.0 * v), 2.0 * hvp(u) - 3.0 * hvp(v),
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", ["heads-linear-softmax", "heads-tanh-mse", "heads-relu-logistic"])
def test_heads_gradient_is_zero_outside_the_layers_a_task_uses(name):
    model = NETS[name]
    theta = random_theta(model)
    X, y = random_rows(model, 6)
    v = np.ones(model.n_params)
    for task in range(model.task_heads):
        used = np.zeros(model.n_params, dtype=bool)
        for w, (o, i), b in model.layers(task):
            used[w:w + o * i] = used[b:b + o] = True
        _, grad = ref.loss_and_grad(model, theta, X, y, task=task)
        hv = ref.loss_hvp(model, theta, X, y, v, task=task)
        assert np.all(grad[~used] == 0) and np.all(hv[~used] == 0)
        assert np.any(grad[used] != 0)


def test_heads_give_different_predictions_per_task():
    model = NETS["heads-tanh-mse"]
    theta = random_theta(model)
    X, _ = random_rows(model, 4)
    head0, head1 = ref.predict(model, theta, X, task=0), ref.predict(model, theta, X, task=1)
    assert not np.allclose(head0, head1)


# --- forward and predict --------------------------------------------------------------------------
@pytest.mark.parametrize("name, shape", [("linear-mse", (5,)), ("logistic", (5,)),
                                         ("softmax", (5, 3)), ("linear-mse-3-outputs", (5, 3)),
                                         ("tanh-2-mse-2-outputs", (5, 2)),
                                         ("heads-relu-logistic", (5,))])
def test_predict_shapes(name, shape):
    model = NETS[name]
    X, _ = random_rows(model, 5)
    out = ref.predict(model, random_theta(model), X, task=last_head(model))
    assert out.shape == shape and out.dtype == np.float64


def test_forward_is_the_layer_formula_with_no_activation_after_the_output():
    model = MLP([3, 4, 2], activation="relu", loss="mse")
    theta = random_theta(model)
    X, _ = random_rows(model, 50)
    (W0, b0), (W1, b1) = model.unpack(theta)
    hidden = np.maximum(X @ W0.T + b0, 0)
    expected = hidden @ W1.T + b1
    zs, acts = ref.forward(model, theta, X)
    assert len(zs) == 2 and len(acts) == 3
    np.testing.assert_array_equal(acts[0], X)
    np.testing.assert_allclose(acts[1], hidden, rtol=1e-14)
    np.testing.assert_allclose(ref.predict(model, theta, X), expected, rtol=1e-14, atol=1e-15)
    assert (expected < 0).any()  # a relu after the output layer would have clipped these


def test_float32_inputs_give_float64_results():
    model = NETS["tanh-1-logistic"]
    theta = random_theta(model).astype(np.float32)
    X, y = random_rows(model, 6)
    X32 = X.astype(np.float32)
    value, grad = ref.loss_and_grad(model, theta, X32, y.astype(np.float32))
    value64, grad64 = ref.loss_and_grad(model, theta.astype(np.float64), X32.astype(np.float64), y)
    assert isinstance(value, float) and grad.dtype == np.float64
    assert value == value64
    np.testing.assert_array_equal(grad, grad64)
    assert ref.predict(model, theta, X32).dtype == np.float64


# --- the loss heads: stability and known values ---------------------------------------------------
def test_logistic_loss_is_stable_for_huge_logits():
    model = NETS["logistic"]
    z = np.array([1e4, 1e4, -1e4, -1e4, 0.0])
    y = np.array([1.0, 0.0, 1.0, 0.0, 1.0])
    # log(1 + e^−z) for y = 1, log(1 + e^z) for y = 0
    np.testing.assert_allclose(ref.row_losses(model, z, y), [0.0, 1e4, 1e4, 0.0, math.log(2.0)],
                               rtol=1e-15, atol=0)
    np.testing.assert_allclose(ref.row_loss_grads(model, z, y)[:, 0], [0, 1, -1, 0, -0.5], atol=0)
    assert np.all(np.isfinite(ref.row_loss_hvps(model, z, y, np.ones(5))))


def test_logistic_loss_keeps_tiny_values_exact():
    # log(1 + e^−40) ≈ e^−40 must not cancel to 0
    model = NETS["logistic"]
    loss = ref.row_losses(model, np.array([40.0]), np.array([1.0]))[0]
    assert loss == pytest.approx(math.exp(-40.0), rel=1e-14)


def test_cross_entropy_is_stable_for_huge_logits():
    model = NETS["softmax"]
    z = np.array([[1e4, 0.0, -1e4]] * 3)
    y = np.array([0.0, 1.0, 2.0])
    np.testing.assert_allclose(ref.row_losses(model, z, y), [0.0, 1e4, 2e4], rtol=1e-15, atol=0)
    g = ref.row_loss_grads(model, z, y)
    np.testing.assert_allclose(g, [[0, 0, 0], [1, -1, 0], [1, 0, -1]], atol=1e-300)


def test_cross_entropy_matches_a_hand_computed_example():
    # z = (1, 2, 3): −log softmax(z)[0] = log(e + e² + e³) − 1 = log(1 + e + e²),
    # −log softmax(z)[2] = log(1 + e⁻¹ + e⁻²); z = 0: log 3
    model = NETS["softmax"]
    z = np.array([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    y = np.array([0.0, 2.0, 1.0])
    e = math.e
    expected = [math.log(1 + e + e * e), math.log(1 + 1 / e + 1 / (e * e)), math.log(3.0)]
    assert expected[0] == pytest.approx(2.4076059644443806, rel=1e-15)
    np.testing.assert_allclose(ref.row_losses(model, z, y), expected, rtol=1e-14)


def test_mse_is_the_mean_over_outputs():
    model = NETS["linear-mse-3-outputs"]
    z = np.array([[1.0, 2.0, 3.0]])
    y = np.array([[0.0, 0.0, 1.0]])
    assert ref.row_losses(model, z, y)[0] == pytest.approx((1 + 4 + 4) / 3, rel=1e-15)


def test_huge_parameters_give_finite_gradients():
    for name in ("logistic", "softmax"):
        model = NETS[name]
        X, y = random_rows(model, 8)
        value, grad = ref.loss_and_grad(model, 1e4 * random_theta(model), X, y)
        assert np.isfinite(value) and np.all(np.isfinite(grad))


@pytest.mark.parametrize("name, y, message", [
    ("logistic", [0.0, 0.5], "labels 0 or 1"),
    ("softmax", [0.0, 3.0], "integer labels 0..2"),
    ("softmax", [0.0, 1.5], "integer labels 0..2"),
    ("linear-mse-3-outputs", [0.0, 1.0], "shape"),
])
def test_bad_targets_are_refused_by_name(name, y, message):
    model = NETS[name]
    X, _ = random_rows(model, 2)
    with pytest.raises(ValueError, match=message):
        ref.loss_and_grad(model, random_theta(model), X, np.array(y))


def test_bad_shapes_are_refused_by_name():
    model = NETS["softmax"]
    theta = random_theta(model)
    X, y = random_rows(model, 3)
    with pytest.raises(ValueError, match="X must have 4 columns"):
        ref.loss_and_grad(model, theta, X[:, :3], y)
    with pytest.raises(ValueError, match="theta must have length"):
        ref.loss_and_grad(model, theta[:-1], X, y)
    with pytest.raises(ValueError, match="task must be <= 2"):
        ref.loss_and_grad(NETS["heads-tanh-mse"], random_theta(NETS["heads-tanh-mse"]),
                          *random_rows(NETS["heads-tanh-mse"], 3), task=3)


# --- the multi-task objective ---------------------------------------------------------------------
# (net, task sizes, n_support, task_ids): ragged tasks, one task, tasks of one row, shared heads
CASES = {
    "linear-mse": ("linear-mse", [4, 6, 5], [2, 3, 1], None),
    "logistic-one-task": ("logistic", [7], [3], None),
    "softmax-one-row-splits": ("softmax", [2, 5, 2], [1, 4, 1], None),
    "tanh-one-row-task": ("tanh-1-logistic", [1, 4, 3], [1, 2, 1], None),
    "mse-3-outputs": ("linear-mse-3-outputs", [3, 4], [1, 2], None),
    "relu-1-mse": ("relu-1-mse", [5, 3, 4, 2], [2, 2, 1, 1], None),
    "tanh-2-mse": ("tanh-2-mse-2-outputs", [4, 6], [2, 5], None),
    "tanh-3-ce": ("tanh-3-cross-entropy", [5, 4, 3], [2, 1, 2], None),
    "relu-3-logistic": ("relu-3-logistic", [6, 2], [3, 1], None),
    "heads-tanh-mse": ("heads-tanh-mse", [4, 3, 5], [2, 1, 3], [0, 1, 2]),
    "heads-shared": ("heads-linear-softmax", [4, 3, 5, 2], [2, 1, 3, 1], [2, 0, 2, 1]),
    "heads-relu-logistic": ("heads-relu-logistic", [5, 4], [2, 2], [1, 0]),
}
ROWS = ["all", "support", "query"]
# every case with every choice of rows it has rows for ("tanh-one-row-task" has a one-row task
# whose single row is support, so no query rows)
CASE_ROWS = [(name, rows) for name in CASES for rows in ROWS
             if not (name == "tanh-one-row-task" and rows == "query")]


def case(name, seed=0):
    net, sizes, n_support, task_ids = CASES[name]
    model = NETS[net]
    ts = make_tasks(model, sizes, n_support, task_ids, seed=seed)
    weights = np.random.default_rng(seed + 300).uniform(0.2, 2.0, size=ts.n_tasks)
    return model, ts, random_theta(model, seed), weights


def chosen_rows(ts, i, rows):
    """Task i's rows by the definition: support first, query the rest."""
    Xi, yi = ts.X[ts.offsets[i]:ts.offsets[i + 1]], ts.y[ts.offsets[i]:ts.offsets[i + 1]]
    s = ts.n_support[i]
    return {"all": (Xi, yi), "support": (Xi[:s], yi[:s]), "query": (Xi[s:], yi[s:])}[rows]


@pytest.mark.parametrize("name, rows", CASE_ROWS)
def test_objective_grad_matches_finite_differences(name, rows):
    model, ts, theta, weights = case(name)
    kw = dict(weights=weights, l2=0.1, rows=rows)
    value, grad = ref.objective_value_and_grad(model, ts, theta, **kw)
    assert value == pytest.approx(ref.objective_value(model, ts, theta, **kw), rel=1e-14)
    np.testing.assert_array_equal(ref.objective_grad(model, ts, theta, **kw), grad)
    assert_close(grad, fd_grad(lambda t: ref.objective_value(model, ts, t, **kw), theta))


@pytest.mark.parametrize("name, rows", CASE_ROWS)
def test_objective_hvp_matches_finite_differences_and_is_symmetric(name, rows):
    model, ts, theta, weights = case(name)
    kw = dict(weights=weights, l2=0.1, rows=rows)
    rng = np.random.default_rng(4)
    u, v = rng.normal(size=model.n_params), rng.normal(size=model.n_params)
    hv = ref.objective_hvp(model, ts, theta, v, **kw)
    assert_close(hv, fd_hvp(lambda t: ref.objective_grad(model, ts, t, **kw), theta, v))
    assert u @ hv == pytest.approx(v @ ref.objective_hvp(model, ts, theta, u, **kw), rel=1e-10)


@pytest.mark.parametrize("name, rows", CASE_ROWS)
def test_objective_is_the_weighted_sum_of_task_losses_plus_l2(name, rows):
    model, ts, theta, weights = case(name)
    losses = ref.task_losses(model, ts, theta, rows=rows)
    grads = ref.task_grads(model, ts, theta, rows=rows)
    assert losses.shape == (ts.n_tasks,) and grads.shape == (ts.n_tasks, model.n_params)
    for i in range(ts.n_tasks):
        # f_i: the mean loss over task i's chosen rows, with task i's head
        head = ts.task_ids[i] if model.task_heads else 0
        f_i, g_i = ref.loss_and_grad(model, theta, *chosen_rows(ts, i, rows), task=head)
        assert losses[i] == pytest.approx(f_i, rel=1e-14)
        np.testing.assert_allclose(grads[i], g_i, rtol=1e-14, atol=1e-16)
    lam = 0.25
    value, grad = ref.objective_value_and_grad(model, ts, theta, weights=weights, l2=lam, rows=rows)
    assert value == pytest.approx(weights @ losses + lam / 2 * theta @ theta, rel=1e-13)
    np.testing.assert_allclose(grad, weights @ grads + lam * theta, rtol=1e-12, atol=1e-14)
    uniform = ref.objective_value(model, ts, theta, rows=rows)
    assert uniform == pytest.approx(np.mean(losses), rel=1e-13)


@pytest.mark.parametrize("name", ["relu-1-mse", "heads-shared"])
def test_task_grads_match_finite_differences_of_task_losses(name):
    model, ts, theta, _ = case(name)
    grads = ref.task_grads(model, ts, theta, rows="query")
    for i in range(ts.n_tasks):
        f_i = lambda t: ref.task_losses(model, ts, t, rows="query")[i]  # noqa: E731
        assert_close(grads[i], fd_grad(f_i, theta))


def test_objective_hvp_of_l2_alone_is_lambda_v():
    # with all task weights zero only (λ/2)‖θ‖² is left: H v = λ v
    model, ts, theta, _ = case("tanh-3-ce")
    v = np.random.default_rng(5).normal(size=model.n_params)
    hv = ref.objective_hvp(model, ts, theta, v, weights=np.zeros(ts.n_tasks), l2=0.7)
    np.testing.assert_allclose(hv, 0.7 * v, rtol=1e-15)


@pytest.mark.parametrize("name, rows", CASE_ROWS)
def test_vectorized_objective_equals_the_task_loop(name, rows):
    model, ts, theta, weights = case(name)
    for kw in (dict(rows=rows), dict(weights=weights, l2=0.3, rows=rows)):
        value, grad = ref.objective_value_and_grad_vectorized(model, ts, theta, **kw)
        loop_value, loop_grad = ref.objective_value_and_grad(model, ts, theta, **kw)
        assert value == pytest.approx(loop_value, rel=1e-12)
        np.testing.assert_allclose(grad, loop_grad, rtol=1e-11, atol=1e-14)


def test_objective_accepts_float32_tasks_and_returns_float64():
    model, ts, theta, weights = case("relu-1-mse")
    ts32 = Tasks(ts.X.astype(np.float32), ts.y.astype(np.float32), ts.offsets, ts.n_support,
                 ts.task_ids)
    ts64 = Tasks(ts32.X.astype(np.float64), ts32.y.astype(np.float64), ts.offsets, ts.n_support,
                 ts.task_ids)
    for f in (ref.objective_value_and_grad, ref.objective_value_and_grad_vectorized):
        value, grad = f(model, ts32, theta.astype(np.float32), weights=weights)
        theta64 = theta.astype(np.float32).astype(np.float64)
        value64, grad64 = f(model, ts64, theta64, weights=weights)
        assert isinstance(value, float) and grad.dtype == np.float64
        assert value == value64
        np.testing.assert_array_equal(grad, grad64)


@pytest.mark.parametrize("function", [ref.objective_value_and_grad,
                                      ref.objective_value_and_grad_vectorized,
                                      ref.task_losses, ref.task_grads])
def test_a_task_without_the_chosen_rows_is_refused(function):
    model = NETS["softmax"]
    ts = make_tasks(model, [3, 2, 4], [1, 2, 4])   # task 1 has no query rows, task 2 none either
    theta = random_theta(model)
    with pytest.raises(ValueError, match=r"task 1 has no query rows.*rows='query'"):
        function(model, ts, theta, rows="query")
    ts_empty_support = make_tasks(model, [3, 2], [1, 0])
    with pytest.raises(ValueError, match=r"task 1 has no support rows.*rows='support'"):
        function(model, ts_empty_support, theta, rows="support")


def test_bad_objective_arguments_are_refused_by_name():
    model, ts, theta, _ = case("linear-mse")
    with pytest.raises(ValueError, match="rows must be one of"):
        ref.objective_value(model, ts, theta, rows="train")
    with pytest.raises(ValueError, match="weights must have 3 entries"):
        ref.objective_value(model, ts, theta, weights=[1.0, 2.0])
    with pytest.raises(ValueError, match="l2 must be >= 0"):
        ref.objective_value(model, ts, theta, l2=-1.0)
    heads_model, heads_ts, heads_theta, _ = case("heads-tanh-mse")
    heads_ts.task_ids = np.array([0, 3, 1])
    with pytest.raises(ValueError, match=r"ts.task_ids\[1\] must be in 0..2"):
        ref.objective_value_and_grad(heads_model, heads_ts, heads_theta)


def test_public_names():
    for name in ref.__all__:
        assert callable(getattr(ref, name))
    for name in ("forward", "predict", "row_losses", "loss_and_grad", "loss_hvp",
                 "objective_value", "objective_grad", "objective_value_and_grad",
                 "objective_value_and_grad_vectorized", "task_losses", "task_grads",
                 "objective_hvp"):
        assert name in ref.__all__
