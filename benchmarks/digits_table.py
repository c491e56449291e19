"""The README's "Digits" table: every learner (also those the command line does not build yet:
ProtoNet, the ridge head of R2D2, iMAML, MAML++, normalised nets) and the baselines on the same
test episodes, and the recipe search behind every row.

Protocol (the same as ``metacore train examples/digits_*.toml``): 5-way 1- or 5-shot episodes of
scikit-learn's 8×8 digits with the four rotations of a digit as four classes; meta-test on the
600 episodes the command line scores (``mc.tasks.digits(600, classes="test", q_query=15,
seed=12345)``: digits 2, 3, 5, 7, 16 classes never seen in meta-training), accuracy mean ± 95 %
CI over episodes, after each number of adaptation steps (0 for ProtoNet and the ridge head,
which adapt in closed form).

Recipe selection never looks at the meta-test digits: ``--search`` meta-trains on the digits
{0, 1, 4, 8} (16 classes) and scores 300 episodes of the held-out meta-train digits {6, 9} (8
classes; 6 and 9 are rotations of each other, so they stay together); the chosen recipe is then
meta-trained on all six meta-train digits (24 classes) and scored once on the meta-test episodes.
Meta-training draws fresh episodes in the core at every step (``ClassImages.source``), 5 query
images per class; ``--mirror`` adds the mirror image of every meta-train class as a further class
(meta-train images only), ``--shift`` one-pixel shifts of the images (``ClassImages.shifted``).
``--init joint`` starts meta-training from the trunk of the ``joint`` baseline (pre-trained as one
classifier over every meta-train class, ``--pretrain-steps`` Adam steps at ``--pretrain-lr``) under a
zero output layer; ``--steps 0`` scores the starting point itself (e.g. the pre-trained trunk as a
ProtoNet embedding, with no meta-training).

Run one recipe (prints one line of JSON):

    PYTHONPATH=python python benchmarks/digits_table.py protonet --shot 1 --steps 3000 \
        --hidden 64 64 --norm layer [--search]

Learners: protonet, ridge, maml, fomaml, mamlpp, imaml, reptile, metasgd, anil; baselines:
scratch, joint (fine-tuned nets) and pixels (nearest class mean and 1-NN on raw pixels); see
``--help``.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

import metacore as mc
from metacore.data.digits import digit_images

TEST_SEED = 12345      # the command line's evaluate.seed: the same 600 test episodes
RATES = (0.01, 0.03, 0.1, 0.3, 1.0)   # the baselines' fine-tuning rates


def class_images(digits, mirror=False):
    """ClassImages of the given digits, each at its four rotations (class 4·i + r); with
    ``mirror`` also their mirror images as four more classes per digit."""
    images, labels = digit_images()
    X, lab, names = [], [], []
    for d in digits:
        for m in ((False, True) if mirror else (False,)):
            for r in range(4):
                imgs = np.rot90(images[labels == d], k=r, axes=(1, 2))
                imgs = (imgs[:, :, ::-1] if m else imgs).reshape(-1, 64)
                X.append(imgs)
                lab.append(np.full(len(imgs), len(names)))
                names.append(f"{d}{'m' if m else ''}@{90 * r}")
    return mc.datasets.ClassImages(np.concatenate(X).astype(np.float32), np.concatenate(lab),
                                   names, [n.split("@")[0] for n in names])


def build(args, n_out, trunk=None):
    """(model, learner, θ₀ packed for the learner). ``trunk``: θ of every layer but the output
    layer of ``[n_in, *hidden, C]`` (``pretrained_trunk``) to start from — the whole embedding of
    ProtoNet and the ridge head, the trunk under a zero output layer for the others (the
    pre-train-then-meta-train recipe of Chen et al. 2021, "Meta-Baseline")."""
    episode = args.learner in ("protonet", "ridge")
    sizes = [args.n_in, *args.hidden] + ([] if episode else [n_out])
    model = mc.MLP(sizes, activation="relu", loss="cross_entropy" if not episode else "mse",
                   norm=args.norm)
    kw = dict(inner_lr=args.inner_lr, inner_steps=args.inner_steps, n_threads=1)
    if args.learner == "protonet":
        learner = mc.ProtoNet(model, n_threads=1)
    elif args.learner == "ridge":
        learner = mc.RidgeHead(model, reg=args.reg, scale=args.scale, n_threads=1)
    elif args.learner in ("maml", "fomaml"):
        learner = mc.MAML(model, first_order=args.learner == "fomaml", **kw)
    elif args.learner == "mamlpp":
        learner = mc.MAML(model, per_step_rates="layer", multi_step_loss=True,
                          msl_anneal_steps=max(1, args.steps // 2),
                          first_order_until=args.steps // 4, **kw)
    elif args.learner == "imaml":
        learner = mc.IMAML(model, reg=args.reg, cg_steps=args.cg_steps, **kw)
    elif args.learner == "reptile":
        learner = mc.Reptile(model, outer_lr=args.outer_lr, **kw)
    elif args.learner == "metasgd":
        learner = mc.MetaSGD(model, first_order=args.first_order, **kw)
    elif args.learner == "anil":
        learner = mc.ANIL(model, **kw)
    else:
        raise SystemExit(f"unknown learner {args.learner!r}")
    theta = model.init(seed=args.seed, dtype=np.float32)
    if trunk is not None and (args.identity_init or (episode and args.norm)):
        # the classifier's last hidden layer carries norm parameters the embedding's output
        # layer lacks, so its θ does not map onto the embedding's
        raise SystemExit("--init joint cannot be combined with --identity-init, nor with --norm "
                         "for protonet/ridge")
    if trunk is not None:
        theta[:] = 0
        theta[:trunk.size] = trunk
    elif episode and args.identity_init:
        # a linear embedding started at the identity: the prototype classifier of the raw
        # pixels (the class-mean baseline), which meta-training then turns into a learned metric
        (w, shape, b), = model.layers()
        if shape[0] != shape[1]:
            raise SystemExit("--identity-init needs --hidden 64 (a square linear embedding)")
        theta[:] = 0
        theta[w:w + shape[0] * shape[1]] = np.eye(shape[0], dtype=np.float32).reshape(-1)
    elif episode:   # the embedding's last layer starts small: large first distances saturate
        theta[model.layers()[-1][0]:] *= args.head_scale
    return model, learner, learner.init(theta) if hasattr(learner, "init") else theta


def pretrained_trunk(args, images, steps, lr):
    """The trunk (every layer but the output layer) of the net ``[n_in, *hidden, C]`` trained as
    one C-way classifier over every class of ``images``: ``steps`` Adam steps at ``lr`` of
    ``args.batch_rows`` rows (all rows when None). Returns θ of the trunk."""
    wide = mc.MLP([args.n_in, *args.hidden, images.n_classes], activation="relu",
                  loss="cross_entropy", norm=args.norm)
    pool = mc.TaskSet.from_arrays([images.X], [images.labels.astype(np.float32)],
                                  dtype=np.float32)
    theta_wide = mc.evaluation.baselines.joint(
        wide, pool, wide.init(seed=args.seed + 1, dtype=np.float32), steps=steps, lr=lr,
        batch_rows=args.batch_rows, seed=args.seed, n_threads=1)
    return theta_wide[:wide.n_trunk_params]


def baseline(args, images, val):
    """The fine-tuning baselines: ``scratch`` (a random initialisation) or ``joint`` (the net
    pre-trained as one classifier over every meta-train class, output layer reset to zero;
    ``--pretrain-steps`` Adam steps at ``--pretrain-lr`` of ``args.batch_rows`` rows, all rows
    when None: the trunk ``--init joint`` starts from), each fine-tuned
    on an episode's support rows by plain gradient steps at its best rate of ``RATES`` — the best
    accuracy at any step count on the held-out episodes ``val``. Returns (model, θ, rate,
    {rate: best validation accuracy}, seconds)."""
    model = mc.MLP([args.n_in, *args.hidden, args.way], activation="relu", loss="cross_entropy",
                   norm=args.norm)
    t0 = time.perf_counter()
    if args.learner == "scratch":
        theta = mc.evaluation.baselines.scratch(model, seed=args.seed + 2)
    else:
        trunk = pretrained_trunk(args, images, args.pretrain_steps, args.pretrain_lr)
        theta = np.zeros(model.n_params, dtype=np.float32)
        theta[:trunk.size] = trunk            # trunk kept, output layer zero
    train_s = time.perf_counter() - t0
    scores = {}
    for lr in RATES:
        rep = mc.evaluate(model, theta, val, steps=tuple(args.eval_steps), lr=lr, n_threads=1,
                          progress=False)
        # a rate under which a task diverged at any step count (NaN accuracy) scores worst
        accs = [rep.at(s, "accuracy")[0] for s in args.eval_steps]
        scores[lr] = -1.0 if np.isnan(accs).any() else max(accs)
    best = max(RATES, key=lambda r: scores[r])
    return model, theta, best, scores, train_s


def pixel_baselines(tasks, n_way):
    """Per-episode query accuracy of two classifiers on the raw pixels of the support rows:
    the nearest class mean (the prototype classifier with the identity as embedding) and the
    nearest neighbour (1-NN, squared Euclidean distance, ties to the first support row)."""
    means, nn = [], []
    for i in range(tasks.n_tasks):
        (Xs, ys), (Xq, yq) = tasks.support(i), tasks.query(i)
        Xs, Xq = Xs.astype(np.float64), Xq.astype(np.float64)
        c = np.stack([Xs[ys == k].mean(axis=0) for k in range(n_way)])
        means.append(np.mean(((Xq[:, None] - c[None]) ** 2).sum(2).argmin(1) == yq))
        d = ((Xq[:, None] - Xs[None]) ** 2).sum(2)
        nn.append(np.mean(ys[d.argmin(1)] == yq))
    return {"class_mean": np.array(means), "1nn": np.array(nn)}


def optimizer(args, learner):
    if args.learner == "reptile" and args.opt == "none":
        return learner.default_optimizer(args.steps)
    sched = mc.optim.cosine(args.steps) if args.cosine else None
    if args.opt == "adamw":
        return mc.optim.AdamW(lr=args.lr, weight_decay=args.wd, schedule=sched)
    return mc.optim.Adam(lr=args.lr, schedule=sched)


def summary(report, steps):
    out = {}
    for s in steps:
        m, h = report.at(s, "accuracy")
        loss, _ = report.at(s, "loss")
        out[str(s)] = [round(100 * m, 1), round(100 * h, 1), round(float(loss), 3)]
    return out


def parser(description):
    """The options every table's script shares (the learner, its recipe, the baselines')."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("learner")
    p.add_argument("--shot", type=int, default=1)
    p.add_argument("--steps", type=int, default=3000,
                   help="meta-training steps (0: score the initialisation as it is)")
    p.add_argument("--meta-batch", type=int, default=16)
    p.add_argument("--hidden", type=int, nargs="+", default=[64, 64])
    p.add_argument("--norm", default=None, choices=[None, "batch", "layer"])
    p.add_argument("--inner-lr", type=float, default=0.1)
    p.add_argument("--inner-steps", type=int, default=5)
    p.add_argument("--outer-lr", type=float, default=1.0, help="Reptile")
    p.add_argument("--first-order", action="store_true", help="Meta-SGD")
    p.add_argument("--reg", type=float, default=1.0, help="iMAML λ, ridge λ")
    p.add_argument("--scale", type=float, default=1.0, help="ridge logit scale")
    p.add_argument("--cg-steps", type=int, default=5)
    p.add_argument("--head-scale", type=float, default=0.1)
    p.add_argument("--identity-init", action="store_true",
                   help="protonet/ridge with --hidden 64: a linear embedding from the identity")
    p.add_argument("--opt", default="adam", choices=["adam", "adamw", "none"])
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--wd", type=float, default=0.0)
    p.add_argument("--cosine", action="store_true")
    p.add_argument("--eval-steps", type=int, nargs="+", default=[0, 1, 5, 10, 20])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--init", default="random", choices=["random", "joint"],
                   help="joint: meta-train from the trunk pre-trained as one classifier over "
                        "every meta-train class (the joint baseline's trunk)")
    p.add_argument("--pretrain-steps", type=int, default=2000,
                   help="Adam steps of that classifier (--init joint, and the joint baseline)")
    p.add_argument("--pretrain-lr", type=float, default=1e-3)
    p.add_argument("--shift", action="store_true",
                   help="meta-train images also shifted by one pixel (ClassImages.shifted)")
    return p


