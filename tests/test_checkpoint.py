"""mc.save / mc.load: a resumed run is bit-identical to one that never stopped; files are plain
data read without pickle; corrupt or mismatched files give clear errors."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest

import metacore as mc
from metacore.optim import SGD, Adam, AdamW, cosine, warmup


def problem(dtype=np.float64, T=12):
    ts = mc.tasks.logistic_family(T, n_features=6, n_rows=(20, 40), seed=0)
    model = mc.MLP([6, 8, 1], activation="tanh", loss="logistic")
    return mc.Objective(model, ts.astype(dtype), l2=1e-3), model.init(seed=0, dtype=dtype)


def fit(obj, theta0, **kw):
    kw.setdefault("progress", False)
    return mc.fit(obj, theta0, **kw)


def assert_same_state(a, b):
    assert np.array_equal(a.theta, b.theta) and a.theta.dtype == b.theta.dtype
    assert a.step == b.step
    for k in a.moments:
        assert np.array_equal(a.moments[k], b.moments[k])
    assert np.array_equal(a.weights, b.weights)


RESUME_CASES = {
    "adam-cosine-sampled": dict(optimizer=Adam(lr=0.02, schedule=warmup(10, cosine(80))),
                                batch_tasks=5, batch_rows=7),
    "nesterov-full": dict(optimizer=SGD(lr=0.1, momentum=0.9, nesterov=True)),
    "adamw-fixed-weights": dict(optimizer=AdamW(lr=0.01, clip_norm=0.5), batch_tasks=3,
                                weighting=mc.weighting.Fixed(np.linspace(0.1, 1.0, 12))),
}


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("case", sorted(RESUME_CASES))
def test_resume_from_a_file_is_bit_identical(tmp_path, case, dtype):
    obj, theta0 = problem(dtype)
    kw = dict(RESUME_CASES[case], seed=11, eval_every=20)
    whole = fit(obj, theta0, steps=100, **kw)
    first = fit(obj, theta0, steps=60, **kw)
    mc.save(tmp_path / "ck.npz", first)
    ck = mc.load(tmp_path / "ck.npz")
    assert ck.step == 60 and ck.seed == 11 and ck.optimizer == kw["optimizer"]
    resume_kw = {k: v for k, v in kw.items() if k not in ("optimizer", "weighting", "seed")}
    rest = fit(obj, ck, steps=40, **resume_kw)
    assert_same_state(rest, whole)
    np.testing.assert_array_equal(rest.history.objective, whole.history.objective[60:])
    assert rest.history.step[0] == 60


def test_resume_from_a_result_in_memory():
    obj, theta0 = problem()
    kw = dict(optimizer=Adam(lr=0.02), batch_tasks=4, seed=2)
    whole = fit(obj, theta0, steps=50, **kw)
    part = fit(obj, theta0, steps=20, **kw)
    rest = fit(obj, part, steps=30, batch_tasks=4)
    assert_same_state(rest, whole)


def test_resume_from_a_periodic_checkpoint_after_a_crash(tmp_path):
    obj, theta0 = problem()
    kw = dict(optimizer=Adam(lr=0.02), batch_tasks=4, batch_rows=9, seed=3, eval_every=10)
    whole = fit(obj, theta0, steps=100, early_stopping=50, **kw)

    def crash(event):
        if event.step == 70:
            raise KeyboardInterrupt

    path = tmp_path / "run.npz"
    with pytest.raises(KeyboardInterrupt):
        fit(obj, theta0, steps=100, early_stopping=50, checkpoint=path, checkpoint_every=25,
            callbacks=[crash], **kw)
    ck = mc.load(path)
    assert ck.step == 50 and ck.best is not None
    rest = fit(obj, ck, steps=50, early_stopping=50, batch_tasks=4, batch_rows=9, eval_every=10)
    assert_same_state(rest, whole)
    assert rest.best_step == whole.best_step and np.array_equal(rest.best_theta, whole.best_theta)
    assert rest.bad_evals == whole.bad_evals


def test_resume_with_a_new_learning_rate():
    obj, theta0 = problem()
    first = fit(obj, theta0, optimizer=Adam(lr=0.05), steps=10)
    rest = fit(obj, first, optimizer=Adam(lr=0.001), steps=5)
    assert rest.optimizer.lr == 0.001 and rest.step == 15


def test_save_theta_with_its_model(tmp_path):
    model = mc.MLP([3, 4, 2], loss="cross_entropy", task_heads=2)
    theta = model.init(seed=1, dtype=np.float32)
    mc.save(tmp_path / "theta.npz", theta, model=model, info={"note": "hello"})
    ck = mc.load(tmp_path / "theta.npz")
    assert np.array_equal(ck.theta, theta) and ck.theta.dtype == np.float32
    assert ck.model == model and ck.info == {"note": "hello"} and not ck.resumable
    # a θ-only checkpoint starts a fresh run
    obj = mc.Objective(mc.Linear(3), mc.tasks.linear_family(3, n_features=3, seed=0))
    with pytest.raises(ValueError, match="saved for MLP"):
        fit(obj, ck, steps=1)


def test_files_are_plain_npz_with_json(tmp_path):
    obj, theta0 = problem()
    mc.save(tmp_path / "ck.npz", fit(obj, theta0, optimizer=Adam(lr=0.01), steps=3))
    with np.load(tmp_path / "ck.npz", allow_pickle=False) as z:
        meta = json.loads(str(z["meta"]))
        assert {"theta", "moment_m", "moment_v", "alpha"} <= set(z.files)
    assert meta["format"] == "metacore-checkpoint" and meta["step"] == 3
    assert meta["optimizer"]["kind"] == "adam" and meta["model"]["loss"] == "logistic"


# --- corrupt and mismatched files --------------------------------------------------------------
@pytest.fixture()
def saved(tmp_path):
    obj, theta0 = problem()
    path = tmp_path / "ck.npz"
    mc.save(path, fit(obj, theta0, optimizer=Adam(lr=0.01), steps=3))
    return path


def rewrite(path, change):
    """Rewrite the checkpoint at path after change(arrays, meta)."""
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(str(arrays.pop("meta")))
    change(arrays, meta)
    np.savez(path, meta=np.array(json.dumps(meta)), **arrays)


def test_not_a_checkpoint(tmp_path):
    bad = tmp_path / "junk.npz"
    bad.write_bytes(b"this is not a zip file")
    with pytest.raises(ValueError, match="not a readable metacore checkpoint"):
        mc.load(bad)
    np.savez(tmp_path / "plain.npz", x=np.zeros(3))
    with pytest.raises(ValueError, match="has no 'meta' entry"):
        mc.load(tmp_path / "plain.npz")
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        mc.load(tmp_path / "missing.npz")


def test_truncated_file(saved):
    data = saved.read_bytes()
    saved.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="not a readable metacore checkpoint"):
        mc.load(saved)


def test_flipped_bytes_fail_the_zip_checksum(saved):
    with zipfile.ZipFile(saved) as z:
        info = z.getinfo("theta.npy")
    data = bytearray(saved.read_bytes())
    data[info.header_offset + 30 + len(info.filename) + info.file_size - 3] ^= 0xFF
    saved.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="not a readable metacore checkpoint"):
        mc.load(saved)


@pytest.mark.parametrize("change, match", [
    (lambda a, m: m.update(format="something"), "is not a metacore checkpoint"),
    (lambda a, m: m.update(version=99), "has checkpoint version 99"),
    (lambda a, m: a.update(theta=a["theta"][:-1]), "'theta' has shape"),
    (lambda a, m: a.update(theta=a["theta"].astype(np.float32)), "'theta' has shape .* dtype float32"),
    (lambda a, m: a.update(theta=np.full_like(a["theta"], np.nan)), "holds NaN or Inf"),
    (lambda a, m: a.pop("moment_v"), "lacks the array 'moment_v'"),
    (lambda a, m: m["moments"].remove("v"), "moments .* do not match its optimizer"),
    (lambda a, m: m.pop("step"), "incomplete or corrupt"),
    (lambda a, m: m.update(step=-3), "checkpoint step must be >= 0"),
    (lambda a, m: m["model"].update(layer_sizes=[6, 9, 1]), "has 65 entries but its model"),
    (lambda a, m: m["optimizer"].update(kind="lion"), "unknown optimizer"),
])
def test_corrupt_contents_are_named(saved, change, match):
    rewrite(saved, change)
    with pytest.raises(ValueError, match=match):
        mc.load(saved)


def test_a_checkpoint_for_another_problem_is_refused(saved):
    ck = mc.load(saved)
    obj, _ = problem()
    other_model = mc.Objective(mc.MLP([6, 8, 1], activation="relu", loss="logistic"), obj.ts)
    with pytest.raises(ValueError, match="saved for MLP.*tanh.*objective's model is MLP.*relu"):
        fit(other_model, ck, steps=1)
    fewer_tasks = mc.Objective(obj.model, obj.ts.subset(range(5)))
    with pytest.raises(ValueError, match="weights for 12 tasks, the objective has 5"):
        fit(fewer_tasks, ck, steps=1)
    with pytest.raises(ValueError, match="keeps moments .* resume with a compatible optimizer"):
        fit(obj, ck, steps=1, optimizer=SGD(lr=0.1))
    with pytest.raises(ValueError, match="differs from the checkpoint's"):
        fit(obj, ck, steps=1, weighting=mc.weighting.Fixed(np.ones(12)))
    bigger = mc.Objective(mc.MLP([6, 9, 1], activation="tanh", loss="logistic"), obj.ts)
    with pytest.raises(ValueError, match=r"saved for MLP\(\[6, 8, 1\].*model is MLP\(\[6, 9, 1\]"):
        fit(bigger, ck, steps=1)
    ck.model = None
    with pytest.raises(ValueError, match="has 65 entries but the objective's model has 73"):
        fit(bigger, ck, steps=1)


def test_save_rejects_what_it_cannot_write(tmp_path):
    with pytest.raises(ValueError, match="JSON-serialisable"):
        mc.save(tmp_path / "x.npz", np.zeros(3), info={"bad": float("nan")})
    with pytest.raises(TypeError, match="model must be a metacore model"):
        mc.save(tmp_path / "x.npz", np.zeros(3), model="mlp")
    with pytest.raises(ValueError, match="theta must be finite"):
        mc.save(tmp_path / "x.npz", np.array([np.inf]))
    assert not (tmp_path / "x.npz").exists()
