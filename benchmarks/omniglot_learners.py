"""Every learner of the digits table on the "Omniglot minimal" protocol, against the fine-tuning
baselines, on the same test episodes as the README's other Omniglot tables (issue 13: "Omniglot
minimal, every learner + baselines").

Protocol (``mc.datasets.omniglot_minimal``): meta-train on the 544 classes of
``images_background_small1`` (136 characters × 4 rotations), fresh W-way K-shot episodes with 5
queries per class drawn in the core at every meta-step; meta-test on 600 W-way episodes of the 106
characters of the three ``images_background_small2`` alphabets small1 lacks (15 queries per class,
seed 0: the episodes of ``omniglot_minimal.py`` and ``omniglot_heads.py``), at every shot count of
``--test-shots``, after each number of adaptation steps of ``--eval-steps``; accuracy, mean ± 95 %
CI over episodes. Nets 784-256-128-64-W relu unless ``--hidden`` says otherwise (ProtoNet and the
ridge head: the embedding without the W-way layer). One model per way (a W-way output layer).

``--validate`` chooses recipes without looking at the meta-test alphabets: train on the
meta-train characters but every 5th and score 300 episodes of the held-out ones
(``metacore.app.omniglot.validation_split``, all rotations of a character on one side).
``--validate-alphabet NAME`` holds out a whole meta-train alphabet instead and scores its
unrotated characters: transfer to a new alphabet, which the test measures and the character
split does not.
Baselines (``scratch``: a random net; ``joint``: the trunk pre-trained as one classifier over
every meta-train class, ``--pretrain-steps`` Adam steps of ``--batch-rows`` rows, output layer reset to
zero) are fine-tuned by plain gradient steps at their best rate of 0.01–1 on 100 episodes of the
characters ``--validate`` holds out (meta-train episodes: outside ``--validate`` those characters
are also in the pool the joint trunk and the learners train on). ``--shift`` adds one-pixel shifts of every meta-train image to its class
(``ClassImages.shifted``; never the scored images).

Run one recipe (prints one line of JSON), from the repository root:

    PYTHONPATH=python python benchmarks/omniglot_learners.py maml --data ../shared/data \\
        --way 5 --shot 1 --steps 3000 --inner-lr 0.1 --inner-steps 5 --shift [--validate]

Learners and options as ``digits_table.py`` (maml, fomaml, mamlpp, imaml, reptile, metasgd, anil,
protonet, ridge; scratch, joint).
"""

from __future__ import annotations

import json
import pathlib
import sys

import numpy as np

import metacore as mc
from metacore.app.omniglot import validation_split

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import digits_table  # noqa: E402  (the learners, recipes and scoring the two tables share)

def alphabet_split(images, name):
    """(train, held-out) ClassImages: every class of the other alphabets, and the unrotated
    characters of the alphabet ``name`` (scored as the meta-test alphabets are)."""
    alphabet = images.subset([name])
    unrotated = [c for c, cls in enumerate(alphabet.class_names) if cls.endswith("@0")]
    return (images.subset([a for a in images.alphabets if a != name]),
            alphabet.take(np.array(unrotated)))


def main(argv=None):
    p = digits_table.parser(__doc__.split("\n\n")[0])
    p.add_argument("--data", default="../shared/data",
                   help="folder holding omniglot/images_background_small{1,2}.zip, or that folder")
    p.add_argument("--way", type=int, default=5, help="classes per episode (training and test)")
    p.add_argument("--test-shots", type=int, nargs="+", default=[1, 5])
    p.add_argument("--n-test", type=int, default=600, help="test episodes per shot count")
    p.add_argument("--batch-rows", type=int, default=256, help="joint: rows per Adam step")
    p.add_argument("--validate", action="store_true",
                   help="score held-out meta-train characters, never the meta-test alphabets")
    p.add_argument("--validate-alphabet", default=None, metavar="NAME",
                   help="score the unrotated characters of the meta-train alphabet NAME, "
                        "trained on the other four (transfer to a new alphabet, as the test)")
    p.set_defaults(hidden=[256, 128, 64], n_in=784, meta_batch=8, eval_steps=[0, 1, 5, 10, 20, 50])
    args = p.parse_args(argv)
    least = {"way": 2, "n_test": 2, "shot": 1, "meta_batch": 1, "steps": 0}
    for name, smallest in least.items():
        if getattr(args, name) < smallest:
            p.error(f"--{name.replace('_', '-')} must be >= {smallest}")
    if min(args.test_shots) < 1:
        p.error("--test-shots must be >= 1")

    root = pathlib.Path(args.data)
    full, test_set = mc.datasets.omniglot_minimal(root / "omniglot" if (root / "omniglot").is_dir()
                                                  else root)
    if args.validate_alphabet:
        if args.validate_alphabet not in full.alphabets:
            p.error(f"--validate-alphabet must be one of {list(full.alphabets)}")
        full, test_set = alphabet_split(full, args.validate_alphabet)
    fit_part, held_out = validation_split(full)   # the baselines' rates, and --validate
    if args.validate:   # the tables' models see every meta-train class; a search sees fewer
        train_set, test_set, n_test, seed = fit_part, held_out, min(args.n_test, 300), 1
    elif args.validate_alphabet:
        train_set, n_test, seed = full, min(args.n_test, 300), 1
    else:
        train_set, n_test, seed = full, args.n_test, 0
    pool = train_set.shifted() if args.shift else train_set   # by one pixel, four ways
    tests = {f"{args.way}-way {k}-shot": test_set.episodes(n_test, n_way=args.way, k_shot=k,
                                                           q_query=15, seed=seed)
             for k in args.test_shots}
    val = held_out.episodes(100, n_way=args.way, k_shot=args.shot, q_query=15, seed=2)
    split = ("validate" if args.validate else
             f"alphabet {args.validate_alphabet}" if args.validate_alphabet else "test")
    out = digits_table.run(args, pool, tests, val, split)
    out["n_test"] = n_test          # --validate scores at most 300 episodes
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
