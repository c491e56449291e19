"""Every experiment file in examples/ runs end to end (`metacore train`'s code path, in-process)
with its steps and test tasks cut down by overrides, as a user's --set would: the files stay
runnable as the config, the learners and the task families change."""

import glob
import json
import os

import numpy as np
import pytest

from metacore.app import config, experiment

EXAMPLES = sorted(glob.glob(os.path.join(os.path.dirname(__file__), "..", "examples", "*.toml")))


@pytest.mark.parametrize("path", EXAMPLES, ids=os.path.basename)
def test_example_trains_and_evaluates(path, tmp_path):
    cfg = config.load(path, overrides=[
        "train.steps=3", "train.checkpoint_every=2", "train.validate_every=0", "tasks.n_test=3",
        "evaluate.baselines=[]", "evaluate.plot=false", f"output={tmp_path / 'out'}"])
    reports = experiment.run_train(cfg, quiet=True)
    (label, report), = reports.items()
    assert label == experiment.build(cfg).label
    assert np.isfinite(report.losses).all() and report.losses.shape[1] >= 1
    with open(tmp_path / "out" / "results.json") as fh:
        assert json.load(fh)["config"] == cfg.to_dict()
