"""Running an experiment described by a :class:`~metacore.config.Config`: build its tasks, model
and learner, train, evaluate against the baselines, and write everything to the output folder:

    config.toml       the resolved configuration (every key)
    checkpoint.npz    θ (Meta-SGD: θ and the rates packed) and a JSON description, no pickles
    history.npz       the per-step training loss
    results.json      the evaluation summaries (mean ± 95% CI per adaptation step and method)
    table.txt         the same as printed tables
    adaptation.png    the adaptation curves (when matplotlib is installed)
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass

import numpy as np

from ..evaluation import baselines

from ..evaluation import report

from ..data import tasks as _tasks
from .config import Config, ConfigError
from ..evaluation.protocol import evaluate
from ..learners import ANIL, MAML, MetaSGD, Reptile
from ..models import MLP

__all__ = ["Experiment", "build", "train", "evaluate_all", "run_train", "run_evaluate",
           "save_checkpoint", "load_checkpoint"]

LEARNER_NAMES = {"maml": "MAML", "fomaml": "FOMAML", "metasgd": "Meta-SGD", "anil": "ANIL",
                 "reptile": "Reptile", "multitask": "multi-task"}


@dataclass
class Experiment:
    """The built pieces of a config: tasks to train on (a TaskSet or a task source), held-out test
    tasks, the model, the learner (None for multitask) and the joint baseline's training data."""
    cfg: Config
    train_tasks: object
    test_tasks: object
    model: MLP
    learner: object

    @property
    def label(self) -> str:
        return LEARNER_NAMES[self.cfg.learner.kind]

    @property
    def dtype(self):
        return np.dtype(self.cfg.dtype)


# --- building ------------------------------------------------------------------------------------
def _task_sets(cfg):
    """(train: TaskSet or SinusoidSource, test: TaskSet, n_features, n_outputs, loss)."""
    t, dtype, seed = cfg.tasks, np.dtype(cfg.dtype), cfg.seed
    q_test = t.test_k_query or t.k_query
    if t.family == "sinusoid":
        kw = dict(amplitude=t.amplitude, phase=t.phase, x_range=t.x_range)
        train = (_tasks.SinusoidSource(k_support=t.k_support, k_query=t.k_query, **kw)
                 if t.n_train == 0 else
                 _tasks.sinusoid(t.n_train, k_support=t.k_support, k_query=t.k_query, seed=seed,
                                 dtype=dtype, **kw))
        test = _tasks.sinusoid(t.n_test, k_support=t.k_support, k_query=q_test,
                               seed=cfg.evaluate.seed, dtype=dtype, **kw)
        return train, test, 1, 1, "mse"
    if t.family == "digits":
        kw = dict(n_way=t.n_way, k_shot=t.k_support, rotations=t.rotations, dtype=dtype)
        train = _tasks.digits(t.n_train, q_query=t.k_query, classes="train", seed=seed, **kw)
        test = _tasks.digits(t.n_test, q_query=q_test, classes="test", seed=cfg.evaluate.seed,
                             **kw)
        return train, test, 64, t.n_way, "cross_entropy"
    if t.family in ("linear", "logistic"):
        make = _tasks.linear_family if t.family == "linear" else _tasks.logistic_family
        kw = dict(n_features=t.n_features, n_rows=t.k_support + t.k_query, n_support=t.k_support,
                  relatedness_noise=t.relatedness_noise, seed=seed, dtype=dtype)
        if t.family == "linear":
            kw["noise"] = t.noise
        both = make(t.n_train + t.n_test, **kw)
        n = t.n_train
        train, test = both.subset(np.arange(n)), both.subset(np.arange(n, n + t.n_test))
        return train, test, t.n_features, 1, "mse" if t.family == "linear" else "logistic"
    ts = _tasks.from_csv(t.path, task=t.task_column, target=t.target,
                         features=t.features or None, n_support=t.k_support, dtype=dtype)
    train, test = ts.split_tasks(test_fraction=t.test_fraction, seed=seed)
    k = int(ts.y.max()) + 1 if t.loss == "cross_entropy" else 1
    return train, test, ts.n_features, k, t.loss


