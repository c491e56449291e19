"""examples/seed_loop.py runs on a small cut of the digits tasks: per-task accuracy and α for
every round, α adjusted from the evaluation (the least accurate task weighted most)."""

import numpy as np
import pytest

import scripts

pytest.importorskip("sklearn")


def test_seed_loop_example_runs_and_adjusts_alpha(capsys):
    module = scripts.load("examples/seed_loop.py", "seed_loop")
    history, final = module.main(rounds=3, per_task=20, steps_per_round=5)
    assert len(history) == 3 and final.shape == (10,)
    acc0, _ = history[0]
    _, alpha1 = history[1]
    np.testing.assert_allclose(alpha1.sum(), 1.0)
    assert np.argmax(alpha1) == np.argmin(acc0)
    assert "EvalDriven(metric='accuracy')" in capsys.readouterr().out