def run(args, images, tests, val, split):
    """Meta-train ``args.learner`` on fresh episodes of the ClassImages ``images`` (or, for the
    baselines ``scratch``/``joint``, choose their rate on the episodes ``val``), then score it on
    every TaskSet of ``tests`` ({name: episodes}); returns the result as a JSON-ready dict."""
    out = {"learner": args.learner, "shot": args.shot, "split": split,
           "args": {k: v for k, v in vars(args).items() if k not in ("learner", "shot")}}
    if args.learner in ("scratch", "joint"):
        model, theta, lr, scores, train_s = baseline(args, images, val)
        learner, steps = None, tuple(args.eval_steps)
        out.update(lr=lr, val_by_lr={str(k): round(100 * v, 1) for k, v in scores.items()})
    else:
        t0 = time.perf_counter()
        trunk = (pretrained_trunk(args, images, args.pretrain_steps, args.pretrain_lr)
                 if args.init == "joint" else None)
        out["pretrain_s"] = round(time.perf_counter() - t0, 1)
        model, learner, theta0 = build(args, args.way, trunk)
        source = images.source(n_way=args.way, k_shot=args.shot, q_query=5)
        problem = mc.MetaObjective(learner, source, meta_batch=args.meta_batch, n_threads=1)
        t0 = time.perf_counter()
        theta = theta0
        if args.steps > 0:       # 0: score the starting point as it is
            res = mc.fit(problem, theta0, optimizer=optimizer(args, learner), steps=args.steps,
                         seed=args.seed, progress=False, chunk_size=100)
            theta = res.theta
            out["final_loss"] = round(float(np.mean(res.history.objective[-100:])), 4)
        train_s = time.perf_counter() - t0
        steps = (0,) if args.learner in ("protonet", "ridge") else tuple(args.eval_steps)
    t0 = time.perf_counter()
    out["acc"] = {}
    for name, tasks in tests.items():
        report = mc.evaluate(model, theta, tasks, steps=steps, learner=learner, n_threads=1,
                             progress=False, **({} if learner else {"lr": lr}))
        out["acc"][name] = summary(report, steps)
    if len(tests) == 1:
        out["acc"] = out["acc"][name]
    out.update(train_s=round(train_s, 1), eval_s=round(time.perf_counter() - t0, 1))
    return out


