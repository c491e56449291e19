"""`metacore demo`: the MAML paper's sinusoid experiment, end to end.

MAML, Meta-SGD, MAML++ and iMAML meta-train a 1-40-40-1 relu net on fresh sinusoid tasks
y = A sin(x − φ), A ~ U[0.1, 5], φ ~ U[0, π], x ~ U[−5, 5] (Finn et al. 2017): meta-batch 25,
K = 10 support and 10 query points, Adam 1e-3, 70,000 meta-steps (MAML++: 10,000, as its
5 second-order inner steps cost about 5× MAML's step; iMAML: 3,000, as its 200 proximal inner
steps and 5 CG steps cost about 45× MAML's). MAML and Meta-SGD take one
inner SGD step with rate 0.01 (Meta-SGD learns one rate per parameter, for that one step);
MAML++ (Antoniou et al. 2019) takes 5 inner steps with learned rates per layer and step (from
0.01), the multi-step loss annealed over the first 15 % of the meta-steps (the paper's 15 of
100 epochs), exact second-order meta-gradients throughout (the net is small; a first-order start
let the learned rates grow until an inner loop diverged at step 13,505 of 70,000) and the
meta-gradient clipped to norm 10 (Adam's clip_norm) as a guard; from K = 20 on (rates_lr) its
learned rates train at Adam 1e-4, a tenth of the weights' rate (a parameter group: Adam moves
every entry by about its rate a step, 10 % of a rate of 0.01; at 1e-3 the first layer's rates grew
to 0.1 in 300 meta-steps and at K = 20 an inner loop blew up at meta-step 557), while at K = 5
they must fall fast at the start (at 1e-4 or 3e-4 a 5-step inner loop blew up at meta-step 5 or
6) — chosen by whether meta-training diverges, never by test scores; iMAML (Rajeswaran et al. 2019)
takes 200 proximal steps of rate 0.0005 with λ = 50 (the proximal problem contracts by
1 − 0.0005·50 per step, to 0.6 % of its start after 200: converged, as the implicit gradient
assumes, so steps past 200 change little) and 5 CG steps — chosen on the 100 validation tasks
(IMAML_CHOICE). A jointly trained net (the mean
squared error over a pool of 1,000 tasks, the paper's "pretrained" baseline) fine-tunes by SGD at
the best of the rates 0.01, 0.003, 0.001 on 100 validation tasks. All adapt on the K support
points of 600 new tasks and are scored on 100 query points each, every learner after the step
counts it was meta-trained for and more: MAML and the joint net after 0, 1, 5 and 10 steps;
MAML++ after 0, 1, 5 (trained) and 10 (steps past its 5 take each layer's smallest positive
learned rate: ``mc.MAML``'s rule); iMAML after 0, 1, 10, 200 (trained) and 400 steps of its
proximal loop; Meta-SGD, whose per-parameter rates are learned for exactly one step (repeating
that step diverges), after 0 and 1 steps only — MAML++ is the per-step-rate variant for more.
"""


from __future__ import annotations

import os
import threading
import time

import numpy as np

# MAML++'s recipe in the demo (see the module docstring).
MAMLPP_STEPS = 5
MAMLPP_CLIP = 10.0
MAMLPP_RATES_LR = 1e-4      # Adam's rate for MAML++'s learned inner rates from K = 20 on
MAMLPP_RATES_FROM_K = 20


def rates_lr(k_shot):
    """Adam's rate for MAML++'s learned inner rates at K = ``k_shot`` (a parameter group), or
    None: the weights' rate (see the module docstring)."""
    return MAMLPP_RATES_LR if k_shot >= MAMLPP_RATES_FROM_K else None


def _mamlpp_optimizer(mc, k_shot):
    lr = rates_lr(k_shot)
    return mc.optim.Adam(lr=1e-3, clip_norm=MAMLPP_CLIP,
                         groups=None if lr is None else {"rates": {"lr": lr}})
