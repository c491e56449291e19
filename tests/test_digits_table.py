"""benchmarks/digits_table.py (the README's digits table): its class pools are the digits' images
rotated (and mirrored) exactly as NumPy does it, its search split never draws the meta-test digits,
and a short run of a closed-form learner and of a fine-tuning baseline prints a well-formed
result."""

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import metacore as mc
from metacore.data.digits import TEST_DIGITS, digit_images

import scripts



bench = scripts.load("benchmarks/digits_table.py", "digits_table_bench")


@settings(max_examples=10, deadline=None)
@given(digits=st.lists(st.integers(0, 9), min_size=1, max_size=3, unique=True),
       mirror=st.booleans())
def test_class_images_are_rotations_and_mirrors_of_the_digits(digits, mirror):
    images, labels = digit_images()
    pool = bench.class_images(digits, mirror=mirror)
    per = 8 if mirror else 4
    assert pool.n_classes == per * len(digits)
    c = 0
    for d in digits:
        orig = images[labels == d]
        for m in ((False, True) if mirror else (False,)):
            for r in range(4):
                want = np.rot90(orig, k=r, axes=(1, 2))
                want = want[:, :, ::-1] if m else want          # mirror: columns reversed
                got = pool.images(c).reshape(-1, 8, 8)
                np.testing.assert_array_equal(got, want.astype(np.float32))
                assert pool.class_names[c] == f"{d}{'m' if m else ''}@{90 * r}"
                c += 1


def test_mirrored_three_quarter_turn_is_the_transpose():
    # an independent check of the pool's geometry: three quarter turns then a left-right flip
    # is the transpose
    pool = bench.class_images([3], mirror=True)
    plain = pool.images(0).reshape(-1, 8, 8)                 # 3@0
    turned_mirrored = pool.images(7).reshape(-1, 8, 8)       # 3m@270
    np.testing.assert_array_equal(turned_mirrored, np.transpose(plain, (0, 2, 1)))


def test_search_split_never_uses_the_meta_test_digits():
    assert set(TEST_DIGITS).isdisjoint({0, 1, 4, 8, 6, 9})


def run(capsys, argv):
    bench.main(argv)
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_protonet_run_prints_accuracy_and_beats_chance(capsys):
    out = run(capsys, ["protonet", "--shot", "1", "--steps", "60", "--search"])
    assert out["split"] == "search" and list(out["acc"]) == ["0"]
    mean, half, loss = out["acc"]["0"]
    assert 30.0 < mean <= 100.0 and 0.0 < half < 5.0 and np.isfinite(loss)


def test_scratch_baseline_picks_its_best_rate_on_validation(capsys):
    out = run(capsys, ["scratch", "--shot", "1", "--search", "--eval-steps", "0", "5"])
    scores = {float(k): v for k, v in out["val_by_lr"].items()}
    assert set(scores) == set(bench.RATES)
    assert out["lr"] == max(scores, key=scores.get)
    # before any step a random net is at chance level on 5 classes
    assert abs(out["acc"]["0"][0] - 20.0) < 5.0
    # on the search split the scored episodes are the validation ones: the best 5-step score
    assert out["acc"]["5"][0] == pytest.approx(max(scores.values()), abs=0.051)


def test_bad_learner_name_is_refused():
    with pytest.raises(SystemExit):
        bench.main(["nonsense", "--steps", "1", "--search"])


def test_maml_plus_plus_packs_rates_per_layer_and_step():
    import argparse
    ns = argparse.Namespace(learner="mamlpp", n_in=64, hidden=[8], norm=None, inner_lr=0.1,
                            inner_steps=3, steps=100, seed=0, head_scale=0.1)
    model, learner, theta0 = bench.build(ns, 5)
    assert isinstance(learner, mc.MAML) and learner.per_step_rates == "layer"
    assert theta0.shape == (model.n_params + 3 * model.n_layers,)
    np.testing.assert_allclose(theta0[model.n_params:], 0.1)


