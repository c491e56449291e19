"""N-way K-shot episodes drawn in the core from a labelled pool (mc.tasks.EpisodeSource): the
protocol's conventions, the same tasks a meta-step trains on, fresh per step, resumable."""

import numpy as np
import pytest

import metacore as mc


def pool(n_classes=9, per_class=(6, 11), d=4, seed=0, dtype=np.float32):
    """Classes as well-separated Gaussian clusters; rows grouped by class; each row's first
    feature encodes (class, index) so a test can tell where every episode row came from."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(*per_class, size=n_classes)
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    centres = rng.normal(scale=3.0, size=(n_classes, d))
    X = np.concatenate([centres[c] + rng.normal(size=(n, d)) for c, n in enumerate(sizes)])
    X[:, 0] = np.arange(X.shape[0])          # the row's pool index, exact in float32
    return X.astype(dtype), offsets


@pytest.mark.parametrize("n_way,k_shot,q_query", [(2, 1, 1), (3, 2, 4), (5, 1, 5), (9, 1, 1)])
def test_episodes_follow_the_protocol(n_way, k_shot, q_query):
    X, offsets = pool()
    src = mc.tasks.EpisodeSource(X, offsets, n_way=n_way, k_shot=k_shot, q_query=q_query)
    ts = src.sample(20, step=3, seed=7)
    class_of = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))
    assert ts.n_tasks == 20 and (ts.n_support == n_way * k_shot).all()
    assert (ts.n_query == n_way * q_query).all()
    for i in range(ts.n_tasks):
        Xs, ys = ts.support(i)
        Xq, yq = ts.query(i)
        rows = np.concatenate([Xs[:, 0], Xq[:, 0]]).astype(np.int64)
        labels = np.concatenate([ys, yq]).astype(np.int64)
        assert len(set(rows)) == rows.size, "no pool row twice in an episode"
        np.testing.assert_array_equal(np.sort(np.unique(labels)), np.arange(n_way))
        np.testing.assert_array_equal(ys, np.repeat(np.arange(n_way), k_shot))   # class by class
        np.testing.assert_array_equal(yq, np.repeat(np.arange(n_way), q_query))
        pool_class = class_of[rows]
        for j in range(n_way):                 # label j is one pool class, a different one per j
            assert len(set(pool_class[labels == j])) == 1
        assert len(set(pool_class)) == n_way
        np.testing.assert_array_equal(np.concatenate([Xs, Xq]), X[rows])


def test_episodes_are_a_pure_function_of_seed_and_step():
    X, offsets = pool()
    src = mc.tasks.EpisodeSource(X, offsets, n_way=3, k_shot=2, q_query=3)
    a, b = src.sample(8, step=5, seed=1), src.sample(8, step=5, seed=1)
    np.testing.assert_array_equal(a.X, b.X)
    assert not np.array_equal(a.X, src.sample(8, step=6, seed=1).X)
    assert not np.array_equal(a.X, src.sample(8, step=5, seed=2).X)
    # every class is drawn eventually, each about as often (uniform over classes)
    counts = np.zeros(len(offsets) - 1)
    class_of = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))
    for step in range(200):
        ts = src.sample(5, step=step, seed=0)
        counts += np.bincount(class_of[ts.X[:, 0].astype(np.int64)], minlength=counts.size)
    share = counts / counts.sum()
    assert np.abs(share - 1 / counts.size).max() < 0.02


def test_a_meta_step_trains_on_the_episodes_sample_shows():
    X, offsets = pool(d=4)
    src = mc.tasks.EpisodeSource(X, offsets, n_way=3, k_shot=2, q_query=3)
    model = mc.MLP([4, 16, 3], activation="relu", loss="cross_entropy")
    learner = mc.MAML(model, inner_lr=0.1, inner_steps=2)
    theta0 = model.init(seed=0, dtype=np.float32)
    res = mc.fit(mc.MetaObjective(learner, src, meta_batch=6), theta0, steps=1, seed=4,
                 progress=False)
    batch = src.sample(6, step=0, seed=4)
    assert res.history.objective[0] == learner.meta_value(theta0, batch)


def test_meta_training_on_fresh_episodes_learns_and_resumes_bit_identically():
    X, offsets = pool(n_classes=12, d=6, seed=3)
    train_src = mc.tasks.EpisodeSource(X, offsets, n_way=3, k_shot=1, q_query=4)
    model = mc.MLP([6, 24, 3], activation="relu", loss="cross_entropy")
    problem = mc.MetaObjective(mc.MAML(model, inner_lr=0.2), train_src, meta_batch=8)
    theta0 = model.init(seed=1, dtype=np.float32)
    kw = dict(optimizer=mc.optim.Adam(lr=3e-3), eval_every=50, progress=False, seed=0)
    whole = mc.fit(problem, theta0, steps=300, **kw)
    assert whole.history.objective[-50:].mean() < 0.8 * whole.history.objective[:50].mean()
    first = mc.fit(problem, theta0, steps=150, **kw)
    rest = mc.fit(problem, first, steps=150, eval_every=50, progress=False)
    np.testing.assert_array_equal(rest.theta, whole.theta)


def test_bad_pools_and_models_are_refused_with_names():
    X, offsets = pool(per_class=(3, 4))
    with pytest.raises(ValueError, match="fewer than k_shot \\+ q_query"):
        mc.tasks.EpisodeSource(X, offsets, n_way=2, k_shot=2, q_query=5)
    with pytest.raises(ValueError, match="fewer than n_way"):
        mc.tasks.EpisodeSource(X, offsets, n_way=20, k_shot=1, q_query=1)
    with pytest.raises(ValueError, match="class_offsets must run from 0"):
        mc.tasks.EpisodeSource(X, offsets + 1, n_way=2, k_shot=1, q_query=1)
    with pytest.raises(ValueError, match="k_shot"):
        mc.tasks.EpisodeSource(X, offsets, n_way=2, k_shot=0, q_query=1)
    src = mc.tasks.EpisodeSource(X, offsets, n_way=2, k_shot=1, q_query=1)
    with pytest.raises(ValueError, match="2-way episodes of 4 features need a cross-entropy"):
        mc.MetaObjective(mc.MAML(mc.MLP([4, 3], loss="cross_entropy")), src)
    with pytest.raises(ValueError, match="need a cross-entropy"):
        mc.MetaObjective(mc.MAML(mc.MLP([4, 2], loss="mse")), src)