MAMLPP_MAX_STEPS = 10_000   # MAML++ meta-steps in the demo (the 10,000-step table in the README)
# iMAML's recipe and its meta-steps in the demo, chosen on the demo's 100 validation tasks
# (seed 54321; query MSE after the trained steps / twice as many, about the same CPU time; each
# line: benchmarks/sinusoid_imaml.py --validation --steps N --inner-steps S --reg L [--clip 10]):
IMAML = {"reg": 50.0, "inner_lr": 0.0005, "inner_steps": 200, "cg_steps": 5}
IMAML_MAX_STEPS = 3_000
IMAML_CHOICE = """\
λ 50, rate 0.0005, 200 steps, 3,000 meta-steps: 0.388 after 200 steps, 0.388 after 400 (chosen)
λ 50, rate 0.0005, 100 steps (benchmarks/sinusoid_imaml.py), 6,000 meta-steps: 0.406 after
    100 steps, 0.428 after 200 — the loop, 8 % from converged at 100 steps, got worse past it
λ 100, rate 0.0005, 50 steps / 100 steps with the meta-gradient clipped to norm 10: the
    meta-loss became NaN at meta-step 3,424 / 3,105"""
# Steps each learner is scored after: the count it was meta-trained for and more; Meta-SGD's
# rates are learned for one step.
EVAL_STEPS = (0, 1, 5, 10)
EVAL_STEPS_METASGD = (0, 1)
EVAL_STEPS_IMAML = (0, 1, 10, IMAML["inner_steps"], 2 * IMAML["inner_steps"])
MAX_STEPS = {"MAML++": MAMLPP_MAX_STEPS, "iMAML": IMAML_MAX_STEPS}
SEED_OFFSET_MAX = 54321     # the largest offset added to --seed (the validation tasks' seed)
# meta-steps between the checks that let Ctrl-C stop the side-by-side runs: about 20 ms of one
# core each (a MAML step costs ≈ 0.3 ms, MAML++ ≈ 5×, iMAML ≈ 45×)
CANCEL_CHUNK = {"MAML": 64, "Meta-SGD": 64, "MAML++": 16, "iMAML": 2}

# Li et al. 2017, table 1: MSE after one step on 600 test tasks (mean, 95% CI where quoted here).
PUBLISHED = {5: {"MAML": (1.13, 0.18), "Meta-SGD": (0.90, 0.16)},
             10: {"MAML": (0.77, None), "Meta-SGD": (0.53, None)},
             20: {"MAML": (0.48, None), "Meta-SGD": (0.31, None)}}


def _steps(name, args):
    """Meta-steps of a learner: MAML++ (5 second-order inner steps, ≈ 5× MAML's cost per step)
    stops at MAMLPP_MAX_STEPS and iMAML (≈ 45×) at IMAML_MAX_STEPS, which keeps the whole demo
    within a few minutes on two cores."""
    return min(args.steps, MAX_STEPS[name]) if name in MAX_STEPS else args.steps


