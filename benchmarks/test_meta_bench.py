"""Meta-learning benchmarks, side by side in one run (pytest-benchmark).

W1: one MAML meta-step on sinusoids: MLP 1-40-40-1 ReLU, float32, meta-batch 25, 10 support +
    10 query points, 1 inner step with lr 0.01, exact second-order meta-gradient (and first
    order) plus one Adam update. The core runs a chunk of 100 steps per call (how fit runs);
    the time per step is recorded in extra_info["per_step_us"].
W3: adapt-and-predict: the same net, 10 support points, 5 SGD steps with lr 0.01, predict 100
    points, one whole call from Python.

Run: taskset -c 0 env OMP_NUM_THREADS=1 python -m pytest benchmarks/test_meta_bench.py
     (and without taskset, OMP_NUM_THREADS=2, for two threads). JAX and PyTorch columns appear
     when they are installed.
"""

from __future__ import annotations

import numpy as np
import pytest

import metacore as mc

pytest.importorskip("pytest_benchmark")

SIZES = [1, 40, 40, 1]
META_BATCH, INNER_LR, CHUNK = 25, 0.01, 100
MODEL = mc.MLP(SIZES, activation="relu", loss="mse")
THETA = MODEL.init(seed=0, dtype=np.float32)
SOURCE = mc.tasks.SinusoidSource(k_support=10, k_query=10)
BATCH = SOURCE.sample(META_BATCH, step=0, seed=0, dtype=np.float32)


def _arrays(batch):
    """(XS, YS, XQ, YQ) stacked per task: (T, 10, 1), (T, 10), ..."""
    X = np.asarray(batch.X).reshape(META_BATCH, 20, 1)
    y = np.asarray(batch.y).reshape(META_BATCH, 20)
    return X[:, :10], y[:, :10], X[:, 10:], y[:, 10:]


def _chunk(learner, meta_batch, steps):
    """``mc.fit`` of ``steps`` meta-steps with Adam in one chunk (one core call), timed whole:
    the argument checks and the start and end evaluations are in the figure too."""
    problem = mc.MetaObjective(learner, SOURCE, meta_batch=meta_batch)
    return lambda: mc.fit(problem, THETA, optimizer=mc.optim.Adam(lr=1e-3), steps=steps,
                          chunk_size=steps, progress=False)


# --- W1: the MAML meta-step ----------------------------------------------------------------------
@pytest.mark.parametrize("first_order", [False, True], ids=["second_order", "first_order"])
def test_w1_core_fit_chunk(benchmark, seconds, first_order):
    learner = mc.MAML(MODEL, inner_lr=INNER_LR, inner_steps=1, first_order=first_order)
    run = _chunk(learner, META_BATCH, CHUNK)
    benchmark.pedantic(run, rounds=10, warmup_rounds=1)
    benchmark.extra_info["per_step_us"] = seconds("min") / CHUNK * 1e6


@pytest.mark.parametrize("first_order", [False, True], ids=["second_order", "first_order"])
def test_w1_core_meta_value_and_grad(benchmark, first_order):
    learner = mc.MAML(MODEL, inner_lr=INNER_LR, inner_steps=1, first_order=first_order)
    benchmark(learner.meta_value_and_grad, THETA, BATCH)


def test_w1_reference(benchmark):
    theta = THETA.astype(np.float64)
    benchmark.pedantic(mc.reference.maml_value_and_grad, args=(MODEL, theta, BATCH),
                       kwargs={"inner_lr": INNER_LR}, rounds=5, warmup_rounds=1)


def _jax_step():
    jax = pytest.importorskip("jax")
    jnp = jax.numpy

    def net(p, x):
        h = jax.nn.relu(x @ p[0].T + p[1])
        h = jax.nn.relu(h @ p[2].T + p[3])
        return (h @ p[4].T + p[5])[:, 0]

    def loss(p, x, y):
        return jnp.mean((net(p, x) - y) ** 2)

    def task_loss(p, xs, ys, xq, yq):
        g = jax.grad(loss)(p, xs, ys)
        return loss([a - INNER_LR * b for a, b in zip(p, g)], xq, yq)

    def meta_loss(p, XS, YS, XQ, YQ):
        return jnp.mean(jax.vmap(task_loss, in_axes=(None, 0, 0, 0, 0))(p, XS, YS, XQ, YQ))

    @jax.jit
    def step(p, m, v, t, XS, YS, XQ, YQ):
        value, g = jax.value_and_grad(meta_loss)(p, XS, YS, XQ, YQ)
        m = [0.9 * a + 0.1 * b for a, b in zip(m, g)]
        v = [0.999 * a + 0.001 * b * b for a, b in zip(v, g)]
        c1, c2 = 1 - 0.9 ** t, 1 - 0.999 ** t
        p = [a - 1e-3 * (b / c1) / (jnp.sqrt(c / c2) + 1e-8) for a, b, c in zip(p, m, v)]
        return p, m, v, value

    params = [jnp.asarray(w) for pair in MODEL.unpack(THETA) for w in pair]
    zeros = [jnp.zeros_like(a) for a in params]
    data = [jnp.asarray(a) for a in _arrays(BATCH)]

    def run():
        out = step(params, zeros, zeros, 1.0, *data)
        jax.block_until_ready(out)
        return out

    return run


