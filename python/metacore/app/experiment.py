"""Running an experiment described by a :class:`~metacore.app.config.Config`: build its tasks,
model and learner, train with :func:`metacore.fit` (a :class:`~metacore.MetaObjective` for the
meta-learners, the weighted :class:`~metacore.Objective` for multitask), evaluate against the
baselines, and write everything to the output folder:

    config.toml       the resolved configuration (every key)
    checkpoint.npz    the train state, written by :func:`metacore.save` every
                      ``train.checkpoint_every`` steps, at the end, on Ctrl-C and on divergence;
                      ``mc.load`` reads it, its ``info`` holds the config
    history.npz       the whole run's :class:`~metacore.History` (``History.to_arrays()``), across
                      resumes: the per-step loss, and at each evaluation (every
                      ``train.validate_every`` steps, else about 100 times a run, and at each
                      checkpoint) the training loss, α (multitask) and the validation loss;
                      written when the process's run ends (also on Ctrl-C and on divergence)
    history_parts/    while a run goes on: at each checkpoint, the history since the previous
                      one (``<first step>.npz``), so that checkpointing costs the same at step
                      10^6 as at step 10^3; folded into history.npz at the end, and read with it
                      by ``--resume`` after a run that was killed
    results.json      the evaluation summaries (mean ± 95% CI per adaptation step and method)
    table.txt         the same as printed tables
    adaptation.png    the adaptation curves (when matplotlib is installed)

``metacore evaluate`` writes ``evaluation.json``, ``evaluation_table.txt`` and
``evaluation_adaptation.png`` instead, so it never overwrites what ``train`` wrote.
``metacore predict`` (:func:`run_predict`) writes only the file it is given.

results.json also lists ``train_tasks`` and ``test_tasks`` (task names) and ``per_task``: each
method's query loss (and accuracy) per held-out task after each number of adaptation steps. Every
JSON file is strict JSON (RFC 8259): a number that is not finite is written as null.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass

import numpy as np

from .. import __version__
from ..data import tasks as _tasks
from ..data.taskset import TaskSet
from ..evaluation import baselines, report
from ..evaluation.protocol import evaluate
from ..learners import ANIL, IMAML, MAML, Learner, MetaSGD, ProtoNet, Reptile, RidgeHead
from ..models import MLP
from ..problems import MetaObjective, Objective
from ..train.checkpoint import CORRUPT_NPZ_ERRORS, load, make_folder, save, write_atomic
from ..train.fit import fit
from ..train.result import History
from .config import Config, ConfigError, keyed_error

__all__ = ["Experiment", "build", "train", "evaluate_all", "run_train", "run_evaluate",
           "load_run_checkpoint", "merge_histories", "run_predict", "episode_sampler",
           "run_info", "task_names", "per_task_scores", "digit_class_images"]

LEARNER_NAMES = {"maml": "MAML", "fomaml": "FOMAML", "metasgd": "Meta-SGD", "anil": "ANIL",
                 "reptile": "Reptile", "multitask": "multi-task", "protonet": "ProtoNet",
                 "ridgehead": "RidgeHead", "imaml": "iMAML", "mamlpp": "MAML++"}
CHECKPOINT, HISTORY, HISTORY_PARTS = "checkpoint.npz", "history.npz", "history_parts"
EPISODE_POOL = 50   # tasks.episodes: steps per pool of fresh episodes (meta_batch of them a step)


@dataclass
class Experiment:
    """The built pieces of a config: tasks to train on (a TaskSet or a task source), held-out test
    tasks, the model (ProtoNet, RidgeHead: the embedding net, no output layer), the learner (None
    for multitask) and the weighting strategy (None for the meta-learners)."""
    cfg: Config
    train_tasks: object
    test_tasks: object
    model: MLP
    learner: object
    weighting: object = None
    standardizer: object = None
    features: list | None = None
    n_outputs: int = 1          # the tasks' outputs (classes) and loss: the classifier's head
    loss: str = "mse"

    @property
    def label(self) -> str:
        name = LEARNER_NAMES[self.cfg.learner.kind]
        return name if self.weighting is None else f"{name} ({type(self.weighting).__name__})"

    @property
    def dtype(self):
        return np.dtype(self.cfg.dtype)

    @property
    def classifier(self) -> MLP:
        """The net the baselines fine-tune: the model, or for an embedding (ProtoNet,
        RidgeHead) the same layers with an output layer of the tasks' classes."""
        if not self.cfg.learner.episodic:
            return self.model
        m = self.model
        return MLP([*m.layer_sizes, self.n_outputs], activation=m.activation, loss=self.loss,
                   norm=m.norm)


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
        if t.n_train == 0:    # fresh episodes at every step, drawn in the core
            train = digit_class_images(t.rotations, t.mirror).source(
                n_way=t.n_way, k_shot=t.k_support, q_query=t.k_query)
        else:
            train = _tasks.digits(t.n_train, q_query=t.k_query, classes="train", seed=seed,
                                  **kw)
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
    raise AssertionError(f"family {t.family!r} is built by _csv_task_sets")


# What a message of the tabular loader starts with -> the config key it is about.
_CSV_KEYS = {"task": "tasks.task_column", "target": "tasks.target", "features": "tasks.features",
             "support": "tasks.support", "n_support": "tasks.k_support",
             "stratify": "tasks.stratify"}


def _csv_error(t, exc):
    """A loader error as a ConfigError naming the config key (``tasks.task_column``, ...); what
    names no column or setting is about the file (``tasks.path``)."""
    text = str(exc)
    first = text.split(":", 1)[0].split("=", 1)[0].split(" ", 1)[0]
    if first in _CSV_KEYS:
        key = _CSV_KEYS[first]
        if first == "n_support" and t.support is None:
            key = "tasks.k_support (or tasks.support)"
        rest = text[len(first) + 2:] if text.startswith(f"{first}: ") else text
        return ConfigError(f"{key}: {rest}")
    if text.startswith("task column"):
        return ConfigError(f"tasks.task_column: {text}")
    if f"column {t.target!r}" in text:
        return ConfigError(f"tasks.target: {text}")
    if "column " in text:
        return ConfigError(f"tasks.features: {text}")
    return ConfigError(f"tasks.path: {text}")


