"""The command line names what is wrong with a user's class labels, output folder and checkpoint
file — the argument or config key, not an internal count or numpy's advice — and says
"interrupted" once."""

import numpy as np
import pytest

from test_cli_csv import experiment_file, make_data, run, write_csv


def _with_labels(tmp_path, labels):
    """The shops data with class labels drawn from ``labels`` (row by row, cycling)."""
    path = make_data(tmp_path, classes=True)
    rows = [line.split(",") for line in path.read_text().splitlines()[1:]]
    for i, row in enumerate(rows):
        row[-1] = labels[i % len(labels)]
    write_csv(path, rows, ["shop", "size", "price", "promo", "sales"])
    return experiment_file(tmp_path, loss="cross_entropy")


@pytest.mark.parametrize("bad", ["0.5", "-1", "2.25", "-0.5"])
def test_a_class_label_that_is_not_a_code_is_named(tmp_path, bad):
    cfg = _with_labels(tmp_path, ["0", "1", bad])
    r = run("train", str(cfg), "--quiet", cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    assert "tasks.target" in r.stderr and "not a class label" in r.stderr
    assert f"has {float(bad):g}" in r.stderr and "Traceback" not in r.stderr
    assert "line 4 of " in r.stderr                  # the third row: named by its file line


@pytest.mark.parametrize("top", [200, 10**6])
def test_class_codes_far_beyond_the_rows_are_refused_not_turned_into_a_huge_head(tmp_path, top):
    cfg = _with_labels(tmp_path, ["0", "1", str(top)])        # 128 rows
    r = run("train", str(cfg), "--quiet", cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    assert f"class label {top} (line 4 of " in r.stderr and "but 128 rows" in r.stderr
    assert "codes 0..C" in r.stderr


@pytest.mark.parametrize("where", ["file", "parent"])
def test_an_output_path_blocked_by_a_file_names_output(tmp_path, where):
    cfg = experiment_file(tmp_path)
    make_data(tmp_path)
    (tmp_path / "taken").write_text("not a folder")
    out = "taken" if where == "file" else "taken/run"
    for args in (["train", str(cfg), "--quiet", "--output", out],
                 ["demo", "--steps", "1", "--quiet", "--output", out]):
        r = run(*args, cwd=tmp_path)
        assert r.returncode == 2, r.stderr
        assert "--output" in r.stderr and "is not a folder" in r.stderr, r.stderr
        assert "Errno" not in r.stderr and "Traceback" not in r.stderr
    assert (tmp_path / "taken").read_text() == "not a folder"    # untouched


@pytest.mark.parametrize("content", [b"task,x,y\n1,2,3\n", b"", b"\x93NUMPY", b"PK"])
def test_a_file_that_is_not_a_checkpoint_is_named_so(tmp_path, content):
    fake = tmp_path / "model.npz"
    fake.write_bytes(content)
    data = make_data(tmp_path)
    r = run("predict", str(fake), "--input", str(data), "--output", "p.csv", cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    assert "not a readable metacore checkpoint" in r.stderr
    assert "allow_pickle" not in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "p.csv").exists()
    np.testing.assert_equal(fake.read_bytes(), content)


TINY = """name = "tiny"
[tasks]
family = "sinusoid"
n_test = 4
test_k_query = 5
[model]
hidden = [8]
[learner]
kind = "maml"
[train]
steps = 20
meta_batch = 4
[evaluate]
steps = [0, 1]
joint_steps = 5
joint_tasks = 5
plot = false
"""


def test_resume_refuses_a_config_the_run_was_not_trained_with(tmp_path):
    cfg = tmp_path / "tiny.toml"
    cfg.write_text(TINY)
    assert run("train", str(cfg), "--quiet", "--set", "tasks.k_support=5", cwd=tmp_path
               ).returncode == 0
    results = (tmp_path / "runs" / "tiny" / "results.json").read_text()
    for extra in ([], ["--set", "learner.inner_lr=0.5"], ["--set", "evaluate.steps=[0, 2]"]):
        r = run("train", str(cfg), "--quiet", "--resume", *extra, cwd=tmp_path)
        assert r.returncode == 2 and "--resume: this config differs" in r.stderr, r.stderr
        assert "tasks.k_support = 5 in the run, 10 now" in r.stderr
        assert "runs/tiny/config.toml --resume" in r.stderr
    assert (tmp_path / "runs" / "tiny" / "results.json").read_text() == results  # untouched
    own = str(tmp_path / "runs" / "tiny" / "config.toml")   # what may change: steps, threads
    r = run("train", own, "--quiet", "--resume", "--steps", "30", "--threads", "2", cwd=tmp_path)
    assert r.returncode == 0, r.stderr


def test_predict_names_a_missing_input_or_support_file(tmp_path):
    data = make_data(tmp_path)
    cfg = experiment_file(tmp_path)
    assert run("train", str(cfg), "--quiet", cwd=tmp_path).returncode == 0
    ck = str(tmp_path / "runs" / "shops" / "checkpoint.npz")
    for args, flag in ((["--input", "new.csv"], "--input new.csv"),
                       (["--input", str(data), "--support", "s.csv"], "--support s.csv")):
        r = run("predict", ck, *args, "--output", "p.csv", cwd=tmp_path)
        assert r.returncode == 2 and f"{flag}: no such file" in r.stderr, r.stderr


def test_resume_with_the_runs_config_after_a_relative_set_path(tmp_path):
    # --set tasks.path=data/shops.csv is typed relative to the current folder; the run's
    # config.toml records it absolute, so resuming from that file finds the data
    make_data(tmp_path)
    cfg = experiment_file(tmp_path)
    assert run("train", str(cfg), "--quiet", "--output", "r1", "--set",
               "tasks.path=data/shops.csv", cwd=tmp_path).returncode == 0
    own = str(tmp_path / "r1" / "config.toml")
    r = run("train", own, "--quiet", "--resume", "--output", "r1", "--steps", "50",
            "--set", "train.chunk=7", cwd=tmp_path)
    assert r.returncode == 0, r.stderr


def test_config_key_renaming_leaves_a_quoted_reprs_arguments_alone():
    """An error quoting an optimizer named its schedule 'linear(train.steps=3)': the renaming of
    argument names to config keys reached inside the repr."""
    from metacore import _validation
    text = ("optimizer: Adam(lr=0.001, schedule=linear(steps=3)) gives learning rate 0 at "
            "every step; steps=5 must be larger, lr must be positive")
    got = _validation.renamed_text(text, {"steps": "train.steps", "lr": "optimizer.lr"},
                                   strict=("steps",))
    assert got == ("optimizer: Adam(lr=0.001, schedule=linear(steps=3)) gives learning rate 0 at "
                   "every step; train.steps=5 must be larger, optimizer.lr must be positive")
