"""The closed-form ridge head (R2D2, mc.RidgeHead) on the "Omniglot minimal" protocol, on the same
600 test episodes per setting as ``omniglot_minimal.py`` (ProtoNet) and ``datasets_baselines.py``
(the pixel class mean). Run from the repository root:

    PYTHONPATH=python python benchmarks/omniglot_heads.py [DATA] [--steps N] [--train-way W]
        [--shots 1,5] [--threads K] [--json PATH]

DATA (default ../shared/data) holds omniglot/images_background_small{1,2}.zip. Meta-train on the
544 classes of small1, meta-test on the 106 characters of the three small2-only alphabets. One
RidgeHead per shot count: the embedding MLP of the ProtoNet rows (784-256-128-64 relu, no batch
norm), λ and the logit scale learned from λ = 1, s = 10; trained with ``mc.fit`` on fresh W-way
episodes (default 20) with 5 queries per class (meta-batch 2, Adam 1e-3 halved every third of the
run), then scored at 5-way and 20-way (15 queries per class, seed 0): accuracy, mean ± 95 % CI
over episodes. Prints Markdown.
"""

import argparse
import json
import pathlib
import time

import numpy as np

import metacore as mc

SETTINGS = ((5, 1), (5, 5), (20, 1), (20, 5))


def train(train_set, k_shot, steps, threads, n_way=20, seed=0):
    model = mc.MLP([784, 256, 128, 64], activation="relu", loss="mse")   # the head is unused
    learner = mc.RidgeHead(model, reg=1.0, scale=10.0)
    source = train_set.source(n_way=n_way, k_shot=k_shot, q_query=5)
    problem = mc.MetaObjective(learner, source, meta_batch=2, n_threads=threads)
    optimizer = mc.optim.Adam(lr=1e-3, schedule=mc.optim.step(every=max(1, steps // 3),
                                                               gamma=0.5))
    t0 = time.perf_counter()
    res = mc.fit(problem, learner.init(model.init(seed=seed, dtype=np.float32)),
                 optimizer=optimizer, steps=steps, seed=seed, progress=False, chunk_size=100)
    return learner, res, time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", nargs="?", default="../shared/data")
    ap.add_argument("--steps", type=int, default=1500, help="meta-steps per model (2 episodes each)")
    ap.add_argument("--train-way", type=int, default=20, help="classes per training episode")
    ap.add_argument("--shots", default="1,5", help="the shot counts to train and test")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", default=None, help="also write the rows here")
    args = ap.parse_args()

    t0 = time.perf_counter()
    train_set, test_set = mc.datasets.omniglot_minimal(pathlib.Path(args.data) / "omniglot")
    print(f"read in {time.perf_counter() - t0:.1f} s: meta-train {train_set.n_classes} classes, "
          f"meta-test {test_set.n_classes} classes\n")
    models = {}
    shots = [int(k) for k in args.shots.split(",")]
    for k_shot in shots:
        learner, res, seconds = train(train_set, k_shot, args.steps, args.threads, args.train_way)
        loss = res.history.objective
        _, lam, scale = learner.split(res.theta)
        print(f"trained {k_shot}-shot: {args.steps} steps ({2 * args.steps} episodes) in "
              f"{seconds:.0f} s, episode loss {loss[:50].mean():.3f} -> {loss[-50:].mean():.3f}, "
              f"learned λ = {lam:.3g}, s = {scale:.3g}", flush=True)
        models[k_shot] = (learner, res.theta, seconds)

    rows = []
    print("\n| episodes | RidgeHead | training | evaluation |\n|---|---|---|---|")
    for n_way, k_shot in [s for s in SETTINGS if s[1] in shots]:
        episodes = test_set.episodes(600, n_way=n_way, k_shot=k_shot, q_query=15, seed=0)
        learner, theta, seconds = models[k_shot]
        t0 = time.perf_counter()
        report = mc.evaluate(learner.model, theta, episodes, steps=(0,), learner=learner)
        acc, ci = report.at(0, "accuracy")
        t_eval = time.perf_counter() - t0
        rows.append({"n_way": n_way, "k_shot": k_shot, "ridge_head": [acc, ci],
                     "train_s": seconds, "eval_s": t_eval, "steps": args.steps,
                     "train_way": args.train_way})
        print(f"| {n_way}-way {k_shot}-shot | **{100 * acc:.1f} ± {100 * ci:.1f} %** | "
              f"{seconds:.0f} s | {t_eval:.1f} s |", flush=True)
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
