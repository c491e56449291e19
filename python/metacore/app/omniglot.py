"""The "Omniglot minimal" table: ProtoNet with a batch-normalised MLP embedding against the
baselines a sceptic would run, on the same test episodes. Used by ``metacore demo omniglot`` and by
``benchmarks/omniglot_minimal.py`` (which documents the protocol and prints the README's table).

Protocol (issue 13): meta-train on the alphabets of ``images_background_small1`` ×4 rotations
(544 classes), meta-test on the 106 characters of the three ``images_background_small2`` alphabets
small1 lacks; 5-way and 20-way, 1- and 5-shot, 15 queries per class, 600 test episodes, accuracy
mean ± 95 % CI over episodes. One ProtoNet per shot count: embedding MLP 784-256-128-64 relu with
batch normalisation (an episode's support and query rows are one forward pass), trained on fresh
W-way episodes drawn in the core (Adam, rate halved every third of the run). Baselines:

- pixel class mean: the nearest support-class mean of the raw pixels (the prototype classifier with
  the identity as embedding);
- scratch: an MLP 784-256-128-64-N (same trunk and norm, N-way softmax head) from a random
  initialisation, fine-tuned by SGD on each episode's support rows;
- pre-trained: the same trunk first trained as one 544-way classifier on every image of the pool
  the ProtoNet trains on (the shifted pool when ``shift`` > 0; the multi-task objective over one
  task, 256 rows per step, ``pretrain_steps`` Adam steps at 1e-3), then a zero N-way head and the
  whole net fine-tuned on each episode's support rows;
- pre-trained trunk, nearest class mean: that trunk (its last layer without the relu) as the
  embedding of a prototype classifier, no fine-tuning (the "Classifier-Baseline" of Chen et al.
  2021, "Meta-Baseline"); not with ``norm="batch"``, whose trunk ends in norm parameters.

Each fine-tuned baseline takes 5 SGD steps on the support rows at its best rate of 0.01, 0.03, 0.1,
0.3, 1 (the best query accuracy on 20 meta-train episodes of the same setting).
"""

from __future__ import annotations

import pathlib
import time

import numpy as np

import metacore as mc


SETTINGS = ((5, 1), (5, 5), (20, 1), (20, 5))
TRUNK = [784, 256, 128, 64]
RATES = (0.01, 0.03, 0.1, 0.3, 1.0)
FT_STEPS = 5
N_VAL = 20


def pixel_class_mean(ts, n_way, k_shot):
    """Accuracy per episode of the nearest support-class mean of raw pixels (the prototype
    classifier with the identity as embedding)."""
    accs = []
    for i in range(ts.n_tasks):
        (Xs, ys), (Xq, yq) = ts.support(i), ts.query(i)
        means = np.stack([Xs[ys == k].mean(axis=0) for k in range(n_way)]).astype(np.float64)
        d = ((Xq[:, None, :].astype(np.float64) - means[None]) ** 2).sum(axis=2)
        accs.append(np.mean(d.argmin(axis=1) == yq))
    return np.array(accs)


