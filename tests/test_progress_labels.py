"""A progress bar says what is running: the joint baseline's bar is named for it, and a fit
call's own bar names its problem (and the step a resumed run continues from) — the joint
baseline used to show "fit from step 0"."""

from __future__ import annotations

import numpy as np
import pytest

import metacore as mc


class Recorder:
    """Stands in for tqdm: records every bar opened, what it was told and whether it closed."""

    opened = []

    def __init__(self, total=None, desc=None, **kw):
        self.total, self.desc, self.n, self.closed = total, desc, 0, False
        Recorder.opened.append(self)

    def update(self, k=1):
        self.n += k

    def set_postfix(self, **kw):
        pass

    def close(self):
        self.closed = True


@pytest.fixture
def bars(monkeypatch):
    tqdm_auto = pytest.importorskip("tqdm.auto")
    Recorder.opened = []
    monkeypatch.setattr(tqdm_auto, "tqdm", Recorder)
    return Recorder.opened


@pytest.mark.parametrize("n_tasks,steps", [(1, 3), (4, 5), (7, 12)])
def test_the_joint_baseline_names_its_bar(bars, n_tasks, steps):
    model = mc.MLP([1, 4, 1])
    ts = mc.tasks.sinusoid(n_tasks, k_support=3, k_query=3, seed=n_tasks, dtype=np.float64)
    theta = mc.baselines.joint(model, ts, model.init(seed=0, dtype=np.float64), steps=steps,
                               progress=True)
    assert [b.desc for b in bars] == [f"joint baseline ({n_tasks} tasks pooled)"]
    assert bars[0].total == steps and bars[0].n == steps and bars[0].closed
    quiet = mc.baselines.joint(model, ts, model.init(seed=0, dtype=np.float64), steps=steps,
                               progress=False)
    np.testing.assert_array_equal(theta, quiet)     # the bar changes no digit
    assert len(bars) == 1


def test_the_joint_baseline_advances_a_callers_bar_and_leaves_it_open(bars):
    model = mc.MLP([1, 4, 1])
    ts = mc.tasks.sinusoid(3, k_support=3, k_query=3, seed=0, dtype=np.float64)
    mine = Recorder(total=10, desc="mine")
    mc.baselines.joint(model, ts, model.init(seed=0, dtype=np.float64), steps=4, progress=mine)
    assert [b.desc for b in bars] == ["mine"] and mine.n == 4 and not mine.closed


def test_a_fit_calls_own_bar_names_the_problem_and_the_resumed_step(bars):
    model = mc.MLP([1, 4, 1])
    ts = mc.tasks.sinusoid(3, k_support=3, k_query=3, seed=0, dtype=np.float64)
    res = mc.fit(mc.Objective(model, ts), model.init(seed=0, dtype=np.float64), steps=4)
    mc.fit(mc.Objective(model, ts), res, steps=2)
    mc.fit(mc.MetaObjective(mc.MAML(model), ts, meta_batch=2),
           model.init(seed=0, dtype=np.float64), steps=2)
    one = mc.tasks.sinusoid(1, k_support=3, k_query=3, seed=0, dtype=np.float64)
    mc.fit(mc.Objective(model, one), model.init(seed=0, dtype=np.float64), steps=1)
    assert [b.desc for b in bars] == ["multi-task training, 3 tasks",
                                      "multi-task training, 3 tasks, resumed at step 4",
                                      "meta-train MAML", "multi-task training, 1 task"]
    assert all(b.closed for b in bars)
