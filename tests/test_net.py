"""The net: model.predict (through the compiled core), model.init, n_params and the θ layout.

- predict agrees with ``metacore.reference.predict`` for every loss head, depth, activation and
  per-task head, in float32 and float64, with shape (n,) for one output and (n, k) otherwise;
- init gives θ in the asked dtype, deterministic for a seed, He-normal (relu) or Glorot-uniform
  (tanh) weights at the documented scale and zero biases;
- the flat θ layout is the documented one: per layer W (fan_out, fan_in) row-major then b; with
  per-task heads the trunk first, then head 0, head 1, ...
"""

from __future__ import annotations

import numpy as np
import pytest

import metacore as mc
from metacore import reference as ref
from numerics import rel_err

RTOL = {np.float64: 1e-12, np.float32: 1e-4}
DTYPES = [np.float64, np.float32]
DTYPE_IDS = ["f64", "f32"]

NETS = {
    "linear-mse": mc.Linear(3),
    "linear-mse-3-outputs": mc.Linear(4, 3),
    "logistic": mc.Logistic(5),
    "softmax-10": mc.Softmax(6, 10),
    "relu-h1-mse": mc.MLP([3, 7, 1], activation="relu", loss="mse"),
    "tanh-h1-logistic": mc.MLP([4, 6, 1], activation="tanh", loss="logistic"),
    "relu-h2-ce-3": mc.MLP([5, 8, 6, 3], activation="relu", loss="cross_entropy"),
    "tanh-h2-mse-2-outputs": mc.MLP([2, 5, 4, 2], activation="tanh", loss="mse"),
    "relu-h3-logistic": mc.MLP([3, 6, 5, 4, 1], activation="relu", loss="logistic"),
    "tanh-h3-ce-4": mc.MLP([1, 4, 4, 3, 4], activation="tanh", loss="cross_entropy"),
    "d1000-relu-h1-mse": mc.MLP([1000, 16, 1], activation="relu", loss="mse"),
    "heads-softmax": mc.Softmax(3, 4, task_heads=3),
    "heads-tanh-h1-mse": mc.MLP([3, 4, 2], activation="tanh", loss="mse", task_heads=4),
    "heads-relu-h2-logistic": mc.MLP([3, 5, 4, 1], activation="relu", loss="logistic",
                                     task_heads=2),
}


def random_theta(model, *, dtype=np.float64, seed=0):
    rng = np.random.default_rng(seed + 1000)
    return (model.init(seed=seed) + 0.3 * rng.normal(size=model.n_params)).astype(dtype)


# --- predict -----------------------------------------------------------------------------------
@pytest.mark.parametrize("n", [1, 33, 100])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("name", list(NETS))
def test_predict_matches_reference(name, dtype, n):
    model = NETS[name]
    theta = random_theta(model, dtype=dtype)
    X = np.random.default_rng(n).normal(size=(n, model.n_features)).astype(dtype)
    k = model.n_outputs
    for task in range(model.task_heads or 1):
        out = model.predict(theta, X, task=task)
        assert out.dtype == dtype
        assert out.shape == ((n,) if k == 1 else (n, k))
        assert rel_err(out, ref.predict(model, theta, X, task=task)) < RTOL[dtype]


def test_predict_heads_differ_and_default_to_head_zero():
    model = NETS["heads-tanh-h1-mse"]
    theta = random_theta(model)
    X = np.random.default_rng(1).normal(size=(6, 3))
    outs = [model.predict(theta, X, task=t) for t in range(4)]
    np.testing.assert_array_equal(model.predict(theta, X), outs[0])
    for i in range(4):
        for j in range(i + 1, 4):
            assert not np.allclose(outs[i], outs[j])


def test_predict_by_hand_for_a_net_with_task_heads():
    # trunk W0 = I, b0 = 0 (so a = relu(X)); head 0: W = [1, 2], b = 3; head 1: W = [−1, 1], b = ½
    model = mc.MLP([2, 2, 1], activation="relu", loss="mse", task_heads=2)
    theta = np.array([1, 0, 0, 1, 0, 0, 1, 2, 3, -1, 1, 0.5])
    X = np.array([[1.0, 2.0], [-1.0, 3.0]])           # relu(X) = [[1, 2], [0, 3]]
    np.testing.assert_array_equal(model.predict(theta, X, task=0), [8.0, 9.0])
    np.testing.assert_array_equal(model.predict(theta, X, task=1), [1.5, 3.5])
    np.testing.assert_array_equal(model.predict(theta.astype(np.float32), X, task=1),
                                  np.array([1.5, 3.5], dtype=np.float32))


