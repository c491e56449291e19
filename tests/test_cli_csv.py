"""Your own data on the command line: the csv keys of an experiment file (support, shuffle,
stratify, standardize, episodes), errors naming the config key, task names and per-task scores in
results.json, and `metacore predict` round trips (the stored scaling applied; the same numbers as
adapting in-process with the NumPy-scaled rows)."""

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import metacore as mc
from metacore.app import config, experiment
from metacore.app.config import ConfigError

PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(mc.__file__)))
FEATURES = ["size", "price", "promo"]


def run(*args, cwd):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [PACKAGE_ROOT] + ([os.environ["PYTHONPATH"]] if "PYTHONPATH" in os.environ else [])))
    return subprocess.run([sys.executable, "-m", "metacore", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def write_csv(path, rows, header):
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)


def make_data(folder, n_tasks=8, n_rows=16, classes=False, seed=0):
    """Tasks 'shop0'.. with features on very different scales (so scaling matters); a linear
    target per task, or its sign as a class label."""
    rng = np.random.default_rng(seed)
    rows = []
    for t in range(n_tasks):
        w = rng.normal(size=3)
        X = rng.normal(size=(n_rows, 3)) * [1000.0, 0.01, 1.0] + [5000.0, 2.0, 0.0]
        z = ((X - [5000.0, 2.0, 0.0]) / [1000.0, 0.01, 1.0]) @ w
        y = (z > 0).astype(int) if classes else z
        rows += [[f"shop{t}", *map(repr, x.tolist()), repr(float(v)) if not classes else str(int(v))]
                 for x, v in zip(X, y)]
    path = folder / "data" / "shops.csv"
    path.parent.mkdir(exist_ok=True)
    write_csv(path, rows, ["shop", *FEATURES, "sales"])
    return path


EXPERIMENT = """
name = "shops"
[tasks]
family = "csv"
path = "data/shops.csv"
task_column = "shop"
target = "sales"
loss = "{loss}"
support = 0.5
shuffle = true
standardize = true
test_fraction = 0.25
{extra}
[model]
hidden = [8]
[learner]
kind = "{kind}"
inner_lr = 0.1
[train]
steps = 40
meta_batch = 4
[evaluate]
steps = [0, 1, 3]
baselines = []
plot = false
"""


def experiment_file(folder, kind="maml", loss="mse", extra=""):
    path = folder / "shops.toml"
    path.write_text(EXPERIMENT.format(kind=kind, loss=loss, extra=extra))
    return path


def raw_rows(path):
    with open(path) as fh:
        rows = list(csv.DictReader(fh))
    names = np.array([r["shop"] for r in rows])
    X = np.array([[float(r[c]) for c in FEATURES] for r in rows])
    y = np.array([float(r["sales"]) for r in rows])
    return names, X, y


def test_train_standardizes_on_training_tasks_and_predict_round_trips(tmp_path):
    data = make_data(tmp_path)
    cfg_path = experiment_file(tmp_path)
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    # the data path is relative to the TOML file, not to the folder the command runs in
    r = run("train", str(cfg_path), "--output", str(tmp_path / "out"), "--quiet", cwd=elsewhere)
    assert r.returncode == 0, r.stderr
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    ck = mc.load(tmp_path / "out" / "checkpoint.npz")
    names, X, y = raw_rows(data)
    train, test = results["train_tasks"], results["test_tasks"]
    assert sorted(train + test) == sorted(set(names)) and not set(train) & set(test)
    assert len(test) == 2 and ck.info["test_tasks"] == test and ck.info["features"] == FEATURES

    # the stored scaling: the training tasks' rows only (oracle: NumPy on the raw file)
    on_train = np.isin(names, train)
    mean, std = X[on_train].mean(axis=0), X[on_train].std(axis=0)
    np.testing.assert_allclose(ck.info["standardize"]["mean"], mean, rtol=1e-12)
    np.testing.assert_allclose(ck.info["standardize"]["scale"], std, rtol=1e-12)
    assert not np.allclose(mean, X.mean(axis=0))   # the held-out tasks did not enter it

    # per-task scores: one series per held-out task; their mean is the report's mean
    per = results["per_task"]["MAML"]
    assert per["steps"] == [0, 1, 3] and sorted(per["loss"]) == sorted(test)
    summary = results["reports"][0]["summary"]
    for j, row in enumerate(summary):
        assert np.mean([per["loss"][t][j] for t in test]) == pytest.approx(row["loss"], rel=1e-9)

    # predict a held-out task: 6 labelled rows adapt θ, the other rows are predicted
    task = test[0]
    rows = np.flatnonzero(names == task)
    sup, qry = rows[:6], rows[6:]
    write_csv(tmp_path / "support.csv", [[task, *X[i], y[i]] for i in sup],
              ["shop", *FEATURES, "sales"])
    write_csv(tmp_path / "new.csv", [[task, *X[i]] for i in qry], ["shop", *FEATURES])
    (tmp_path / "pred.csv").write_text("old contents\n")
    r = run("predict", str(tmp_path / "out" / "checkpoint.npz"), "--input", "new.csv",
            "--support", "support.csv", "--output", "pred.csv", "--steps", "3", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    with open(tmp_path / "pred.csv") as fh:
        out = list(csv.DictReader(fh))
    assert list(out[0]) == ["shop", *FEATURES, "prediction"] and len(out) == qry.shape[0]
    got = np.array([float(o["prediction"]) for o in out])
    # in-process: the same θ adapted on rows scaled by NumPy (not the stored Standardizer)
    learner = mc.MAML(ck.model, inner_lr=0.1)
    Xs = ((X[sup] - mean) / std).astype(np.float32)
    Xq = ((X[qry] - mean) / std).astype(np.float32)
    want = learner.adapt_predict(ck.theta, Xs, y[sup].astype(np.float32), Xq, steps=3)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    # the oracle of the adaptation itself: 3 plain SGD steps with the reference net
    assert not np.allclose(got, ck.model.predict(ck.theta, Xq), atol=1e-4)
    leftovers = [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]
    assert leftovers == []   # written through a temporary file, renamed over pred.csv

    # no --support: θ as trained, on the scaled rows
    r = run("predict", str(tmp_path / "out" / "checkpoint.npz"), "--input", "new.csv",
            "--output", "plain.csv", "--quiet", cwd=tmp_path)
    assert (r.returncode, r.stdout) == (0, "")
    with open(tmp_path / "plain.csv") as fh:
        plain = np.array([float(o["prediction"]) for o in csv.DictReader(fh)])
    np.testing.assert_allclose(plain, ck.model.predict(ck.theta, Xq), rtol=1e-5, atol=1e-5)


def test_predict_adapts_each_task_of_the_input_on_its_own_support_rows(tmp_path):
    data = make_data(tmp_path, classes=True)
    cfg_path = experiment_file(tmp_path, kind="metasgd", loss="cross_entropy",
                               extra="stratify = true\nepisodes = true")
    r = run("train", str(cfg_path), "--output", "out", "--quiet", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    ck = mc.load(tmp_path / "out" / "checkpoint.npz")
    names, X, y = raw_rows(data)
    test = ck.info["test_tasks"]
    sup_rows = [np.flatnonzero(names == t)[:8] for t in test]
    qry_rows = [np.flatnonzero(names == t)[8:] for t in test]
    write_csv(tmp_path / "s.csv", [[names[i], *X[i], int(y[i])] for i in np.concatenate(sup_rows)],
              ["shop", *FEATURES, "sales"])
    write_csv(tmp_path / "q.csv", [[names[i], *X[i]] for i in np.concatenate(qry_rows)],
              ["shop", *FEATURES])
    r = run("predict", "out/checkpoint.npz", "--input", "q.csv", "--support", "s.csv",
            "--output", "p.csv", "--quiet", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    with open(tmp_path / "p.csv") as fh:
        out = list(csv.DictReader(fh))
    assert list(out[0]) == ["shop", *FEATURES, "prediction", "p_0", "p_1"]
    scale = ck.info["standardize"]
    learner = mc.MetaSGD(ck.model)
    done = 0
    for s, q in zip(sup_rows, qry_rows):
        Xs = ((X[s] - scale["mean"]) / np.array(scale["scale"])).astype(np.float32)
        Xq = ((X[q] - scale["mean"]) / np.array(scale["scale"])).astype(np.float32)
        logits = learner.adapt_predict(ck.theta, Xs, y[s].astype(np.float32), Xq)
        p = np.exp(logits - logits.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        rows = out[done:done + q.shape[0]]
        done += q.shape[0]
        assert [int(o["prediction"]) for o in rows] == logits.argmax(axis=1).tolist()
        np.testing.assert_allclose([float(o["p_1"]) for o in rows], p[:, 1], atol=1e-5)


@pytest.mark.parametrize("args, words", [
    (["--input", "missing.csv"], ["missing.csv"]),
    (["--input", "bad.csv"], ["column 'promo'", "--input bad.csv"]),
    (["--input", "ok.csv", "--support", "ok.csv"], ["--support ok.csv", "'sales'"]),
    (["--input", "ok.csv", "--steps", "-1"], ["--steps"]),
])
def test_predict_errors_name_the_file_and_column(tmp_path, args, words):
    make_data(tmp_path)
    cfg = config.load(experiment_file(tmp_path), overrides=["train.steps=2"])
    cfg.output = str(tmp_path / "out")
    experiment.run_train(cfg, quiet=True)
    write_csv(tmp_path / "bad.csv", [["a", 1.0, 2.0]], ["shop", "size", "price"])
    write_csv(tmp_path / "ok.csv", [["a", 1.0, 2.0, 3.0]], ["shop", *FEATURES])
    r = run("predict", "out/checkpoint.npz", "--output", "p.csv", *args, cwd=tmp_path)
    assert r.returncode == 2 and not (tmp_path / "p.csv").exists()
    for w in words:
        assert w in r.stderr


def test_predict_refuses_a_checkpoint_not_trained_on_a_csv_file(tmp_path):
    theta = mc.MLP([1, 4, 1]).init(seed=0)
    mc.save(tmp_path / "ck.npz", theta, model=mc.MLP([1, 4, 1]))
    write_csv(tmp_path / "ok.csv", [[1.0]], ["x"])
    r = run("predict", "ck.npz", "--input", "ok.csv", "--output", "p.csv", cwd=tmp_path)
    assert r.returncode == 2 and "not written by metacore train on a CSV file" in r.stderr


@pytest.mark.parametrize("key, value, words", [
    ("task_column", "store", ["tasks.task_column", "'store'"]),
    ("target", "revenue", ["tasks.target", "'revenue'"]),
    ("features", ["size", "colour"], ["tasks.features", "'colour'"]),
    ("support", 40, ["tasks.support", "40"]),
    ("path", "data/none.csv", ["tasks.path", "none.csv"]),
])
def test_data_errors_name_the_config_key(tmp_path, key, value, words):
    make_data(tmp_path)
    cfg = config.load(experiment_file(tmp_path))
    setattr(cfg.tasks, key, str(tmp_path / value) if key == "path" else value)
    with pytest.raises(ConfigError) as err:
        experiment.build(cfg.validate())
    for w in words:
        assert w in str(err.value)


def test_episodes_redraw_stratified_disjoint_splits_of_the_training_tasks(tmp_path):
    make_data(tmp_path, classes=True, n_rows=20)
    cfg = config.load(experiment_file(tmp_path, loss="logistic",
                                      extra="stratify = true\nepisodes = true"))
    exp = experiment.build(cfg)
    sampler = experiment.episode_sampler(exp)
    train = exp.train_tasks
    a, b = sampler.draw(12, cfg.seed, 0), sampler.draw(12, cfg.seed, 50)
    for pool in (a, b):
        for i in range(pool.n_tasks):
            (Xs, ys), (Xq, yq) = pool.support(i), pool.query(i)
            assert Xs.shape[0] == 10 and Xq.shape[0] == 10     # support = 0.5 of 20 rows
            rows = {tuple(r) for r in Xs.tolist()}
            assert not rows & {tuple(r) for r in Xq.tolist()}  # disjoint
            # every row is one of a training task's rows (never a held-out one)
            assert rows <= {tuple(r) for r in train.X.tolist()}
            # stratified: the support keeps the task's class proportion (±1 row)
            frac = np.concatenate([ys, yq]).mean()
            assert abs(ys.sum() - frac * 10) <= 1
    assert not np.array_equal(a.X, b.X)   # fresh episodes at another step
    np.testing.assert_array_equal(a.X, sampler.draw(12, cfg.seed, 0).X)   # keyed, reproducible
    # meta-training with episodes runs and records every step
    result, histories = experiment.train(exp, progress=False)
    assert result.step == cfg.train.steps
    assert sum(len(h.objective) for h in histories) == cfg.train.steps


@pytest.mark.parametrize("split", [17, 50, 63])
def test_episodes_resume_bit_identically_from_any_step(tmp_path, split):
    """A run stopped at any step (on a pool boundary or inside a pool) and resumed draws the
    pools of the run that never stopped, so θ ends bit-identical."""
    make_data(tmp_path, classes=True, n_rows=20)
    cfg = config.load(experiment_file(tmp_path, loss="logistic",
                                      extra="stratify = true\nepisodes = true"))
    cfg.train.steps, cfg.train.checkpoint_every = 80, 1000
    whole, _ = experiment.train(experiment.build(cfg), progress=False)
    cfg.train.steps = split
    exp = experiment.build(cfg)
    part, _ = experiment.train(exp, progress=False)
    cfg.train.steps = 80
    resumed, _ = experiment.train(experiment.build(cfg), start=part, progress=False)
    assert resumed.step == whole.step == 80
    np.testing.assert_array_equal(resumed.theta, whole.theta)


def test_an_empty_features_list_is_refused_naming_the_key(tmp_path):
    """tasks.features = [] is not "every other column" (leaving the key out is): a ConfigError
    naming tasks.features, from the TOML text as from a dict."""
    make_data(tmp_path)
    with pytest.raises(ConfigError, match=r"shops\.toml: tasks\.features must name at least one "
                                          r"column, got \[\]"):
        config.load(experiment_file(tmp_path, extra="features = []"))
    with pytest.raises(ConfigError, match=r"^tasks\.features must name at least one column"):
        config.from_dict({"tasks": {"family": "csv", "path": "x.csv", "features": []}})
    cfg = config.load(experiment_file(tmp_path))
    assert cfg.tasks.features is None and "features" not in cfg.to_dict()["tasks"]
    assert experiment.build(cfg).train_tasks.n_features == len(FEATURES)
    cfg = config.load(experiment_file(tmp_path, extra='features = ["price"]'))
    assert config.loads(cfg.to_toml()) == cfg
    assert experiment.build(cfg).train_tasks.n_features == 1


def test_training_data_errors_cite_the_files_line_and_name_a_binary_file(tmp_path):
    """A bad value in the training CSV: "line N of PATH" (1-based, the header is line 1) under
    the config key of its column; a file that is not UTF-8: tasks.path, naming the file."""
    data = make_data(tmp_path)
    lines = data.read_text().splitlines()
    lines[6] = lines[6].replace(lines[6].split(",")[2], "n/a", 1)     # price of file line 7
    data.write_text("\n".join(lines) + "\n")
    cfg = config.load(experiment_file(tmp_path))
    with pytest.raises(ConfigError) as err:
        experiment.build(cfg)
    assert str(err.value).startswith("tasks.features: column 'price' must be numeric: line 7 of ")
    assert str(data) in str(err.value)
    data.write_bytes(b"shop,size,price,promo,sales\n\x89PNG\r\n\x1a\n\x00\xff")
    with pytest.raises(ConfigError) as err:
        experiment.build(cfg)
    assert str(err.value).startswith(f"tasks.path: line 2 of {data} is not UTF-8 text")


def test_predict_errors_cite_the_files_line(tmp_path):
    """metacore predict: a bad feature in --input and a label that is not a class in --support
    are named by their file and 1-based line; a binary --input is named as not UTF-8."""
    make_data(tmp_path, classes=True)
    cfg = config.load(experiment_file(tmp_path, kind="maml", loss="cross_entropy"),
                      overrides=["train.steps=2"])
    cfg.output = str(tmp_path / "out")
    experiment.run_train(cfg, quiet=True)
    ck = str(tmp_path / "out" / "checkpoint.npz")
    write_csv(tmp_path / "q.csv", [["a", 1.0, 2.0, 3.0], ["a", 1.0, "x", 3.0]], ["shop", *FEATURES])
    with pytest.raises(ValueError, match=r"column 'price' must be numeric: line 3 of --input "):
        experiment.run_predict(ck, str(tmp_path / "q.csv"), str(tmp_path / "p.csv"), quiet=True)
    write_csv(tmp_path / "q.csv", [["a", 1.0, 2.0, 3.0]], ["shop", *FEATURES])
    s = tmp_path / "s.csv"
    s.write_text("shop,size,price,promo,sales\na,1,2,3,0\n\na,1,2,3,7\n")   # label 7 on line 4
    with pytest.raises(ValueError, match=f"column 'sales': line 4 of --support {s} has 7, not a "
                                         f"class label"):
        experiment.run_predict(ck, str(tmp_path / "q.csv"), str(tmp_path / "p.csv"),
                               support_path=str(s), quiet=True)
    (tmp_path / "b.csv").write_bytes(bytes(range(256)))
    with pytest.raises(ValueError,
                       match=r"^line 2 of --input \S*b\.csv is not UTF-8 text: byte 128 "):
        experiment.run_predict(ck, str(tmp_path / "b.csv"), str(tmp_path / "p.csv"), quiet=True)
    assert not (tmp_path / "p.csv").exists()
