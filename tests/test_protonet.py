"""ProtoNet (Snell et al., 2017): the episode loss and its exact gradient against
metacore.reference and central finite differences (float64), float32 against the reference,
bit-identical results for any thread count, training through mc.fit (resumed bit-identically),
the prototype classifier of adapt / adapt_predict / evaluate, and argument checks."""

from __future__ import annotations

import numpy as np
import pytest

import metacore as mc
from metacore import reference as ref
from numerics import central_diff, random_episodes, rel_err

NETS = [  # (layer sizes, activation, loss head — unused by ProtoNet)
    ([3, 5, 2], "tanh", "mse"),
    ([4, 6, 5, 3], "tanh", "cross_entropy"),
    ([3, 7, 1], "tanh", "logistic"),
    ([5, 8, 4], "relu", "mse"),
]


def theta_for(model, seed=0):
    rng = np.random.default_rng(seed + 11)
    return model.init(seed=seed) + 0.3 * rng.normal(size=model.n_params)


# --- the loss and its gradient ---------------------------------------------------------------
@pytest.mark.parametrize("sizes,act,loss", NETS)
@pytest.mark.parametrize("n_way,k_shot,q_query", [(3, 1, 2), (2, 3, 1), (4, 2, 3)])
def test_loss_and_gradient_match_the_reference(sizes, act, loss, n_way, k_shot, q_query):
    model = mc.MLP(sizes, activation=act, loss=loss)
    batch = random_episodes(model.n_features, n_way=n_way, k_shot=k_shot, q_query=q_query)
    theta = theta_for(model)
    value, g = mc.ProtoNet(model, n_threads=1).meta_value_and_grad(theta, batch)
    want_value, want_g = ref.protonet_value_and_grad(model, theta, batch)
    assert value == pytest.approx(want_value, rel=1e-12)
    assert rel_err(g, want_g) < 1e-11


@pytest.mark.parametrize("sizes,act,loss", [n for n in NETS if n[1] == "tanh"])
def test_gradient_matches_finite_differences(sizes, act, loss):
    model = mc.MLP(sizes, activation=act, loss=loss)
    batch = random_episodes(model.n_features, n_way=3, k_shot=2, q_query=2, seed=3)
    learner = mc.ProtoNet(model, n_threads=1)
    theta = theta_for(model, seed=1)
    _, g = learner.meta_value_and_grad(theta, batch)
    fd = central_diff(lambda t: learner.meta_value(t, batch), theta, 1e-6)
    assert rel_err(g, fd) < 1e-7
    fd_ref = central_diff(lambda t: ref.protonet_value_and_grad(model, t, batch)[0], theta, 1e-6)
    assert rel_err(ref.protonet_value_and_grad(model, theta, batch)[1], fd_ref) < 1e-7


def test_float32_matches_the_reference():
    model = mc.MLP([6, 16, 8, 4], activation="relu", loss="mse")
    batch = random_episodes(6, n_tasks=5, n_way=5, k_shot=1, q_query=3, dtype=np.float32)
    theta = theta_for(model).astype(np.float32)
    value, g = mc.ProtoNet(model).meta_value_and_grad(theta, batch)
    assert g.dtype == np.float32
    want_value, want_g = ref.protonet_value_and_grad(model, theta, batch)
    assert value == pytest.approx(want_value, rel=1e-5)
    assert rel_err(g, want_g) < 1e-4


def test_larger_than_one_block_of_rows():
    """20-way 2-shot, 2 queries: 80 rows per episode, more than one 32-row block of the net."""
    model = mc.MLP([5, 9, 3], activation="tanh")
    batch = random_episodes(5, n_tasks=2, n_way=20, k_shot=2, q_query=2, seed=4)
    theta = theta_for(model)
    value, g = mc.ProtoNet(model).meta_value_and_grad(theta, batch)
    want_value, want_g = ref.protonet_value_and_grad(model, theta, batch)
    assert value == pytest.approx(want_value, rel=1e-12) and rel_err(g, want_g) < 1e-11


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bit_identical_for_any_thread_count(dtype):
    model = mc.MLP([6, 12, 12, 4], activation="relu")
    batch = random_episodes(6, n_tasks=37, n_way=5, k_shot=2, q_query=3, dtype=dtype)
    theta = theta_for(model).astype(dtype)
    results = [mc.ProtoNet(model, n_threads=k).meta_value_and_grad(theta, batch)
               for k in (1, 2, 3, 8)]
    for value, g in results[1:]:
        assert value == results[0][0]
        assert g.tobytes() == results[0][1].tobytes()