def test_predict_of_a_linear_net_is_X_W_transpose_plus_b():
    model = mc.Softmax(2, 3)
    theta = np.arange(1.0, 10.0)                      # W = [[1, 2], [3, 4], [5, 6]], b = [7, 8, 9]
    X = np.array([[1.0, 0.0], [0.0, 1.0], [2.0, -1.0]])
    expected = np.array([[8.0, 11.0, 14.0], [9.0, 12.0, 15.0], [7.0, 10.0, 13.0]])
    np.testing.assert_array_equal(model.predict(theta, X), expected)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_predict_is_bit_identical_for_any_thread_count(dtype):
    model = mc.MLP([20, 32, 16, 3], activation="tanh", loss="cross_entropy")
    theta = random_theta(model, dtype=dtype, seed=3)
    X = np.random.default_rng(3).normal(size=(5000, 20)).astype(dtype)
    first = model.predict(theta, X, n_threads=1)
    for n in (2, 3, 8, -1, None):
        np.testing.assert_array_equal(model.predict(theta, X, n_threads=n), first)
    # rows are independent: predicting a slice gives those rows of the full prediction
    np.testing.assert_array_equal(model.predict(theta, X[100:137]), first[100:137])


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_predict_accepts_read_only_and_strided_inputs_and_modifies_none(dtype):
    model = NETS["relu-h2-ce-3"]
    theta = random_theta(model, dtype=dtype, seed=4)
    X = np.random.default_rng(4).normal(size=(40, 5)).astype(dtype)
    expected = model.predict(theta, X)
    theta0, X0 = theta.copy(), X.copy()
    ro_theta, ro_X = theta.copy(), X.copy()
    ro_theta.setflags(write=False)
    ro_X.setflags(write=False)
    np.testing.assert_array_equal(model.predict(ro_theta, ro_X), expected)
    strided_X = np.repeat(X, 2, axis=1)[:, ::2]
    strided_theta = np.repeat(theta, 2)[1::2]
    assert not strided_X.flags.c_contiguous and not strided_theta.flags.c_contiguous
    np.testing.assert_array_equal(model.predict(strided_theta, strided_X), expected)
    # X of another float dtype is converted to θ's dtype
    other = np.float32 if dtype == np.float64 else np.float64
    X_other = X.astype(other)
    np.testing.assert_array_equal(model.predict(theta, X_other),
                                  model.predict(theta, X_other.astype(dtype)))
    np.testing.assert_array_equal(theta, theta0)
    np.testing.assert_array_equal(X, X0)
    out = model.predict(theta, X)
    assert out.flags.writeable and not np.shares_memory(out, X)


def test_predict_agrees_with_the_objective_task_loss():
    # mse: f_i = mean over rows of mean over outputs of (ŷ − y)², with ŷ = predict
    model = NETS["heads-tanh-h1-mse"]
    rng = np.random.default_rng(5)
    X, y = rng.normal(size=(9, 3)), rng.normal(size=(9, 2))
    ts = mc.TaskSet(X, y, [0, 4, 9], task_ids=[3, 1])
    theta = random_theta(model, seed=5)
    losses = mc.Objective(model, ts).task_losses(theta)
    expected = [np.mean((model.predict(theta, X[:4], task=3) - y[:4]) ** 2),
                np.mean((model.predict(theta, X[4:], task=1) - y[4:]) ** 2)]
    np.testing.assert_allclose(losses, expected, rtol=1e-13)


