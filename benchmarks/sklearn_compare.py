"""metacore's scikit-learn estimators against what a scikit-learn user would otherwise do, on two
real data sets cut into tasks, in one run: test score and fit time side by side.

- school (``../shared/data/school/school.mat``, 139 schools, read with mc.datasets.school): each
  school's rows split 75/25; explained variance of the exam score on the test rows. Pooled Ridge,
  pooled Ridge with one intercept per school (one-hot school columns), one Ridge per school,
  pooled MLPRegressor against MultiTaskMLPRegressor (shared head; one small head per school on a
  16-16 trunk, L2 1e-2; one intercept per school, ``task_heads=True, head="bias"``, on a linear
  model and on a net with 16 hidden units, students weighted alike: ``weighting=Fixed(n_i /
  N)``, L2 1e-3, 500 steps; the linear one then warm-started into a full head per school,
  ``set_params(head="full", warm_start=True, solver="sgd")``, 300 steps of 0.03). Features
  standardised on the training rows for every model.
- digits (scikit-learn's bundled data), ten one-vs-rest tasks ("is it digit d?", balanced): test
  accuracy. Pooled and per-task LogisticRegression, pooled MLPClassifier against
  MultiTaskMLPClassifier (one head per task).
- few-shot digits: meta-train on digits 0-4, test 5-way 5-shot episodes of digits 5-9:
  KNeighborsClassifier(1) on each support set against MetaMLPClassifier(n_way=5, k_shot=5) with
  FOMAML, with prototypical networks (learner="protonet") and with iMAML.
- speed: MLPRegressor/MLPClassifier against metacore on the same net (one hidden layer of 64
  relu units) and the same number of epochs (scikit-learn: minibatches of 200 rows per epoch;
  metacore: one full-batch step per epoch), one thread for metacore.

Run: PYTHONPATH=python python benchmarks/sklearn_compare.py [path/to/school.mat]
"""

from __future__ import annotations

import os
import sys
import time
import warnings

import numpy as np
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import accuracy_score, explained_variance_score
from sklearn.model_selection import train_test_split
from sklearn.neighbors import KNeighborsClassifier
from sklearn.neural_network import MLPClassifier, MLPRegressor
from sklearn.preprocessing import StandardScaler

import metacore as mc
from metacore.sklearn import MetaMLPClassifier, MultiTaskMLPClassifier, MultiTaskMLPRegressor

HERE = os.path.dirname(os.path.abspath(__file__))
SCHOOL = os.path.join(HERE, "..", "..", "shared", "data", "school", "school.mat")
EPOCHS = 200
BIAS_HEADS_L2 = 1e-3   # the λ benchmarks/school.py chose on validation in all 10 repetitions
TWO_STAGE_STEPS = 300  # the median of the stage-2 step counts school.py chose on validation
BIAS_HEADS_STEPS = 500


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def split_tasks(Xs, ys, seed=0, stratify=False):
    """Per task 75/25 train/test, then stacked with a task column."""
    parts = {"Xtr": [], "ytr": [], "gtr": [], "Xte": [], "yte": [], "gte": []}
    for t, (X, y) in enumerate(zip(Xs, ys)):
        a, b, c, d = train_test_split(X, y, test_size=0.25, random_state=seed + t,
                                      stratify=y if stratify else None)
        for k, v in zip(("Xtr", "Xte", "ytr", "yte"), (a, b, c, d)):
            parts[k].append(v)
        parts["gtr"].append(np.full(len(c), t))
        parts["gte"].append(np.full(len(d), t))
    return {k: np.concatenate(v) for k, v in parts.items()}


def per_task(make, d, score):
    preds = np.empty_like(d["yte"], dtype=float)
    for t in np.unique(d["gtr"]):
        m = make().fit(d["Xtr"][d["gtr"] == t], d["ytr"][d["gtr"] == t])
        preds[d["gte"] == t] = m.predict(d["Xte"][d["gte"] == t])
    return score(d["yte"], preds)


def report(title, rows, metric):
    print(f"\n{title}\n{'model':<46}{metric:>12}{'fit s':>9}")
    for name, value, seconds in rows:
        print(f"{name:<46}{value:>12.3f}{seconds:>9.2f}")


