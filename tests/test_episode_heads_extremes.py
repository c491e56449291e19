"""The closed-form episode heads (ProtoNet, the ridge head of R2D2) at extreme logits: the episode
loss is the cross-entropy of the logits ``adapt_predict`` returns — never negative, never −inf —
whatever the logit scale; and an episode without rows is refused by name."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import metacore as mc
from metacore.reference.prototypes import protonet_value_and_grad
from metacore.reference.ridge_head import ridge_head_value_and_grad


def episode(seed, dtype):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(7, 2))
    y = np.array([0.0, 1, 2, 0, 1, 2, 1])
    return mc.TaskSet(X, y, [0, 7], n_support=4, dtype=dtype)


def cross_entropy(z, y):
    """Mean −log softmax(z)[y] in float64, as (max − z_y) + log Σ exp(z − max)."""
    z = np.asarray(z, np.float64)
    m = z.max(axis=1)
    rows = np.arange(len(y))
    return float(np.mean((m - z[rows, y.astype(int)]) + np.log(np.exp(z - m[:, None]).sum(1))))


def check(learner, params, ts, reference):
    (Xs, ys), (Xq, yq) = ts.support(0), ts.query(0)
    z = learner.adapt_predict(params, Xs, ys, Xq)
    expected = cross_entropy(z, yq)
    value, grad = learner.meta_value_and_grad(params, ts)
    losses = learner.query_losses(params, ts)
    assert value >= 0.0 and np.isfinite(value), value
    assert losses[0] >= 0.0 and np.isfinite(losses[0])
    assert np.isfinite(grad).all()
    if params.dtype == np.float64:
        # the same number up to the rounding of logits of size max|z|
        tol = 1e-9 * (1.0 + expected) + 1e-13 * float(np.abs(z[np.isfinite(z)]).max())
        assert abs(value - expected) <= tol, (value, expected)
        assert abs(losses[0] - expected) <= tol
        # the reference sums its loss the same way (it had max + log Σ − z_y too)
        ref_value, ref_grad = reference(learner.model, params, ts)
        assert ref_value >= 0.0 and abs(ref_value - expected) <= tol, (ref_value, expected)
        assert np.isfinite(ref_grad).all()


@settings(max_examples=40, deadline=None)
@given(log_scale=st.floats(-2.0, 25.0), seed=st.integers(0, 3),
       dtype=st.sampled_from([np.float32, np.float64]))
def test_ridge_head_loss_is_the_cross_entropy_of_its_logits_at_any_scale(log_scale, seed, dtype):
    # Found at scale 1e15–1e19: the loss went negative, then −inf (the logits recomputed inside
    # exp(z − max) did not cancel the largest term exactly, and every term underflowed).
    embedding = mc.MLP([2, 5, 3], activation="tanh")
    learner = mc.RidgeHead(embedding, reg=1.0, scale=10.0 ** log_scale)
    params = learner.init(embedding.init(seed=seed, dtype=dtype))
    check(learner, params, episode(seed, dtype), ridge_head_value_and_grad)


@settings(max_examples=30, deadline=None)
@given(log_size=st.floats(-1.0, 8.0), seed=st.integers(0, 3))
def test_protonet_loss_is_the_cross_entropy_of_its_logits_at_any_distance(log_size, seed):
    embedding = mc.MLP([2, 3])          # linear: the embedding scales with θ
    learner = mc.ProtoNet(embedding)
    theta = embedding.init(seed=seed, dtype=np.float64) * 10.0 ** log_size   # distances ~ size²
    check(learner, theta, episode(seed, np.float64), protonet_value_and_grad)


@pytest.mark.parametrize("make", [lambda m: mc.ProtoNet(m), lambda m: mc.RidgeHead(m)])
def test_an_episode_without_rows_is_refused_by_name(make):
    embedding = mc.MLP([2, 5, 3], activation="tanh")
    learner = make(embedding)
    theta = embedding.init(seed=0)
    params = learner.init(theta) if hasattr(learner, "init") else theta
    some, none = np.ones((3, 2)), np.ones((0, 2))
    with pytest.raises(ValueError, match=r"X_support must have at least 1 row"):
        learner.adapt(params, none, np.zeros(0))
    with pytest.raises(ValueError, match=r"X_support must have at least 1 row"):
        learner.adapt_predict(params, none, np.zeros(0), some)
    with pytest.raises(ValueError, match=r"X_query must have at least 1 row"):
        learner.adapt_predict(params, some, np.array([0.0, 1, 2]), none)