MODEL = NETS["heads-tanh-h1-mse"]
THETA = random_theta(MODEL)
XOK = np.ones((4, 3))
BAD_PREDICT = {
    "X-too-wide": (lambda: MODEL.predict(THETA, np.ones((4, 4))), ValueError,
                   "X must have 3 columns"),
    "X-too-narrow": (lambda: MODEL.predict(THETA, np.ones((4, 2))), ValueError,
                     "X must have 3 columns"),
    "X-1d": (lambda: MODEL.predict(THETA, np.ones(3)), ValueError, "X must be 2-D"),
    "X-nan": (lambda: MODEL.predict(THETA, np.full((2, 3), np.nan)), ValueError,
              "X must be finite"),
    "X-strings": (lambda: MODEL.predict(THETA, [["a", "b", "c"]]), TypeError, "X must hold"),
    "task-equal-to-heads": (lambda: MODEL.predict(THETA, XOK, task=4), ValueError,
                            "task must be <= 3"),
    "task-negative": (lambda: MODEL.predict(THETA, XOK, task=-1), ValueError,
                      "task must be >= 0"),
    "task-float": (lambda: MODEL.predict(THETA, XOK, task=1.0), TypeError,
                   "task must be an integer"),
    "task-without-heads": (lambda: mc.Linear(3).predict(np.zeros(4), XOK, task=1), ValueError,
                           "task must be <= 0"),
    "theta-wrong-length": (lambda: MODEL.predict(THETA[:-1], XOK), ValueError,
                           f"theta must have length {MODEL.n_params}"),
    "theta-int": (lambda: MODEL.predict(np.zeros(MODEL.n_params, dtype=int), XOK), TypeError,
                  "theta must be a float32 or float64 array"),
    "n_threads-zero": (lambda: MODEL.predict(THETA, XOK, n_threads=0), ValueError, "n_threads"),
    "n_threads-float": (lambda: MODEL.predict(THETA, XOK, n_threads=2.0), TypeError,
                        "n_threads"),
}


@pytest.mark.parametrize("name", list(BAD_PREDICT))
def test_predict_bad_argument_raises_naming_it(name):
    call, exc, match = BAD_PREDICT[name]
    with pytest.raises(exc, match=match):
        call()


# --- init ----------------------------------------------------------------------------------------
def bias_mask(model):
    mask = np.zeros(model.n_params, dtype=bool)
    for task in range(model.task_heads or 1):
        for _, (o, _i), b in model.layers(task):
            mask[b:b + o] = True
    return mask


@pytest.mark.parametrize("name", list(NETS))
def test_init_dtype_determinism_and_zero_biases(name):
    model = NETS[name]
    t64 = model.init(seed=7)
    assert t64.dtype == np.float64 and t64.shape == (model.n_params,)
    np.testing.assert_array_equal(model.init(seed=7), t64)
    np.testing.assert_array_equal(model.init(7, dtype=np.float64), t64)
    t32 = model.init(seed=7, dtype=np.float32)
    assert t32.dtype == np.float32
    np.testing.assert_array_equal(t32, t64.astype(np.float32))
    assert not np.array_equal(model.init(seed=8), t64)
    biases = bias_mask(model)
    assert np.all(t64[biases] == 0)
    assert np.all(t64[~biases] != 0)


def test_init_bad_arguments():
    model = NETS["relu-h1-mse"]
    with pytest.raises(TypeError, match="dtype must be float32 or float64"):
        model.init(dtype=np.int32)
    with pytest.raises(ValueError, match="seed must be >= 0"):
        model.init(seed=-1)
    with pytest.raises(TypeError, match="seed must be an integer"):
        model.init(seed=1.5)


def kurtosis(w):
    c = w - w.mean()
    return float(np.mean(c ** 4) / np.mean(c ** 2) ** 2)


def test_init_relu_is_he_normal():
    # W ~ N(0, 2 / fan_in): std √(2/fan_in), mean 0, kurtosis 3 (normal)
    model = mc.MLP([400, 300, 100, 2], activation="relu", loss="mse")
    params = model.unpack(model.init(seed=1))
    for (W, b), fan_in in [(params[0], 400), (params[1], 300)]:
        w = W.ravel()
        std = np.sqrt(2.0 / fan_in)
        assert w.std() == pytest.approx(std, rel=0.03)
        assert abs(w.mean()) < 5 * std / np.sqrt(w.size)
        assert kurtosis(w) == pytest.approx(3.0, abs=0.15)
        assert np.all(b == 0)


