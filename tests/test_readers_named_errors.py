"""What the readers, the evaluation and the results refuse, by name, and what a refused call
leaves behind: duplicate task names keep one column each, a refused loader call leaves its
Standardizer unfitted, task ids that only look like numbers stay text, and every reader names
its own argument (paths, alphabets, image_size, flags, a decompression bomb) before doing work."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import metacore as mc
from metacore.data.tabular import Standardizer
from test_datasets import archive_files, needs_pillow, write_folder, write_zip


def test_tasks_that_share_a_name_keep_a_column_each():
    m = mc.MLP([1, 4, 1])
    ts = mc.tasks.sinusoid(3, seed=0).with_names(["A", "B", "C"]).subset([0, 0, 1, 2, 1])
    res = mc.fit(mc.Objective(m, ts), m.init(seed=0), steps=2, eval_every=1, progress=False)
    df = res.to_dataframe(kind="eval", task_names=ts.names)
    cols = [c for c in df.columns if c.startswith("task_loss[")]
    assert cols == ["task_loss[A#0]", "task_loss[A#1]", "task_loss[B#2]", "task_loss[C]",
                    "task_loss[B#4]"]
    np.testing.assert_array_equal(df[cols].to_numpy(), res.history.task_losses)


def _table(n_per_task=3):
    t = np.repeat(["a", "b"], n_per_task)
    x = np.r_[np.ones(n_per_task), np.full(n_per_task, 21.0)]
    return {"t": t, "x": x, "y": x * 2}


@pytest.mark.parametrize("refusal", [dict(support=9), dict(n_support=1), dict(fit_tasks=["zz"])])
def test_a_refused_loader_call_leaves_its_standardizer_unfitted(refusal):
    # support=9 and support with n_support are refused after the scaling is fitted
    s = Standardizer()
    kw = dict(task="t", target="y", support=1, standardize=s, fit_tasks=["a"])
    kw.update(refusal)
    with pytest.raises(ValueError):
        mc.tasks.from_dataframe(_table(), **kw)
    assert not s.fitted
    mc.tasks.from_dataframe(_table(), task="t", target="y", support=1, standardize=s,
                            fit_tasks=["b"])
    np.testing.assert_array_equal(s.mean_, [21.0])        # task b's, as asked the second time


@settings(max_examples=60, deadline=None)
@given(ids=st.lists(st.from_regex(r"[-+]{0,3}[0-9]{1,3}", fullmatch=True), min_size=2,
                    max_size=5, unique=True))
def test_task_ids_that_look_like_numbers_are_read_without_a_crash(ids):
    t = np.repeat(np.array(ids, dtype=object), 2)
    ts = mc.tasks.from_dataframe({"t": t, "x": np.arange(len(t), dtype=float),
                                  "y": np.zeros(len(t))}, task="t", target="y", support=1)
    assert sorted(ts.names) == sorted(ids)         # every id kept exactly as written


def test_an_empty_fit_tasks_and_a_table_without_features_are_named():
    with pytest.raises(ValueError, match="fit_tasks selects no task"):
        mc.tasks.from_dataframe(_table(), task="t", target="y", support=1,
                                standardize=Standardizer(), fit_tasks=[])
    with pytest.raises(ValueError, match="has no feature column"):
        mc.tasks.from_dataframe({"t": [1, 2], "y": [0.0, 1.0]}, task="t", target="y")
    with pytest.raises(ValueError, match="n >= 1"):
        Standardizer().fit(np.zeros((0, 3)))


@pytest.mark.parametrize("name", [5, ("a",), b"x", 1.5])
def test_evaluate_refuses_a_name_tables_cannot_print(name):
    m = mc.MLP([1, 4, 1])
    with pytest.raises(TypeError, match="name must be a str"):
        mc.evaluate(m, m.init(), mc.tasks.sinusoid(3, seed=0), name=name, progress=False)


@pytest.mark.parametrize("learner", ["maml", 3, object()])
def test_evaluate_refuses_what_is_not_a_learner(learner):
    m = mc.MLP([1, 4, 1])
    with pytest.raises(TypeError, match="learner must be a metacore learner"):
        mc.evaluate(m, m.init(), mc.tasks.sinusoid(3, seed=0), learner=learner, progress=False)


@pytest.mark.parametrize("lr", [np.float32(0.25), np.array(0.25), 0.25, np.float64(0.25)])
def test_a_scalar_rate_is_recorded_as_its_value_however_given(lr):
    m = mc.MLP([1, 4, 1])
    rep = mc.evaluate(m, m.init(), mc.tasks.sinusoid(3, seed=0), lr=lr, progress=False)
    assert rep.to_dict()["lr"] == 0.25


@pytest.mark.parametrize("call, arg", [
    (lambda: mc.datasets.school(5), "path"),
    (lambda: mc.datasets.omniglot(None), "root"),
    (lambda: mc.datasets.omniglot_minimal(3.5), "root"),
])
def test_a_path_that_is_not_one_is_named(call, arg):
    with pytest.raises(TypeError, match=f"{arg} must be a path"):
        call()


def test_school_splits_checks_its_arguments_at_the_call():
    with pytest.raises(FileNotFoundError, match="path"):
        mc.datasets.school_splits("/no/such/school.mat")
    with pytest.raises(TypeError, match="tasks"):
        mc.datasets.school_splits([1, 2])
    ts = mc.tasks.sinusoid(3, seed=0)
    for kw, match in ((dict(repetitions=-3), "repetitions"), (dict(train_fraction=1.5),
                                                              "train_fraction")):
        with pytest.raises(ValueError, match=match):
            mc.datasets.school_splits(ts, **kw)          # no next() needed


@needs_pillow
@pytest.mark.parametrize("kw, match", [(dict(test_rotations=1), "test_rotations"),
                                       (dict(rotations="yes"), "rotations"),
                                       (dict(image_size=0), "image_size")])
def test_omniglot_minimal_names_a_bad_setting_before_reading(tmp_path, kw, match):
    with pytest.raises((TypeError, ValueError), match=match):
        mc.datasets.omniglot_minimal(tmp_path, **kw)     # an empty folder: never reached


@needs_pillow
def test_omniglot_names_alphabets_image_size_and_a_bomb(tmp_path, monkeypatch):
    zpath = write_zip(tmp_path / "images_background.zip", archive_files("images_background"))
    with pytest.raises(TypeError, match="alphabets must be a folder name"):
        mc.datasets.omniglot(zpath, alphabets=5)
    for size in (10**5, 2**40):
        with pytest.raises(MemoryError, match=f"image_size={size}"):
            mc.datasets.omniglot(zpath, image_size=size)
    from PIL import Image
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 20)   # 12×12 drawings: past twice the limit
    with pytest.raises(ValueError, match=r"images_background\.zip:.*\.png is not a readable PNG"):
        mc.datasets.omniglot(zpath)
    folder = tmp_path / "unpacked"
    write_folder(folder, archive_files("images_background"))
    with pytest.raises(ValueError, match="is not a readable PNG"):
        mc.datasets.omniglot(folder / "images_background")


@pytest.mark.parametrize("values", [[0.3, 0.30000000000000004], [1e6, 1e6 + 1e-10, 1e6],
                                    [-7.0, -7.0, -7.000000000000001]])
def test_a_column_constant_but_for_rounding_is_left_as_is_not_blown_up(values):
    X = np.column_stack([values, np.arange(len(values), dtype=float)])
    s = Standardizer().fit(X)
    assert s.scale_[0] == 1.0 and s.scale_[1] > 0.1
    assert np.abs(s.transform(X)[:, 0]).max() < 1e-6       # rounding noise stays noise


def test_an_accuracy_table_of_regression_reports_is_refused_as_the_plot_is():
    m = mc.MLP([1, 4, 1])
    rep = mc.evaluate(m, m.init(), mc.tasks.sinusoid(3, seed=0), progress=False)
    for draw in (mc.report.format_table, mc.report.plot):
        with pytest.raises(ValueError, match="none of the reports has accuracies"):
            draw([rep], metric="accuracy")


@pytest.mark.parametrize("n, words", [(1, "over 1 task\n"), (2, "over 2 tasks\n")])
def test_a_table_title_counts_its_tasks_in_good_english(n, words):
    m = mc.MLP([1, 4, 1])
    rep = mc.evaluate(m, m.init(), mc.tasks.sinusoid(n, seed=0), progress=False)
    assert words in mc.report.format_table([rep])


@pytest.mark.parametrize("bad", [5, None, 1.5, ["a.csv"]])
def test_every_reader_and_writer_names_a_path_that_is_not_one(bad, tmp_path):
    for call in (lambda: mc.tasks.from_csv(bad, task="t", target="y"), lambda: mc.load(bad),
                 lambda: mc.save(bad, np.zeros(3)), lambda: mc.datasets.school(bad),
                 lambda: mc.datasets.omniglot(bad)):
        with pytest.raises(TypeError, match=r"(path|root) must be a path"):
            call()