def _meta_train(mc, learners, model, source, args, progress):
    """Meta-train the learners side by side, one Python thread and one core thread each: the
    core releases the GIL, so two single-threaded runs use both cores without the per-step
    synchronisation of one two-threaded run (results are bit-identical for any thread count)."""
    from concurrent.futures import ThreadPoolExecutor
    bar = _bar(sum(_steps(name, args) for name in learners)) if progress else None
    # Ctrl-C reaches the main thread only, and the runs in the worker threads cannot see it:
    # each run's callback stops it at its next evaluation once `cancel` is set. The evaluations
    # come every CANCEL_CHUNK[name] meta-steps (a few hundredths of a second of one core each)
    # and change no result: runs are bit-identical for any chunk size.
    cancel = threading.Event()
    lock = threading.Lock()
    stopped = {}   # learner -> the meta-step at which its meta-training diverged

    def train(item):
        name, learner = item
        chunk = CANCEL_CHUNK[name]
        t0 = time.perf_counter()
        theta0 = model.init(seed=args.seed, dtype=np.float32)
        if isinstance(learner, (mc.MetaSGD, mc.MAML)):
            theta0 = learner.init(theta0)     # packs the learned rates, if any
        done = [0]

        def tick(event):                   # after every evaluation: moves the shared bar
            if bar is not None:
                with lock:
                    bar.update(event.step - done[0])
            done[0] = event.step
            return cancel.is_set()         # True stops this run (Ctrl-C in the main thread)

        problem = mc.MetaObjective(learner, source, meta_batch=args.meta_batch)
        opt = (_mamlpp_optimizer(mc, args.k_shot) if name == "MAML++"
               else mc.optim.Adam(lr=1e-3))
        try:
            res = mc.fit(problem, theta0, steps=_steps(name, args), optimizer=opt,
                         eval_every=chunk, chunk_size=chunk, callbacks=(tick,), progress=False,
                         seed=args.seed)
        except mc.FitDivergedError as e:
            # One learner's divergence must not discard the others' runs: its last finite θ is
            # scored and the table says where it stopped.
            stopped[name] = e.step
            if bar is not None:
                with lock:
                    bar.update(_steps(name, args) - done[0])
            return name, e.result.theta, time.perf_counter() - t0
        return name, res.theta, time.perf_counter() - t0

    workers = len(learners) if args.threads in (None, -1) or args.threads >= 2 else 1
    try:
        with ThreadPoolExecutor(workers) as pool:
            try:
                done = list(pool.map(train, learners.items()))
            except BaseException:           # Ctrl-C: stop the workers before waiting for them
                cancel.set()
                raise
    finally:
        if bar is not None:
            bar.close()
    return {n: th for n, th, _ in done}, {n: t for n, _, t in done}, stopped


def _bar(total):
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc="meta-train MAML, Meta-SGD, MAML++, iMAML", unit="step")


def _recipes(args):
    """Each learner's inner loop and meta-steps as trained: {name: {inner_steps, inner_lr,
    meta_steps, text}} (``inner_lr`` the starting rate of learned rates)."""
    def one(name, inner_steps, inner_lr, how):
        steps = _steps(name, args)
        return {"inner_steps": inner_steps, "inner_lr": inner_lr, "meta_steps": steps,
                "text": f"{inner_steps} inner step{'s' if inner_steps > 1 else ''} {how} "
                        f"{inner_lr:g}, {steps:,} meta-steps"}
    return {"MAML": one("MAML", 1, 0.01, "at"),
            "Meta-SGD": one("Meta-SGD", 1, 0.01, "at learned per-parameter rates from"),
            "MAML++": one("MAML++", MAMLPP_STEPS, 0.01,
                          "at learned per-layer rates " + (
                              f"(trained at Adam {rates_lr(args.k_shot):g}) from"
                              if rates_lr(args.k_shot) else "from")),
            "iMAML": one("iMAML", IMAML["inner_steps"], IMAML["inner_lr"],
                         f"(proximal, λ {IMAML['reg']:g}, {IMAML['cg_steps']} CG steps) at")}