def _csv_task_sets(cfg):
    """The csv family: (train, test, n_features, n_outputs, loss, Standardizer or None, feature
    column names). Support/query as ``support`` (else ``k_support``), ``shuffle``, ``stratify``;
    ``test_fraction`` of the tasks held out; with ``standardize`` the features are scaled by the
    training tasks' rows only (every row of them, support and query)."""
    from ..data.tabular import Standardizer, check_class_labels, float_columns, read_csv
    t, dtype, seed = cfg.tasks, np.dtype(cfg.dtype), cfg.seed
    try:
        header, table = read_csv(t.path)
        features = (list(t.features) if t.features is not None    # absent: every other column
                    else [c for c in header if c not in (t.task_column, t.target)])
        ts = _tasks.from_csv(t.path, task=t.task_column, target=t.target, features=features,
                             n_support=None if t.support is not None else t.k_support,
                             support=t.support, shuffle=t.shuffle, stratify=t.stratify,
                             # read in the working dtype (a value beyond float32's range is
                             # named by line); scaled in float64 first with tasks.standardize
                             seed=seed, dtype=np.float64 if t.standardize else dtype)
    except FileNotFoundError:
        raise ConfigError(f"tasks.path: no such file {t.path}") from None
    except (ValueError, TypeError) as exc:
        raise _csv_error(t, exc) from None
    # the classes of a classifier: class codes 0..k−1 (at least 2 outputs, so that labels
    # such as 0.5 or −1 are named as labels, not as a class count)
    k = max(2, int(np.floor(ts.y.max())) + 1) if t.loss == "cross_entropy" else 1
    if t.loss != "mse":   # the labels of tasks.target against the head tasks.loss asks for, by line
        y = float_columns(table, [t.target], t.path)[:, 0]
        try:
            check_class_labels(y, t.loss, t.target, table.lines, t.path)
        except ValueError as exc:
            raise ConfigError(f"tasks.target / tasks.loss: {exc}") from None
    if k > ts.n_rows:     # codes that cannot all occur: not 0..k−1, e.g. raw ids
        raise ConfigError(f"tasks.target: column {t.target!r} has class label "
                          f"{int(ts.y.max())} (line {table.lines[int(np.argmax(y))]} of {t.path}) "
                          f"but {ts.n_rows} rows, so most of its {k} classes never occur: write "
                          f"the classes as codes 0..C−1")
    absent = np.setdiff1d(np.arange(k), ts.y) if t.loss == "cross_entropy" else ()
    if len(absent) and not cfg.learner.episodic:   # a k-way head with a class no row has
        shown = ", ".join(f"{int(c)}" for c in absent[:5]) + (", ..." if len(absent) > 5 else "")
        raise ConfigError(f"tasks.target: column {t.target!r} of {t.path} is read as class codes "
                          f"0..{k - 1} (the largest label + 1 classes) but no row has the "
                          f"label(s) {shown}: the net would give probability to classes that "
                          f"never occur. Write the classes as codes 0..C−1 (labels 1..C are "
                          f"one-based: subtract 1)")
    try:
        train, test = ts.split_tasks(test_fraction=t.test_fraction, seed=seed)
    except ValueError as exc:
        if ts.n_tasks < 2:
            raise ConfigError(f"tasks.path: {t.path} has {ts.n_tasks} task (column "
                              f"{t.task_column!r}); holding out tasks.test_fraction of them needs "
                              f"at least 2") from None
        raise ConfigError(f"tasks.test_fraction: {exc}") from None
    _check_query_rows(cfg, table, ("held-out", test), ("training", train))
    scaler = None
    if t.standardize:
        scaler = Standardizer().fit(train.X)

        def scaled(part):
            return TaskSet(scaler.transform(part.X), part.y, part.offsets, part.n_support,
                           part.task_ids, dtype=dtype, names=list(part.names))
        train, test = scaled(train), scaled(test)
    else:
        train, test = train.astype(dtype), test.astype(dtype)
    return train, test, ts.n_features, k, t.loss, scaler, features


def _check_query_rows(cfg, table, *parts):
    """ConfigError naming the task (its id and first line in the file) when a task that must be
    scored has no query rows: the held-out tasks always, the training tasks of a meta-learner
    (the core named it "task 0" of the training set, after the split)."""
    t = cfg.tasks
    for what, part in parts:
        if what == "training" and cfg.learner.kind == "multitask":
            continue
        empty = np.flatnonzero(part.task_sizes - part.n_support <= 0)
        if empty.size:
            i = int(empty[0])
            name, size = part.names[i], int(part.task_sizes[i])
            line = table.lines[table[t.task_column].index(name)]
            key = "tasks.support" if t.support is not None else "tasks.k_support"
            raise ConfigError(f"{key}: {what} task {name!r} (line {line} of {t.path}) has "
                              f"{size} row{'' if size == 1 else 's'}, all of them support rows, "
                              f"so none is left to score the adaptation on: give every task "
                              f"more rows than its support rows, or drop the task")


def episode_sampler(exp):
    """The per-step episode sampler over the training tasks (``tasks.episodes``): every task's
    rows re-split into support (``tasks.support``, else ``k_support`` rows) and query rows,
    stratified by class for classification. None when the config asks for fixed splits."""
    t = exp.cfg.tasks
    if not t.episodes or exp.learner is None:
        return None
    from ..sklearn.episodes import EpisodeSampler
    tr = exp.train_tasks
    groups = np.repeat(np.arange(tr.n_tasks), tr.task_sizes)
    support = t.support if t.support is not None else t.k_support
    try:
        return EpisodeSampler(tr.X, tr.y, groups, support=support, stratify=t.loss != "mse")
    except ValueError as exc:   # too few rows or classes for the split the config asks for
        key = "tasks.support" if t.support is not None else "tasks.k_support"
        raise ConfigError(f"{key} (with tasks.episodes): {exc}") from None


def _learner(cfg, model):
    """The learner of ``learner.kind`` over ``model``, its keys passed by their constructor
    names (None for multitask)."""
    lc, kw = cfg.learner, dict(inner_lr=cfg.learner.inner_lr, inner_steps=cfg.learner.inner_steps,
                               n_threads=cfg.threads)
    if lc.kind == "multitask":
        return None
    if lc.kind == "reptile":
        return Reptile(model, outer_lr=lc.outer_lr, **kw)
    if lc.kind == "protonet":
        return ProtoNet(model, distance=lc.distance, n_threads=cfg.threads)
    if lc.kind == "ridgehead":
        return RidgeHead(model, reg=lc.reg, scale=lc.scale, n_threads=cfg.threads)
    if lc.kind == "imaml":
        return IMAML(model, reg=lc.reg, cg_steps=lc.cg_steps, **kw)
    if lc.kind == "mamlpp":
        return MAML(model, first_order=lc.first_order, per_step_rates=lc.per_step_rates,
                    multi_step_loss=lc.multi_step_loss, msl_anneal_steps=lc.msl_anneal_steps,
                    first_order_until=lc.first_order_until, **kw)
    cls = {"maml": MAML, "fomaml": MAML, "metasgd": MetaSGD, "anil": ANIL}[lc.kind]
    return cls(model, first_order=lc.first_order or lc.kind == "fomaml", **kw)


def _model(cfg, d, k, loss):
    """The net of ``model``: [d, *hidden, k] with the tasks' loss, or for ProtoNet/RidgeHead
    the embedding [d, *hidden] (its loss head is never used)."""
    mc = cfg.model
    if cfg.learner.episodic:
        return MLP([d, *mc.hidden], activation=mc.activation, loss="mse", norm=mc.norm)
    return MLP([d, *mc.hidden, k], activation=mc.activation, loss=loss, norm=mc.norm)


# What a library call raises about the values a config passed it (a size beyond the machine's
# memory included): turned by keyed_error into a ConfigError naming the config keys.
KEY_ERRORS = (ValueError, TypeError, MemoryError, OverflowError)
# MLP's arguments: [model] keys under other names (layer_sizes is [inputs, *hidden, outputs]).
MODEL_KEYS = {"layer_sizes": "model.hidden", "activation": "model.activation",
              "norm": "model.norm"}
# What train passes to Objective/MetaObjective and metacore.fit: [train] keys under other names.
TRAIN_KEYS = {"l2": "train.l2", "meta_batch": "train.meta_batch", "steps": "train.steps",
              "batch_tasks": "train.meta_batch", "chunk_size": "train.chunk",
              "eval_every": "train.validate_every"}

# The learners' constructor arguments are the [learner] keys of the same names.
LEARNER_KEYS = {name: f"learner.{name}" for name in (
    "inner_lr", "inner_steps", "outer_lr", "first_order", "reg", "scale", "distance", "cg_steps",
    "per_step_rates", "multi_step_loss", "msl_anneal_steps", "first_order_until")}


