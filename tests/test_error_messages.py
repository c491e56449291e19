"""Errors name what is wrong, generated: the config key a CSV problem is about (tasks.target /
tasks.loss for labels, tasks.support or tasks.k_support for split sizes, never tasks.path for
what is not about the file); a support that is neither a fraction nor a count says both are
accepted; episode label errors count classes, not support rows; a write into a missing folder
names the folder, not a temporary file; a norm on a net with nothing to normalise and a closed
RayBackend are refused."""

from __future__ import annotations

import csv
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import metacore as mc
from metacore.app import config as C
from metacore.app import experiment as E
from metacore.data.tabular import from_dataframe

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[
    HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


def _csv(folder, labels, rows_per_task=4):
    """tasks t0, t1, ... of ``rows_per_task`` rows each; columns task, x, y (y = labels)."""
    path = os.path.join(folder, "d.csv")
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["task", "x", "y"])
        for i, v in enumerate(labels):
            w.writerow([f"t{i // rows_per_task}", float(i % 7), v])
    return path


def _build(folder, **tasks):
    keys = "\n".join(f"{k} = {v!r}".replace("'", '"').replace("True", "true")
                     .replace("False", "false") for k, v in tasks.items())
    text = f'[tasks]\nfamily = "csv"\npath = "d.csv"\nn_test = 1\n{keys}\n' \
           '[model]\nhidden = [4]\n[train]\nsteps = 1\nmeta_batch = 1\n'
    return E.build(C.loads(text, base_dir=folder))


@SETTINGS
@given(loss=st.sampled_from(["logistic", "cross_entropy"]), data=st.data())
def test_labels_that_do_not_fit_the_loss_name_target_and_loss(tmp_path, loss, data):
    bad = data.draw(st.sampled_from([2, 7, -1, 0.5]) if loss == "logistic"
                    else st.sampled_from([-1, 0.5, -3, 2.25]))
    labels = data.draw(st.lists(st.sampled_from([0, 1]), min_size=12, max_size=12))
    labels[data.draw(st.integers(0, 11))] = bad
    _csv(str(tmp_path), labels)
    with pytest.raises(C.ConfigError) as err:
        _build(str(tmp_path), loss=loss, k_support=2, k_query=2)
    msg = str(err.value)
    assert msg.startswith("tasks.target / tasks.loss") and repr(loss) in msg, msg
    assert "tasks.path" not in msg


@SETTINGS
@given(value=st.one_of(st.floats(1.0, 1e6), st.floats(-1e6, 0.0), st.sampled_from([2.0, 5.0])))
def test_a_support_that_is_neither_a_fraction_nor_a_count_says_both_are_accepted(value):
    with pytest.raises(C.ConfigError) as err:
        C.loads(f'[tasks]\nfamily = "csv"\npath = "d.csv"\nsupport = {value!r}\n')
    msg = str(err.value)
    assert msg.startswith("tasks.support") and "fraction in (0, 1)" in msg and "count" in msg
    if value > 1 and float(value).is_integer():
        assert f"{int(value)})" in msg      # how to write it as a count


@SETTINGS
@given(support=st.floats(1.0, 1e6).filter(lambda v: v != 1.0))
def test_the_loader_says_a_count_is_accepted_too(support):
    with pytest.raises(ValueError, match=r"fraction in \(0, 1\) or an integer row count"):
        from_dataframe({"t": [0, 0, 1, 1], "x": [1.0, 2, 3, 4], "y": [0.0, 1, 0, 1]},
                                  task="t", target="y", support=support)


@SETTINGS
@given(k=st.integers(5, 50), use_support=st.booleans())
def test_a_split_larger_than_the_tasks_names_the_split_key(tmp_path, k, use_support):
    _csv(str(tmp_path), [0.5] * 12)
    with pytest.raises(C.ConfigError) as err:
        _build(str(tmp_path), **({"support": k} if use_support else {"k_support": k}))
    msg = str(err.value)
    assert msg.startswith("tasks.support" if use_support else "tasks.k_support"), msg


def test_a_file_with_one_task_is_about_the_file_not_the_split(tmp_path):
    _csv(str(tmp_path), [0.5] * 4)
    with pytest.raises(C.ConfigError, match=r"^tasks.path: .* has 1 task .*tasks.test_fraction"):
        _build(str(tmp_path), k_support=2)


@pytest.mark.parametrize("learner", ["RidgeHead", "ProtoNet"])
@SETTINGS
@given(n_support=st.integers(1, 6), extra=st.integers(0, 20), data=st.data())
def test_episode_label_errors_count_classes_not_support_rows(learner, n_support, extra, data):
    """A support label ≥ the number of support rows leaves some class without a support row:
    the message says how many classes those rows can hold, not 'labels in [0, n_support)'."""
    model = mc.MLP([2, 3])
    lr = getattr(mc, learner)(model)
    params = lr.init(model.init(0)) if learner == "RidgeHead" else model.init(0)
    y = np.array(data.draw(st.permutations(range(n_support))), dtype=np.float64)
    y[data.draw(st.integers(0, n_support - 1))] = n_support + extra
    X = np.ones((n_support, 2))
    with pytest.raises(ValueError) as err:
        lr.adapt(params, X, y)
    msg = str(err.value)
    assert f"the {n_support} support rows can hold classes 0..{n_support - 1} at most" in msg, msg
    assert f"[0, {n_support})" not in msg


@SETTINGS
@given(depth=st.integers(1, 3), name=st.sampled_from(["p.csv", "ck.npz", "t.txt"]))
def test_a_write_into_a_missing_folder_names_the_folder(tmp_path, depth, name):
    folder = os.path.join(str(tmp_path), *[f"missing{i}" for i in range(depth)])
    path = os.path.join(folder, name)
    with pytest.raises(FileNotFoundError) as err:
        mc.save(path, np.zeros(3))
    msg = str(err.value)
    assert f"no such folder {folder}" in msg and ".tmp" not in msg, msg
    assert not os.path.exists(folder)


@SETTINGS
@given(sizes=st.lists(st.integers(1, 9), min_size=2, max_size=4),
       norm=st.sampled_from(["batch", "layer"]))
def test_a_norm_needs_a_hidden_layer(sizes, norm):
    if len(sizes) == 2:
        with pytest.raises(ValueError, match="norm=.* normalises the hidden layers, but "
                                             "layer_sizes .* has none"):
            mc.MLP(sizes, norm=norm)
    else:
        m = mc.MLP(sizes, norm=norm)
        assert len(m.norm_layers()) == len(sizes) - 2


def test_a_closed_ray_backend_is_refused_not_restarted():
    pytest.importorskip("ray")
    from metacore.train.backends import RayBackend
    ts = mc.TaskSet.from_arrays([np.ones((4, 2))] * 2, [np.ones(4)] * 2, n_support=2)
    model = mc.MLP([2, 1])
    obj = mc.Objective(model, ts)
    with RayBackend(1, 1) as b:
        pass
    import ray
    before = ray.is_initialized()
    with pytest.raises(ValueError, match="RayBackend was closed"):
        mc.fit(obj, model.init(0), steps=1, backend=b, progress=False)
    assert ray.is_initialized() == before      # no local Ray started behind the user's back
