"""What an estimator holds between calls follows its settings and its last finished fit — never
a stale copy: a set_params after fit acts as it does after a pickle round trip (which rebuilds
everything), a refit replaces what adapt() left, a fit that does not finish keeps the previous
model, an adapted N-way model gives one probability per class it was adapted to, and score
refuses a y that does not match X."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

pytest.importorskip("sklearn")

import metacore as mc  # noqa: E402
from metacore.sklearn import (MetaMLPClassifier, MetaMLPRegressor,  # noqa: E402
                              MultiTaskMLPClassifier, MultiTaskMLPRegressor)


def _data(seed=0, n_features=3):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(60, n_features))
    return X, X.sum(1), np.repeat(np.arange(6), 10), np.tile(np.arange(5), 12)


def _roundtrip(est):
    return pickle.loads(pickle.dumps(est))


AFTER_FIT = [   # (estimator, settings changed after fit)
    (MetaMLPRegressor((8,), max_iter=20, random_state=0), dict(inner_lr=0.5)),
    (MetaMLPRegressor((8,), max_iter=20, random_state=0), dict(inner_steps=4)),
    (MetaMLPRegressor((8,), max_iter=20, random_state=0), dict(n_threads=2)),
    (MetaMLPRegressor((8,), max_iter=20, random_state=0), dict(activation="tanh")),
    # (iMAML's proximal term is 0 at the first inner step, φ = θ: three steps, so λ acts)
    (MetaMLPRegressor((8,), learner="imaml", reg=1.0, inner_steps=3, inner_lr=0.05,
                      max_iter=10, random_state=0), dict(reg=5.0)),
    (MetaMLPRegressor((8,), learner="reptile", max_iter=10, random_state=0),
     dict(inner_lr=0.2, inner_steps=3)),
    (MetaMLPClassifier((8,), learner="ridgehead", n_way=2, k_shot=1, max_iter=10,
                       random_state=0), dict(reg=10.0)),
]


@pytest.mark.parametrize("est, change", AFTER_FIT,
                         ids=[f"{e.learner}-{'-'.join(c)}" for e, c in AFTER_FIT])
def test_settings_changed_after_fit_act_as_after_a_pickle_round_trip(est, change):
    X, y, g, yc = _data()
    target = yc % 2 if est.n_way is None and isinstance(est, MetaMLPClassifier) else (
        yc if isinstance(est, MetaMLPClassifier) else y)
    est.fit(X, target, groups=g)
    ys = target[:10] % 2 if isinstance(est, MetaMLPClassifier) else target[:10]
    before = est.adapt_predict(X[:10], ys, X[10:20])
    est.set_params(**change)
    after = est.adapt_predict(X[:10], ys, X[10:20])
    np.testing.assert_array_equal(after, _roundtrip(est).adapt_predict(X[:10], ys, X[10:20]))
    if "n_threads" in change:      # results do not depend on the thread count
        np.testing.assert_array_equal(after, before)
    elif isinstance(est, MetaMLPRegressor):
        assert not np.array_equal(after, before)     # the change acted


def test_multitask_activation_changed_after_fit_acts_as_after_a_pickle_round_trip():
    X, y, g, _ = _data()
    est = MultiTaskMLPRegressor((8,), max_iter=20, random_state=0).fit(X, y, groups=g)
    est.set_params(activation="tanh")
    np.testing.assert_array_equal(est.predict(X), _roundtrip(est).predict(X))


def test_a_changed_learner_kind_is_refused_until_refit():
    X, y, g, _ = _data()
    est = MetaMLPRegressor((8,), max_iter=5, random_state=0).fit(X, y, groups=g)
    for kind in ("reptile", "metasgd", "imaml"):
        est.set_params(learner=kind)
        for copy in (est, _roundtrip(est)):
            with pytest.raises(ValueError, match=r"meta-trained with learner='maml'"):
                copy.adapt_predict(X[:5], y[:5], X[5:8])
    est.fit(X, y, groups=g)             # refitted with learner='imaml': fine again
    assert np.isfinite(est.adapt_predict(X[:5], y[:5], X[5:8])).all()


@pytest.mark.parametrize("learner", ["maml", "protonet", "ridgehead"])
@pytest.mark.parametrize("n_way, support_classes", [(2, [3]), (3, [1, 4]), (3, [2])])
def test_an_adapted_n_way_model_gives_one_probability_per_class_it_saw(learner, n_way,
                                                                        support_classes):
    X, _, g, yc = _data()
    est = MetaMLPClassifier((4,), learner=learner, n_way=n_way, k_shot=1, max_iter=3,
                            random_state=0).fit(X, yc, groups=g)
    ys = np.repeat(support_classes, 2)
    adapted = est.adapt(X[:ys.shape[0]], ys)
    p = adapted.predict_proba(X[20:30])
    np.testing.assert_array_equal(adapted.classes_, support_classes)
    assert p.shape == (10, len(support_classes))
    np.testing.assert_allclose(p.sum(axis=1), 1.0)
    assert set(adapted.predict(X[20:30])) <= set(support_classes)
    np.testing.assert_array_equal(adapted.classes_[p.argmax(axis=1)], adapted.predict(X[20:30]))


@pytest.mark.parametrize("learner", ["maml", "protonet"])
def test_refitting_an_adapted_estimator_replaces_what_adapt_left(learner):
    X, _, g, yc = _data()
    est = MetaMLPClassifier((8,), learner=learner, n_way=2, k_shot=1, max_iter=5,
                            random_state=0)
    adapted = est.fit(X, yc, groups=g).adapt(X[:10], yc[:10] % 2)
    X4 = np.hstack([X, X[:, :1]])          # refitted on other data: 4 features
    adapted.fit(X4, yc, groups=g)
    assert not hasattr(adapted, "adapted_") and not hasattr(adapted, "support_")
    np.testing.assert_array_equal(adapted.classes_, np.arange(5))
    with pytest.raises(ValueError, match="adapt"):
        adapted.predict(X4[:5])
    again = adapted.adapt(X4[:10], yc[:10] % 2)
    assert again.predict_proba(X4[:3]).shape == (3, 2)


@pytest.mark.parametrize("est", [MetaMLPRegressor((4,), max_iter=3, random_state=0),
                                 MetaMLPClassifier((4,), max_iter=3, random_state=0)])
@pytest.mark.parametrize("extra", [-7, -1, 1, 9])
def test_score_refuses_a_y_of_another_length(est, extra):
    X, y, g, yc = _data()
    target = yc if isinstance(est, MetaMLPClassifier) else y
    est.fit(X, target, groups=g)
    bad = target[:extra] if extra < 0 else np.r_[target, target[:extra]]
    with pytest.raises(ValueError, match=r"y must have one entry per row of X \(60\)"):
        est.score(X, bad, groups=g)


def _snapshot(est, X):
    return est.predict(X, **({"groups": np.zeros(len(X), int)}
                             if isinstance(est, (MultiTaskMLPRegressor, MultiTaskMLPClassifier))
                             else {}))


@pytest.mark.parametrize("make", [
    lambda: MetaMLPRegressor((4,), max_iter=3, random_state=0),
    lambda: MultiTaskMLPRegressor((4,), max_iter=3, random_state=0),
    lambda: MultiTaskMLPClassifier((4,), max_iter=3, random_state=0),
], ids=["meta", "multitask-regressor", "multitask-classifier"])
@pytest.mark.parametrize("failure", ["refused", "diverged", "interrupted"])
def test_a_refit_that_does_not_finish_keeps_the_previous_model(make, failure, monkeypatch):
    X, y, g, yc = _data()
    est = make()
    target = yc if isinstance(est, MultiTaskMLPClassifier) else y
    est.fit(X, target, groups=g)
    state = {k: v for k, v in vars(est).items() if k != "_cache"}
    before = _snapshot(est, X)
    X5 = np.random.default_rng(1).normal(size=(60, 5))     # the new fit: 5 features
    if failure == "refused":
        est.set_params(max_iter=0)
        error = ValueError
    else:
        from metacore.sklearn import meta, multitask
        error = mc.FitDivergedError if failure == "diverged" else KeyboardInterrupt

        def fail(*args, **kwargs):
            raise (error("training diverged at step 2 (lr 0.001)", 2, None, None)
                   if failure == "diverged" else KeyboardInterrupt())
        for module in (meta, multitask):
            monkeypatch.setattr(module, "_engine_fit", fail)
    with pytest.raises(error):
        est.fit(X5, target, groups=g)
    assert est.n_features_in_ == 3
    np.testing.assert_array_equal(_snapshot(est, X), before)
    for k, v in state.items():
        assert np.array_equal(vars(est)[k], v) if isinstance(v, np.ndarray) else \
            vars(est)[k] == v or k in ("max_iter",), k
    with pytest.raises(ValueError, match="features"):
        _snapshot(est, X5)


def test_an_unfitted_estimator_whose_first_fit_fails_stays_unfitted(monkeypatch):
    from sklearn.exceptions import NotFittedError
    from metacore.sklearn import meta
    X, y, g, _ = _data()
    monkeypatch.setattr(meta, "_engine_fit", lambda *a, **k: (_ for _ in ()).throw(
        KeyboardInterrupt()))
    est = MetaMLPRegressor((4,), max_iter=3)
    with pytest.raises(KeyboardInterrupt):
        est.fit(X, y, groups=g)
    with pytest.raises(NotFittedError):
        est.predict(X)


@pytest.mark.parametrize("fraction", [0.01, 0.2, 0.5, 0.75, 0.9, 0.98])
@pytest.mark.parametrize("rows", [2, 3, 5, 20])
def test_evaldriven_holds_out_at_least_one_and_at_most_all_but_one_row(fraction, rows):
    rng = np.random.default_rng(rows)
    X = rng.normal(size=(6 * rows, 3))
    g = np.repeat(np.arange(6), rows)
    est = MultiTaskMLPRegressor((4,), weighting="evaldriven", validation_fraction=fraction,
                                max_iter=4, random_state=0).fit(X, X.sum(1), groups=g)
    assert np.isfinite(est.task_weights_).all() and est.task_weights_.shape == (6,)


def test_a_setting_the_fit_ignores_is_warned_about_at_the_callers_line():
    X, y, g, _ = _data()
    for est in (MultiTaskMLPRegressor((3,), validation_fraction=0.5, max_iter=2),
                MetaMLPRegressor((3,), reg=3.0, max_iter=2)):
        with pytest.warns(UserWarning, match="ignored") as record:
            est.fit(X, y, groups=g)
        assert record[0].filename == __file__


def test_mamlpp_refuses_another_inner_steps_until_refit():
    # its θ holds learned rates for each of the inner steps it was fitted with
    X, y, g, _ = _data()
    est = MetaMLPRegressor((8,), learner="mamlpp", inner_steps=2, max_iter=5,
                           random_state=0).fit(X, y, groups=g)
    est.set_params(inner_steps=3)
    for copy in (est, _roundtrip(est)):
        with pytest.raises(ValueError, match=r"inner_steps=3, but this MAML\+\+ model learned "
                                             r"its rates for 2 inner step"):
            copy.adapt(X[:5], y[:5])
    est.fit(X, y, groups=g)
    assert np.isfinite(est.adapt_predict(X[:5], y[:5], X[5:8])).all()