def build(cfg: Config) -> Experiment:
    """Tasks, model and learner of a config."""
    scaler = features = None
    if cfg.tasks.family == "csv":
        train_tasks, test_tasks, d, k, loss, scaler, features = _csv_task_sets(cfg)
    else:
        try:
            train_tasks, test_tasks, d, k, loss = _task_sets(cfg)
        except (ValueError, TypeError) as exc:
            raise _task_error(cfg, exc) from None
    try:
        model = _model(cfg, d, k, loss)
    except KEY_ERRORS as exc:
        raise keyed_error(exc, MODEL_KEYS) from None
    try:
        learner = _learner(cfg, model)
        if learner is not None:     # what the working dtype must hold, before training
            learner.check_dtype(np.dtype(cfg.dtype))
    except KEY_ERRORS as exc:
        raise keyed_error(exc, {**MODEL_KEYS, **LEARNER_KEYS},
                          strict=("scale", "distance")) from None
    _check_evaluate_lr(cfg, learner)
    _check_training_dtype(cfg, learner)
    return Experiment(cfg, train_tasks, test_tasks, model, learner,
                      _weighting(cfg, train_tasks), scaler, features, n_outputs=k, loss=loss)


# The task families' arguments are the [tasks] keys of these names.
TASK_KEYS = {"n_way": "tasks.n_way", "k_shot": "tasks.k_support", "q_query": "tasks.k_query",
             "k_support": "tasks.k_support", "k_query": "tasks.k_query",
             "n_features": "tasks.n_features", "noise": "tasks.noise",
             "relatedness_noise": "tasks.relatedness_noise", "amplitude": "tasks.amplitude",
             "phase": "tasks.phase", "x_range": "tasks.x_range"}


def _task_error(cfg, exc):
    """A task family's error as a ConfigError naming the [tasks] keys; one about the data it
    drew (a value beyond the dtype's range) says which family and settings drew it."""
    err = keyed_error(exc, TASK_KEYS, strict=("noise", "amplitude", "phase"))
    if "tasks." in str(err):
        return err
    return ConfigError(f"tasks (family {cfg.tasks.family!r}, dtype {cfg.dtype}): the tasks these "
                       f"settings draw: {exc}")


def _check_evaluate_lr(cfg, learner):
    """The evaluation's inner rate against the working dtype (and iMAML's contraction), before
    training: ``evaluate.lr`` when given, else ``learner.inner_lr`` where the baselines take it
    (a bad one was found only after the whole run trained)."""
    from .. import _validation
    ev = cfg.evaluate
    if ev.lr is not None:
        key, lr = "evaluate.lr", ev.lr
    elif ev.baselines or learner is None:
        key, lr = "learner.inner_lr", cfg.learner.inner_lr
    else:
        return
    try:
        if lr > 0:
            _validation.step_size(key, lr, np.dtype(cfg.dtype))
        if isinstance(learner, IMAML) and ev.lr is not None:
            learner.check_contracting(key, lr)
    except ValueError as exc:
        raise keyed_error(exc, {"reg": "learner.reg"}) from None


def _check_training_dtype(cfg, learner):
    """The optimizer's settings and ``train.l2`` against the working dtype, before training
    (``fit`` checks the same, naming ``lr``, ``eps``, ``l2``: here they are named by their keys)."""
    from .. import _validation
    dtype = np.dtype(cfg.dtype)
    try:
        cfg.optimizer.build(learner, cfg.train.steps).check_dtype(dtype)
    except (ValueError, TypeError) as exc:
        keys = {k: f"optimizer.{k}" for k in ("lr", "eps", "weight_decay", "clip_norm")}
        if cfg.optimizer.kind == "none":      # the learner's own step: Reptile's outer_lr
            keys["lr"] = "learner.outer_lr"
        raise keyed_error(exc, keys) from None
    if learner is None:
        try:
            _validation.in_dtype_range("train.l2", cfg.train.l2, dtype)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None


def _weighting(cfg, train_tasks):
    if cfg.learner.kind != "multitask":
        if cfg.weighting.kind != "uniform" or cfg.weighting.settings:
            raise ConfigError(f"weighting applies to learner.kind 'multitask' (the task weights "
                              f"in Σ α_i f_i); learner.kind {cfg.learner.kind!r} has none: drop "
                              f"[weighting] or set weighting.kind = 'uniform'")
        return None
    wc, T = cfg.weighting, train_tasks.n_tasks
    if wc.kind == "fixed" and len(wc.alpha) != T:
        raise ConfigError(f"weighting.alpha must have one weight per training task ({T}), got "
                          f"{len(wc.alpha)}")
    return wc.strategy(T)


# --- training ------------------------------------------------------------------------------------
def problem(exp: Experiment):
    """What :func:`metacore.fit` trains: the meta-objective of the config's learner over its
    training tasks, or (multitask) Σ α_i f_i(θ) + (λ/2)‖θ‖² over their rows."""
    cfg = exp.cfg
    if exp.learner is None:
        return Objective(exp.model, exp.train_tasks, l2=cfg.train.l2, n_threads=cfg.threads)
    return MetaObjective(exp.learner, exp.train_tasks, meta_batch=cfg.train.meta_batch,
                         n_threads=cfg.threads)


def start_theta(exp: Experiment):
    """θ₀ from ``model.init(seed)``, its last layer's weights and biases times
    ``model.last_layer_scale``, packed with what the learner also learns (Meta-SGD's and MAML++'s
    inner rates, RidgeHead's log λ and scale)."""
    theta0 = exp.model.init(seed=exp.cfg.seed, dtype=exp.dtype)
    scale = exp.cfg.model.last_layer_scale
    if scale != 1.0:
        last = theta0[exp.model.layers()[-1][0]:]
        with np.errstate(over="ignore", invalid="ignore"):
            scaled = last * exp.dtype.type(scale)     # in θ's dtype, as digits_table.py scales
        if not np.isfinite(scaled).all():
            limit = f"±{float(np.finfo(exp.dtype).max):.2g}".replace("e+", "e")
            raise ConfigError(f"model.last_layer_scale = {scale!r} takes the last layer's initial "
                              f"weights (up to {float(np.abs(last).max()):.3g}) beyond "
                              f"{exp.dtype}'s range ({limit}), the working dtype")
        last[:] = scaled
    init = getattr(exp.learner, "init", None)
    return init(theta0) if init is not None else theta0


def fit_settings(exp: Experiment) -> dict:
    """The keyword arguments of :func:`metacore.fit` the config describes (but steps and
    progress)."""
    cfg = exp.cfg
    kw = dict(optimizer=cfg.optimizer.build(exp.learner, cfg.train.steps), seed=cfg.seed,
              eval_every=cfg.train.validate_every or _curve_every(cfg.train),
              chunk_size=cfg.train.chunk)
    if cfg.train.validate_every:
        kw["validation"] = exp.test_tasks.subset(np.arange(min(100, exp.test_tasks.n_tasks)))
    if exp.learner is None:
        T = exp.train_tasks.n_tasks
        # adaptive strategies (all but uniform, fixed, evaldriven) need every task at every step
        sampled = cfg.weighting.kind in ("uniform", "fixed", "evaldriven")
        kw.update(weighting=exp.weighting,
                  batch_tasks=min(cfg.train.meta_batch, T) if sampled else None)
    return kw


