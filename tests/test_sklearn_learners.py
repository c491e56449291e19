"""The meta-learning estimators with the learners added after the first wave: MAML++
("mamlpp"), iMAML ("imaml") and the R2D2 ridge head ("ridgehead") — each wired to the learner it
names (checked through the packed parameters and against a direct NumPy computation), cloned,
and refused where it cannot apply."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("sklearn")
from sklearn.base import clone  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402

import metacore as mc  # noqa: E402
from metacore.sklearn import MetaMLPClassifier, MetaMLPRegressor  # noqa: E402


def _digits():
    X, y = load_digits(return_X_y=True)
    return X / 16.0, y


def _episode(y, classes, k, seed):
    rng = np.random.default_rng(seed)
    support = np.concatenate([rng.choice(np.flatnonzero(y == c), k, replace=False)
                              for c in classes])
    query = np.setdiff1d(np.flatnonzero(np.isin(y, classes)), support)
    return support, query


def test_ridgehead_estimator_matches_a_direct_ridge_solve():
    X, y = _digits()
    train = y < 5
    est = MetaMLPClassifier(hidden_layer_sizes=(16,), learner="ridgehead", reg=0.5, n_way=3,
                            k_shot=4, q_query=5, meta_batch=4, max_iter=60,
                            learning_rate_init=0.01, n_threads=1, random_state=0)
    est.fit(X[train], y[train])
    P = mc.MLP([64, 16]).n_params
    assert est.params_.shape == (P + 2,) and np.isfinite(est.loss_curve_).all()
    log_reg, scale = est.params_[P], est.params_[P + 1]
    assert log_reg != np.float32(np.log(0.5))                # λ is learned from reg = 0.5
    new_classes = [9, 5, 7]
    support, query = _episode(y, new_classes, 4, seed=2)
    # oracle: W = [E,1]ᵀ([E,1][E,1]ᵀ + λI)⁻¹ Y in float64, logits s·[E_q,1]W, softmax
    model = mc.MLP([64, 16])
    emb = lambda rows: np.hstack([model.predict(est.theta_, X[rows].astype(np.float32))  # noqa
                                  .astype(np.float64), np.ones((rows.size, 1))])
    Es, Eq = emb(support), emb(query)
    classes = np.array(sorted(new_classes))
    Y = (y[support][:, None] == classes[None]).astype(np.float64)
    lam = np.exp(np.float64(log_reg))
    W = Es.T @ np.linalg.solve(Es @ Es.T + lam * np.eye(len(support)), Y)
    logits = float(scale) * Eq @ W
    want = np.exp(logits - logits.max(axis=1, keepdims=True))
    want /= want.sum(axis=1, keepdims=True)
    adapted = est.adapt(X[support], y[support])
    assert adapted.classes_.tolist() == classes.tolist()
    np.testing.assert_allclose(adapted.predict_proba(X[query]), want, atol=2e-4)
    assert est.adapt_predict(X[support], y[support], X[query]).tolist() == \
        adapted.predict(X[query]).tolist()
    assert adapted.score(X[query], y[query]) > 0.6          # chance: 1/3


def test_mamlpp_estimator_learns_per_step_per_layer_rates():
    X, y = _digits()
    train = y < 5
    est = MetaMLPClassifier(hidden_layer_sizes=(16,), learner="mamlpp", inner_steps=3,
                            inner_lr=0.3, n_way=3, k_shot=4, q_query=5, meta_batch=4,
                            max_iter=30, learning_rate_init=0.01, n_threads=1, random_state=0)
    est.fit(X[train], y[train])
    learner = est._learner()
    assert isinstance(learner, mc.MAML) and learner.per_step_rates == "layer"
    assert learner.multi_step_loss and learner.msl_anneal_steps == 3
    assert learner.first_order_until == 10
    model = mc.MLP([64, 16, 3], loss="cross_entropy")
    rates = est.params_[model.n_params:].reshape(3, model.n_layers)
    assert rates.shape == (3, 2) and not np.allclose(rates, 0.3)   # learned away from 0.3
    support, query = _episode(y, [9, 5, 7], 4, seed=3)
    adapted = est.adapt(X[support], y[support])
    # direct: three SGD steps in float64 (the reference's loss gradient), step j moving layer l
    # by rates[j, l] times its gradient
    from metacore.reference.net import loss_and_grad
    theta = est.params_[:model.n_params].astype(np.float64)
    sizes = [64 * 16 + 16, 16 * 3 + 3]                     # layer 0, layer 1 (W and b)
    Xs = X[support].astype(np.float64)
    ys = np.searchsorted(np.array([5, 7, 9]), y[support]).astype(np.float64)
    for j in range(3):
        theta = theta - np.repeat(rates[j].astype(np.float64), sizes) * \
            loss_and_grad(model, theta, Xs, ys)[1]
    np.testing.assert_allclose(adapted.theta_, theta, rtol=0, atol=5e-4)


def test_imaml_regressor_adapts_with_the_proximal_inner_loop():
    rng = np.random.default_rng(0)
    g = np.repeat(np.arange(12), 30)
    X = rng.uniform(-3, 3, size=(g.size, 1))
    y = np.sin(X[:, 0] + rng.uniform(0, np.pi, 12)[g]) * rng.uniform(0.5, 2, 12)[g]
    est = MetaMLPRegressor(hidden_layer_sizes=(16,), learner="imaml", reg=2.0, inner_steps=3,
                           inner_lr=0.05, max_iter=40, learning_rate_init=0.01, n_threads=1,
                           random_state=0).fit(X, y, groups=g)
    learner = est._learner()
    assert isinstance(learner, mc.IMAML) and learner.reg == 2.0
    Xs, ys = X[:10], y[:10]
    want = learner.adapt(est.params_, Xs.astype(np.float32), ys.astype(np.float32))
    np.testing.assert_array_equal(est.adapt(Xs, ys).theta_, want)
    assert np.isfinite(est.loss_curve_).all()


@pytest.mark.parametrize("learner", ["mamlpp", "imaml", "ridgehead"])
def test_new_learners_clone_and_name_their_errors(learner):
    est = MetaMLPClassifier(learner=learner, reg=0.3)
    assert clone(est).get_params()["reg"] == 0.3 and clone(est).learner == learner
    X, y = _digits()
    with pytest.raises(ValueError, match="reg"):
        MetaMLPClassifier(learner=learner, reg=0.0, n_way=2, k_shot=2,
                          max_iter=2).fit(X[:60], y[:60])
    if learner == "ridgehead":
        with pytest.raises(ValueError, match="n_way and k_shot"):
            MetaMLPClassifier(learner=learner, max_iter=2).fit(X[:40], y[:40])


def test_task_labels_match_by_value_across_numeric_dtypes():
    """Groups fitted as floats name the same tasks as ints at predict (and the reverse); labels
    of another kind are refused naming both dtypes."""
    from metacore.sklearn import MultiTaskMLPRegressor
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 3))
    y = X @ np.array([1.0, -2.0, 0.5]) + np.repeat([0.0, 5.0], 20)
    for fit_g, pred_g in (([0.0, 1.0], [0, 1]), ([0, 1], [0.0, 1.0])):
        est = MultiTaskMLPRegressor((4,), task_heads=True, head="bias", max_iter=5,
                                    random_state=0).fit(X, y, groups=np.repeat(fit_g, 20))
        np.testing.assert_array_equal(est.predict(X[:2], groups=pred_g),
                                      est.predict(X[:2], groups=fit_g))
    with pytest.raises(ValueError, match="dtype"):
        est.predict(X[:2], groups=["a", "b"])


UNUSED = {"reg": ("imaml", "ridgehead"), "outer_lr": ("reptile",),
          "inner_lr": ("maml", "fomaml", "anil", "metasgd", "reptile", "mamlpp", "imaml"),
          "inner_steps": ("maml", "fomaml", "anil", "metasgd", "reptile", "mamlpp", "imaml")}
ALL_LEARNERS = ("maml", "fomaml", "anil", "metasgd", "reptile", "mamlpp", "imaml", "protonet",
                "ridgehead")


@pytest.mark.parametrize("learner", ALL_LEARNERS)
@pytest.mark.parametrize("name, value", [("reg", 0.37), ("outer_lr", 0.05), ("inner_lr", 0.02),
                                         ("inner_steps", 2)])
def test_a_hyper_parameter_the_learner_ignores_warns_at_fit(learner, name, value):
    """scikit-learn's convention: __init__ stores, fit validates. A hyper-parameter set away from
    its default that the chosen learner does not use gives a UserWarning at fit naming it and
    the learner (as LogisticRegression does for l1_ratio without elasticnet), so a grid over
    learner × reg still runs; a used one, or the default, gives none. Its value is still
    validated (reg <= 0 is a ValueError naming reg for every learner)."""
    import warnings
    X, y = _digits()
    X, y = X[y < 4][:80], y[y < 4][:80]
    g = np.arange(80) % 4
    kw = dict(hidden_layer_sizes=(8,), learner=learner, max_iter=1, meta_batch=2,
              resample_every=1, random_state=0)
    if learner in ("protonet", "ridgehead"):
        kw.update(n_way=2, k_shot=2, q_query=2)
    used = learner in UNUSED[name]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        MetaMLPClassifier(**kw, **{name: value}).fit(X, y, groups=g)
        MetaMLPClassifier(**kw).fit(X, y, groups=g)                   # defaults: silent
    mine = [w for w in caught if issubclass(w.category, UserWarning)
            and str(w.message).startswith(f"{name}=")]
    if used:
        assert mine == []
    else:
        assert len(mine) == 1 and str(mine[0].message) == (
            f"{name}={value!r} is ignored by learner={learner!r}: only "
            f"{', '.join(map(repr, UNUSED[name]))} use {name}")
        assert mine[0].filename == __file__        # points at the caller's fit
    if name == "reg":
        with pytest.raises(ValueError, match=r"^reg must be > 0"):
            MetaMLPClassifier(**kw, reg=-1.0).fit(X, y, groups=g)


@pytest.mark.parametrize("episodes", [True, False])
def test_query_and_q_query_are_named_when_the_episode_kind_ignores_them(episodes):
    """query sizes the episodes without n_way/k_shot, q_query those with them: the other one,
    when set, warns at fit naming it."""
    import warnings
    X, y = _digits()
    X, y = X[y < 4][:80], y[y < 4][:80]
    g = np.arange(80) % 4
    kw = dict(hidden_layer_sizes=(8,), max_iter=1, meta_batch=2, resample_every=1,
              random_state=0, query=3, q_query=2)
    if episodes:
        kw.update(n_way=2, k_shot=2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        MetaMLPClassifier(**kw).fit(X, y, groups=g)
    got = [str(w.message) for w in caught if "query" in str(w.message)]
    assert got == (["query=3 is ignored with n_way/k_shot episodes: q_query sets their query "
                    "rows (per class)"] if episodes else
                   ["q_query=2 is ignored without n_way and k_shot: query sets the query rows "
                    "of an episode"])