def train(train_set, k_shot, steps, threads, n_way=20, q_query=5, norm="batch", lr=1e-3,
          meta_batch=2, head_scale=0.1, seed=0, weight_decay=0.0, trunk=None, schedule="step"):
    """One ProtoNet meta-trained on fresh ``n_way``-way ``k_shot``-shot episodes of
    ``train_set``: (learner, fit result, seconds). Adam (AdamW with ``weight_decay`` > 0) at
    ``lr``, halved every third of the run (``schedule="step"``) or cosine-annealed to 0
    (``"cosine"``)."""
    model = mc.MLP(list(trunk or TRUNK), activation="relu", loss="mse", norm=norm)  # head unused
    learner = mc.ProtoNet(model)
    source = train_set.source(n_way=n_way, k_shot=k_shot, q_query=q_query)
    problem = mc.MetaObjective(learner, source, meta_batch=meta_batch, n_threads=threads)
    sched = (mc.optim.cosine(steps) if schedule == "cosine"
             else mc.optim.step(every=max(1, steps // 3), gamma=0.5))
    optimizer = (mc.optim.AdamW(lr=lr, weight_decay=weight_decay, schedule=sched)
                 if weight_decay > 0 else mc.optim.Adam(lr=lr, schedule=sched))
    t0 = time.perf_counter()
    theta = model.init(seed=seed, dtype=np.float32)
    # The embedding's last layer starts at head_scale × its He scale: over normalised features
    # at full scale, the squared distances of the first episodes are ~100 and saturate the softmax.
    theta[model.layers()[-1][0]:] *= head_scale
    res = mc.fit(problem, theta, optimizer=optimizer,
                 steps=steps, seed=seed, progress=False, chunk_size=100)
    return learner, res, time.perf_counter() - t0


def validation_split(train_set, every=5):
    """(train, validation) ClassImages from the meta-train set: every ``every``-th character
    (counted per alphabet, all rotations of it) is held out for choosing a recipe, so that model
    selection never looks at the meta-test alphabets."""
    chars = [name.split("@")[0] for name in train_set.class_names]
    order = list(dict.fromkeys(chars))
    held = {ch for i, ch in enumerate(order) if i % every == every // 2}
    val = np.array([c for c, ch in enumerate(chars) if ch in held])
    rest = np.array([c for c, ch in enumerate(chars) if ch not in held])
    return train_set.take(rest), train_set.take(val)


def classifier(n_way, norm):
    return mc.MLP(TRUNK + [n_way], activation="relu", loss="cross_entropy", norm=norm)


def pretrain(train_set, steps, threads, norm, seed=0):
    """The trunk trained as one classifier of every class of ``train_set`` (all images, one
    task)."""
    model = classifier(train_set.n_classes, norm)
    ts = mc.TaskSet.from_arrays([train_set.X], [train_set.labels.astype(np.float32)],
                                dtype=np.float32)
    t0 = time.perf_counter()
    res = mc.fit(mc.Objective(model, ts, n_threads=threads), model.init(seed=seed, dtype=np.float32),
                 optimizer=mc.optim.Adam(lr=1e-3), steps=steps, batch_rows=256, seed=seed,
                 progress=False)
    return res.theta[:model.n_trunk_params], time.perf_counter() - t0


def with_head(trunk, n_way, norm):
    """θ of the N-way classifier: the given trunk and a zero output layer."""
    model = classifier(n_way, norm)
    theta = np.zeros(model.n_params, dtype=np.float32)
    theta[:trunk.size] = trunk
    return model, theta


def best_rate(model, theta, val, threads):
    """The rate of RATES with the best query accuracy after FT_STEPS steps on ``val``."""
    return mc.evaluation.baselines.best_lr(model, theta, val, RATES, steps=FT_STEPS,
                                           metric="accuracy", n_threads=threads)


def fine_tuned(model, theta, val, episodes, threads):
    """(accuracy, ci, steps, rate) of θ fine-tuned on each test episode at its best rate."""
    lr = best_rate(model, theta, val, threads)
    acc, ci = mc.evaluate(model, theta, episodes, steps=(FT_STEPS,), lr=lr,
                          n_threads=threads, progress=False).at(FT_STEPS, "accuracy")
    return acc, ci, FT_STEPS, lr


def table(data, *, steps=3000, train_way=20, q_query=5, meta_batch=2, lr=1e-3, norm="batch",
          shots=(1, 5), train_shot=None, protonet=True, baselines=True, pretrain_steps=1000,
          n_test=600, head_scale=0.1, threads=None, say=print, weight_decay=0.0, trunk=None,
          schedule="step", shift=0, validate=False, seed=0):
    """Train the ProtoNets (and the baselines), score them on the same test episodes, print the
    Markdown table through ``say``; returns one dict per setting (accuracies as [mean, ci]).
    One ProtoNet per test shot count, or with ``train_shot`` one ProtoNet trained on
    ``train_shot``-shot episodes scored at every shot count.

    ``shift`` > 0 augments the meta-train pool with copies of each image moved by up to
    ``shift`` pixels up, down, left and right (:meth:`ClassImages.shifted`, kept in its class).
    ``validate=True`` scores on a validation split of the meta-train characters instead of the
    meta-test set (:func:`validation_split`; the model trains on the rest): choose a recipe
    there, then run the test table once with it."""
    t_start = t0 = time.perf_counter()
    cpu_start = time.process_time()
    train_set, test_set = mc.datasets.omniglot_minimal(pathlib.Path(data))
    if validate:
        train_set, test_set = validation_split(train_set)
    say(f"read in {time.perf_counter() - t0:.1f} s: meta-train {train_set.n_classes} classes, "
        f"{'validation' if validate else 'meta-test'} {test_set.n_classes} classes\n")
    pool = train_set
    if shift:
        pool = train_set.shifted([(d * i, d * (1 - i)) for d in range(-shift, shift + 1) if d
                                  for i in (0, 1)])
        say(f"augmented meta-train pool: {pool.X.shape[0]} images "
            f"({pool.X.nbytes / 2**20:.0f} MiB)")
    models = {}
    for k_shot in (() if not protonet else shots if train_shot is None else (train_shot,)):
        c0 = time.process_time()
        learner, res, seconds = train(pool, k_shot, steps, threads, train_way, q_query, norm,
                                      lr, meta_batch, head_scale, seed, weight_decay, trunk,
                                      schedule)
        loss = res.history.objective
        say(f"trained {k_shot}-shot ProtoNet: {steps} steps ({meta_batch * steps} {train_way}-way "
            f"episodes) in {seconds:.0f} s ({time.process_time() - c0:.0f} s CPU), episode loss "
            f"{loss[:50].mean():.3f} -> {loss[-50:].mean():.3f}")
        models[k_shot] = (learner, res.theta, seconds)
    if protonet and train_shot is not None:
        models = {k: models[train_shot] for k in shots}
    if baselines:
        # not `trunk`: that argument names the embedding's widths, reported in every row
        pre_theta, t_pre = pretrain(pool, pretrain_steps, threads, norm)
        say(f"pre-trained the {pool.n_classes}-way classifier on {pool.X.shape[0]} images: "
            f"{pretrain_steps} steps in {t_pre:.0f} s")
    class_mean = baselines and norm is None

    rows = []
    head = "| episodes | pixel class mean |"
    if baselines:
        head += " scratch, fine-tuned | pre-trained, fine-tuned |"
    if class_mean:
        head += " pre-trained trunk, nearest class mean |"
    if protonet:
        head += " ProtoNet | training | evaluation |"
    say(f"\n{head}\n|" + "---|" * (head.count("|") - 1))
    for n_way, k_shot in [s for s in SETTINGS if s[1] in shots]:
        episodes = test_set.episodes(n_test, n_way=n_way, k_shot=k_shot, q_query=15, seed=0)
        base, base_ci = mc.mean_ci(pixel_class_mean(episodes, n_way, k_shot))
        row = {"n_way": n_way, "k_shot": k_shot, "pixel": [base, base_ci], "steps": steps,
               "train_way": train_way, "norm": norm, "lr": lr, "q_query": q_query,
               "head_scale": head_scale, "train_shot": train_shot or k_shot,
               "weight_decay": weight_decay, "trunk": list(trunk or TRUNK), "schedule": schedule,
               "shift": shift, "validate": validate, "meta_batch": meta_batch}
        line = f"| {n_way}-way {k_shot}-shot | {100 * base:.1f} ± {100 * base_ci:.1f} |"
        if baselines:
            val = train_set.episodes(N_VAL, n_way=n_way, k_shot=k_shot, q_query=15, seed=1)
            for name in ("scratch", "pretrained"):
                if name == "scratch":
                    model = classifier(n_way, norm)
                    th = model.init(seed=0, dtype=np.float32)
                else:
                    model, th = with_head(pre_theta, n_way, norm)
                a, c, s, rate = fine_tuned(model, th, val, episodes, threads)
                row[name] = [a, c, s, rate]
                score = f"{100 * a:.1f} ± {100 * c:.1f}" if np.isfinite(a) else "diverged"
                line += f" {score} ({s} steps, lr {rate:g}) |"
        if class_mean:
            embedding = mc.MLP(TRUNK, activation="relu", loss="mse")
            a, c = mc.evaluate(embedding, pre_theta, episodes, steps=(0,),
                               learner=mc.ProtoNet(embedding), n_threads=threads,
                               progress=False).at(0, "accuracy")
            row["pretrained_class_mean"] = [a, c]
            line += f" {100 * a:.1f} ± {100 * c:.1f} |"
        if protonet:
            learner, theta, seconds = models[k_shot]
            t0 = time.perf_counter()
            acc, ci = mc.evaluate(learner.model, theta, episodes, steps=(0,), learner=learner,
                                  n_threads=threads, progress=False).at(0, "accuracy")
            t_eval = time.perf_counter() - t0
            row.update(protonet=[acc, ci], train_s=seconds, eval_s=t_eval)
            line += f" **{100 * acc:.1f} ± {100 * ci:.1f}** | {seconds:.0f} s | {t_eval:.1f} s |"
        rows.append(row)
        say(line)
        del episodes   # freed before the next setting's are drawn (20-way 5-shot: 720 MiB)
    say(f"\ntotal wall time {time.perf_counter() - t_start:.0f} s, CPU time "
        f"{time.process_time() - cpu_start:.0f} s (all threads of this process)")
    return rows
