"""ProtoNet on the "Omniglot minimal" protocol, next to the baselines a sceptic would run (the
protocol and the baselines are described in ``metacore.app.omniglot``). Run from the repository root:

    PYTHONPATH=python python benchmarks/omniglot_minimal.py [DATA] [--steps N] [--train-way W]
        [--q-query Q] [--meta-batch B] [--lr R] [--norm batch|layer|none] [--head-scale S]
        [--shots 1,5] [--train-shot K]
        [--no-baselines] [--no-protonet] [--pretrain-steps N] [--threads K] [--json PATH]
        [--weight-decay WD] [--trunk 784,256,128,64] [--schedule step|cosine] [--shift S]
        [--validate] [--n-test N]

DATA (default ../shared/data) holds omniglot/images_background_small{1,2}.zip. Prints Markdown.
``metacore demo omniglot --data DATA/omniglot`` runs the same table with its default settings.
"""

import argparse
import json
import pathlib
import sys

sys.stdout.reconfigure(line_buffering=True)

from metacore.app.omniglot import table  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", nargs="?", default="../shared/data")
    ap.add_argument("--steps", type=int, default=3000, help="meta-steps per model")
    ap.add_argument("--train-way", type=int, default=20, help="classes per training episode")
    ap.add_argument("--q-query", type=int, default=5, help="queries per class in training")
    ap.add_argument("--meta-batch", type=int, default=2, help="episodes per meta-step")
    ap.add_argument("--lr", type=float, default=1e-3, help="Adam's initial rate")
    ap.add_argument("--norm", default="batch", choices=["batch", "layer", "none"])
    ap.add_argument("--head-scale", type=float, default=0.1,
                    help="initial scale of the embedding's last layer (× He)")
    ap.add_argument("--shots", default="1,5", help="the shot counts to train and test")
    ap.add_argument("--train-shot", type=int, default=None,
                    help="train one ProtoNet on this shot count and test it at every shot count")
    ap.add_argument("--no-baselines", action="store_true", help="skip the fine-tuned baselines")
    ap.add_argument("--no-protonet", action="store_true", help="only the baselines")
    ap.add_argument("--pretrain-steps", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--weight-decay", type=float, default=0.0, help="AdamW's decoupled decay")
    ap.add_argument("--trunk", default=None, help="embedding widths, e.g. 784,256,128,64")
    ap.add_argument("--schedule", default="step", choices=["step", "cosine"])
    ap.add_argument("--shift", type=int, default=0,
                    help="augment the meta-train pool with images shifted by up to S pixels")
    ap.add_argument("--validate", action="store_true",
                    help="score on held-out meta-train characters, not on the meta-test set")
    ap.add_argument("--n-test", type=int, default=600, help="episodes scored per setting")
    ap.add_argument("--json", default=None, help="also write the rows here")
    args = ap.parse_args(argv)
    rows = table(pathlib.Path(args.data) / "omniglot", steps=args.steps,
                 train_way=args.train_way, q_query=args.q_query, meta_batch=args.meta_batch,
                 lr=args.lr, norm=None if args.norm == "none" else args.norm,
                 shots=tuple(int(k) for k in args.shots.split(",")), train_shot=args.train_shot,
                 protonet=not args.no_protonet, baselines=not args.no_baselines, pretrain_steps=args.pretrain_steps,
                 head_scale=args.head_scale, threads=args.threads,
                 weight_decay=args.weight_decay, schedule=args.schedule, shift=args.shift,
                 trunk=None if args.trunk is None else [int(w) for w in args.trunk.split(",")],
                 validate=args.validate, n_test=args.n_test)
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(rows, indent=1))
    return rows


if __name__ == "__main__":
    main()
