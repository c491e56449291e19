"""Faults a review found in the CLI's learner kinds and CSV paths: each test drives the input that
broke and asserts what the user sees now (the message, naming the file's line, the key, the task).
"""

import csv

import numpy as np
import pytest

import metacore as mc
from metacore.app import config, experiment

STORES = """
name = "stores"
dtype = "{dtype}"
[tasks]
family = "csv"
path = "stores.csv"
task_column = "store"
target = "sales"
loss = "mse"
k_support = 3
standardize = {standardize}
[model]
hidden = [4]
[learner]
kind = "{kind}"
{learner}
[train]
steps = 2
meta_batch = 2
[evaluate]
steps = [0, 1]
baselines = []
plot = false
"""


def write_stores(folder, big=None):
    """6 stores of 6 rows (price, promo, sales); ``big`` = (data row, column, text) replaced."""
    rng = np.random.default_rng(1)
    rows = [[f"s{t}", repr(float(p)), repr(float(q)), repr(float(2 * p - q))]
            for t in range(6) for p, q in rng.normal(size=(6, 2))]
    if big is not None:
        i, j, text = big
        rows[i][j] = text
    with open(folder / "stores.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([["store", "price", "promo", "sales"], *rows])


def write_config(folder, kind="maml", learner="inner_lr = 0.1", dtype="float32",
                 standardize="false"):
    path = folder / "stores.toml"
    path.write_text(STORES.format(kind=kind, learner=learner, dtype=dtype,
                                  standardize=standardize))
    return path


# --- a value beyond float32's range: named by column and line, in train and in predict ----------
@pytest.mark.parametrize("column, name", [(1, "price"), (3, "sales")])
def test_train_names_the_line_of_a_value_beyond_float32(tmp_path, column, name):
    # data row 4 is line 6 of the file (the header is line 1)
    write_stores(tmp_path, big=(4, column, "-1e39"))
    cfg = config.load(write_config(tmp_path))
    with pytest.raises(config.ConfigError) as err:
        experiment.build(cfg)
    text = str(err.value)
    assert f"column {name!r}: line 6 of " in text and "stores.csv has -1e+39" in text, text
    assert "float32's range (±3.4e38)" in text, text
    # float64 takes it; so does float32 with the column standardized (scaled into range)
    cfg = config.load(write_config(tmp_path, dtype="float64"))
    assert experiment.build(cfg).train_tasks.X.dtype == np.float64
    if name == "price":
        cfg = config.load(write_config(tmp_path, standardize="true"))
        assert np.isfinite(experiment.build(cfg).train_tasks.X).all()


def test_from_csv_and_from_dataframe_name_a_value_beyond_float32(tmp_path):
    write_stores(tmp_path, big=(7, 2, "5e38"))
    with pytest.raises(ValueError, match=r"column 'promo': line 9 of .*stores.csv has 5e\+38, "
                                         r"which exceeds float32's range"):
        mc.tasks.from_csv(tmp_path / "stores.csv", task="store", target="sales", n_support=2,
                          dtype=np.float32)
    table = {"store": ["a", "a", "b", "b"], "x": [1.0, 2.0, 3.0, -4e38], "y": [0.0] * 4}
    with pytest.raises(ValueError, match=r"column 'x': row 3 of the table has -4e\+38"):
        mc.tasks.from_dataframe(table, task="store", target="y", n_support=1, dtype="float32")
    # in range, and in float64, nothing changes
    ts = mc.tasks.from_dataframe(table, task="store", target="y", n_support=1, dtype="float64")
    assert ts.X[3, 0] == -4e38


@pytest.fixture
def trained(tmp_path):
    """A float32 MAML checkpoint of the stores, and its folder."""
    write_stores(tmp_path)
    experiment.run_train(config.load(write_config(tmp_path), [f"output={tmp_path / 'out'}"]),
                         quiet=True)
    return tmp_path, str(tmp_path / "out" / "checkpoint.npz")


def test_predict_names_the_line_of_a_value_beyond_float32(trained, monkeypatch):
    folder, ck = trained
    monkeypatch.chdir(folder)
    (folder / "q.csv").write_text("store,price,promo\nnew,1,0\nnew,0.5,4e38\n")
    (folder / "s.csv").write_text("store,price,promo,sales\nnew,1,0,2\nnew,0,1,1e39\n")
    (folder / "ok.csv").write_text("store,price,promo,sales\nnew,1,0,2\nnew,0,1,-1\n")
    with pytest.raises(ValueError) as err:
        experiment.run_predict(ck, "q.csv", "p.csv", quiet=True)
    assert str(err.value) == ("column 'promo': line 3 of --input q.csv has 4e+38, which exceeds "
                              "float32's range (±3.4e38), the checkpoint's dtype: rescale the "
                              "column")
    with pytest.raises(ValueError, match=r"column 'sales': line 3 of --support s.csv has "
                                         r"1e\+39, which exceeds float32"):
        experiment.run_predict(ck, "ok.csv", "p.csv", support_path="s.csv", quiet=True)
    assert not (folder / "p.csv").exists()


def test_predict_messages_name_the_task_and_the_steps(trained, monkeypatch, capsys):
    folder, ck = trained
    monkeypatch.chdir(folder)
    (folder / "q.csv").write_text("store,price,promo\nnew,1,0\n")
    (folder / "s.csv").write_text("store,price,promo,sales\nold,1,0,2\n")
    with pytest.raises(ValueError) as err:
        experiment.run_predict(ck, "q.csv", "p.csv", support_path="s.csv", quiet=True)
    # the task's name as written, not numpy's repr np.str_('new')
    assert "has no rows of task 'new' ('store' in --input q.csv)" in str(err.value)
    (folder / "s.csv").write_text("store,price,promo,sales\nnew,1,0,2\n")
    for steps, words in ((None, "1 step)"), (3, "3 steps)")):
        experiment.run_predict(ck, "q.csv", "p.csv", support_path="s.csv", steps=steps)
        assert capsys.readouterr().out.strip().endswith(f"(adapted on s.csv, {words}")


def test_predict_of_an_embedding_says_closed_form_and_refuses_steps(tmp_path, monkeypatch,
                                                                     capsys):
    rng = np.random.default_rng(0)
    rows = [[f"s{t}", repr(float(x)), str(c)] for t in range(6) for c in range(2)
            for x in rng.normal(size=3) + 3 * c]
    with open(tmp_path / "cls.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([["shop", "a", "label"], *rows])
    text = STORES.format(kind="protonet", learner="", dtype="float64", standardize="false")
    text = (text.replace('"stores.csv"', '"cls.csv"').replace('"store"', '"shop"')
            .replace('"sales"', '"label"').replace('"mse"', '"cross_entropy"')
            .replace("k_support = 3", "support = 0.5\nstratify = true")
            .replace("steps = [0, 1]", "steps = [0]"))
    (tmp_path / "cls.toml").write_text(text)
    monkeypatch.chdir(tmp_path)
    experiment.run_train(config.load("cls.toml", [f"output={tmp_path / 'out'}"]), quiet=True)
    (tmp_path / "q.csv").write_text("shop,a\nnew,0.1\nnew,3.2\n")
    (tmp_path / "s.csv").write_text("shop,a,label\nnew,0,0\nnew,3,1\n")
    with pytest.raises(ValueError, match=r"--steps 5: .* ProtoNet embedding, which adapts in "
                                         r"closed form, not by gradient steps: leave --steps"):
        experiment.run_predict("out/checkpoint.npz", "q.csv", "p.csv", support_path="s.csv",
                               steps=5)
    experiment.run_predict("out/checkpoint.npz", "q.csv", "p.csv", support_path="s.csv")
    assert capsys.readouterr().out.strip() == ("2 predictions written to p.csv (adapted on "
                                               "s.csv, in closed form)")
    (tmp_path / "s.csv").write_text("shop,a,label\nnew,0,0\nnew,3,2\nnew,1,0\n")
    with pytest.raises(ValueError, match=r"--support s.csv \(task 'new'\): y_support: class 1 "
                                         r"has no support row"):
        experiment.run_predict("out/checkpoint.npz", "q.csv", "p.csv", support_path="s.csv")


# --- evaluating a checkpoint with another learner of the same size -------------------------------
def test_evaluate_names_the_learner_when_the_sizes_agree(tmp_path):
    write_stores(tmp_path)
    cfg = config.load(write_config(tmp_path, kind="imaml", learner="inner_lr = 0.1\nreg = 2.0"),
                      [f"output={tmp_path / 'out'}"])
    experiment.run_train(cfg, quiet=True)
    other = config.load(write_config(tmp_path), [f"output={tmp_path / 'out'}"])
    with pytest.raises(ValueError) as err:
        experiment.run_evaluate(other, str(tmp_path / "out" / "checkpoint.npz"), quiet=True)
    assert "was saved by learner 'imaml'; the config's learner is 'maml'" in str(err.value)
    assert "set learner.kind = 'imaml'" in str(err.value)


# --- --set learner.kind on a run's resolved config.toml ------------------------------------------
@pytest.mark.parametrize("old, new", [("protonet", "ridgehead"), ("mamlpp", "imaml"),
                                      ("ridgehead", "protonet"), ("imaml", "maml"),
                                      ("mamlpp", "reptile")])
def test_set_learner_kind_drops_the_old_kinds_keys(old, new):
    text = (f'[tasks]\nfamily = "digits"\nn_train = 0\n[model]\nhidden = [8]\n'
            f'[learner]\nkind = "{old}"\n')
    resolved = config.loads(text).to_toml()   # as train writes config.toml: every key resolved
    cfg = config.loads(resolved, [f"learner.kind={new}"])
    want = config.loads(text.replace(old, new))
    assert cfg.learner == want.learner
    # a key of the old kind given with --set is still refused, by name
    if old == "protonet":
        with pytest.raises(config.ConfigError, match="learner.distance applies to"):
            config.loads(resolved, [f"learner.kind={new}", "learner.distance=sqeuclidean"])
    # a kind that is not changed keeps its keys
    assert config.loads(resolved, [f"learner.kind={old}"]).learner == config.loads(text).learner


def test_set_learner_kind_keeps_the_keys_the_new_kind_takes():
    text = ('[tasks]\nfamily = "digits"\nn_train = 0\n[model]\nhidden = [8]\n'
            '[learner]\nkind = "ridgehead"\nreg = 3.0\nscale = 2.0\n')
    cfg = config.loads(text, ["learner.kind=imaml"])
    assert cfg.learner.reg == 3.0 and cfg.learner.scale is None and cfg.learner.cg_steps == 5
    cfg = config.loads(text.replace("ridgehead", "maml") .replace("reg = 3.0\nscale = 2.0",
                                                                  "first_order = true"),
                       ["learner.kind=reptile"])
    assert cfg.learner.first_order is False


# --- model.last_layer_scale beyond the working dtype; iMAML's reg range named for float32 -------
def test_last_layer_scale_beyond_float32_is_a_config_error_naming_the_key(tmp_path):
    text = ('dtype = "{dt}"\n[tasks]\nfamily = "digits"\nn_train = 0\nn_test = 5\n'
            '[model]\nhidden = [8]\nlast_layer_scale = {s}\n[learner]\nkind = "protonet"\n')
    exp = experiment.build(config.loads(text.format(dt="float32", s="1e39")))
    with pytest.raises(config.ConfigError, match=r"model.last_layer_scale = 1e\+39 takes the "
                                                 r"last layer's initial weights .* beyond "
                                                 r"float32's range \(±3.4e38\)"):
        experiment.start_theta(exp)
    # float64 holds it; a scale in range multiplies in θ's dtype, exactly as before
    exp = experiment.build(config.loads(text.format(dt="float64", s="1e39")))
    assert np.isfinite(experiment.start_theta(exp)).all()
    exp = experiment.build(config.loads(text.format(dt="float32", s="0.1")))
    theta0 = exp.model.init(seed=exp.cfg.seed, dtype=np.float32)
    last = exp.model.layers()[-1][0]
    want = np.concatenate([theta0[:last], theta0[last:] * np.float32(0.1)])
    np.testing.assert_array_equal(experiment.start_theta(exp), want)


def test_imaml_reg_out_of_every_range_says_which_range():
    model = mc.MLP([2, 3, 1])
    with pytest.raises(ValueError) as err:
        mc.IMAML(model, reg=1e-300)
    assert ("outside [1.5e-154, 1.3e+154], the range for float64 (the widest dtype; float32's "
            "is [1.1e-19, 1.8e19])") in str(err.value)
    learner = mc.IMAML(model, reg=1e-25)     # within float64's range, not float32's
    with pytest.raises(ValueError, match=r"reg=1e-25 is outside \[1.1e-19, 1.8e\+19\], the range "
                                         r"for float32 \(the working dtype\)"):
        learner.adapt(model.init(seed=0, dtype=np.float32), np.zeros((2, 2)), np.zeros(2))


def test_a_toml_file_with_a_byte_order_mark_loads(tmp_path):
    """Notepad saves UTF-8 with a byte-order mark; tomllib refused it as 'Invalid statement (at
    line 1, column 1)'. The CSV reader drops one; so does config.load."""
    text = 'name = "bom"\n[train]\nsteps = 3\n'
    (tmp_path / "bom.toml").write_bytes(b"\xef\xbb\xbf" + text.encode())
    assert config.load(tmp_path / "bom.toml") == config.loads(text)
    (tmp_path / "bad.toml").write_bytes(b"\xef\xbb\xbf\xef\xbb\xbf" + text.encode())
    with pytest.raises(config.ConfigError, match="not valid TOML"):   # only one mark is dropped
        config.load(tmp_path / "bad.toml")


@pytest.mark.parametrize("name", ["MetaMLPRegressor", "MultiTaskMLPRegressor"])
def test_sklearn_regressor_names_a_target_beyond_float32(name):
    """sklearn's check_X_y passes y in float64; the cast to float32 turned -1e39 into -inf, which
    MetaMLPRegressor then trained on without a word (and MultiTaskMLPRegressor called
    'y must be finite, found -inf')."""
    import metacore.sklearn as sk
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 3))
    y = X[:, 0].copy()
    y[7] = -1e39
    groups = np.repeat(np.arange(3), 20)
    est = getattr(sk, name)(hidden_layer_sizes=(4,), max_iter=2, dtype="float32")
    with pytest.raises(ValueError, match=r"y has -1e\+39 at index \(7,\), which exceeds "
                                         r"float32's range"):
        est.fit(X, y, groups)
    est = getattr(sk, name)(hidden_layer_sizes=(4,), max_iter=2, dtype="float64")
    with pytest.warns(sk.DataScaleWarning, match="target is far from unit scale"):  # -1e9
        est.fit(X, y / 1e30, groups)
    assert np.isfinite(est.predict(X[:2])).all()