def _curve_every(tc):
    """Steps between the history's evaluations without validation: about 100 points on the
    curve of α and the training loss, at most one per core call."""
    every = max(1, tc.steps // 100)
    return every if tc.chunk is None else min(tc.chunk, every)


def train(exp: Experiment, start=None, *, progress=True, on_checkpoint=None):
    """Train from θ₀, or from ``start`` (a loaded checkpoint) up to ``train.steps`` steps in all,
    in calls of :func:`metacore.fit` that end at multiples of ``train.checkpoint_every``; after
    each, ``on_checkpoint(result, histories)`` (also with the partial result on Ctrl-C or
    divergence, before the error propagates). Returns (last FitResult or None when nothing was
    left to run, [History of each call]). An error about the values the config passed down
    (ValueError, TypeError, MemoryError, OverflowError) is a ConfigError naming the [model],
    [learner] and [train] keys they came from."""
    try:
        return _train(exp, start, progress, on_checkpoint)
    except KEY_ERRORS as exc:
        keys = dict(TRAIN_KEYS)
        if not exp.cfg.train.validate_every:   # then eval_every is derived from train.steps
            keys["eval_every"] = "train.steps"
        err = keyed_error(exc, {**MODEL_KEYS, **LEARNER_KEYS, **keys},
                          strict=("steps", "scale", "distance"))
        n_train = getattr(exp.train_tasks, "n_tasks", None)
        if "the number of tasks" in str(err) and n_train is not None:
            # the tasks meant are the training tasks: say what holding out left of them
            err = ConfigError(f"{err} (the training tasks: {n_train} left after holding out "
                              f"tasks.test_fraction = {exp.cfg.tasks.test_fraction:g} of the "
                              f"tasks; lower train.meta_batch or tasks.test_fraction)")
        raise err from None


def _train(exp, start, progress, on_checkpoint):
    cfg = exp.cfg
    total, every = cfg.train.steps, cfg.train.checkpoint_every
    target, kw = problem(exp), fit_settings(exp)
    state = start_theta(exp) if start is None else start
    step = 0 if start is None else start.step
    histories, result = [], None
    sampler = episode_sampler(exp)
    bar = _bar(total, step) if progress and step < total else None
    kw["progress"] = bar if bar is not None else False
    try:
        while step < total:
            stop = min(total, (step // every + 1) * every)
            try:
                if sampler is None:
                    result = fit(target, state, steps=stop - step, **kw)
                else:   # a fresh pool of episodes every EPISODE_POOL steps, keyed on the step
                    while step < stop:
                        # Pools start on multiples of EPISODE_POOL, whatever step a run (or a
                        # resume) starts at, so a split run draws exactly the pools of a whole one.
                        first = step - step % EPISODE_POOL
                        n = min(first + EPISODE_POOL, stop) - step
                        pool = sampler.draw(cfg.train.meta_batch * EPISODE_POOL, cfg.seed, first)
                        target = MetaObjective(exp.learner, pool.astype(exp.dtype),
                                               meta_batch=cfg.train.meta_batch,
                                               n_threads=cfg.threads)
                        result = fit(target, state, steps=n, **kw)
                        state, step = result, result.step
                        if step < stop:
                            histories.append(result.history)
            except (KeyboardInterrupt, FloatingPointError) as exc:
                partial = getattr(exc, "result", None)
                if partial is not None:
                    result = partial
                    histories.append(partial.history)
                if result is not None and on_checkpoint is not None:
                    on_checkpoint(result, histories)
                raise
            histories.append(result.history)
            state, step = result, result.step
            if on_checkpoint is not None:
                on_checkpoint(result, histories)
    finally:
        if bar is not None:
            bar.close()
    return result, histories


def _bar(total, done):
    """One tqdm bar over the whole run, advanced by every fit call's chunks (None without tqdm)."""
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=total, initial=done, desc="train", unit="step")


def merge_histories(parts):
    """One :class:`~metacore.History` from consecutive ones (each resumed where the previous one
    ended): the per-step series concatenated; the evaluations too, without the repeated one at
    each resume step; ``elapsed`` made cumulative."""
    parts = [p for p in parts if p is not None]
    if not parts:
        return None
    arrays = [p.to_arrays() for p in parts]
    names = set.intersection(*(set(a) for a in arrays))
    per_step = ("step", "objective", "grad_norm", "lr", "support_loss", "step_task_losses",
                "step_weights")
    out = {k: np.concatenate([a[k] for a in arrays]) for k in per_step if k in names}
    keep, offset = [], 0.0
    for i, a in enumerate(arrays):
        drop = (i > 0 and len(a["eval_step"]) and len(arrays[i - 1]["eval_step"])
                and a["eval_step"][0] == arrays[i - 1]["eval_step"][-1])
        sl = slice(1 if drop else 0, None)
        keep.append({k: v[sl] for k, v in a.items() if k not in per_step})
        keep[-1]["elapsed"] = keep[-1]["elapsed"] + offset
        if len(a["elapsed"]):
            offset += float(a["elapsed"][-1])
    for k in names - set(per_step):
        out[k] = np.concatenate([kk[k] for kk in keep])
    return History.from_arrays(out)


def _truncate(history, step):
    """The history up to ``step`` updates (a history.npz written just before a checkpoint that
    was not)."""
    a = history.to_arrays()
    n, e = a["step"] < step, a["eval_step"] <= step
    per_step = ("step", "objective", "grad_norm", "lr", "support_loss", "step_task_losses",
                "step_weights")
    return History.from_arrays({k: v[n] if k in per_step else v[e] for k, v in a.items()})


def joint_theta(exp: Experiment, progress=False):
    """θ of the joint-training baseline: the model trained on the pooled training tasks.

    For classification episodes (labels remapped per episode) it is the standard pre-training
    baseline instead: a classifier over every training class at once, whose output layer is then
    reset to zero for the new n-way tasks."""
    cfg, ev = exp.cfg, exp.cfg.evaluate
    model = exp.classifier
    theta0 = model.init(seed=cfg.seed + 1, dtype=exp.dtype)
    if cfg.tasks.family == "digits":
        return _pretrained_digits(exp, progress)
    pool = exp.train_tasks
    if not hasattr(pool, "n_tasks"):      # a task source: draw a finite pool from it
        pool = pool.sample(ev.joint_tasks, seed=cfg.seed + 1, dtype=exp.dtype)
    return baselines.joint(model, pool, theta0, steps=ev.joint_steps, lr=ev.joint_lr,
                           batch_tasks=min(cfg.train.meta_batch, pool.n_tasks), seed=cfg.seed,
                           progress=progress, n_threads=cfg.threads)


def digit_class_images(rotations=True, mirror=False):
    """The meta-train classes of the digits family as :class:`~metacore.datasets.ClassImages`:
    each meta-train digit (``mc.tasks.TRAIN_DIGITS``) at its four rotations (class 4·i + r;
    without ``rotations`` one class per digit), and with ``mirror`` also the mirror images of
    those, four further classes per digit (digit after digit: plain rotations, then mirrored).
    The pool of ``tasks.n_train = 0`` and of the joint baseline's pre-training; the class order
    of ``benchmarks/digits_table.py``'s ``class_images``."""
    from ..data.class_images import ClassImages
    from ..data.digits import TRAIN_DIGITS, digit_images
    images, labels = digit_images()
    X, lab, names = [], [], []
    for d in TRAIN_DIGITS:
        for flip in ((False, True) if mirror else (False,)):
            for r in (range(4) if rotations else (0,)):
                imgs = np.rot90(images[labels == d], k=r, axes=(1, 2))
                imgs = (imgs[:, :, ::-1] if flip else imgs).reshape(-1, 64)
                X.append(imgs)
                lab.append(np.full(len(imgs), len(names)))
                names.append(f"{d}{'m' if flip else ''}@{90 * r}")
    return ClassImages(np.concatenate(X).astype(np.float32), np.concatenate(lab), names,
                       [n.split("@")[0] for n in names])


def _pretrained_digits(exp, progress):
    """The joint baseline on digits: pre-trained as one classifier over every meta-train class
    (those ``tasks.n_train = 0`` draws from: with ``tasks.mirror`` the mirrored ones too)."""
    from ..data.taskset import TaskSet
    cfg = exp.cfg
    pool_images = digit_class_images(cfg.tasks.rotations, cfg.tasks.mirror)
    classes = pool_images.class_names
    pool = TaskSet.from_arrays([pool_images.X], [pool_images.labels.astype(np.float64)],
                               dtype=exp.dtype)
    model = exp.classifier
    sizes = model.layer_sizes
    wide = MLP([*sizes[:-1], len(classes)], activation=model.activation,
               loss="cross_entropy", norm=model.norm)
    ev = cfg.evaluate
    theta_wide = baselines.joint(wide, pool, wide.init(seed=cfg.seed + 1, dtype=exp.dtype),
                                 steps=ev.joint_steps, lr=ev.joint_lr, seed=cfg.seed,
                                 progress=progress, n_threads=cfg.threads)
    theta = np.zeros(model.n_params, dtype=exp.dtype)
    n_trunk = model.layers()[-1][0]          # the output layer's first parameter
    theta[:n_trunk] = theta_wide[:n_trunk]   # trunk kept, output layer zero
    return theta


# --- evaluation ----------------------------------------------------------------------------------
def evaluate_all(exp: Experiment, theta, progress=False, baselines_=None):
    """{name: EvalReport} for the learned θ and the config's baselines on the test tasks.
    ProtoNet and RidgeHead adapt in closed form: they are scored at 0 steps only (the baselines
    at ``evaluate.steps``)."""
    cfg, ev = exp.cfg, exp.cfg.evaluate
    lr = ev.lr if ev.lr is not None else cfg.learner.inner_lr
    reports = {}
    if exp.learner is not None:
        episodic = cfg.learner.episodic
        reports[exp.label] = evaluate(exp.model, theta, exp.test_tasks,
                                      steps=(0,) if episodic else ev.steps,
                                      lr=None if episodic else ev.lr, learner=exp.learner,
                                      name=exp.label, n_threads=cfg.threads, progress=progress)
    else:
        reports[exp.label] = evaluate(exp.model, theta, exp.test_tasks, steps=ev.steps, lr=lr,
                                      name=exp.label, n_threads=cfg.threads, progress=progress)
    names = ev.baselines if baselines_ is None else baselines_
    val = _validation_tasks(exp) if names and ev.lr is None else None
    model = exp.classifier
    for b in names:
        start = (baselines.scratch(model, seed=cfg.seed + 2, dtype=exp.dtype)
                 if b == "scratch" else joint_theta(exp, progress))
        # a baseline fine-tunes at its best of lr, lr/3, lr/10 on training-side tasks
        lr_b = lr if val is None else baselines.best_lr(
            model, start, val, (lr, lr / 3, lr / 10), steps=max(ev.steps),
            n_threads=cfg.threads)
        name = b if lr_b == lr else f"{b} (lr {lr_b:.3g})"
        reports[name] = evaluate(model, start, exp.test_tasks, steps=ev.steps, lr=lr_b,
                                 name=name, n_threads=cfg.threads, progress=progress)
    return reports


def _validation_tasks(exp, n=100):
    """Tasks from the training side (never the test tasks) to pick a baseline's rate on."""
    train = exp.train_tasks
    if not hasattr(train, "n_tasks"):
        return train.sample(n, seed=exp.cfg.seed + 3, dtype=exp.dtype)
    return train.subset(np.arange(min(n, train.n_tasks)))


# --- persistence ---------------------------------------------------------------------------------
def _stored_learner(ck):
    """The learner kind a checkpoint was trained with (the CLI's name), None for a bare θ."""
    if "learner" in ck.info:
        return ck.info["learner"]
    p = ck.problem or {}
    if p.get("kind") == "multitask":
        return "multitask"
    if p.get("kind") == "meta":
        return p["learner"]["kind"].lower()
    return None


_SAME = {"fomaml": "maml"}    # FOMAML is MAML with first_order: the same θ and adaptation


# What a resumed run may change: how long it trains, where it writes and how many threads
# compute it (the results do not depend on them); anything else would continue one experiment
# as another and overwrite its results.
RESUME_MAY_CHANGE = ("train.steps", "output", "threads", "name", "train.chunk",
                     "train.checkpoint_every")


def _flat(d, prefix=""):
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        out.update(_flat(v, key + ".") if isinstance(v, dict) else {key: v})
    return out


def _check_same_run(stored, cfg, out):
    """ConfigError naming every setting in which ``cfg`` differs from the configuration the
    checkpoint was trained with (``stored``; None for a checkpoint without one: not checked)."""
    if not isinstance(stored, dict):
        return
    from .config import from_dict
    try:      # with the defaults filled in (a key added since the run was trained is its default)
        stored = from_dict(stored).to_dict()
    except (ValueError, TypeError):
        pass
    then, now = _flat(stored), _flat(cfg.to_dict())
    differ = sorted(k for k in set(then) | set(now)
                    if k not in RESUME_MAY_CHANGE and then.get(k) != now.get(k))
    if differ:
        shown = "; ".join(f"{k} = {then.get(k)!r} in the run, {now.get(k)!r} now"
                          for k in differ[:4]) + ("; …" if len(differ) > 4 else "")
        raise ConfigError(f"--resume: this config differs from the one {out} was trained with "
                          f"({shown}). Resume with the run's own file, {resume_command(out)} "
                          f"(only train.steps, --threads and --output may change)")


def resume_command(out):
    """The command that continues the run in folder ``out``, quoted for a POSIX shell (a folder
    named "my runs" gave a command that, pasted, trained a file "my")."""
    import shlex
    return shlex.join(["metacore", "train", os.path.join(out, "config.toml"), "--resume",
                       "--output", out])


def load_run_checkpoint(path, exp: Experiment):
    """A checkpoint (any file :func:`metacore.save` wrote), checked against the experiment's
    model and learner."""
    ck = load(path)
    if ck.model is not None and ck.model != exp.model:
        raise ValueError(f"--checkpoint {path} holds θ of {ck.model!r}, the config builds "
                         f"{exp.model!r}")
    name, kind = _stored_learner(ck), exp.cfg.learner.kind
    want = exp.learner.n_params if exp.learner is not None else exp.model.n_params
    if name is not None and _SAME.get(name, name) != _SAME.get(kind, kind) \
            and ck.theta.shape[0] == want:
        raise ValueError(f"--checkpoint {path} was saved by learner {name!r}; the config's "
                         f"learner is {kind!r} (a checkpoint is evaluated with the learner it "
                         f"was trained with: set learner.kind = {name!r})")
    if (name is not None and _SAME.get(name, name) != _SAME.get(kind, kind)) \
            or ck.theta.shape[0] != want:
        raise ValueError(f"--checkpoint {path} was saved by learner {name!r} with "
                         f"{ck.theta.shape[0]} parameters; the config's learner {kind!r} needs "
                         f"{want}")
    if exp.learner is not None:
        adapt_rule(exp.learner, ck.theta, f"--checkpoint {path}", exp.dtype)
    return ck


def adapt_rule(learner, params, source, dtype=None):
    """``learner.adapt_rule`` of checked ``params`` read from ``source`` (a checkpoint, named in
    the message of a ValueError/TypeError), in ``dtype`` (None: theirs): a hand-edited file's
    non-finite θ, or a learned rate that the working dtype cannot hold — as stored, or once a
    float64 file is cast to a float32 run — is refused before any adaptation."""
    from .. import _validation
    try:
        if dtype is not None and np.dtype(dtype) != params.dtype:
            rates = learner.inner_rates(params)
            if rates is not None:
                _validation.rates("theta", np.ravel(rates), dtype, offset=learner.model.n_params)
            params = params.astype(dtype)
        return learner.adapt_rule(learner.check_params(params))
    except (ValueError, TypeError) as exc:
        raise type(exc)(f"{source}: {exc}") from None


def run_info(exp: Experiment) -> dict:
    """What a checkpoint keeps besides θ: the config, the learner, the version, and for your own
    data the feature columns, the training tasks' feature scaling (``standardize``) and the
    names of the training and held-out tasks (what ``metacore predict`` needs)."""
    cfg = exp.cfg
    info = {"config": cfg.to_dict(), "learner": cfg.learner.kind, "metacore": __version__}
    if exp.features is not None:
        info["features"] = list(exp.features)
    if exp.standardizer is not None:
        info["standardize"] = exp.standardizer.to_dict()
    info.update(task_names(exp))
    return info


def task_names(exp: Experiment) -> dict:
    """{"train_tasks": [...], "test_tasks": [...]}: the names of the tasks trained on and held
    out (the training side is left out when tasks are drawn fresh at every step)."""
    out = {}
    if hasattr(exp.train_tasks, "names"):
        out["train_tasks"] = list(exp.train_tasks.names)
    out["test_tasks"] = list(exp.test_tasks.names)
    return out


def per_task_scores(reports, tasks) -> dict:
    """{method: {"steps": [...], "loss": {task name: [loss after each step count]},
    "accuracy": {...} (classifiers)}} from the reports' per-task values."""
    names = list(tasks.names)
    out = {}
    for name, r in reports.items():
        entry = {"steps": [int(s) for s in r.steps],
                 "loss": {n: r.losses[:, i].tolist() for i, n in enumerate(names)}}
        if r.accuracies is not None:
            entry["accuracy"] = {n: r.accuracies[:, i].tolist() for i, n in enumerate(names)}
        out[name] = entry
    return out


class _RunHistory:
    """The history files of one ``metacore train`` process: at each checkpoint the histories
    produced since the last one go to a new file of history_parts/ (before checkpoint.npz, so
    the history on disk never lags the checkpoint); :meth:`finish` folds the prior history and
    this process's into history.npz and removes the parts. Rewriting the whole history at every
    checkpoint made a run of n steps cost O(n²/checkpoint_every)."""

    def __init__(self, out, prior, fresh):
        self.out, self.prior, self.saved, self.histories = out, prior, 0, []
        # a fresh run into a folder of an earlier run drops that run's history at its own first
        # checkpoint, not before: until then the earlier checkpoint keeps its history
        self.stale = fresh

    def checkpoint(self, exp, result, histories):
        if self.stale:
            _remove_parts(self.out)
            if os.path.exists(os.path.join(self.out, HISTORY)):
                os.remove(os.path.join(self.out, HISTORY))
            self.stale = False
        new = merge_histories(histories[self.saved:])
        if new is not None and len(new.step):
            arrays = new.to_arrays()
            folder = os.path.join(self.out, HISTORY_PARTS)
            os.makedirs(folder, exist_ok=True)
            name = f"{int(arrays['step'][0]):020d}.npz"
            write_atomic(os.path.join(folder, name), lambda f: np.savez(f, **arrays))
        self.saved, self.histories = len(histories), histories
        save(os.path.join(self.out, CHECKPOINT), result, info=run_info(exp))

    def finish(self):
        """history.npz = the prior history and every history of this process; parts removed.
        Nothing happens when this process checkpointed nothing (a run that failed before its
        first checkpoint leaves the folder as it found it)."""
        if self.saved == 0:
            return None
        history = merge_histories([self.prior, *self.histories])
        if history is not None:
            arrays = history.to_arrays()
            write_atomic(os.path.join(self.out, HISTORY), lambda f: np.savez(f, **arrays))
        _remove_parts(self.out)
        return history


def _remove_parts(out):
    folder = os.path.join(out, HISTORY_PARTS)
    if not os.path.isdir(folder):
        return
    for name in os.listdir(folder):
        if name.endswith(".npz") or name.endswith(".tmp"):
            try:
                os.remove(os.path.join(folder, name))
            except FileNotFoundError:
                pass
    try:
        os.rmdir(folder)
    except OSError:   # something else put there: left alone
        pass


def _read_history(path):
    """A History from an .npz file, or None when it is missing or unreadable."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return History.from_arrays({k: data[k] for k in data.files})
    except (*CORRUPT_NPZ_ERRORS, TypeError, KeyError, MemoryError):
        return None


def _prior_history(out, step):
    """The saved history of the run being resumed, up to its checkpoint's step: history.npz
    and, after a run that was killed, the parts it left (those history.npz already holds, from
    a kill between writing it and removing them, are skipped); None if there is none."""
    parts = [_read_history(os.path.join(out, HISTORY))]
    last = -1                           # the last step held so far
    if parts[0] is not None and len(parts[0].step):
        last = int(parts[0].step[-1])
    folder = os.path.join(out, HISTORY_PARTS)
    if os.path.isdir(folder):
        for name in sorted(n for n in os.listdir(folder) if n.endswith(".npz")):
            part = _read_history(os.path.join(folder, name))
            if part is None:
                break                   # a gap: keep only what is contiguous
            if len(part.step) and part.step[-1] > last:
                parts.append(part)
                last = int(part.step[-1])
    history = merge_histories(parts)
    return None if history is None else _truncate(history, step)


def _write_results(out, reports, exp, extra, say, prefix=""):
    names = {"table": "table.txt", "json": "results.json", "plot": "adaptation.png"}
    if prefix:
        names = {"table": f"{prefix}_table.txt", "json": f"{prefix}.json",
                 "plot": f"{prefix}_adaptation.png"}
    tables = [report.format_table(reports, title=f"{exp.cfg.name}: query loss, mean ± 95% CI "
                                                  f"over {exp.test_tasks.n_tasks} test tasks")]
    if any(r.accuracies is not None for r in reports.values()):
        tables.append(report.format_table(reports, metric="accuracy"))
    text = "\n\n".join(tables)
    say(text)
    write_atomic(os.path.join(out, names["table"]), lambda f: f.write((text + "\n").encode()))
    report.save_json(reports, os.path.join(out, names["json"]), extra=extra)
    if exp.cfg.evaluate.plot:
        metric = "accuracy" if exp.loss != "mse" else "loss"
        try:
            say(f"plot: {report.plot(reports, os.path.join(out, names['plot']), metric=metric)}")
        except ImportError as exc:    # matplotlib is optional: the run's other files stand
            say(f"plot: skipped ({exc})")


def run_train(cfg: Config, quiet=False, resume=False):
    """Train (or, with ``resume``, continue from ``<output>/checkpoint.npz`` up to
    ``train.steps``), checkpoint, evaluate and write the results; returns the reports. Ctrl-C
    writes the checkpoint and the history, then raises KeyboardInterrupt."""
    say = (lambda *a: None) if quiet else print
    out = cfg.output_dir
    exp = build(cfg)
    start = prior = None
    if resume:
        path = os.path.join(out, CHECKPOINT)
        if not os.path.exists(path):
            raise FileNotFoundError(f"--resume: no checkpoint at {path} (train without --resume "
                                    f"first, or give the run's --output)")
        start = load_run_checkpoint(path, exp)
        if not start.resumable:
            raise ValueError(f"--resume: {path} holds θ only, not a train state")
        _check_same_run(start.info.get("config"), cfg, out)
        prior = _prior_history(out, start.step)
        if prior is None and start.step > 0:
            print(f"metacore: warning: no readable {os.path.join(out, HISTORY)}; the new one "
                  f"covers the steps from {start.step} on", file=sys.stderr)
    make_folder(out, "output (--output)")
    toml = cfg.to_toml()
    write_atomic(os.path.join(out, "config.toml"), lambda f: f.write(toml.encode()))
    say(f"{cfg.name}: {exp.label} on {cfg.tasks.family} tasks, model {exp.model!r}"
        + (f", resumed at step {start.step}" if start is not None else ""))

    files = _RunHistory(out, prior, fresh=not resume)

    def checkpoint(result, histories):
        files.checkpoint(exp, result, histories)

    t0 = time.perf_counter()
    try:
        try:
            result, _ = train(exp, start, progress=not quiet, on_checkpoint=checkpoint)
        finally:   # the end of this process's run, however it ends: one history.npz
            files.finish()
    except KeyboardInterrupt as exc:
        step = getattr(getattr(exc, "result", None), "step", None)
        print(f"metacore: interrupted{f' after step {step}' if step is not None else ''}; "
              f"continue with: {resume_command(out)}", file=sys.stderr)
        exc.reported = True      # the command line's handler then says nothing more
        raise
    train_time = time.perf_counter() - t0
    if result is None:
        say(f"already trained {start.step} steps (train.steps = {cfg.train.steps})")
        theta = start.theta
    else:
        theta = result.theta
        say(f"trained {cfg.train.steps - (start.step if start else 0)} steps in "
            f"{train_time:.1f} s")
    reports = evaluate_all(exp, theta, progress=not quiet)
    _write_results(out, reports, exp, {"train_seconds": train_time, "config": cfg.to_dict(),
                                       **task_names(exp),
                                       "per_task": per_task_scores(reports, exp.test_tasks)},
                   say)
    say(f"outputs in {out}/")
    return reports


def run_evaluate(cfg: Config, checkpoint, quiet=False):
    """Evaluate a saved θ with the config's test tasks and baselines; writes evaluation.json and
    evaluation_table.txt (never train's results.json / table.txt)."""
    say = (lambda *a: None) if quiet else print
    if not os.path.exists(checkpoint):
        raise FileNotFoundError(f"--checkpoint {checkpoint}: no such file")
    exp = build(cfg)
    ck = load_run_checkpoint(checkpoint, exp)
    out = cfg.output_dir
    make_folder(out, "output (--output)")
    reports = evaluate_all(exp, ck.theta.astype(exp.dtype), progress=not quiet)
    _write_results(out, reports, exp, {"checkpoint": os.fspath(checkpoint), "step": ck.step,
                                       "config": cfg.to_dict(), **task_names(exp),
                                       "per_task": per_task_scores(reports, exp.test_tasks)},
                   say, prefix="evaluation")
    return reports


# --- predicting on new data ----------------------------------------------------------------------
def _predict_rows(table, columns, source, scaler, dtype):
    from ..data.tabular import float_columns
    try:
        X = float_columns(table, columns, source)
    except ValueError as exc:
        raise ValueError(f"{exc} (the checkpoint's features: {', '.join(columns)})") from None
    scaled = scaler.transform(X) if scaler is not None else None
    _check_range(X, scaled, columns, table, source, dtype)
    return (X if scaled is None else scaled).astype(dtype)


def _check_range(raw, scaled, columns, table, source, dtype):
    """ValueError naming the column and the file's line for a value of ``scaled`` (n,
    len(columns): ``raw`` as θ takes it, None when unscaled) that exceeds the range of θ's dtype
    (float32: ±3.4e38; it would become inf there)."""
    values = raw if scaled is None else scaled
    big = ~(np.abs(values) <= float(np.finfo(dtype).max))
    if big.any():
        i, j = (int(k) for k in np.argwhere(big)[0])
        lines = getattr(table, "lines", None)
        where = f"line {lines[i]}" if lines is not None else f"row {i}"
        note = "" if scaled is None else f" ({float(scaled[i, j])!r} standardized)"
        limit = f"±{float(np.finfo(dtype).max):.2g}".replace("e+", "e")
        raise ValueError(f"column {columns[j]!r}: {where} of {source} has {float(raw[i, j])!r}"
                         f"{note}, which exceeds {np.dtype(dtype)}'s range ({limit}), the "
                         f"checkpoint's dtype: rescale the column")


def _check_outputs(outputs, lines, input_path, how):
    """FloatingPointError (exit code 1, nothing written) when the net's outputs on the --input
    rows (at file ``lines``) are not finite: an inner loop that diverged on the support rows, or
    inputs whose scale overflows the net in θ's dtype; written out, inf or nan would pass for
    predictions."""
    bad = ~np.isfinite(outputs)
    if bad.any():
        i = int(np.argwhere(bad)[0][0])
        raise FloatingPointError(f"the net {how} gives {outputs[i][bad[i]][0]} on line "
                                 f"{lines[i]} of --input {input_path}: its adaptation diverged "
                                 f"or the inputs overflow it (try fewer --steps, or rows of the "
                                 f"training data's scale; tasks.standardize scales the "
                                 f"features); nothing written")


def _groups(table, column, n_rows):
    """Each row's task name, or one task for every row when the file has no task column (object
    arrays: NumPy's str dtype drops trailing NUL characters, merging "a\x00" into "a")."""
    names = np.empty(n_rows, dtype=object)
    names[:] = table[column] if column in table else ""
    return names


def _check_output(output_path, inputs):
    """ValueError when ``output_path`` is one of the files the command reads (``inputs``: what
    the message calls it -> its path): writing it would replace, e.g., the checkpoint with a CSV
    table, or a folder."""
    if not output_path:
        raise ValueError("--output is empty: give the name of the CSV file to write")
    if os.path.isdir(output_path) or output_path.endswith(os.sep) or (
            os.altsep and output_path.endswith(os.altsep)):
        raise ValueError(f"--output {output_path} is a folder: give the name of the CSV file "
                         f"to write")
    if not os.path.exists(output_path):
        return
    for what, path in inputs.items():
        if path is not None and os.path.exists(path) and os.path.samefile(output_path, path):
            raise ValueError(f"--output {output_path} is {what} ({path}): writing the "
                             f"predictions there would replace it; give another file")


def run_predict(checkpoint, input_path, output_path, support_path=None, steps=None,
                quiet=False):
    """``metacore predict``: the outputs of a checkpoint's net on the rows of ``input_path`` (a
    CSV file with the training file's feature columns), written to ``output_path`` (the input's
    columns plus ``prediction``; classifiers also ``p_0..p_{k-1}``), atomically.

    With ``support_path`` (labelled rows of the new task: the feature columns and the target) θ
    is first adapted to them by the learner's inner loop (``steps``, default the learner's
    ``inner_steps``; multitask: the largest of ``evaluate.steps``, at ``evaluate.lr`` or
    ``learner.inner_lr``); when both files have the task column, each task of the input is
    adapted on its own support rows. The features are scaled as in training (the stored
    ``standardize``). Returns the predictions (n,) — classes for classifiers."""
    import csv
    import io

    from ..adapt import adapt_predict
    from ..data.tabular import Standardizer, read_csv
    from .config import from_dict
    say = (lambda *a: None) if quiet else print
    if not os.path.exists(checkpoint):
        raise FileNotFoundError(f"checkpoint {checkpoint}: no such file")
    for flag, given in (("--input", input_path), ("--support", support_path)):
        if given is not None and not os.path.exists(given):
            raise FileNotFoundError(f"{flag} {given}: no such file")
    _check_output(output_path, {"the checkpoint": checkpoint, "--input": input_path,
                                "--support": support_path})
    ck = load(checkpoint)
    info = ck.info or {}
    if "config" not in info or "features" not in info:
        raise ValueError(f"checkpoint {checkpoint} was not written by metacore train on a CSV "
                         f"file (tasks.family = 'csv'): its feature columns are unknown")
    stored = dict(info["config"])
    if isinstance(stored.get("tasks"), dict) and stored["tasks"].get("features") == []:
        # written before an empty tasks.features was refused (it meant every other column):
        # the columns it resolved to are stored
        stored["tasks"] = dict(stored["tasks"], features=list(info["features"]))
    cfg = from_dict(stored)
    features, t = info["features"], cfg.tasks
    model = ck.model if ck.model is not None else _model(cfg, len(features), 1, t.loss)
    try:
        learner = _learner(cfg, model)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"checkpoint {checkpoint}: its config's "
                         f"{keyed_error(exc, LEARNER_KEYS, strict=('scale', 'distance'))}") from None
    params = theta = ck.theta
    episodic = cfg.learner.episodic
    if episodic and support_path is None:
        raise ValueError(f"checkpoint {checkpoint} holds a {LEARNER_NAMES[cfg.learner.kind]} "
                         f"embedding, which classifies by the classes of labelled support rows: "
                         f"give them with --support")
    if steps is not None and support_path is None:
        # it was ignored: the rows were predicted by θ as trained, whatever --steps said
        raise ValueError(f"--steps {steps}: adaptation steps are taken on the --support rows; "
                         f"without --support θ predicts as trained: give --support, or leave "
                         f"--steps out")
    scaler = Standardizer.from_dict(info["standardize"]) if "standardize" in info else None
    header, table = read_csv(input_path, source=f"--input {input_path}")
    X = _predict_rows(table, features, f"--input {input_path}", scaler, theta.dtype)
    n = X.shape[0]
    lines = getattr(table, "lines", np.arange(2, n + 2))    # each input row's line in the file
    if learner is not None:
        theta, lr, head_only = adapt_rule(learner, theta, f"checkpoint {checkpoint}")
        default_steps = None if episodic else cfg.learner.inner_steps
    else:
        lr = cfg.evaluate.lr if cfg.evaluate.lr is not None else cfg.learner.inner_lr
        head_only, default_steps = False, max(cfg.evaluate.steps)
    if episodic and steps:
        raise ValueError(f"--steps {steps}: checkpoint {checkpoint} holds a "
                         f"{LEARNER_NAMES[cfg.learner.kind]} embedding, which adapts in closed "
                         f"form, not by gradient steps: leave --steps out")
    steps = default_steps if steps is None else steps
    width = model.n_outputs
    if support_path is None:
        out = np.asarray(model.predict(theta, X), dtype=np.float64).reshape(n, width)
        _check_outputs(out, lines, input_path, "as trained (no --support)")
    else:
        _, stable = read_csv(support_path, source=f"--support {support_path}")
        Xs = _predict_rows(stable, features, f"--support {support_path}", scaler, theta.dtype)
        if t.target not in stable:
            raise ValueError(f"--support {support_path} has no target column {t.target!r} (the "
                             f"checkpoint's tasks.target): the support rows must be labelled")
        from ..data.tabular import check_class_labels, float_columns
        ys = float_columns(stable, [t.target], f"--support {support_path}")[:, 0]
        if t.loss != "mse":   # an embedding has no class count
            check_class_labels(ys, t.loss, t.target, stable.lines, f"--support {support_path}",
                               n_classes=None if episodic else max(width, 2))
        _check_range(ys[:, None], None, [t.target], stable, f"--support {support_path}",
                     theta.dtype)
        ys = ys.astype(theta.dtype)
        both = t.task_column in table and t.task_column in stable
        gq = _groups(table, t.task_column if both else None, n)
        gs = _groups(stable, t.task_column if both else None, Xs.shape[0])
        if episodic:     # one logit per class of the support rows (classes 0..N-1 of each task)
            width = int(ys.max()) + 1
        out = np.full((n, width), -np.inf)
        # tasks matched by code, not by gq == name: NumPy turns the name into its str dtype
        # first, which drops a trailing NUL ("a\x00" matched no row)
        names, code = np.unique(np.concatenate([gq, gs]), return_inverse=True)
        code_q, code_s = code[:n], code[n:]
        for k in np.unique(code_q):
            name = names[k]
            rows, srows = np.flatnonzero(code_q == k), np.flatnonzero(code_s == k)
            if srows.shape[0] == 0:
                raise ValueError(f"--support {support_path} has no rows of task {str(name)!r} "
                                 f"({t.task_column!r} in --input {input_path})")
            if learner is not None and type(learner).adapt_predict is not Learner.adapt_predict:
                # the learner's own adaptation: a closed form (ProtoNet, RidgeHead) or iMAML's
                # proximal inner loop, from its packed parameters
                try:
                    pred = np.asarray(learner.adapt_predict(params, Xs[srows], ys[srows],
                                                            X[rows], steps=steps))
                except ValueError as exc:
                    raise ValueError(f"--support {support_path}"
                                     f"{f' (task {str(name)!r})' if both else ''}: {exc}") from None
            else:
                pred = adapt_predict(model, theta, Xs[srows], ys[srows], X[rows], steps=steps,
                                     lr=lr, head_only=head_only)
            pred = np.asarray(pred, dtype=np.float64).reshape(rows.shape[0], -1)
            _check_outputs(pred, [lines[r] for r in rows], input_path,
                           f"adapted on --support {support_path}"
                           f"{f' (task {str(name)!r})' if both else ''}"
                           + ("" if episodic else f" by {steps} step{'' if steps == 1 else 's'}"))
            out[np.ix_(rows, np.arange(pred.shape[1]))] = pred
    if t.loss == "mse":
        labels, extra = out[:, 0], {}
    elif t.loss == "logistic":
        p1 = 1.0 / (1.0 + np.exp(-out[:, 0]))
        labels, extra = (out[:, 0] > 0).astype(np.int64), {"p_0": 1.0 - p1, "p_1": p1}
    else:
        z = np.exp(out - out.max(axis=1, keepdims=True))
        p = z / z.sum(axis=1, keepdims=True)
        labels, extra = out.argmax(axis=1), {f"p_{j}": p[:, j] for j in range(width)}
    columns = [c for c in header if c != "prediction" and c not in extra]
    text = io.StringIO()
    # RFC 4180's CRLF: with "\n" alone the csv module left a value holding "\r" unquoted, and
    # a reader split the row there
    w = csv.writer(text, lineterminator="\r\n")
    w.writerow(columns + ["prediction", *extra])
    # each number in the shortest text that reads back to it in the run's dtype (a float32
    # 0.4325223 written as 0.4325222969055176 claimed digits it does not have)
    shown = (lambda x: str(np.float32(x))) if theta.dtype == np.float32 else \
        (lambda x: repr(float(x)))
    for i in range(n):
        w.writerow([table[c][i] for c in columns] + [shown(labels[i]) if t.loss == "mse"
                                                     else int(labels[i])]
                   + [shown(v[i]) for v in extra.values()])
    write_atomic(output_path, lambda f: f.write(text.getvalue().encode("utf-8")))
    say(f"{n} predictions written to {output_path}"
        + ((f" (adapted on {support_path}, in closed form)" if episodic else
            f" (adapted on {support_path}, {steps} step{'' if steps == 1 else 's'})")
           if support_path else ""))
    return labels