def _learner(cfg, model):
    lc, kw = cfg.learner, dict(inner_lr=cfg.learner.inner_lr, inner_steps=cfg.learner.inner_steps,
                               n_threads=cfg.threads)
    if lc.kind == "multitask":
        return None
    if lc.kind == "reptile":
        return Reptile(model, outer_lr=lc.outer_lr, **kw)
    cls = {"maml": MAML, "fomaml": MAML, "metasgd": MetaSGD, "anil": ANIL}[lc.kind]
    return cls(model, first_order=lc.first_order or lc.kind == "fomaml", **kw)


def build(cfg: Config) -> Experiment:
    """Tasks, model and learner of a config."""
    train_tasks, test_tasks, d, k, loss = _task_sets(cfg)
    model = MLP([d, *cfg.model.hidden, k], activation=cfg.model.activation, loss=loss)
    return Experiment(cfg, train_tasks, test_tasks, model, _learner(cfg, model))


# --- training ------------------------------------------------------------------------------------
def train(exp: Experiment, progress=True):
    """(θ, history) of the config's learner. Meta-learners run ``learner.fit``; multitask
    minimises Σ α_i f_i(θ) + (λ/2)‖θ‖² over the training tasks' rows."""
    cfg = exp.cfg
    theta0 = exp.model.init(seed=cfg.seed, dtype=exp.dtype)
    if exp.learner is None:
        wc, T = cfg.weighting, exp.train_tasks.n_tasks
        if wc.kind == "fixed" and len(wc.alpha) != T:
            raise ConfigError(f"weighting.alpha must have one weight per training task "
                              f"({T}), got {len(wc.alpha)}")
        # adaptive strategies (all but uniform, fixed, evaldriven) need every task at every step
        batch = min(cfg.train.meta_batch, T) if wc.kind in ("uniform", "fixed",
                                                             "evaldriven") else None
        theta = baselines.joint(exp.model, exp.train_tasks, theta0, steps=cfg.train.steps,
                                lr=cfg.optimizer.lr, weighting=wc.strategy(T), l2=cfg.train.l2,
                                batch_tasks=batch, seed=cfg.seed, progress=progress,
                                n_threads=cfg.threads)
        return theta, {}
    if isinstance(exp.learner, MetaSGD):
        theta0 = exp.learner.init(theta0)
    validation = None
    if cfg.train.validate_every:
        validation = exp.test_tasks.subset(np.arange(min(100, exp.test_tasks.n_tasks)))
    res = exp.learner.fit(exp.train_tasks, theta0, meta_batch=cfg.train.meta_batch,
                          steps=cfg.train.steps, optimizer=cfg.optimizer.spec(),
                          validation=validation, validate_every=cfg.train.validate_every or None,
                          progress=progress, seed=cfg.seed, chunk=cfg.train.chunk)
    return res.theta, res.history


def joint_theta(exp: Experiment, progress=False):
    """θ of the joint-training baseline: the model trained on the pooled training tasks.

    For classification episodes (labels remapped per episode) it is the standard pre-training
    baseline instead: a classifier over every training class at once, whose output layer is then
    reset to zero for the new n-way tasks."""
    cfg, ev = exp.cfg, exp.cfg.evaluate
    theta0 = exp.model.init(seed=cfg.seed + 1, dtype=exp.dtype)
    if cfg.tasks.family == "digits":
        return _pretrained_digits(exp, progress)
    pool = exp.train_tasks
    if not hasattr(pool, "n_tasks"):      # a task source: draw a finite pool from it
        pool = pool.sample(ev.joint_tasks, seed=cfg.seed + 1, dtype=exp.dtype)
    return baselines.joint(exp.model, pool, theta0, steps=ev.joint_steps, lr=ev.joint_lr,
                           batch_tasks=min(cfg.train.meta_batch, pool.n_tasks), seed=cfg.seed,
                           progress=progress, n_threads=cfg.threads)