def school(path):
    ts = mc.datasets.school(path)
    Xs = [ts[i][0] for i in range(ts.n_tasks)]
    ys = [ts[i][1] for i in range(ts.n_tasks)]
    d = split_tasks(Xs, ys)
    sc = StandardScaler().fit(d["Xtr"])
    d["Xtr"], d["Xte"] = sc.transform(d["Xtr"]), sc.transform(d["Xte"])
    mu, sd = d["ytr"].mean(), d["ytr"].std()
    ev = explained_variance_score
    rows = []
    m, s = timed(lambda: Ridge(1.0).fit(d["Xtr"], d["ytr"]))
    rows.append(("pooled Ridge", ev(d["yte"], m.predict(d["Xte"])), s))
    onehot = np.eye(len(Xs))
    m, s = timed(lambda: Ridge(1.0).fit(np.hstack([d["Xtr"], onehot[d["gtr"]]]), d["ytr"]))
    rows.append(("pooled Ridge + one intercept per school",
                 ev(d["yte"], m.predict(np.hstack([d["Xte"], onehot[d["gte"]]]))), s))
    v, s = timed(lambda: per_task(lambda: Ridge(1.0), d, ev))
    rows.append(("one Ridge per school", v, s))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        m, s = timed(lambda: MLPRegressor(hidden_layer_sizes=(64,), max_iter=EPOCHS, n_iter_no_change=EPOCHS,
                                          random_state=0).fit(d["Xtr"], (d["ytr"] - mu) / sd))
    rows.append((f"pooled MLPRegressor(64), {EPOCHS} epochs",
                 ev(d["yte"], m.predict(d["Xte"]) * sd + mu), s))
    for name, kw in (("shared head, 64", dict(hidden_layer_sizes=(64,), alpha=1e-3)),
                     ("a head per school, 16-16, L2 1e-2",
                      dict(hidden_layer_sizes=(16, 16), task_heads=True, alpha=1e-2))):
        est = MultiTaskMLPRegressor(max_iter=EPOCHS, n_threads=1, random_state=0, **kw)
        m, s = timed(lambda: est.fit(d["Xtr"], (d["ytr"] - mu) / sd, groups=d["gtr"]))
        rows.append((f"metacore MultiTaskMLPRegressor, {name}",
                     ev(d["yte"], m.predict(d["Xte"], groups=d["gte"]) * sd + mu), s))
    # one intercept per school (bias-only heads); every student weighs the same (α_i = n_i / N)
    n = np.bincount(d["gtr"])
    pooled = mc.weighting.Fixed(n / n.sum())
    for name, hidden in (("linear", ()), ("16-unit net", (16,))):
        est = MultiTaskMLPRegressor(hidden_layer_sizes=hidden, task_heads=True, head="bias",
                                    alpha=BIAS_HEADS_L2, weighting=pooled,
                                    max_iter=BIAS_HEADS_STEPS, n_threads=1, random_state=0)
        m, s = timed(lambda: est.fit(d["Xtr"], (d["ytr"] - mu) / sd, groups=d["gtr"]))
        rows.append((f"metacore MultiTaskMLPRegressor, {name} + school intercepts",
                     ev(d["yte"], m.predict(d["Xte"], groups=d["gte"]) * sd + mu), s))
        if hidden == ():
            # then a full head per school, each starting at the shared slopes and its intercept
            est.set_params(head="full", warm_start=True, solver="sgd", learning_rate_init=0.03,
                           max_iter=TWO_STAGE_STEPS)
            m, s2 = timed(lambda: est.fit(d["Xtr"], (d["ytr"] - mu) / sd, groups=d["gtr"]))
            rows.append(("metacore MultiTaskMLPRegressor, linear + school intercepts, then "
                         f"warm_start into full heads (SGD 0.03, {TWO_STAGE_STEPS} steps)",
                         ev(d["yte"], m.predict(d["Xte"], groups=d["gte"]) * sd + mu), s + s2))
    report(f"school: {len(Xs)} tasks, {d['Xtr'].shape[0]} train rows, test explained variance",
           rows, "expl. var")


def digits_tasks():
    X, y = load_digits(return_X_y=True)
    X = X / 16.0
    rng = np.random.default_rng(0)
    Xs, ys = [], []
    for digit in range(10):
        pos = np.flatnonzero(y == digit)
        neg = rng.choice(np.flatnonzero(y != digit), pos.shape[0], replace=False)
        rows = np.concatenate([pos, neg])
        Xs.append(X[rows])
        ys.append((y[rows] == digit).astype(int))
    return Xs, ys