def test_init_tanh_is_glorot_uniform():
    # W ~ U(−r, r), r = √(6 / (fan_in + fan_out)): std r/√3, kurtosis 1.8 (uniform)
    model = mc.MLP([400, 300, 100, 2], activation="tanh", loss="mse")
    params = model.unpack(model.init(seed=2))
    for (W, b), (fan_in, fan_out) in [(params[0], (400, 300)), (params[1], (300, 100))]:
        w = W.ravel()
        r = np.sqrt(6.0 / (fan_in + fan_out))
        assert np.abs(w).max() <= r and np.abs(w).max() > 0.99 * r
        assert w.std() == pytest.approx(r / np.sqrt(3.0), rel=0.03)
        assert abs(w.mean()) < 5 * r / np.sqrt(3.0 * w.size)
        assert kurtosis(w) == pytest.approx(1.8, abs=0.1)
        assert np.all(b == 0)


def test_init_draws_every_head_independently():
    model = mc.MLP([50, 40, 30], activation="relu", loss="mse", task_heads=3)
    theta = model.init(seed=3)
    heads = [model.unpack(theta, task=t)[-1][0] for t in range(3)]
    for W in heads:
        assert W.std() == pytest.approx(np.sqrt(2.0 / 40), rel=0.1)
    for i in range(3):
        for j in range(i + 1, 3):
            assert abs(np.corrcoef(heads[i].ravel(), heads[j].ravel())[0, 1]) < 0.1


# --- n_params and the θ layout -------------------------------------------------------------------
@pytest.mark.parametrize("name", list(NETS))
def test_n_params_counts_every_layer_and_head(name):
    model = NETS[name]
    s = model.layer_sizes
    trunk = sum((s[l] + 1) * s[l + 1] for l in range(len(s) - 2))
    head = (s[-2] + 1) * s[-1]
    assert model.n_params == trunk + head * (model.task_heads or 1)
    assert model.n_trunk_params == trunk and model.n_head_params == head
    assert model.core_net().n_params == model.n_params
    assert list(model.core_net().layer_sizes) == list(s)


def test_theta_layout_is_w_row_major_then_b_per_layer():
    model = mc.MLP([2, 3, 1])
    assert model.n_params == 13
    (W0, b0), (W1, b1) = model.unpack(np.arange(13.0))
    np.testing.assert_array_equal(W0, [[0, 1], [2, 3], [4, 5]])
    np.testing.assert_array_equal(b0, [6, 7, 8])
    np.testing.assert_array_equal(W1, [[9, 10, 11]])
    np.testing.assert_array_equal(b1, [12])


def test_theta_layout_with_task_heads_is_trunk_then_head_after_head():
    model = mc.MLP([2, 3, 1], task_heads=3)
    assert model.n_params == 9 + 3 * 4
    theta = np.arange(21.0)
    for task in range(3):
        (W0, b0), (W1, b1) = model.unpack(theta, task=task)
        np.testing.assert_array_equal(W0, [[0, 1], [2, 3], [4, 5]])    # shared trunk
        np.testing.assert_array_equal(b0, [6, 7, 8])
        start = 9 + 4 * task
        np.testing.assert_array_equal(W1, [np.arange(start, start + 3)])
        np.testing.assert_array_equal(b1, [start + 3])


def test_unpack_gives_views_into_theta():
    model = NETS["heads-relu-h2-logistic"]
    theta = model.init(seed=0)
    for task in range(2):
        for W, b in model.unpack(theta, task=task):
            assert np.shares_memory(W, theta) and np.shares_memory(b, theta)
    W, b = model.unpack(theta, task=1)[-1]
    W[0, 0] = 42.0
    b[0] = -7.0
    off, shape, boff = model.layers(task=1)[-1]
    assert theta[off] == 42.0 and theta[boff] == -7.0
    assert shape == (1, 4) and off == model.n_trunk_params + model.n_head_params


