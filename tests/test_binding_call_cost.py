"""The bindings do on the success path only what success needs: no error text is built before an
error happens. The kind of fault: every output array's memory check built its would-be
MemoryError message eagerly, and the dtype's name in it comes from numpy's Python ``__str__``
(~3 µs a call, more than the rest of ``_core.adapt`` with 0 steps). Checked here for every binding
that allocates an output, by counting calls of numpy's dtype ``__str__`` — a count, not a timing."""

from __future__ import annotations

import numpy as np
import pytest

import metacore as mc

_dtype_module = pytest.importorskip("numpy._core._dtype")


@pytest.fixture
def dtype_names(monkeypatch):
    """How many times numpy built a dtype's name (str(dtype)) during the test."""
    calls = [0]
    original = _dtype_module.__str__

    def counted(dtype):
        calls[0] += 1
        return original(dtype)

    monkeypatch.setattr(_dtype_module, "__str__", counted)
    str(np.dtype(np.float32))
    assert calls[0] == 1, "numpy no longer names dtypes through numpy._core._dtype.__str__"
    calls[0] = 0
    return calls


def success_calls(dtype):
    """Every public call whose binding allocates outputs, on valid inputs of ``dtype``."""
    model = mc.MLP([1, 8, 1])
    theta = model.init(seed=0, dtype=dtype)
    ts = mc.tasks.sinusoid(4, k_support=5, k_query=5, seed=0, dtype=dtype)
    X, y = ts[0]
    obj = mc.Objective(model, ts)
    maml = mc.MAML(model, inner_lr=0.01)
    imaml = mc.IMAML(model, reg=1.0, inner_steps=3)
    cls = mc.MLP([1, 8, 3], loss="cross_entropy")
    episodes = mc.tasks.EpisodeSource(np.random.default_rng(0).normal(size=(30, 1)),
                                      np.arange(0, 31, 10), n_way=3, k_shot=2,
                                      q_query=2).sample(2, seed=0)
    proto = mc.ProtoNet(mc.MLP([1, 8, 4]))
    ptheta = proto.model.init(seed=0, dtype=dtype)
    return {
        "adapt": lambda: mc.adapt(model, theta, X, y, steps=2),
        "adapt_predict": lambda: mc.adapt_predict(model, theta, X, y, X, steps=2),
        "adapt_batch": lambda: mc.adapt_batch(model, theta, ts, steps=2),
        "predict": lambda: model.predict(theta, X),
        "objective": lambda: obj.value_and_grad(theta),
        "task_grads": lambda: obj.task_grads(theta),
        "meta gradient": lambda: maml.meta_value_and_grad(theta, ts),
        "imaml gradient": lambda: imaml.meta_value_and_grad(theta, ts),
        "protonet gradient": lambda: proto.meta_value_and_grad(
            ptheta, episodes.astype(dtype)),
        "classifier predict": lambda: cls.predict(cls.init(seed=0, dtype=dtype), X),
    }


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_no_binding_names_a_dtype_on_its_success_path(dtype_names, dtype):
    for name, call in success_calls(dtype).items():
        call()          # the first call may build caches; the count is of the second
        dtype_names[0] = 0
        call()
        assert dtype_names[0] == 0, f"{name}: built a dtype's name on a call that succeeded"


def test_the_memory_error_still_names_the_output_and_its_dtype(dtype_names):
    """Built only now, the message is the one it was: name, shape and dtype of the output."""
    T = 200_000
    ts = mc.TaskSet(np.zeros((T, 1)), np.zeros(T), np.arange(T + 1))
    model = mc.MLP([1, 2000, 1000, 1])
    obj = mc.Objective(model, ts)
    with pytest.raises(MemoryError, match=r"task_grads would need .* TiB for its "
                                          r"\(200000, \d+\) float64 output"):
        obj.task_grads(model.init(seed=0))
    assert dtype_names[0] >= 1
