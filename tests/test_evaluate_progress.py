"""mc.evaluate's progress bar: the tasks go to the core in chunks, and the report is
bit-identical to one call over every task — for plain fine-tuning and for a learner whose
query logits are padded per call (ProtoNet, tasks with different numbers of classes)."""

import numpy as np
import pytest

import metacore as mc
from metacore.evaluation import protocol


class Bar:
    """A stand-in for a caller's open tqdm bar: records what it is told."""

    def __init__(self):
        self.n, self.postfix, self.closed = 0, [], False

    def update(self, k):
        self.n += k

    def set_postfix(self, **kw):
        self.postfix.append(kw)

    def close(self):
        self.closed = True


def _classification_tasks(T, seed, ways):
    """T tasks, task t with ways[t % len(ways)] classes: 2 support then 3 query rows per class."""
    rng = np.random.default_rng(seed)
    Xs, ys, n_support = [], [], []
    for t in range(T):
        n_way = ways[t % len(ways)]
        labels = np.concatenate([np.repeat(np.arange(n_way), 2), np.repeat(np.arange(n_way), 3)])
        Xs.append(rng.normal(size=(labels.size, 6)) + labels[:, None])
        ys.append(labels.astype(float))
        n_support.append(2 * n_way)
    return mc.TaskSet.from_arrays(Xs, ys, n_support=n_support)


@pytest.mark.parametrize("chunk_seconds", [1e-9, 0.25])
def test_chunked_evaluation_is_bit_identical_to_one_call(monkeypatch, chunk_seconds):
    monkeypatch.setattr(protocol, "_CHUNK_SECONDS", chunk_seconds)   # 1e-9: one task per call
    ts = _classification_tasks(70, 0, ways=(3,))
    model = mc.MLP([6, 8, 3], loss="cross_entropy")
    theta = model.init(seed=1)
    plain = mc.evaluate(model, theta, ts, steps=(0, 2), lr=0.1, progress=False)
    bar = Bar()
    shown = mc.evaluate(model, theta, ts, steps=(0, 2), lr=0.1, progress=bar)
    np.testing.assert_array_equal(shown.losses, plain.losses)
    np.testing.assert_array_equal(shown.accuracies, plain.accuracies)
    assert bar.n == 2 * ts.n_tasks and not bar.closed
    assert [p["steps"] for p in bar.postfix] == [0, 2]
    assert float(bar.postfix[-1]["loss"]) == pytest.approx(plain.losses[1].mean(), rel=1e-3)


def test_chunks_of_padded_prototype_logits_match_one_call(monkeypatch):
    monkeypatch.setattr(protocol, "_CHUNK_SECONDS", 1e-9)
    ts = _classification_tasks(9, 2, ways=(2, 3, 2))     # 3-way tasks in some chunks only
    learner = mc.ProtoNet(mc.MLP([6, 8, 4]))
    theta = learner.model.init(seed=0)
    plain = mc.evaluate(learner.model, theta, ts, steps=(0,), learner=learner, progress=False)
    chunked = mc.evaluate(learner.model, theta, ts, steps=(0,), learner=learner, progress=Bar())
    np.testing.assert_array_equal(chunked.losses, plain.losses)
    np.testing.assert_array_equal(chunked.accuracies, plain.accuracies)
    assert np.isfinite(plain.losses).all()      # the −inf padding never reached a loss


def test_progress_must_be_a_bool_or_a_bar():
    ts = _classification_tasks(2, 0, ways=(2,))
    model = mc.MLP([6, 2], loss="cross_entropy")
    with pytest.raises((TypeError, ValueError), match="progress"):
        mc.evaluate(model, model.init(seed=0), ts, steps=(0,), progress="yes")


def test_a_short_evaluation_draws_no_bar(capsys):
    """The bar waits a second (tqdm's delay): nothing reaches stderr for a quick evaluation,
    also after the postfix is set (a refreshing set_postfix would draw it at once)."""
    ts = _classification_tasks(20, 0, ways=(3,))
    model = mc.MLP([6, 8, 3], loss="cross_entropy")
    mc.evaluate(model, model.init(seed=1), ts, steps=(0, 1, 5), lr=0.1)
    assert capsys.readouterr().err == ""


def test_subsets_of_unnamed_tasks_keep_names_from_task_ids():
    ts = _classification_tasks(6, 0, ways=(2,))
    part = ts.subset([4, 1, 4])
    assert part.names == ("4", "1", "4") and part.task_ids.tolist() == [4, 1, 4]
    assert part.subset([2]).names == ("4",)