@pytest.mark.parametrize("name", ["relu-h2-ce-3", "tanh-h3-ce-4", "heads-relu-h2-logistic"])
def test_reference_forward_uses_the_unpacked_layers(name):
    # z_l = a_l W_lᵀ + b_l with (W_l, b_l) = model.unpack(θ)[l]; a_{l+1} = σ(z_l); out = z_{L−1}
    model = NETS[name]
    theta = random_theta(model, seed=9)
    X = np.random.default_rng(9).normal(size=(7, model.n_features))
    act = np.tanh if model.activation == "tanh" else (lambda z: np.maximum(z, 0.0))
    for task in range(model.task_heads or 1):
        zs, acts = ref.forward(model, theta, X, task=task)
        a = X
        for l, (W, b) in enumerate(model.unpack(theta, task=task)):
            z = a @ W.T + b
            np.testing.assert_allclose(zs[l], z, rtol=1e-14, atol=1e-14)
            a = act(z) if l < model.n_layers - 1 else z
        np.testing.assert_allclose(acts[-1], a, rtol=1e-14, atol=1e-14)
        # and the core reads θ the same way
        # (entries that are small by cancellation are held to the scale of the output)
        np.testing.assert_allclose(model.predict(theta, X, task=task).reshape(7, -1), a,
                                   rtol=1e-12, atol=1e-13 * np.abs(a).max())


BAD_MODELS = {
    "one-layer-size": (lambda: mc.MLP([3]), ValueError, "layer_sizes must have at least 2"),
    "zero-width": (lambda: mc.MLP([3, 0, 1]), ValueError, r"layer_sizes\[1\] must be >= 1"),
    "float-width": (lambda: mc.MLP([3, 2.5, 1]), TypeError, r"layer_sizes\[1\]"),
    "activation": (lambda: mc.MLP([3, 1], activation="sigmoid"), ValueError, "activation"),
    "loss": (lambda: mc.MLP([3, 1], loss="hinge"), ValueError, "loss"),
    "logistic-two-outputs": (lambda: mc.MLP([3, 2], loss="logistic"), ValueError,
                             "loss='logistic' needs one output"),
    "ce-one-output": (lambda: mc.MLP([3, 1], loss="cross_entropy"), ValueError,
                      "loss='cross_entropy' needs at least 2 outputs"),
    "task_heads-zero": (lambda: mc.MLP([3, 1], task_heads=0), ValueError, "task_heads"),
}


@pytest.mark.parametrize("name", list(BAD_MODELS))
def test_bad_model_spec_raises_naming_it(name):
    call, exc, match = BAD_MODELS[name]
    with pytest.raises(exc, match=match):
        call()


# --- one forward pass, whichever path runs it -----------------------------------------------------
from hypothesis import given, settings, strategies as st  # noqa: E402


@settings(max_examples=60, deadline=None)
@given(widths=st.lists(st.integers(1, 70), min_size=1, max_size=3),
       n_in=st.integers(1, 40), n_rows=st.integers(1, 75),
       norm=st.sampled_from([None, "layer", "batch"]), dtype=st.sampled_from(DTYPES),
       seed=st.integers(0, 2**16))
def test_predict_has_the_bits_of_the_adaptation_paths_forward_pass(widths, n_in, n_rows, norm,
                                                                  dtype, seed):
    """model.predict and the forward pass of the adaptation path (adapt_predict with 0 steps) run
    the same kernels: equal bit for bit, for widths on and off the vector lengths (a row's
    output must not depend on which call computed it); and predicting a slice of the rows gives
    those rows of the whole prediction, bit for bit (not under batch statistics, where every
    row's output depends on all rows). Prediction keeps two layers' activations in turn and no
    backward buffers; the adaptation path keeps every layer's: 1-3 hidden layers cover both
    parities of the turn."""
    model = mc.MLP([n_in, *widths, 3], activation="relu", loss="mse",
                   norm=norm if len(widths) else None)
    rng = np.random.default_rng(seed)
    theta = model.init(seed=seed).astype(dtype)
    X = rng.standard_normal((n_rows, n_in)).astype(dtype)
    whole = model.predict(theta, X)
    via_adapt = mc.adapt_predict(model, theta, X[:1], np.zeros((1, 3), dtype), X, steps=0, lr=0.1)
    assert np.array_equal(whole, via_adapt)
    lo, hi = sorted(rng.integers(0, n_rows + 1, size=2))
    if hi > lo and model.norm != "batch":
        assert np.array_equal(model.predict(theta, X[lo:hi]), whole[lo:hi])