def digits():
    d = split_tasks(*digits_tasks(), stratify=True)
    acc = accuracy_score
    rows = []
    m, s = timed(lambda: LogisticRegression(max_iter=1000).fit(d["Xtr"], d["ytr"]))
    rows.append(("pooled LogisticRegression", acc(d["yte"], m.predict(d["Xte"])), s))
    v, s = timed(lambda: per_task(lambda: LogisticRegression(max_iter=1000), d, acc))
    rows.append(("one LogisticRegression per task", v, s))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        m, s = timed(lambda: MLPClassifier(hidden_layer_sizes=(64,), max_iter=EPOCHS, n_iter_no_change=EPOCHS,
                                           random_state=0).fit(d["Xtr"], d["ytr"]))
    rows.append((f"pooled MLPClassifier(64), {EPOCHS} epochs", acc(d["yte"], m.predict(d["Xte"])),
                 s))
    for weighting in (None, "evaldriven"):
        est = MultiTaskMLPClassifier(hidden_layer_sizes=(64,), task_heads=True, weighting=weighting,
                                     max_iter=EPOCHS, n_threads=1, random_state=0)
        m, s = timed(lambda: est.fit(d["Xtr"], d["ytr"], groups=d["gtr"]))
        rows.append((f"metacore MultiTaskMLPClassifier heads, {weighting or 'uniform'}",
                     acc(d["yte"], m.predict(d["Xte"], groups=d["gte"])), s))
    report(f"digits: 10 one-vs-rest tasks, {d['Xtr'].shape[0]} train rows, test accuracy",
           rows, "accuracy")


def rotated_classes(X, y, digits):
    """Class augmentation (the library's digits protocol, mc.tasks.digits): every digit of
    ``digits`` at 0, 90, 180 and 270 degrees as four classes (label 10 * digit + quarter turns).
    Only meta-train digits are augmented; the test episodes stay plain digits 5-9."""
    Xs, ys = [], []
    for d in digits:
        imgs = X[y == d].reshape(-1, 8, 8)
        for r in range(4):
            Xs.append(np.rot90(imgs, r, axes=(1, 2)).reshape(-1, 64))
            ys.append(np.full(len(imgs), 10 * d + r))
    return np.concatenate(Xs), np.concatenate(ys)