def test_query_losses_are_the_per_episode_losses():
    model = mc.MLP([4, 6, 3], activation="tanh")
    batch = random_episodes(4, n_tasks=4)
    theta = theta_for(model)
    losses = mc.ProtoNet(model).query_losses(theta, batch)
    for i in range(batch.n_tasks):
        one = batch.subset([i])
        assert losses[i] == pytest.approx(ref.protonet_value_and_grad(model, theta, one)[0],
                                          rel=1e-12)


# --- the prototype classifier ------------------------------------------------------------------
def test_adapt_gives_prototypes_and_adapt_predict_their_logits():
    model = mc.MLP([4, 7, 3], activation="tanh")
    learner = mc.ProtoNet(model)
    batch = random_episodes(4, n_tasks=1, n_way=3, k_shot=2, q_query=4)
    Xs, ys = batch.support(0)
    Xq, _ = batch.query(0)
    theta = theta_for(model)
    E = ref.predict(model, theta, Xs)
    want = np.stack([E[ys == k].mean(axis=0) for k in range(3)])
    np.testing.assert_allclose(learner.adapt(theta, Xs, ys), want, rtol=1e-12)
    np.testing.assert_allclose(learner.adapt_predict(theta, Xs, ys, Xq),
                               ref.protonet_adapt_predict(model, theta, Xs, ys, Xq), rtol=1e-12)
    with pytest.raises(ValueError, match="steps"):
        learner.adapt_predict(theta, Xs, ys, Xq, steps=3)


def test_evaluate_scores_the_prototype_classifier():
    model = mc.MLP([4, 7, 3], activation="tanh", loss="mse")
    learner = mc.ProtoNet(model)
    batch = random_episodes(4, n_tasks=6, n_way=3, k_shot=2, q_query=4, seed=5)
    theta = theta_for(model)
    report = mc.evaluate(model, theta, batch, steps=(0,), learner=learner)
    accs, losses = [], []
    for i in range(batch.n_tasks):
        Xs, ys = batch.support(i)
        Xq, yq = batch.query(i)
        z = ref.protonet_adapt_predict(model, theta, Xs, ys, Xq)
        accs.append(np.mean(z.argmax(axis=1) == yq))
    np.testing.assert_allclose(report.accuracies[0], accs)
    np.testing.assert_allclose(report.losses[0], learner.query_losses(theta, batch), rtol=1e-10)
    with pytest.raises(ValueError, match="steps"):
        mc.evaluate(model, theta, batch, steps=(0, 1), learner=learner)


def test_evaluate_pads_episodes_with_fewer_classes():
    model = mc.MLP([3, 5, 2], activation="tanh")
    a = random_episodes(3, n_tasks=2, n_way=4, k_shot=1, q_query=2, seed=1)
    b = random_episodes(3, n_tasks=2, n_way=2, k_shot=1, q_query=2, seed=2)
    both = mc.TaskSet.from_arrays([a[0][0], b[0][0]], [a[0][1], b[0][1]], n_support=[4, 2])
    learner = mc.ProtoNet(model)
    report = mc.evaluate(model, theta_for(model), both, steps=(0,), learner=learner)
    np.testing.assert_allclose(report.losses[0], learner.query_losses(theta_for(model), both),
                               rtol=1e-10)


# --- training with the one loop -----------------------------------------------------------------
def pool(n_classes=12, per_class=6, d=5, seed=0):
    """Rows of n_classes Gaussian blobs, grouped by class."""
    rng = np.random.default_rng(seed)
    centres = 2.0 * rng.normal(size=(n_classes, d))
    X = np.repeat(centres, per_class, axis=0) + rng.normal(size=(n_classes * per_class, d))
    return X, np.arange(n_classes + 1) * per_class


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fit_trains_bit_identically_for_any_thread_count_and_on_resume(tmp_path, dtype):
    X, offsets = pool()
    source = mc.tasks.EpisodeSource(X.astype(dtype), offsets, n_way=4, k_shot=2, q_query=2)
    model = mc.MLP([5, 16, 8], activation="relu", loss="mse")
    theta0 = model.init(seed=0, dtype=dtype)

    def problem(threads):
        return mc.MetaObjective(mc.ProtoNet(model), source, meta_batch=6, n_threads=threads)

    full = mc.fit(problem(1), theta0, steps=30, seed=3, progress=False, chunk_size=7)
    other = mc.fit(problem(2), theta0, steps=30, seed=3, progress=False, chunk_size=11)
    assert full.theta.tobytes() == other.theta.tobytes()
    first = mc.fit(problem(1), theta0, steps=12, seed=3, progress=False)
    mc.save(tmp_path / "run", first)
    ck = mc.load(tmp_path / "run")
    resumed = mc.fit(problem(1), ck, steps=18, progress=False)
    assert resumed.theta.tobytes() == full.theta.tobytes()
    losses = full.history.objective
    assert losses[-5:].mean() < losses[:5].mean()