def test_w1_jax_jit_vmap(benchmark):
    run = _jax_step()
    run()
    benchmark(run)


def test_w1_torch_eager(benchmark):
    torch = pytest.importorskip("torch")
    params = [torch.tensor(np.array(w), requires_grad=True) for pair in MODEL.unpack(THETA)
              for w in pair]
    opt = torch.optim.Adam(params, lr=1e-3)
    XS, YS, XQ, YQ = (torch.tensor(np.array(a)) for a in _arrays(BATCH))

    def net(p, x):
        h = torch.relu(x @ p[0].T + p[1])
        h = torch.relu(h @ p[2].T + p[3])
        return (h @ p[4].T + p[5])[:, 0]

    def step():
        opt.zero_grad()
        total = 0.0
        for i in range(META_BATCH):
            inner = ((net(params, XS[i]) - YS[i]) ** 2).mean()
            grads = torch.autograd.grad(inner, params, create_graph=True)
            phi = [a - INNER_LR * g for a, g in zip(params, grads)]
            total = total + ((net(phi, XQ[i]) - YQ[i]) ** 2).mean()
        (total / META_BATCH).backward()
        opt.step()

    benchmark.pedantic(step, rounds=10, warmup_rounds=1)


# --- W3: adapt-and-predict -----------------------------------------------------------------------
_rng = np.random.default_rng(0)
XS3 = _rng.uniform(-5, 5, size=(10, 1)).astype(np.float32)
YS3 = (2.0 * np.sin(XS3[:, 0] - 0.5)).astype(np.float32)
XQ3 = np.linspace(-5, 5, 100, dtype=np.float32)[:, None]


def test_w3_core_adapt_predict(benchmark):
    out = benchmark(mc.adapt_predict, MODEL, THETA, XS3, YS3, XQ3, steps=5, lr=INNER_LR)
    assert out.shape == (100,)


def test_w3_reference(benchmark):
    benchmark(mc.reference.adapt_predict, MODEL, THETA.astype(np.float64), XS3, YS3, XQ3,
              steps=5, lr=INNER_LR)


def test_w3_jax_jit(benchmark):
    jax = pytest.importorskip("jax")
    jnp = jax.numpy

    def net(p, x):
        h = jax.nn.relu(x @ p[0].T + p[1])
        h = jax.nn.relu(h @ p[2].T + p[3])
        return (h @ p[4].T + p[5])[:, 0]

    @jax.jit
    def adapt_predict(p, xs, ys, xq):
        loss = lambda q: jnp.mean((net(q, xs) - ys) ** 2)
        for _ in range(5):
            p = [a - INNER_LR * b for a, b in zip(p, jax.grad(loss)(p))]
        return net(p, xq)

    params = [jnp.asarray(w) for pair in MODEL.unpack(THETA) for w in pair]
    run = lambda: np.asarray(adapt_predict(params, XS3, YS3, XQ3))
    run()
    benchmark(run)


def test_w3_torch_eager(benchmark):
    torch = pytest.importorskip("torch")
    params = [torch.tensor(np.array(w), requires_grad=True) for pair in MODEL.unpack(THETA)
              for w in pair]
    xs, ys, xq = torch.tensor(XS3), torch.tensor(YS3), torch.tensor(XQ3)

    def net(p, x):
        h = torch.relu(x @ p[0].T + p[1])
        h = torch.relu(h @ p[2].T + p[3])
        return (h @ p[4].T + p[5])[:, 0]

    def run():
        p = params
        for _ in range(5):
            grads = torch.autograd.grad(((net(p, xs) - ys) ** 2).mean(), p)
            p = [a - INNER_LR * g for a, g in zip(p, grads)]
        with torch.no_grad():
            return net(p, xq).numpy()

    benchmark(run)


# --- scaling: W1 with meta-batch 256 ---------------------------------------------------------------
def test_scaling_core_meta_batch_256(benchmark, seconds):
    learner = mc.MAML(MODEL, inner_lr=INNER_LR, inner_steps=1)
    run = _chunk(learner, 256, 10)
    benchmark.pedantic(run, rounds=5, warmup_rounds=1)
    benchmark.extra_info["per_step_us"] = seconds("min") / 10 * 1e6