def test_predict_refuses_to_write_outputs_that_are_not_finite(trained):
    """float32 support targets of 1e30 make the inner step overflow: the predictions were written
    as 'inf' with exit code 0; now exit code 1, the input's line named, nothing written."""
    import os
    import subprocess
    import sys
    folder, ck = trained
    (folder / "q.csv").write_text("store,price,promo\nnew,1,0\nnew,0.5,1\n")
    (folder / "s.csv").write_text("store,price,promo,sales\nnew,1,0,3e38\nnew,0,1,-3e38\n")
    root = os.path.dirname(os.path.dirname(os.path.abspath(mc.__file__)))
    env = dict(os.environ, PYTHONPATH=root)
    r = subprocess.run([sys.executable, "-m", "metacore", "predict", ck, "--input", "q.csv",
                        "--support", "s.csv", "--output", "p.csv"], cwd=folder, env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1, r.stderr
    assert r.stderr.startswith("metacore: predict failed: the net adapted on --support s.csv "
                               "(task 'new') by 1 step gives "), r.stderr
    assert "on line 2 of --input q.csv: its adaptation diverged" in r.stderr, r.stderr
    assert not (folder / "p.csv").exists()
    # the same rows at the training data's scale are predicted
    (folder / "s.csv").write_text("store,price,promo,sales\nnew,1,0,3\nnew,0,1,-3\n")
    labels = experiment.run_predict(ck, str(folder / "q.csv"), str(folder / "p.csv"),
                                    support_path=str(folder / "s.csv"), quiet=True)
    assert np.isfinite(labels).all() and (folder / "p.csv").exists()


@pytest.mark.parametrize("learner, extra, words", [
    ("imaml", ["evaluate.lr=100"], "learner.reg=1.0 with evaluate.lr=100.0: "
                                   "evaluate.lr·learner.reg = 100 must be < 2"),
    ("maml", ["evaluate.lr=1e-50"], "evaluate.lr=1e-50 is zero or subnormal in float32"),
    ("protonet", ["learner.inner_lr=1e-50", 'evaluate.baselines=["scratch"]'],
     "learner.inner_lr=1e-50 is zero or subnormal in float32")])
def test_the_evaluation_rate_is_checked_before_training(learner, extra, words):
    """A bad evaluate.lr (or the baselines' learner.inner_lr) was found after the whole run had
    trained: build() now refuses it, naming the key."""
    text = ('[tasks]\nfamily = "digits"\nn_train = 0\nn_test = 5\n[model]\nhidden = [8]\n'
            f'[learner]\nkind = "{learner}"\n[train]\nsteps = 2\n')
    cfg = config.loads(text, extra)
    with pytest.raises(config.ConfigError) as err:
        experiment.build(cfg)
    assert words in str(err.value), str(err.value)
    # float64 holds the small rate; ProtoNet without baselines never uses inner_lr
    if "1e-50" in words:
        assert experiment.build(config.loads(text, extra + ["dtype=float64"])).learner \
            is not None
    if learner == "protonet":
        assert experiment.build(config.loads(text, extra[:1] + ["evaluate.baselines=[]"])) \
            .learner is not None
