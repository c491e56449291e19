"""benchmarks/omniglot_learners.py (the README's "Omniglot minimal: every learner" table): short
runs on the real Omniglot archives print a well-formed result, score every shot count asked for on
the held-out characters when validating, and the baseline takes its best rate. Skips, naming the
file, when the archives are not on this machine."""

import json
import os
import pathlib

import numpy as np
import pytest

import scripts

ROOT = pathlib.Path(__file__).resolve().parent.parent
DATA = pathlib.Path(os.environ.get("METACORE_DATA", ROOT.parent / "shared" / "data"))

pytest.importorskip("PIL", reason="the Omniglot reader needs Pillow")


def load_benchmark():
    return scripts.load("benchmarks/omniglot_learners.py", "omniglot_learners_bench")


@pytest.fixture(scope="module")
def bench():
    for name in ("images_background_small1.zip", "images_background_small2.zip"):
        path = DATA / "omniglot" / name
        if not path.exists():
            pytest.skip(f"{path} is missing (the real data set is not on this machine)")
    return load_benchmark()


def run(bench, capsys, argv):
    bench.main(argv)
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_a_short_maml_run_scores_every_shot_count_on_held_out_characters(bench, capsys):
    out = run(bench, capsys, ["maml", "--data", str(DATA), "--validate", "--steps", "30",
                              "--n-test", "40",
                              "--test-shots", "1", "5", "--eval-steps", "0", "5",
                              "--inner-steps", "1", "--inner-lr", "0.1"])
    assert out["split"] == "validate" and out["args"]["way"] == 5
    assert list(out["acc"]) == ["5-way 1-shot", "5-way 5-shot"]
    for name, acc in out["acc"].items():
        assert list(acc) == ["0", "5"]
        mean0, half0, loss0 = acc["0"]
        # before adapting, the labels are a fresh permutation per episode: chance level
        assert abs(mean0 - 20.0) < 6.0 and 0.0 < half0 < 10.0 and np.isfinite(loss0)
        # five steps on the support images beat chance clearly
        assert acc["5"][0] > 30.0
    assert out["acc"]["5-way 5-shot"]["5"][0] > out["acc"]["5-way 1-shot"]["5"][0] - 5.0
    assert np.isfinite(out["final_loss"]) and out["train_s"] > 0


def test_the_scratch_baseline_picks_its_best_rate(bench, capsys):
    out = run(bench, capsys, ["scratch", "--data", str(DATA), "--validate", "--n-test", "30",
                              "--test-shots", "1", "--eval-steps", "0", "5"])
    scores = {float(k): v for k, v in out["val_by_lr"].items()}
    assert out["lr"] == max(scores, key=scores.get)
    assert abs(out["acc"]["0"][0] - 20.0) < 6.0


@pytest.mark.parametrize("option, value", [("--way", "1"), ("--test-shots", "0"),
                                           ("--n-test", "1"), ("--shot", "0"), ("--steps", "-1")])
def test_bad_counts_are_refused_before_any_data_is_read(capsys, option, value):
    with pytest.raises(SystemExit):
        load_benchmark().main(["maml", "--data", "/nonexistent", option, value])
    assert option.split("-")[-1] in capsys.readouterr().err


def test_an_alphabet_held_out_is_scored_on_its_unrotated_characters(bench, capsys):
    out = run(bench, capsys, ["protonet", "--data", str(DATA), "--validate-alphabet", "Greek",
                              "--steps", "0", "--n-test", "20", "--test-shots", "1"])
    assert out["split"] == "alphabet Greek" and out["n_test"] == 20
    # a random embedding's prototypes still beat chance on 5-way episodes of one alphabet
    assert 20.0 < out["acc"]["0"][0] <= 100.0
    with pytest.raises(SystemExit):
        bench.main(["protonet", "--data", str(DATA), "--validate-alphabet", "Klingon",
                    "--steps", "0"])


def test_the_alphabet_split_holds_out_one_alphabet_unrotated(bench):
    import metacore as mc
    full, _ = mc.datasets.omniglot_minimal(DATA / "omniglot")
    train, held = bench.alphabet_split(full, "Greek")
    assert "Greek" not in train.alphabets and set(held.alphabets) == {"Greek"}
    assert train.n_classes + 4 * held.n_classes == full.n_classes
    assert all(n.startswith("Greek/") and n.endswith("@0") for n in held.class_names)
    # the held-out images are the unrotated originals, image for image
    first = full.class_names.index(held.class_names[0])
    np.testing.assert_array_equal(held.images(0), full.images(first))
