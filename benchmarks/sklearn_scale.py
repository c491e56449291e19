"""How the scikit-learn estimators fare on data far from unit scale: the measurements behind the
bounds of ``metacore.sklearn.scaling`` (when ``fit`` warns) and behind ``normalize_y``.

1. ``sweep()``: 4 synthetic tasks of 100 rows and 8 columns (y = x·w_t + sin 2x_0; classes: its
   sign), 30 % of the rows held out; every feature column multiplied by s, or offset by s, and
   the same for the target; each estimator at its defaults. Test score (R² or accuracy; the
   meta-learners' few-shot score) per s = 10^k, k = -4..6.
2. ``breast_cancer()``: the issue's case, scikit-learn's breast-cancer table as a user has it:
   4 tasks (quartiles of 'mean texture'), classification of the diagnosis from the 30 raw columns,
   and regression of 'worst area' (185-4254) from the other 29; each estimator and learner at its
   defaults, raw and in ``make_pipeline(StandardScaler(), ...)`` (regressors also with
   ``normalize_y=True``). Score on held-out rows, and whether fit warned.

``PYTHONPATH=python python benchmarks/sklearn_scale.py [sweep|breast_cancer]`` (both by default).
"""

from __future__ import annotations

import sys
import warnings

import numpy as np
from sklearn.datasets import load_breast_cancer
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

import metacore as mc
from metacore.sklearn import (DataScaleWarning, MetaMLPClassifier, MetaMLPRegressor,
                              MultiTaskMLPClassifier, MultiTaskMLPRegressor)

ONE = dict(random_state=0, n_threads=1)
LEARNERS = ("maml", "fomaml", "anil", "metasgd", "reptile", "mamlpp", "imaml")


def _score(make, X, y, g, test):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataScaleWarning)
        try:
            est = make().fit(X[~test], y[~test], groups=g[~test])
        except mc.FitDivergedError:
            return "diverged"
    s = est.score(X[test], y[test], groups=g[test])
    return f"{s:.2f}" if s > -10 else "< -10"


def sweep():
    rng = np.random.default_rng(0)
    T, n, d = 4, 100, 8
    g = np.repeat(np.arange(T), n)
    Z = rng.normal(size=(T * n, d))
    W = rng.normal(size=(T, d)) / np.sqrt(d)
    f = np.einsum("nd,nd->n", Z, W[g]) + np.sin(2 * Z[:, 0])
    test = rng.random(T * n) < 0.3
    ests = {
        "MultiTaskMLPClassifier": lambda: MultiTaskMLPClassifier(**ONE),
        "MultiTaskMLPRegressor": lambda: MultiTaskMLPRegressor(**ONE),
        "MetaMLPClassifier maml": lambda: MetaMLPClassifier(**ONE),
        "MetaMLPRegressor maml": lambda: MetaMLPRegressor(**ONE),
        "MetaMLPClassifier fomaml": lambda: MetaMLPClassifier(learner="fomaml", **ONE),
        "MetaMLPRegressor reptile": lambda: MetaMLPRegressor(learner="reptile", **ONE),
        "MetaMLPRegressor metasgd": lambda: MetaMLPRegressor(learner="metasgd", **ONE),
        "MetaMLPClassifier protonet": lambda: MetaMLPClassifier(learner="protonet", n_way=2,
                                                                k_shot=5, **ONE),
    }
    ks = range(-4, 7)
    for what in ("features × s", "features + s", "target × s", "target + s"):
        print(f"\n{what}, s = 10^k; k:".ljust(34) + "".join(f"{k:>9d}" for k in ks))
        for name, make in ests.items():
            regressor = "Regressor" in name
            if what.startswith("target") and not regressor:
                continue
            cells = []
            for k in ks:
                s = 10.0 ** k
                X = Z * s if what == "features × s" else Z + s if what == "features + s" else Z
                y = (f * s if what == "target × s" else f + s if what == "target + s" else f)
                cells.append(_score(make, X, y if regressor else (f > 0).astype(int), g, test))
            print(f"{name:32s}" + "".join(f"{c:>9s}" for c in cells), flush=True)


def breast_cancer():
    data = load_breast_cancer()
    X, y = data.data, data.target
    task = np.digitize(X[:, 1], np.quantile(X[:, 1], [0.25, 0.5, 0.75]))
    Xr, yr = np.delete(X, 23, axis=1), X[:, 23]           # 'worst area' from the others
    tr, te = train_test_split(np.arange(len(y)), random_state=0, stratify=task)
    cases = [("MultiTaskMLPClassifier", MultiTaskMLPClassifier, {}, False),
             ("MultiTaskMLPClassifier task_heads", MultiTaskMLPClassifier,
              {"task_heads": True}, False),
             ("MultiTaskMLPRegressor", MultiTaskMLPRegressor, {}, True),
             ("MultiTaskMLPRegressor task_heads", MultiTaskMLPRegressor,
              {"task_heads": True}, True)]
    cases += [(f"MetaMLPClassifier {lr}", MetaMLPClassifier, {"learner": lr}, False)
              for lr in LEARNERS]
    cases += [(f"MetaMLPClassifier {lr} 2-way 5-shot", MetaMLPClassifier,
               {"learner": lr, "n_way": 2, "k_shot": 5}, False)
              for lr in ("maml", "protonet", "ridgehead")]
    cases += [(f"MetaMLPRegressor {lr}", MetaMLPRegressor, {"learner": lr}, True)
              for lr in LEARNERS]
    print(f"\n{'breast cancer, 4 tasks':42s}{'raw':>16s}{'StandardScaler':>16s}"
          f"{'+ normalize_y':>16s}")
    for name, cls, kw, regressor in cases:
        A, b = (Xr, yr) if regressor else (X, y)
        cells = []
        for scaled, normalize in ((False, False), (True, False), (True, True)):
            if normalize and not regressor:
                cells.append("")
                continue
            est = cls(**kw, **ONE, **({"normalize_y": True} if normalize else {}))
            Xtr, Xte = A[tr], A[te]
            if scaled:
                scaler = StandardScaler().fit(Xtr)
                Xtr, Xte = scaler.transform(Xtr), scaler.transform(Xte)
            with warnings.catch_warnings(record=True) as seen:
                warnings.simplefilter("always", DataScaleWarning)
                try:
                    est.fit(Xtr, b[tr], groups=task[tr])
                    cell = f"{est.score(Xte, b[te], groups=task[te]):.3f}"
                    cell = cell if float(cell) > -1e3 else "< -1000"
                except mc.FitDivergedError:
                    cell = "diverged"
            warned = any(issubclass(w.category, DataScaleWarning) for w in seen)
            cells.append(cell + (" (w)" if warned else ""))
        print(f"{name:42s}" + "".join(f"{c:>16s}" for c in cells), flush=True)
    print("(w): fit warned (DataScaleWarning). Score: accuracy or R² on the held-out rows, "
          "few-shot for the meta-learners.")


if __name__ == "__main__":
    parts = sys.argv[1:] or ["sweep", "breast_cancer"]
    for part in parts:
        {"sweep": sweep, "breast_cancer": breast_cancer}[part]()