def run_demo(args):
    import metacore as mc
    from ..evaluation import baselines
    from ..evaluation import report
    from ..train.checkpoint import make_folder, write_atomic

    say = (lambda *a, **k: None) if args.quiet else print
    out = args.output if args.output is not None else "runs/demo"
    for name in ("steps", "k_shot", "meta_batch", "test_tasks"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.seed < 0:
        raise ValueError(f"--seed must be >= 0, got {args.seed}")
    # the demo derives seeds up to seed + SEED_OFFSET_MAX; name the flag, not a derived value
    if args.seed > 2**64 - 1 - SEED_OFFSET_MAX:
        raise ValueError(f"--seed must be <= {2**64 - 1 - SEED_OFFSET_MAX}, got {args.seed}")
    make_folder(out, "--output", create=False)   # checked before minutes of training
    K, progress = args.k_shot, not args.quiet
    model = mc.MLP([1, 40, 40, 1], activation="relu", loss="mse")
    source = mc.tasks.SinusoidSource(k_support=K, k_query=K)
    test = mc.tasks.sinusoid(args.test_tasks, k_support=K, k_query=100, seed=12345 + args.seed,
                             dtype=np.float32)
    info = mc.build_info()
    say(f"metacore {mc.__version__} · SIMD {info['simd_active']} · "
        f"{args.threads or info['default_threads']} threads")
    say(f"sinusoids, {K}-shot: meta-batch {args.meta_batch}, 1 inner step (lr 0.01; MAML++ "
        f"{MAMLPP_STEPS} steps, learned rates; iMAML {IMAML['inner_steps']} proximal steps, lr "
        f"{IMAML['inner_lr']:g}, λ {IMAML['reg']:g}), Adam 1e-3, {args.steps:,} meta-steps "
        f"(MAML++ {_steps('MAML++', args):,}, iMAML {_steps('iMAML', args):,}); evaluated "
        f"on {args.test_tasks} new tasks")

    start = time.perf_counter()
    per = args.threads // 4 if args.threads is not None and args.threads >= 8 else 1
    learners = {"MAML": mc.MAML(model, inner_lr=0.01, inner_steps=1, n_threads=per),
                "Meta-SGD": mc.MetaSGD(model, inner_lr=0.01, inner_steps=1, n_threads=per),
                "MAML++": mc.MAML(model, inner_lr=0.01, inner_steps=MAMLPP_STEPS,
                                  per_step_rates="layer", multi_step_loss=True,
                                  msl_anneal_steps=max(1, _steps("MAML++", args) * 15 // 100),
                                  n_threads=per),
                "iMAML": mc.IMAML(model, **IMAML, n_threads=per)}
    thetas, times, stopped = _meta_train(mc, learners, model, source, args, progress)
    t0 = time.perf_counter()
    pool = source.sample(1000, seed=args.seed + 1)
    thetas["joint"] = baselines.joint(model, pool, model.init(seed=args.seed + 1,
                                                              dtype=np.float32),
                                      steps=min(args.steps, 5000), lr=1e-3,
                                      batch_tasks=args.meta_batch, seed=args.seed,
                                      n_threads=args.threads)
    times["joint"] = time.perf_counter() - t0

    # The joint net fine-tunes at its best rate on separate validation tasks (0.01 may diverge).
    val = mc.tasks.sinusoid(100, k_support=K, k_query=100, seed=54321 + args.seed,
                            dtype=np.float32)
    lr_joint = baselines.best_lr(model, thetas["joint"], val, (0.01, 0.003, 0.001),
                                 n_threads=args.threads)
    reports = {name: mc.evaluate(model, theta, test,
                                 steps={"Meta-SGD": EVAL_STEPS_METASGD,
                                        "iMAML": EVAL_STEPS_IMAML}.get(name, EVAL_STEPS),
                                 lr=lr_joint if name == "joint" else None,   # learners: own rule
                                 learner=learners.get(name), name=name, n_threads=args.threads,
                                 progress=progress)
               for name, theta in thetas.items()}
    reports["joint"].name = f"joint (lr {lr_joint:g})"
    total = time.perf_counter() - start

    table = report.format_table(reports, title=f"MSE on the query points of {args.test_tasks} "
                                               f"new tasks after k steps on {K} support points "
                                               f"(mean ± 95% CI)")
    say("\n" + table)
    recipes = _recipes(args)
    say("\ntrained with: " + "; ".join(f"{n} {r['text']}" for n, r in recipes.items()))
    for name, step in stopped.items():
        say(f"{name}: its meta-training diverged at meta-step {step:,} (FitDivergedError: a "
            f"meta-batch's inner loop blew up); its row scores the last finite θ, after "
            f"{step:,} meta-steps")
    paper = PUBLISHED.get(K)
    if paper:
        say(f"\npublished, one step, {K}-shot (Li et al. 2017): " + ", ".join(
            f"{n} {m:.2f}" + (f" ± {h:.2f}" if h else "") for n, (m, h) in paper.items()))
    say(f"\ntime: MAML {times['MAML']:.1f} s, Meta-SGD {times['Meta-SGD']:.1f} s, MAML++ "
        f"{times['MAML++']:.1f} s and iMAML {times['iMAML']:.1f} s (side by side), joint "
        f"{times['joint']:.1f} s; total {total:.1f} s")

    make_folder(out, "--output")
    extra = {"k_shot": K, "meta_steps": args.steps, "meta_batch": args.meta_batch,
             "recipes": {n: {k: v for k, v in r.items() if k != "text"}
                         for n, r in recipes.items()},
             "seconds": times, "total_seconds": total, "published_one_step": paper,
             "diverged_at_meta_step": stopped}
    report.save_json(reports, os.path.join(out, "results.json"), extra=extra)
    write_atomic(os.path.join(out, "table.txt"), lambda f: f.write((table + "\n").encode()))
    try:
        plot = ", " + report.plot(reports, os.path.join(out, "adaptation.png"),
                                  title=f"sinusoids, {K}-shot, {args.test_tasks} new tasks")
    except ImportError:      # matplotlib is optional: the table and JSON stand
        plot = " (no plot: pip install 'metacore[plot]')"
    say(f"wrote {out}/results.json, {out}/table.txt{plot}")
    return reports


def run_omniglot_demo(args):
    """``metacore demo omniglot --data PATH``: the "Omniglot minimal" table (ProtoNet with an
    MLP embedding trained on 40-way episodes of a shifted-image pool, the pixel class mean and two
    fine-tuned baselines on the same 600 test episodes per setting), sized to finish in under 5 minutes on 2 cores."""
    import pathlib
    from .omniglot import table
    if args.data is None:
        raise ValueError("demo omniglot needs --data PATH, the folder that holds "
                         "images_background_small1.zip and images_background_small2.zip")
    root = pathlib.Path(args.data)
    def present(folder, name):
        return (folder / name).exists() or (folder / name[:-4]).is_dir()

    if not present(root, "images_background_small1.zip") and \
            present(root / "omniglot", "images_background_small1.zip"):
        root = root / "omniglot"   # the data folder above it, as benchmarks/omniglot_minimal.py takes
    for name in ("images_background_small1.zip", "images_background_small2.zip"):
        if not (root / name).exists() and not (root / name[:-4]).is_dir():
            raise ValueError(f"--data: {root / name} is missing (the Omniglot archives are not "
                             f"shipped; get them from github.com/brendenlake/omniglot)")
    say = (lambda *a, **k: None) if args.quiet else (lambda *a, **k: print(*a, flush=True, **k))
    say("Omniglot minimal: ProtoNet (MLP 784-256-128-64, 40-way training on shifted images) "
        "against the baselines")
    recipe = dict(OMNIGLOT_DEMO)
    if args.steps is not None:
        if args.steps < 1:
            raise ValueError(f"--steps must be >= 1, got {args.steps}")
        recipe["steps"] = args.steps
    if args.seed is not None:
        if args.seed < 0:
            raise ValueError(f"--seed must be >= 0, got {args.seed}")
        recipe["seed"] = args.seed
    table(root, threads=args.threads, say=say, **recipe)


# The demo's Omniglot settings: one plain ProtoNet trained on 40-way 1-shot episodes drawn from a
# pool of 1-pixel-shifted images, AdamW with decoupled decay and a cosine rate, scored at every
# setting (the README's best recipe), and the baselines.
OMNIGLOT_DEMO = {"steps": 4000, "train_way": 40, "q_query": 5, "lr": 1e-3, "train_shot": 1,
                 "norm": None, "head_scale": 1.0, "weight_decay": 0.01, "schedule": "cosine",
                 "shift": 1, "pretrain_steps": 3000}