def main(argv=None):
    p = parser(__doc__.split("\n\n")[0])
    p.add_argument("--mirror", action="store_true",
                   help="meta-train classes also mirrored (8 classes per digit)")
    p.add_argument("--search", action="store_true",
                   help="train on digits 0,1,4,8 and score held-out 6,9 (never the test digits)")
    p.set_defaults(n_in=64, way=5, batch_rows=None)
    args = p.parse_args(argv)

    train_digits = (0, 1, 4, 8) if args.search else (0, 1, 4, 6, 8, 9)
    images = class_images(train_digits, mirror=args.mirror)
    if args.shift:
        images = images.shifted()
    if args.search:
        tasks = class_images((6, 9)).episodes(300, n_way=5, k_shot=args.shot, q_query=15,
                                              seed=1)
    else:
        tasks = mc.tasks.digits(600, n_way=5, k_shot=args.shot, q_query=15, classes="test",
                                rotations=True, seed=TEST_SEED)
    split = "search" if args.search else "test"
    if args.learner == "pixels":
        acc = pixel_baselines(tasks, 5)
        ci = {k: mc.evaluation.statistics.mean_ci(v) for k, v in acc.items()}
        print(json.dumps({"learner": "pixels", "shot": args.shot, "split": split,
                          "acc": {k: [round(100 * m, 1), round(100 * h, 1)]
                                  for k, (m, h) in ci.items()}}))
        return
    val = class_images((6, 9)).episodes(300, n_way=5, k_shot=args.shot, q_query=15, seed=1)
    print(json.dumps(run(args, images, {split: tasks}, val, split)))


if __name__ == "__main__":
    main()
