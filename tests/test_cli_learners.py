"""The learners of issue 13 on the command line (learner.kind protonet, ridgehead, imaml, mamlpp;
model.norm; fresh digits episodes with tasks.mirror): `metacore train` then `metacore evaluate`
give exactly the numbers of the Python API called directly with the same settings (the learner
built by hand, mc.fit from the same seed, mc.evaluate on the same test episodes; the meta-train
pool built here from scikit-learn's images, not by the app); checkpoints keep what was learned
(RidgeHead's λ and scale, MAML++'s rates) and are refused by a config of another learner; bad
keys are refused naming the key; `metacore predict` classifies by the learner's own rule."""

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


def run(*args, cwd):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [PACKAGE_ROOT] + ([os.environ["PYTHONPATH"]] if "PYTHONPATH" in os.environ else [])))
    return subprocess.run([sys.executable, "-m", "metacore", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


TINY = """
name = "tiny"
seed = 3
dtype = "float64"
[tasks]
family = "digits"
n_way = 3
k_support = {shots}
k_query = 2
test_k_query = 3
n_train = 0
mirror = {mirror}
n_test = 12
[model]
hidden = {hidden}
{model}
[learner]
kind = "{kind}"
{learner}
[optimizer]
{optimizer}
[train]
steps = 7
meta_batch = 3
checkpoint_every = 4
[evaluate]
steps = [0, 1, 3]
baselines = []
plot = false
"""

# kind -> (settings for the file, the Python learner they describe, optimizer)
CASES = {
    "protonet": dict(
        hidden="[10, 6]", model='norm = "batch"\nlast_layer_scale = 0.1', mirror="true",
        learner='distance = "sqeuclidean"', optimizer='kind = "adam"\nlr = 0.01',
        build=lambda emb: mc.ProtoNet(emb), opt=lambda: mc.optim.Adam(lr=0.01)),
    "ridgehead": dict(
        hidden="[10, 6]", model='norm = "layer"\nlast_layer_scale = 0.1', mirror="true",
        learner="reg = 0.5\nscale = 5.0", optimizer='kind = "adam"\nlr = 0.05',
        build=lambda emb: mc.RidgeHead(emb, reg=0.5, scale=5.0),
        opt=lambda: mc.optim.Adam(lr=0.05)),
    "imaml": dict(
        hidden="[10]", model="", mirror="false",
        learner="inner_lr = 0.1\ninner_steps = 3\nreg = 2.0\ncg_steps = 3",
        optimizer='kind = "adamw"\nlr = 0.01\nweight_decay = 0.5',
        build=lambda m: mc.IMAML(m, reg=2.0, inner_lr=0.1, inner_steps=3, cg_steps=3),
        opt=lambda: mc.optim.AdamW(lr=0.01, weight_decay=0.5)),
    "mamlpp": dict(
        hidden="[10, 8]", model='norm = "batch"', mirror="true",
        learner=("inner_lr = 0.1\ninner_steps = 2\nmsl_anneal_steps = 4\n"
                 "first_order_until = 3"),
        optimizer='kind = "adam"\nlr = 0.01',
        build=lambda m: mc.MAML(m, inner_lr=0.1, inner_steps=2, per_step_rates="layer",
                                multi_step_loss=True, msl_anneal_steps=4, first_order_until=3),
        opt=lambda: mc.optim.Adam(lr=0.01)),
}
EPISODIC = ("protonet", "ridgehead")


def write(folder, kind, shots=1):
    c = CASES[kind]
    path = folder / f"{kind}.toml"
    path.write_text(TINY.format(kind=kind, shots=shots, **{k: c[k] for k in
                                                           ("hidden", "model", "mirror",
                                                            "learner", "optimizer")}))
    return path


def pool(mirror):
    """The meta-train classes, built here from scikit-learn's images: digits 0, 1, 4, 6, 8, 9
    at four rotations (class 4·i + r), with ``mirror`` each digit's mirrored rotations next."""
    from sklearn.datasets import load_digits
    data = load_digits()
    X, labels, names = [], [], []
    for d in (0, 1, 4, 6, 8, 9):
        for flip in ((False, True) if mirror else (False,)):
            for r in range(4):
                imgs = np.rot90(data.images[data.target == d] / 16.0, k=r, axes=(1, 2))
                if flip:
                    imgs = imgs[:, :, ::-1]
                X.append(imgs.reshape(-1, 64))
                labels += [len(names)] * len(imgs)
                names.append(f"{d}{flip}{r}")
    return mc.datasets.ClassImages(np.concatenate(X), np.array(labels), names, names)


def python_run(kind, shots=1):
    """The same experiment through the Python API: (learner, θ after training, report)."""
    c = CASES[kind]
    hidden = json.loads(c["hidden"])
    norm = {"protonet": "batch", "ridgehead": "layer", "imaml": None, "mamlpp": "batch"}[kind]
    if kind in EPISODIC:
        model = mc.MLP([64, *hidden], activation="relu", loss="mse", norm=norm)
    else:
        model = mc.MLP([64, *hidden, 3], activation="relu", loss="cross_entropy", norm=norm)
    learner = c["build"](model)
    theta0 = model.init(seed=3, dtype=np.float64)
    if kind in EPISODIC:
        theta0[model.layers()[-1][0]:] *= 0.1
    if hasattr(learner, "init"):
        theta0 = learner.init(theta0)
    source = pool(c["mirror"] == "true").source(n_way=3, k_shot=shots, q_query=2)
    res = mc.fit(mc.MetaObjective(learner, source, meta_batch=3), theta0, optimizer=c["opt"](),
                 steps=7, seed=3, progress=False)
    test = mc.tasks.digits(12, n_way=3, k_shot=shots, q_query=3, classes="test", seed=12345,
                           dtype=np.float64)
    report = mc.evaluate(model, res.theta, test, steps=(0,) if kind in EPISODIC else (0, 1, 3),
                         learner=learner, progress=False)
    return learner, res.theta, report


@pytest.mark.parametrize("kind", sorted(CASES))
def test_train_and_evaluate_give_the_python_api_numbers(tmp_path, kind):
    cfg = write(tmp_path, kind)
    r = run("train", str(cfg), "--output", "out", "--quiet", cwd=tmp_path)
    assert (r.returncode, r.stderr) == (0, ""), r.stderr
    r = run("evaluate", "--checkpoint", "out/checkpoint.npz", "--output", "ev", "--quiet",
            cwd=tmp_path)
    assert (r.returncode, r.stderr) == (0, ""), r.stderr
    learner, theta, report = python_run(kind)
    ck = mc.load(tmp_path / "out" / "checkpoint.npz")
    # the checkpoint holds exactly the θ (and learned λ, s or rates) of the Python run
    assert ck.theta.dtype == np.float64 and np.array_equal(ck.theta, theta)
    assert ck.step == 7 and ck.problem["learner"] == learner.to_dict()
    assert mc.learners.from_dict(ck.problem["learner"]) == learner
    label = experiment.LEARNER_NAMES[kind]
    for fname in ("results.json", "evaluation.json"):
        with open(tmp_path / ("out" if fname == "results.json" else "ev") / fname) as fh:
            got = json.load(fh)
        entry = got["per_task"][label]
        assert entry["steps"] == list(report.steps)
        names = got["test_tasks"]
        for i, n in enumerate(names):     # bit for bit: JSON keeps float64 exactly
            assert entry["loss"][n] == report.losses[:, i].tolist()
            assert entry["accuracy"][n] == report.accuracies[:, i].tolist()
    assert len(names) == 12
    # what the learner learned besides θ survives the round trip and was really trained
    if kind == "ridgehead":
        _, lam, scale = learner.split(ck.theta)
        assert (lam, scale) != (0.5, 5.0) and np.isfinite([lam, scale]).all()
        assert learner.split(theta)[1:] == (lam, scale)
    if kind == "mamlpp":
        rates = learner.split(ck.theta)[1]
        assert rates.shape == (2, 3) and not np.allclose(rates, 0.1)
        np.testing.assert_array_equal(rates, learner.split(theta)[1])
    # an episodic learner is scored in closed form only, at 0 steps, and beats chance
    if kind in EPISODIC:
        assert report.steps == (0,) and report.accuracies.mean() > 1 / 3


def test_evaluate_refuses_a_checkpoint_of_another_learner(tmp_path):
    for kind in ("ridgehead", "mamlpp"):
        cfg = config.load(write(tmp_path, kind), overrides=[f"output={tmp_path / kind}"])
        experiment.run_train(cfg, quiet=True)
    # configs whose nets equal the checkpoints': only the learner differs
    same_net = {"protonet": ("[10, 6]", 'norm = "layer"', ""),
                "maml": ("[10, 8]", 'norm = "batch"', "inner_lr = 0.1\ninner_steps = 2"),
                "imaml": ("[10, 8]", 'norm = "batch"', "inner_lr = 0.1\ninner_steps = 2")}
    cases = [("ridgehead", "protonet", ["--checkpoint", "'ridgehead'", "'protonet'"]),
             ("mamlpp", "maml", ["--checkpoint", "'mamlpp'", "'maml'"]),
             ("mamlpp", "imaml", ["--checkpoint", "'mamlpp'", "'imaml'"])]
    for saved, other, words in cases:
        hidden, model, learner = same_net[other]
        path = tmp_path / f"{other}.toml"
        path.write_text(TINY.format(kind=other, shots=1, hidden=hidden, model=model,
                                    mirror="true", learner=learner,
                                    optimizer='kind = "adam"'))
        with pytest.raises(ValueError) as err:
            experiment.run_evaluate(config.load(path), str(tmp_path / saved / "checkpoint.npz"),
                                    quiet=True)
        for w in words:
            assert w in str(err.value), str(err.value)
    # another net is refused too (the model named), and on the command line: exit code 2, one
    # line naming the checkpoint
    r = run("evaluate", str(write(tmp_path, "protonet")), "--checkpoint",
            "ridgehead/checkpoint.npz", "--quiet", cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "--checkpoint ridgehead/checkpoint.npz holds θ of MLP([64, 10, 6]" in r.stderr


BAD = [  # (kind, {section: {key: value}}, words the message must contain)
    ("ridgehead", {"learner": {"reg": 0.0}}, ["learner.reg", "> 0"]),
    ("ridgehead", {"learner": {"scale": "big"}}, ["learner.scale", "number"]),
    ("protonet", {"learner": {"reg": 1.0}}, ["learner.reg", "'ridgehead' or 'imaml'",
                                             "'protonet'"]),
    ("protonet", {"learner": {"distance": "cosine"}}, ["learner.distance", "'sqeuclidean'"]),
    ("imaml", {"learner": {"cg_steps": 0}}, ["learner.cg_steps", ">= 1"]),
    ("imaml", {"learner": {"reg": -1.0}}, ["learner.reg", "> 0"]),
    ("imaml", {"learner": {"first_order": True}}, ["learner.first_order", "'imaml'"]),
    ("imaml", {"learner": {"scale": 2.0}}, ["learner.scale", "'ridgehead'"]),
    ("mamlpp", {"learner": {"per_step_rates": "step"}}, ["learner.per_step_rates", "'layer'"]),
    ("mamlpp", {"learner": {"msl_anneal_steps": 0}}, ["learner.msl_anneal_steps", ">= 1"]),
    ("mamlpp", {"learner": {"first_order_until": -1}}, ["learner.first_order_until", ">= 0"]),
    ("mamlpp", {"learner": {"multi_step_loss": 1}}, ["learner.multi_step_loss", "true or false"]),
    ("maml", {"learner": {"first_order_until": 5}}, ["learner.first_order_until", "'mamlpp'"]),
    ("ridgehead", {"model": {"norm": "batch"}}, ["model.norm", "'ridgehead'"]),
    ("mamlpp", {"model": {"norm": "group"}}, ["model.norm", "'batch'", "'layer'"]),
    ("maml", {"model": {"norm": "layer", "hidden": []}}, ["model.norm", "model.hidden"]),
    ("protonet", {"model": {"norm": "layer", "hidden": [8]}}, ["model.norm", "embedding"]),
    ("protonet", {"model": {"hidden": []}}, ["model.hidden", "'protonet'"]),
    ("protonet", {"tasks": {"family": "sinusoid"}}, ["learner.kind 'protonet'", "'digits'"]),
    ("ridgehead", {"tasks": {"family": "csv", "path": "x.csv", "loss": "logistic"}},
     ["learner.kind 'ridgehead'", "'cross_entropy'"]),
    ("protonet", {"learner": {"kind": "proto"}}, ["learner.kind", "'protonet'"]),
]


@pytest.mark.parametrize("kind, change, words", BAD, ids=lambda v: str(v))
def test_bad_keys_are_refused_naming_the_key(kind, change, words):
    data = {"tasks": {"family": "digits"}, "learner": {"kind": kind}}
    for section, values in change.items():
        data.setdefault(section, {}).update(values)
    with pytest.raises(ConfigError) as err:
        config.from_dict(data)
    for w in words:
        assert w in str(err.value), str(err.value)


def test_a_bad_key_on_the_command_line_names_it(tmp_path):
    r = run("train", str(write(tmp_path, "ridgehead")), "--set", "learner.reg=0", "--quiet",
            cwd=tmp_path)
    assert r.returncode == 2 and "learner.reg must be > 0" in r.stderr and r.stdout == ""


def test_keys_left_out_take_the_constructors_defaults():
    ridge = config.from_dict({"tasks": {"family": "digits"}, "learner": {"kind": "ridgehead"}})
    imaml = config.from_dict({"learner": {"kind": "imaml"}})
    pp = config.from_dict({"learner": {"kind": "mamlpp"}})
    maml = config.from_dict({})
    m = mc.MLP([1, 4, 1])
    assert (ridge.learner.reg, ridge.learner.scale) == (1.0, 1.0) == (
        mc.RidgeHead(m).reg, mc.RidgeHead(m).scale)
    assert (imaml.learner.reg, imaml.learner.cg_steps) == (mc.IMAML(m).reg, mc.IMAML(m).cg_steps)
    ref = mc.MAML(m, per_step_rates="layer", multi_step_loss=True)
    assert (pp.learner.per_step_rates, pp.learner.multi_step_loss, pp.learner.msl_anneal_steps,
            pp.learner.first_order_until) == ("layer", True, ref.msl_anneal_steps,
                                              ref.first_order_until)
    # the keys of other kinds stay unset (None) and out of the saved config
    assert maml.learner.reg is None and "reg" not in maml.to_dict()["learner"]
    assert config.loads(pp.to_toml()) == pp


def test_episodic_baselines_fine_tune_a_classifier_of_the_embedding(tmp_path):
    cfg = config.load(write(tmp_path, "protonet"), overrides=[
        'evaluate.baselines=["scratch"]', "evaluate.lr=0.1", f"output={tmp_path / 'o'}"])
    exp = experiment.build(cfg)
    assert exp.model.layer_sizes == (64, 10, 6) and exp.classifier.layer_sizes == (64, 10, 6, 3)
    assert exp.classifier.norm == "batch" and exp.classifier.loss == "cross_entropy"
    reports = experiment.evaluate_all(exp, experiment.start_theta(exp))
    want = mc.evaluate(exp.classifier, mc.evaluation.baselines.scratch(
        exp.classifier, seed=cfg.seed + 2, dtype=np.float64), exp.test_tasks, steps=(0, 1, 3),
        lr=0.1, progress=False)
    np.testing.assert_array_equal(reports["scratch"].losses, want.losses)
    assert reports["ProtoNet"].steps == (0,)


SHOPS = """
name = "shops"
dtype = "float64"
[tasks]
family = "csv"
path = "shops.csv"
task_column = "shop"
target = "label"
loss = "cross_entropy"
support = 6
stratify = true
test_fraction = 0.25
[model]
hidden = [8, 4]
[learner]
kind = "{kind}"
{extra}
[train]
steps = 5
meta_batch = 3
[evaluate]
steps = [0]
baselines = []
plot = false
"""


@pytest.mark.parametrize("kind, extra", [("protonet", ""), ("ridgehead", "scale = 3.0"),
                                         ("imaml", "inner_steps = 2\ninner_lr = 0.1")])
def test_predict_adapts_by_the_learners_own_rule(tmp_path, kind, extra):
    rng = np.random.default_rng(0)
    rows = []
    for t in range(8):   # 3 classes per shop, 6 rows each: stratified support has every class
        for c in range(3):
            for x in rng.normal(size=(6, 2)) + [2.0 * c, -c]:
                rows.append([f"s{t}", repr(float(x[0])), repr(float(x[1])), str(c)])
    header = ["shop", "a", "b", "label"]
    with open(tmp_path / "shops.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([header, *rows])
    (tmp_path / "shops.toml").write_text(SHOPS.format(kind=kind, extra=extra))
    r = run("train", "shops.toml", "--output", "out", "--quiet", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    # a new shop: 2 labelled rows per class adapt, 5 rows are predicted
    Xs = np.repeat([[0.0, 0.0], [2.0, -1.0], [4.0, -2.0]], 2, axis=0) + rng.normal(size=(6, 2))
    ys = np.repeat([0, 1, 2], 2)
    Xq = rng.normal(size=(5, 2)) * 2.0
    with open(tmp_path / "s.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([["a", "b", "label"], *[[*x, y] for x, y in zip(Xs, ys)]])
    with open(tmp_path / "q.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([["a", "b"], *Xq.tolist()])
    r = run("predict", "out/checkpoint.npz", "--input", "q.csv", "--output", "p.csv",
            "--quiet", cwd=tmp_path)
    if kind in EPISODIC:   # nothing to classify by without labelled support rows
        assert r.returncode != 0 and "--support" in r.stderr
    r = run("predict", "out/checkpoint.npz", "--input", "q.csv", "--support", "s.csv",
            "--output", "p.csv", "--quiet", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    with open(tmp_path / "p.csv") as fh:
        out = list(csv.DictReader(fh))
    assert list(out[0]) == ["a", "b", "prediction", "p_0", "p_1", "p_2"]
    ck = mc.load(tmp_path / "out" / "checkpoint.npz")
    model = ck.model
    if kind == "protonet":   # a direct computation: nearest prototype of the embeddings
        E = model.predict(ck.theta, np.vstack([Xs, Xq]))
        protos = np.stack([E[:6][ys == c].mean(axis=0) for c in range(3)])
        logits = -((E[6:, None, :] - protos[None]) ** 2).sum(axis=2)
    elif kind == "ridgehead":   # the ridge solve in NumPy, with the learned λ and scale
        P = model.n_params
        lam, scale = np.exp(ck.theta[P]), ck.theta[P + 1]
        A = np.hstack([model.predict(ck.theta[:P], Xs), np.ones((6, 1))])
        W = A.T @ np.linalg.solve(A @ A.T + lam * np.eye(6), np.eye(3)[ys])
        logits = scale * np.hstack([model.predict(ck.theta[:P], Xq), np.ones((5, 1))]) @ W
    else:   # iMAML's proximal steps φ ← φ − α(∇L_s(φ) + λ(φ − θ)), by the model's gradient
        theta = ck.theta
        phi = theta.copy()
        ts = mc.TaskSet.from_arrays([Xs], [ys.astype(np.float64)])
        for _ in range(2):
            g = mc.Objective(model, ts).value_and_grad(phi)[1]
            phi = phi - 0.1 * (g + 1.0 * (phi - theta))
        logits = model.predict(phi, Xq)
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    assert [int(o["prediction"]) for o in out] == logits.argmax(axis=1).tolist()
    np.testing.assert_allclose([[float(o[f"p_{j}"]) for j in range(3)] for o in out], p,
                               rtol=1e-9, atol=1e-12)