def _pretrained_digits(exp, progress):
    from ..data.digits import digit_images, digits_classes
    from ..data.taskset import TaskSet
    cfg = exp.cfg
    classes = digits_classes("train", rotations=cfg.tasks.rotations)
    images, labels = digit_images()
    Xs, ys = [], []
    for j, c in enumerate(classes):
        digit, rot = (c // 4, c % 4) if cfg.tasks.rotations else (c, 0)
        imgs = np.rot90(images[labels == digit], k=rot, axes=(1, 2)).reshape(-1, 64)
        Xs.append(imgs)
        ys.append(np.full(imgs.shape[0], float(j)))
    pool = TaskSet.from_arrays([np.concatenate(Xs)], [np.concatenate(ys)], dtype=exp.dtype)
    sizes = exp.model.layer_sizes
    wide = MLP([*sizes[:-1], len(classes)], activation=exp.model.activation,
               loss="cross_entropy")
    ev = cfg.evaluate
    theta_wide = baselines.joint(wide, pool, wide.init(seed=cfg.seed + 1, dtype=exp.dtype),
                                 steps=ev.joint_steps, lr=ev.joint_lr, seed=cfg.seed,
                                 progress=progress, n_threads=cfg.threads)
    theta = np.zeros(exp.model.n_params, dtype=exp.dtype)
    n_trunk = exp.model.n_params - sizes[-1] * (sizes[-2] + 1)
    theta[:n_trunk] = theta_wide[:n_trunk]   # trunk kept, output layer zero
    return theta


# --- evaluation ----------------------------------------------------------------------------------
def evaluate_all(exp: Experiment, theta, progress=False, baselines_=None):
    """{name: EvalReport} for the learned θ and the config's baselines on the test tasks."""
    cfg, ev = exp.cfg, exp.cfg.evaluate
    lr = ev.lr if ev.lr is not None else cfg.learner.inner_lr
    reports = {}
    if exp.learner is not None:
        reports[exp.label] = evaluate(exp.model, theta, exp.test_tasks, steps=ev.steps,
                                      lr=ev.lr, learner=exp.learner, name=exp.label,
                                      n_threads=cfg.threads)
    else:
        reports[exp.label] = evaluate(exp.model, theta, exp.test_tasks, steps=ev.steps, lr=lr,
                                      name=exp.label, n_threads=cfg.threads)
    names = ev.baselines if baselines_ is None else baselines_
    val = _validation_tasks(exp) if names and ev.lr is None else None
    for b in names:
        start = (baselines.scratch(exp.model, seed=cfg.seed + 2, dtype=exp.dtype)
                 if b == "scratch" else joint_theta(exp, progress))
        # a baseline fine-tunes at its best of lr, lr/3, lr/10 on training-side tasks
        lr_b = lr if val is None else baselines.best_lr(
            exp.model, start, val, (lr, lr / 3, lr / 10), steps=max(ev.steps),
            n_threads=cfg.threads)
        name = b if lr_b == lr else f"{b} (lr {lr_b:g})"
        reports[name] = evaluate(exp.model, start, exp.test_tasks, steps=ev.steps, lr=lr_b,
                                 name=name, n_threads=cfg.threads)
    return reports


def _validation_tasks(exp, n=100):
    """Tasks from the training side (never the test tasks) to pick a baseline's rate on."""
    train = exp.train_tasks
    if not hasattr(train, "n_tasks"):
        return train.sample(n, seed=exp.cfg.seed + 3, dtype=exp.dtype)
    return train.subset(np.arange(min(n, train.n_tasks)))


# --- persistence ---------------------------------------------------------------------------------
def save_checkpoint(path, theta, exp: Experiment, step):
    """θ and a JSON description (model, learner, config, step) in one .npz, no pickles."""
    meta = {"format": "metacore-experiment", "version": 1, "model": exp.model.spec(),
            "learner": exp.cfg.learner.kind, "step": int(step), "config": exp.cfg.to_dict()}
    np.savez(path, theta=np.asarray(theta), meta=np.array(json.dumps(meta)))
    return path


def load_checkpoint(path, exp: Experiment):
    """θ from a checkpoint, checked against the experiment's model and learner."""
    try:
        with np.load(path, allow_pickle=False) as data:
            theta, meta = data["theta"], json.loads(str(data["meta"]))
    except (OSError, KeyError, ValueError) as exc:
        raise ValueError(f"--checkpoint {path}: not a metacore checkpoint ({exc})") from None
    if MLP.from_spec(meta["model"]) != exp.model:
        raise ValueError(f"--checkpoint {path} holds θ of {MLP.from_spec(meta['model'])!r}, the "
                         f"config builds {exp.model!r}")
    want = exp.learner.n_params if exp.learner is not None else exp.model.n_params
    if theta.ndim != 1 or theta.shape[0] != want or meta["learner"] != exp.cfg.learner.kind:
        raise ValueError(f"--checkpoint {path} was saved by learner {meta['learner']!r} with "
                         f"{theta.shape} parameters; the config's learner "
                         f"{exp.cfg.learner.kind!r} needs ({want},)")
    return theta.astype(exp.dtype)


def _write_results(out, reports, exp, extra, say):
    tables = [report.format_table(reports, title=f"{exp.cfg.name}: query loss, mean ± 95% CI "
                                                  f"over {exp.test_tasks.n_tasks} test tasks")]
    if any(r.accuracies is not None for r in reports.values()):
        tables.append(report.format_table(reports, metric="accuracy"))
    text = "\n\n".join(tables)
    say(text)
    with open(os.path.join(out, "table.txt"), "w") as fh:
        fh.write(text + "\n")
    report.save_json(reports, os.path.join(out, "results.json"), extra=extra)
    if exp.cfg.evaluate.plot:
        metric = "accuracy" if exp.model.loss != "mse" else "loss"
        path = report.plot(reports, os.path.join(out, "adaptation.png"), metric=metric)
        say(f"plot: {path}" if path else "plot: skipped (pip install 'metacore[plot]')")


def run_train(cfg: Config, quiet=False):
    """Train, checkpoint, evaluate and write the results; returns the reports."""
    say = (lambda *a: None) if quiet else print
    out = cfg.output_dir
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "config.toml"), "w") as fh:
        fh.write(cfg.to_toml())
    exp = build(cfg)
    say(f"{cfg.name}: {exp.label} on {cfg.tasks.family} tasks, model {exp.model!r}")
    start = time.perf_counter()
    theta, history = train(exp, progress=not quiet)
    train_time = time.perf_counter() - start
    save_checkpoint(os.path.join(out, "checkpoint.npz"), theta, exp, cfg.train.steps)
    np.savez(os.path.join(out, "history.npz"),
             **{k: np.asarray(v) for k, v in history.items() if k != "validation"})
    say(f"trained {cfg.train.steps} steps in {train_time:.1f} s")
    reports = evaluate_all(exp, theta, progress=not quiet)
    _write_results(out, reports, exp, {"train_seconds": train_time, "config": cfg.to_dict()}, say)
    say(f"outputs in {out}/")
    return reports


def run_evaluate(cfg: Config, checkpoint, quiet=False):
    """Evaluate a saved θ with the config's test tasks and baselines; writes the results."""
    say = (lambda *a: None) if quiet else print
    if not os.path.exists(checkpoint):
        raise FileNotFoundError(f"--checkpoint {checkpoint}: no such file")
    exp = build(cfg)
    theta = load_checkpoint(checkpoint, exp)
    out = cfg.output_dir
    os.makedirs(out, exist_ok=True)
    reports = evaluate_all(exp, theta, progress=not quiet)
    _write_results(out, reports, exp, {"checkpoint": os.fspath(checkpoint),
                                       "config": cfg.to_dict()}, say)
    return reports