def test_learner_round_trips_through_plain_data():
    learner = mc.ProtoNet(mc.MLP([3, 4, 2], activation="tanh"))
    d = learner.to_dict()
    assert d["kind"] == "ProtoNet" and d["distance"] == "sqeuclidean"
    assert mc.learners.from_dict(d) == learner


# --- argument checks -------------------------------------------------------------------------------
def test_labels_must_describe_an_episode():
    model = mc.MLP([2, 4, 2], activation="tanh")
    learner = mc.ProtoNet(model)
    theta = theta_for(model)
    X = np.zeros((5, 2))
    no_class_1 = mc.TaskSet.from_arrays([X], [np.array([0., 2., 2., 0., 1.])], n_support=3)
    with pytest.raises(ValueError, match="every class 0..2"):
        learner.meta_value_and_grad(theta, no_class_1)
    unseen = mc.TaskSet.from_arrays([X], [np.array([0., 1., 1., 0., 2.])], n_support=3)
    with pytest.raises(ValueError, match="query label 2"):
        learner.meta_value_and_grad(theta, unseen)
    with pytest.raises(ValueError, match="distance"):
        mc.ProtoNet(model, distance="cosine")
    with pytest.raises(ValueError, match="ProtoNet classifies"):
        mc.MetaObjective(learner, mc.tasks.SinusoidSource(), meta_batch=2)
    Xp, offsets = pool(d=3)
    with pytest.raises(ValueError, match="3 features"):
        source = mc.tasks.EpisodeSource(Xp, offsets, n_way=3, k_shot=1, q_query=2)
        mc.MetaObjective(learner, source, meta_batch=2)


def test_the_core_checks_labels_too():
    from metacore import _core
    model = mc.MLP([2, 3, 2], activation="tanh", loss="cross_entropy")
    theta = model.init(dtype=np.float64)
    with pytest.raises(ValueError, match="class 1 has no support row"):
        _core.meta_value_and_grad(model.core_net(), "protonet", 0.0, 1, True, theta,
                                  np.zeros((4, 2)), np.array([0., 1., 0., 1.]) * 2,
                                  np.array([0, 4]), np.array([3]))
    with pytest.raises(ValueError, match="y_support"):
        _core.prototypes(np.zeros((2, 3)), np.array([0.5, 0.0]))


# --- real data: a short run beats the pixel baseline ---------------------------------------------
def test_short_omniglot_run_beats_the_pixel_class_mean():
    """ProtoNet, meta-trained for 150 steps on two small1 alphabets (Greek, Latin ×4 rotations),
    classifies 5-way 1-shot episodes of an unseen small2 alphabet (Tagalog) better than the
    nearest class mean of their raw pixels (the same classifier with the identity embedding)."""
    import os
    import pathlib
    pytest.importorskip("PIL", reason="the Omniglot reader needs Pillow")
    root = pathlib.Path(os.environ.get("METACORE_DATA", pathlib.Path(__file__).resolve().parents[2]
                                       / "shared" / "data")) / "omniglot"
    for name in ("images_background_small1.zip", "images_background_small2.zip"):
        if not (root / name).exists():
            pytest.skip(f"{root / name} is missing (the real data set is not on this machine)")
    train = mc.datasets.omniglot(root / "images_background_small1.zip", alphabets=["Greek", "Latin"])
    test = mc.datasets.omniglot(root / "images_background_small2.zip", alphabets=["Tagalog"],
                                rotations=False)
    model = mc.MLP([784, 64, 32], activation="relu")
    learner = mc.ProtoNet(model)
    problem = mc.MetaObjective(learner, train.source(n_way=20, k_shot=1, q_query=5), meta_batch=2)
    res = mc.fit(problem, model.init(seed=0, dtype=np.float32), steps=150, seed=0, progress=False)
    episodes = test.episodes(100, n_way=5, k_shot=1, q_query=5, seed=1)
    acc = mc.evaluate(model, res.theta, episodes, steps=(0,), learner=learner).at(0, "accuracy")[0]
    base = []
    for i in range(episodes.n_tasks):
        (Xs, ys), (Xq, yq) = episodes.support(i), episodes.query(i)
        d = ((Xq[:, None, :] - Xs[None, :, :]) ** 2).sum(axis=2)   # 1-shot: the class means
        base.append(np.mean(ys[d.argmin(axis=1)] == yq))
    assert acc > np.mean(base) + 0.05, (acc, np.mean(base))