@settings(max_examples=15, deadline=None)
@given(k_shot=st.integers(1, 4), seed=st.integers(0, 2**31 - 1))
def test_pixel_baselines_against_a_direct_computation(k_shot, seed):
    tasks = mc.tasks.digits(3, n_way=5, k_shot=k_shot, q_query=4, classes="test", seed=seed)
    got = bench.pixel_baselines(tasks, 5)
    for i in range(tasks.n_tasks):
        (Xs, ys), (Xq, yq) = tasks.support(i), tasks.query(i)
        mean_hits = nn_hits = 0
        for x, label in zip(Xq.astype(np.float64), yq):
            dist = {k: float(np.sum((x - Xs[ys == k].astype(np.float64).mean(axis=0)) ** 2))
                    for k in range(5)}
            mean_hits += min(dist, key=dist.get) == label          # first class on ties
            d_rows = [float(np.sum((x - s.astype(np.float64)) ** 2)) for s in Xs]
            nn_hits += ys[int(np.argmin(d_rows))] == label
        assert got["class_mean"][i] == pytest.approx(mean_hits / len(yq))
        assert got["1nn"][i] == pytest.approx(nn_hits / len(yq))


def test_identity_init_protonet_is_the_pixel_class_mean(capsys):
    # before any meta-training step the linear embedding is the identity: the same accuracy as
    # the nearest class mean of the raw pixels on the same episodes
    out = run(capsys, ["protonet", "--hidden", "64", "--identity-init", "--steps", "1",
                       "--lr", "1e-12", "--search"])
    pix = run(capsys, ["pixels", "--search"])
    assert out["acc"]["0"][0] == pytest.approx(pix["acc"]["class_mean"][0], abs=0.051)


def test_init_joint_starts_from_the_pretrained_trunk_under_a_zero_head(capsys):
    # the trunk equals θ of the joint baseline's classifier trained directly through
    # mc.evaluation.baselines.joint (same seed, steps and rate), minus its output layer
    import argparse
    ns = argparse.Namespace(learner="mamlpp", n_in=64, hidden=[16, 8], norm=None, inner_lr=0.1,
                            inner_steps=2, steps=10, seed=3, head_scale=0.1, batch_rows=None,
                            identity_init=False)
    images = bench.class_images((0, 1))
    trunk = bench.pretrained_trunk(ns, images, 15, 1e-2)
    wide = mc.MLP([64, 16, 8, images.n_classes], activation="relu", loss="cross_entropy")
    pool = mc.TaskSet.from_arrays([images.X], [images.labels.astype(np.float32)],
                                  dtype=np.float32)
    direct = mc.evaluation.baselines.joint(wide, pool, wide.init(seed=4, dtype=np.float32),
                                           steps=15, lr=1e-2, seed=3, n_threads=1)
    np.testing.assert_array_equal(trunk, direct[:wide.n_trunk_params])
    model, learner, theta0 = bench.build(ns, 5, trunk)
    np.testing.assert_array_equal(theta0[:trunk.size], trunk)
    assert not theta0[trunk.size:model.n_params].any()               # the 5-way head is zero
    np.testing.assert_allclose(theta0[model.n_params:], 0.1)         # MAML++'s rates intact


def test_init_joint_with_a_normalised_embedding_is_refused():
    with pytest.raises(SystemExit, match="--init joint"):
        bench.main(["protonet", "--steps", "1", "--norm", "batch", "--init", "joint",
                    "--pretrain-steps", "2", "--search"])


def test_zero_steps_scores_the_identity_embedding_as_the_pixel_class_mean(capsys):
    out = run(capsys, ["protonet", "--hidden", "64", "--identity-init", "--steps", "0",
                       "--search"])
    pix = run(capsys, ["pixels", "--search"])
    assert out["acc"]["0"][0] == pytest.approx(pix["acc"]["class_mean"][0], abs=0.051)