def few_shot(n_episodes=200, n_way=5, k_shot=5):
    """5-way 5-shot episodes of digits 5-9, the same episodes for every row. The rotation-
    augmented ProtoNet's recipe (embedding 64-64, 500 Adam steps of meta-batch 8) was chosen on
    episodes of the rotated digits 3 and 4 after meta-training on rotations of 0-2 (never on 5-9)."""
    X, y = load_digits(return_X_y=True)
    X = X / 16.0
    train = y < 5
    est = MetaMLPClassifier(hidden_layer_sizes=(64,), n_way=n_way, k_shot=k_shot, q_query=10, meta_batch=8,
                            inner_lr=0.5, inner_steps=5, learner="fomaml", max_iter=500,
                            learning_rate_init=3e-3, n_threads=1, random_state=0)
    _, fit_s = timed(lambda: est.fit(X[train], y[train]))
    proto = MetaMLPClassifier(hidden_layer_sizes=(64,), learner="protonet", n_way=n_way,
                              k_shot=k_shot, q_query=10, meta_batch=8, max_iter=50,
                              n_threads=1, random_state=0)
    _, fit_p = timed(lambda: proto.fit(X[train], y[train]))
    Xr, yr = rotated_classes(X, y, range(5))
    proto_r = MetaMLPClassifier(hidden_layer_sizes=(64,), learner="protonet", n_way=n_way,
                                k_shot=k_shot, q_query=10, meta_batch=8, max_iter=500,
                                n_threads=1, random_state=0)
    _, fit_r = timed(lambda: proto_r.fit(Xr, yr))
    # iMAML's recipe (net 64-64-5, λ 0.1, 10 proximal steps of 0.1, 1,000 meta-steps, adapted 50
    # steps) was chosen like the rotated ProtoNet's: on rotations of 3 and 4 after meta-training
    # on rotations of 0-2, among λ 0.1 / 0.5, one or two hidden layers, 500 / 1,000 meta-steps
    imaml = MetaMLPClassifier(hidden_layer_sizes=(64,), learner="imaml", n_way=n_way,
                              k_shot=k_shot, q_query=10, meta_batch=8, inner_lr=0.1,
                              inner_steps=10, reg=0.1, max_iter=1000, n_threads=1, random_state=0)
    _, fit_i = timed(lambda: imaml.fit(Xr, yr))
    rng = np.random.default_rng(1)
    acc = {k: [] for k in ("knn", "meta", "pn", "pnr", "imaml")}
    took = dict.fromkeys(acc, 0.0)
    predictors = {
        "knn": lambda sup, qry: KNeighborsClassifier(1).fit(X[sup], y[sup]).predict(X[qry]),
        "meta": lambda sup, qry: est.adapt_predict(X[sup], y[sup], X[qry], steps=10),
        "pn": lambda sup, qry: proto.adapt_predict(X[sup], y[sup], X[qry]),
        "pnr": lambda sup, qry: proto_r.adapt_predict(X[sup], y[sup], X[qry]),
        "imaml": lambda sup, qry: imaml.adapt_predict(X[sup], y[sup], X[qry], steps=50)}
    for _ in range(n_episodes):
        classes = rng.choice(np.arange(5, 10), n_way, replace=False)
        sup = np.concatenate([rng.choice(np.flatnonzero(y == c), k_shot, replace=False)
                              for c in classes])
        qry = np.setdiff1d(np.flatnonzero(np.isin(y, classes)), sup)
        for k, predict in predictors.items():
            p, s = timed(lambda: predict(sup, qry))
            acc[k].append(accuracy_score(y[qry], p))
            took[k] += s
    ci = {k: 1.96 * np.std(v, ddof=1) / np.sqrt(len(v)) for k, v in acc.items()}
    rows = [("KNeighborsClassifier(1) on the support set", np.mean(acc["knn"]), took["knn"]),
            ("metacore MetaMLPClassifier FOMAML (adapt 10 steps)", np.mean(acc["meta"]),
             took["meta"]),
            ("metacore MetaMLPClassifier ProtoNet, 64-64", np.mean(acc["pn"]), took["pn"]),
            ("metacore MetaMLPClassifier ProtoNet, 64-64, rotated 0-4 (20 classes)",
             np.mean(acc["pnr"]), took["pnr"]),
            ("metacore MetaMLPClassifier iMAML, 64-64-5, rotated 0-4, 50 adapt steps",
             np.mean(acc["imaml"]), took["imaml"])]
    report(f"few-shot digits 5-9: {n_way}-way {k_shot}-shot, {n_episodes} episodes, mean query "
           f"accuracy (time: all episodes; meta-training on 0-4 took {fit_s:.2f} s FOMAML, "
           f"{fit_p:.2f} s ProtoNet, {fit_r:.2f} s ProtoNet on rotated classes, {fit_i:.2f} s "
           f"iMAML; 95% CI half-"
           f"widths: " + ", ".join(f"{k} {v:.3f}" for k, v in ci.items()) + ")", rows,
           "accuracy")


def speed(n_rows=2000, d=64):
    """Same net (d-64-1), same epochs, same data: fit time only."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(n_rows, d))
    y = np.sin(X[:, 0]) + X[:, 1] * X[:, 2]
    rows = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        _, s = timed(lambda: MLPRegressor(hidden_layer_sizes=(64,), max_iter=EPOCHS, n_iter_no_change=EPOCHS,
                                          random_state=0).fit(X, y))
        rows.append((f"MLPRegressor, minibatch 200, {EPOCHS} epochs", np.nan, s))
        _, s = timed(lambda: MLPRegressor(hidden_layer_sizes=(64,), max_iter=EPOCHS, n_iter_no_change=EPOCHS,
                                          batch_size=n_rows, random_state=0).fit(X, y))
        rows.append((f"MLPRegressor, full batch, {EPOCHS} epochs", np.nan, s))
    for dtype in ("float32", "float64"):
        est = MultiTaskMLPRegressor(hidden_layer_sizes=(64,), max_iter=EPOCHS, dtype=dtype, n_threads=1,
                                    random_state=0)
        _, s = timed(lambda: est.fit(X, y))
        rows.append((f"metacore {dtype}, full batch, {EPOCHS} steps", np.nan, s))
    report(f"speed: {n_rows} rows x {d} features, net {d}-64-1", rows, "")


if __name__ == "__main__":
    path = sys.argv[1] if len(sys.argv) > 1 else SCHOOL
    t0 = time.perf_counter()
    if os.path.exists(path):
        school(path)
    else:
        print(f"school data not found at {path}: skipped")
    digits()
    few_shot()
    speed()
    print(f"\ntotal wall time {time.perf_counter() - t0:.1f} s")
