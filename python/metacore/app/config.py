"""Experiments described by TOML files: one dataclass per section, a default for every key and
validation that names the bad key, what is allowed and what came.

A file sets only what differs from the defaults::

    name = "sinusoid-maml"
    seed = 0
    [tasks]
    family = "sinusoid"
    k_support = 10
    [learner]
    kind = "maml"
    [train]
    steps = 70000

``load(path)`` reads a file, ``from_dict(d)`` a parsed table, ``cfg.to_dict()`` / ``cfg.to_toml()``
give it back (keys whose value is None are left out: TOML has no null). TOML is read with
``tomllib`` (Python 3.11+) or ``tomli`` on older Pythons.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import sys
from dataclasses import dataclass, field

from .. import _validation

__all__ = ["Config", "TasksConfig", "ModelConfig", "LearnerConfig", "OptimizerConfig",
           "WeightingConfig", "TrainConfig", "EvaluateConfig", "ConfigError", "load",
           "from_dict", "loads"]

FAMILIES = ("sinusoid", "digits", "linear", "logistic", "csv")
LEARNERS = ("maml", "fomaml", "metasgd", "anil", "reptile", "multitask", "protonet", "ridgehead",
            "imaml", "mamlpp")
EPISODE_LEARNERS = ("protonet", "ridgehead")   # embedding nets, closed-form adaptation
NORMS = ("batch", "layer")
OPTIMIZERS = ("adam", "adamw", "sgd", "none")
WEIGHTINGS = ("uniform", "fixed", "evaldriven", "dwa", "uncertainty", "rlw", "famo", "gradnorm",
              "mgda", "pcgrad", "cagrad", "imtlg", "nashmtl", "alignedmtl", "gradvac")
BASELINES = ("scratch", "joint")


class ConfigError(ValueError):
    """A bad experiment file: the message names the key (``section.key``)."""


def keyed_error(exc, keys, strict=()):
    """``exc`` (a library's ValueError/TypeError about the arguments a config's values were
    passed as) as a ConfigError naming the config keys instead: each argument name of ``keys``
    (argument -> key) standing as a word in the message is replaced by its key ('reg=1.0 with
    inner_lr=3' -> 'learner.reg=1.0 with learner.inner_lr=3'); names in ``strict`` (ordinary
    words: 'scale', 'c') only where they read 'name=' or 'name must'."""
    return ConfigError(_validation.renamed_text(str(exc), keys, strict))


# --- one checker per kind of value ---------------------------------------------------------------
INT64_MAX = 2**63 - 1     # TOML integers are 64-bit; larger ones never reach the core


def _int(key, v, lo=None, hi=None, none=False):
    if v is None and none:
        return None
    if isinstance(v, bool) or not isinstance(v, int):
        raise ConfigError(f"{key} must be an integer, got {v!r}")
    if v > (INT64_MAX if hi is None else hi) or v < (-INT64_MAX - 1 if lo is None else lo):
        rng = (f"in [{lo}, {hi}]" if hi is not None else
               f">= {lo}" if lo is not None and v < lo else f"<= {INT64_MAX} (a 64-bit integer)")
        raise ConfigError(f"{key} must be {rng}, got {v}")
    return v


def _float(key, v, lo=None, hi=None, open_lo=False, none=False):
    if v is None and none:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise ConfigError(f"{key} must be a finite number, got {v!r}")
    v = float(v)
    if lo is not None and (v < lo or (open_lo and v == lo)):
        raise ConfigError(f"{key} must be {'>' if open_lo else '>='} {lo}, got {v}")
    if hi is not None and v > hi:
        raise ConfigError(f"{key} must be <= {hi}, got {v}")
    return v


def _bool(key, v):
    if not isinstance(v, bool):
        raise ConfigError(f"{key} must be true or false, got {v!r}")
    return v


def _str(key, v, allowed=None):
    if not isinstance(v, str):
        raise ConfigError(f"{key} must be a string, got {v!r}")
    if allowed is not None and v not in allowed:
        raise ConfigError(f"{key} must be one of {', '.join(map(repr, allowed))}, got {v!r}")
    return v


def _name(key, v):
    """A name that is one plain path component: ``runs/<name>`` must stay inside ``runs/``, so
    no separator, no "." or "..", no control characters (a NUL, a newline) and no drive."""
    v = _str(key, v)
    bad = [c for c in v if c in "/\\:" or not c.isprintable()]
    if not v.strip() or v in (".", "..") or bad or (os.altsep and os.altsep in v):
        what = f"the character {bad[0]!r}" if bad else repr(v)
        raise ConfigError(f"{key} must be a file name (no slashes or other separators, '.', "
                          f"'..' or control characters), got {what}")
    return v


def _list(key, v, item, min_len=0):
    if not isinstance(v, (list, tuple)):
        raise ConfigError(f"{key} must be a list, got {v!r}")
    if len(v) < min_len:
        raise ConfigError(f"{key} must have at least {min_len} entries, got {len(v)}")
    return [item(f"{key}[{i}]", x) for i, x in enumerate(v)]


def _pair(key, v):
    p = _list(key, v, lambda k, x: _float(k, x))
    if len(p) != 2 or p[0] > p[1]:
        raise ConfigError(f"{key} must be a pair [lo, hi] with lo <= hi, got {v!r}")
    return p


# --- the sections --------------------------------------------------------------------------------
@dataclass
class TasksConfig:
    """Where tasks come from. ``k_support``/``k_query`` are rows per task (digits: per class;
    csv: ``k_support`` support rows per task, the rest query). ``n_train`` 0 means fresh tasks at
    every meta-step (sinusoid; digits: fresh episodes of the meta-train classes drawn in the
    core, as ``benchmarks/digits_table.py`` trains); ``test_k_query`` (default k_query) sets the query rows of the
    test tasks. Keys a family does not use are ignored: sinusoid ``amplitude``, ``phase``,
    ``x_range``; digits ``n_way``, ``rotations``, ``mirror`` (with ``n_train = 0``: the mirror
    image of every meta-train class as a further class, meta-train images only); linear/logistic ``n_features``,
    ``relatedness_noise``, ``noise``; csv ``path`` (relative to the TOML file's folder),
    ``task_column``, ``target``, ``loss``, ``features`` (default: every other column),
    ``test_fraction`` (tasks held out), ``support`` (support rows per task: a fraction in (0, 1)
    or a count; replaces ``k_support``), ``shuffle`` (shuffle each task's rows before the split),
    ``stratify`` (shuffle within classes: support and query keep each task's class proportions),
    ``standardize`` (scale the features by the training tasks' mean and standard deviation,
    stored in the checkpoint and applied to the test tasks and by ``metacore predict``) and
    ``episodes`` (meta-learners: re-draw every training task's support/query split at every
    meta-step instead of the fixed one)."""
    family: str = "sinusoid"
    k_support: int = 10
    k_query: int = 10
    n_train: int = 0
    n_test: int = 600
    test_k_query: int | None = None
    amplitude: list = field(default_factory=lambda: [0.1, 5.0])
    phase: list = field(default_factory=lambda: [0.0, math.pi])
    x_range: list = field(default_factory=lambda: [-5.0, 5.0])
    n_way: int = 5
    rotations: bool = True
    mirror: bool = False
    n_features: int = 10
    relatedness_noise: float = 0.1
    noise: float = 0.1
    path: str = ""
    task_column: str = "task"
    target: str = "y"
    loss: str = "mse"
    features: list | None = None       # None (absent): every column but the task and target
    test_fraction: float = 0.2
    support: float | int | None = None
    shuffle: bool = False
    stratify: bool = False
    standardize: bool = False
    episodes: bool = False

    def validate(self, s="tasks"):
        self.family = _str(f"{s}.family", self.family, FAMILIES)
        self.k_support = _int(f"{s}.k_support", self.k_support, 1)
        self.k_query = _int(f"{s}.k_query", self.k_query, 1)
        self.n_train = _int(f"{s}.n_train", self.n_train, 0)
        self.n_test = _int(f"{s}.n_test", self.n_test, 1)
        self.test_k_query = _int(f"{s}.test_k_query", self.test_k_query, 1, none=True)
        self.amplitude = _pair(f"{s}.amplitude", self.amplitude)
        self.phase = _pair(f"{s}.phase", self.phase)
        self.x_range = _pair(f"{s}.x_range", self.x_range)
        self.n_way = _int(f"{s}.n_way", self.n_way, 2)
        self.rotations = _bool(f"{s}.rotations", self.rotations)
        self.mirror = _bool(f"{s}.mirror", self.mirror)
        if self.mirror and (self.family != "digits" or self.n_train != 0):
            raise ConfigError(f"{s}.mirror applies to {s}.family 'digits' with {s}.n_train = 0 "
                              f"(fresh episodes of the mirrored meta-train classes), got "
                              f"{s}.family {self.family!r} with {s}.n_train = {self.n_train}")
        self.n_features = _int(f"{s}.n_features", self.n_features, 1)
        self.relatedness_noise = _float(f"{s}.relatedness_noise", self.relatedness_noise, 0.0)
        self.noise = _float(f"{s}.noise", self.noise, 0.0)
        self.path = _str(f"{s}.path", self.path)
        self.task_column = _str(f"{s}.task_column", self.task_column)
        self.target = _str(f"{s}.target", self.target)
        self.loss = _str(f"{s}.loss", self.loss, ("mse", "logistic", "cross_entropy"))
        if self.features is not None:    # [] would silently mean "every column": refused
            self.features = _list(f"{s}.features", self.features, _str)
            if not self.features:
                raise ConfigError(f"{s}.features must name at least one column, got []; leave "
                                  f"the key out for every column but the task and target")
        self.test_fraction = _float(f"{s}.test_fraction", self.test_fraction, 0.0, 1.0,
                                    open_lo=True)
        if self.support is not None:
            if isinstance(self.support, int) and not isinstance(self.support, bool):
                self.support = _int(f"{s}.support", self.support, 1)
            else:
                self.support = _float(f"{s}.support", self.support)
                if not 0.0 < self.support < 1.0:
                    more = (" (no query rows would be left)" if self.support == 1.0 else
                            f" (a count is written without a decimal point: {int(self.support)})"
                            if self.support > 1.0 and self.support.is_integer() else "")
                    raise ConfigError(f"{s}.support must be a fraction in (0, 1) or a whole row "
                                      f"count >= 1, got {self.support!r}{more}")
        for key in ("shuffle", "stratify", "standardize", "episodes"):
            setattr(self, key, _bool(f"{s}.{key}", getattr(self, key)))
        if self.stratify and self.loss == "mse":
            raise ConfigError(f"{s}.stratify needs class labels ({s}.loss 'logistic' or "
                              f"'cross_entropy'), got {s}.loss 'mse'")
        if self.family != "csv":
            given = [k for k in ("support", "shuffle", "stratify", "standardize", "episodes")
                     if getattr(self, k) not in (None, False)]
            if given:
                raise ConfigError(f"{s}.{given[0]} applies to {s}.family 'csv' (your own data), "
                                  f"got {s}.family {self.family!r}")
        if self.family == "csv" and not self.path:
            raise ConfigError(f"{s}.path must name a CSV file when {s}.family is 'csv'")
        if self.n_train == 0 and self.family not in ("sinusoid", "digits", "csv"):
            raise ConfigError(f"{s}.n_train must be >= 1 for family {self.family!r} (only "
                              f"'sinusoid' and 'digits' draw fresh tasks every step with "
                              f"n_train = 0)")
        self._check_sizes(s)

    def _check_sizes(self, s):
        """The generated task sets must fit in memory: refuse, naming the keys, before numpy or
        the core is asked for terabytes."""
        per_row = 8 * ((self.n_features if self.family in ("linear", "logistic") else 1) + 1)
        k_query = max(self.k_query, self.test_k_query or 0)
        per_task = self.k_support + k_query
        if self.family == "digits":
            per_row, per_task = 8 * 65, per_task * self.n_way
        for key in ("n_train", "n_test"):
            n_bytes = getattr(self, key) * per_task * per_row
            try:
                _validation.fits_in_memory("tasks", n_bytes)
            except MemoryError as exc:
                raise ConfigError(f"{s}.{key} = {getattr(self, key)} tasks of {per_task} rows "
                                  f"(k_support + k_query{', n_way' if self.family == 'digits' else ''}"
                                  f"): {exc}") from None


@dataclass
class ModelConfig:
    """The net: hidden layer widths and activation (input and output sizes follow the tasks;
    ``learner.kind`` "protonet" and "ridgehead" embed with ``[inputs, *hidden]``, no output
    layer), ``norm`` ("batch" or "layer": every hidden layer normalised, :class:`metacore.MLP`'s
    ``norm``; left out: none) and ``last_layer_scale`` (the last layer's initial weights and
    biases multiplied by it: a small first embedding for ProtoNet/RidgeHead,
    ``benchmarks/digits_table.py --head-scale``)."""
    hidden: list = field(default_factory=lambda: [40, 40])
    activation: str = "relu"
    norm: str | None = None
    last_layer_scale: float = 1.0

    def validate(self, s="model"):
        self.hidden = _list(f"{s}.hidden", self.hidden, lambda k, x: _int(k, x, 1))
        self.activation = _str(f"{s}.activation", self.activation, ("relu", "tanh"))
        if self.norm == "none":
            self.norm = None
        if self.norm is not None:
            self.norm = _str(f"{s}.norm", self.norm, NORMS)
        self.last_layer_scale = _float(f"{s}.last_layer_scale", self.last_layer_scale)


@dataclass
class LearnerConfig:
    """How θ is learned: a meta-learner, or ``multitask`` (the weighted objective with mc.fit).

    Every kind reads ``inner_lr`` and ``inner_steps`` but ``protonet`` and ``ridgehead`` (they
    adapt in closed form); ``first_order`` is for maml, metasgd, anil and mamlpp; ``outer_lr``
    for reptile. The keys of one kind, named as its Python constructor's arguments, are refused
    for the others (a key left out takes the constructor's default):

    - ``protonet`` (:class:`metacore.ProtoNet`): ``distance`` ("sqeuclidean").
    - ``ridgehead`` (:class:`metacore.RidgeHead`, R2D2): ``reg`` (λ > 0, default 1) and
      ``scale`` (the logit scale, default 1), the starting values of the learned λ and s.
    - ``imaml`` (:class:`metacore.IMAML`): ``reg`` (λ > 0, default 1), ``cg_steps`` (>= 1,
      default 5).
    - ``mamlpp`` (:class:`metacore.MAML` with the MAML++ options): ``per_step_rates`` ("layer"),
      ``multi_step_loss`` (default true), ``msl_anneal_steps`` (>= 1, default 7500),
      ``first_order_until`` (>= 0, default 0); ``msl_anneal_steps`` with ``multi_step_loss =
      false``, or ``first_order_until`` > 0 with ``first_order = true``, would do nothing and is
      refused.
    """
    kind: str = "maml"
    inner_lr: float = 0.01
    inner_steps: int = 1
    outer_lr: float = 0.1
    first_order: bool = False
    distance: str | None = None
    reg: float | None = None
    scale: float | None = None
    cg_steps: int | None = None
    per_step_rates: str | None = None
    multi_step_loss: bool | None = None
    msl_anneal_steps: int | None = None
    first_order_until: int | None = None

    # key -> (the kinds that take it, its default there)
    KIND_KEYS = {"distance": (("protonet",), "sqeuclidean"),
                 "reg": (("ridgehead", "imaml"), 1.0),
                 "scale": (("ridgehead",), 1.0),
                 "cg_steps": (("imaml",), 5),
                 "per_step_rates": (("mamlpp",), "layer"),
                 "multi_step_loss": (("mamlpp",), True),
                 "msl_anneal_steps": (("mamlpp",), 7500),
                 "first_order_until": (("mamlpp",), 0)}
    # the kinds that take first_order
    FIRST_ORDER_KINDS = ("maml", "fomaml", "metasgd", "anil", "mamlpp")

    def validate(self, s="learner"):
        self.kind = _str(f"{s}.kind", self.kind, LEARNERS)
        self.inner_lr = _float(f"{s}.inner_lr", self.inner_lr, 0.0)
        self.inner_steps = _int(f"{s}.inner_steps", self.inner_steps, 1)
        self.outer_lr = _float(f"{s}.outer_lr", self.outer_lr, 0.0, open_lo=True)
        self.first_order = _bool(f"{s}.first_order", self.first_order)
        if self.first_order and self.kind not in self.FIRST_ORDER_KINDS:
            raise ConfigError(f"{s}.first_order applies to learner.kind 'maml', 'metasgd', "
                              f"'anil' or 'mamlpp', got learner.kind {self.kind!r}")
        for key, (kinds, default) in self.KIND_KEYS.items():
            value = getattr(self, key)
            if value is None:
                setattr(self, key, default if self.kind in kinds else None)
            elif self.kind not in kinds:
                raise ConfigError(f"{s}.{key} applies to learner.kind "
                                  f"{' or '.join(map(repr, kinds))}, got learner.kind "
                                  f"{self.kind!r}")
        if self.distance is not None:
            from ..learners import DISTANCES
            self.distance = _str(f"{s}.distance", self.distance, DISTANCES)
        if self.reg is not None:
            self.reg = _float(f"{s}.reg", self.reg, 0.0, open_lo=True)
        if self.scale is not None:
            self.scale = _float(f"{s}.scale", self.scale)
        if self.cg_steps is not None:
            self.cg_steps = _int(f"{s}.cg_steps", self.cg_steps, 1)
        if self.per_step_rates is not None:
            from ..learners import PER_STEP_RATES
            self.per_step_rates = _str(f"{s}.per_step_rates", self.per_step_rates,
                                       PER_STEP_RATES)
        if self.multi_step_loss is not None:
            self.multi_step_loss = _bool(f"{s}.multi_step_loss", self.multi_step_loss)
        if self.msl_anneal_steps is not None:
            self.msl_anneal_steps = _int(f"{s}.msl_anneal_steps", self.msl_anneal_steps, 1)
        if self.first_order_until is not None:
            self.first_order_until = _int(f"{s}.first_order_until", self.first_order_until, 0)
        self._refuse_inert_keys(s)

    def _refuse_inert_keys(self, s):
        """mamlpp keys that the file's other keys make inert (given, away from their default):
        refused naming both, as a key of another kind is (mc.MAML warns for the same options).
        Runs after the keys are checked and the left-out ones take their defaults."""
        if self.kind != "mamlpp":
            return
        if (not self.multi_step_loss
                and self.msl_anneal_steps != self.KIND_KEYS["msl_anneal_steps"][1]):
            raise ConfigError(f"{s}.msl_anneal_steps = {self.msl_anneal_steps!r} does nothing with "
                              f"{s}.multi_step_loss = false: remove one of them")
        if self.first_order and self.first_order_until:
            raise ConfigError(f"{s}.first_order_until = {self.first_order_until!r} does nothing "
                              f"with {s}.first_order = true: remove one of them")

    @property
    def episodic(self) -> bool:
        """True for the learners that embed and adapt in closed form (protonet, ridgehead)."""
        return self.kind in EPISODE_LEARNERS


@dataclass
class OptimizerConfig:
    """The outer optimizer, as :func:`metacore.optim.from_dict` takes it: ``kind`` (``sgd``,
    ``adam``, ``adamw``, or ``none`` for the learner's own step, i.e. Reptile's annealed one),
    ``lr`` and any of the kind's settings (``momentum``, ``nesterov``, ``betas``, ``eps``,
    ``weight_decay``, ``clip_norm``), a ``[optimizer.schedule]`` table (``kind = "cosine"``,
    ``steps = ...``) and parameter groups, one table each (``[optimizer.groups.rates]`` with
    ``lr = 1e-4`` and/or ``weight_decay``: the learner's groups, ``model``, ``rates``, ``head``).
    Keys left out take the optimizer's defaults; a key the kind does not take
    (e.g. ``momentum`` for ``adam``) is refused."""
    kind: str = "adam"
    lr: float = 1e-3
    momentum: float | None = None
    nesterov: bool | None = None
    betas: list | None = None
    eps: float | None = None
    weight_decay: float | None = None
    clip_norm: float | None = None
    schedule: dict = field(default_factory=dict)
    groups: dict | None = None

    _SETTINGS = ("momentum", "nesterov", "betas", "eps", "weight_decay", "clip_norm", "groups")

    def validate(self, s="optimizer"):
        self.kind = _str(f"{s}.kind", self.kind, OPTIMIZERS)
        self.lr = _float(f"{s}.lr", self.lr, 0.0, open_lo=True)
        self.momentum = _float(f"{s}.momentum", self.momentum, 0.0, 1.0, none=True)
        if self.nesterov is not None:
            self.nesterov = _bool(f"{s}.nesterov", self.nesterov)
        if self.betas is not None:
            self.betas = _list(f"{s}.betas", self.betas, lambda k, x: _float(k, x, 0.0, 1.0))
        self.eps = _float(f"{s}.eps", self.eps, 0.0, open_lo=True, none=True)
        self.weight_decay = _float(f"{s}.weight_decay", self.weight_decay, 0.0, none=True)
        self.clip_norm = _float(f"{s}.clip_norm", self.clip_norm, 0.0, open_lo=True, none=True)
        if not isinstance(self.schedule, dict):
            raise ConfigError(f"{s}.schedule must be a table, got {self.schedule!r}")
        if self.kind == "none":
            given = [k for k in self._SETTINGS if getattr(self, k) is not None]
            given += ["schedule"] if self.schedule else []
            if given:
                raise ConfigError(f"{s}.{given[0]}: optimizer.kind 'none' (the learner's own "
                                  f"step) takes no settings")
        else:
            self.build()   # the optimizer checks its own settings and refuses unknown ones

    def spec(self):
        """The optimizer as the plain dict :func:`metacore.optim.from_dict` takes (None for
        ``none``)."""
        if self.kind == "none":
            return None
        out = {"kind": self.kind, "lr": self.lr}
        out.update({k: getattr(self, k) for k in self._SETTINGS if getattr(self, k) is not None})
        if self.schedule:
            out["schedule"] = dict(self.schedule)
        return out

    def build(self, learner=None, steps=None):
        """The :mod:`metacore.optim` optimizer, through ``optim.from_dict`` (``none``: the
        learner's ``default_optimizer(steps)``)."""
        from .. import optim
        if self.kind == "none":
            return learner.default_optimizer(steps)
        try:
            return optim.from_dict(self.spec())
        except (TypeError, ValueError) as exc:
            text = str(exc)
            raise ConfigError(text if text.startswith("optimizer") else
                              f"optimizer: {text}") from None


@dataclass
class WeightingConfig:
    """Task weights α for ``learner.kind = "multitask"``: a strategy of
    :mod:`metacore.weighting` by its lower-case name, ``alpha`` for ``fixed``, and the strategy's
    keyword arguments in ``[weighting.settings]`` (e.g. ``temperature = 2.0`` for ``dwa``)."""
    kind: str = "uniform"
    alpha: list = field(default_factory=list)
    settings: dict = field(default_factory=dict)

    def validate(self, s="weighting"):
        self.kind = _str(f"{s}.kind", self.kind, WEIGHTINGS)
        self.alpha = _list(f"{s}.alpha", self.alpha, lambda k, x: _float(k, x, 0.0))
        if self.kind == "fixed" and not self.alpha:
            raise ConfigError(f"{s}.alpha must list one weight per training task when "
                              f"{s}.kind is 'fixed'")
        if not isinstance(self.settings, dict):
            raise ConfigError(f"{s}.settings must be a table, got {self.settings!r}")
        if self.kind in ("uniform", "fixed") and self.settings:
            raise ConfigError(f"{s}.settings: {self.kind!r} takes none, got "
                              f"{', '.join(self.settings)}")
        if self.kind not in ("uniform", "fixed"):
            self.strategy()   # the strategy checks its own settings

    def strategy(self, n_tasks=None):
        """The :mod:`metacore.weighting` object (``fixed`` needs the weights' count to match)."""
        import inspect
        from .. import weighting as w
        if self.kind == "uniform":
            return w.Uniform()
        if self.kind == "fixed":
            return w.Fixed(self.alpha)
        cls = next(c for n, c in w.BY_NAME.items() if n.lower() == self.kind)
        allowed = [p for p in inspect.signature(cls).parameters]
        for key in self.settings:
            if key not in allowed:
                raise ConfigError(f"unknown key weighting.settings.{key} for {self.kind!r} "
                                  f"(allowed: {', '.join(allowed) or 'none'})")
        try:
            return cls(**self.settings)
        except (TypeError, ValueError) as exc:
            raise keyed_error(exc, {k: f"weighting.settings.{k}" for k in allowed},
                              strict=allowed) from None


@dataclass
class TrainConfig:
    """The training run: steps, meta-batch, steps per core call (``chunk``; default: adaptive,
    about 0.25 s per call, so progress and Ctrl-C stay prompt), validation every
    ``validate_every`` steps (0: none), a checkpoint every ``checkpoint_every`` steps (and at the
    end; default 1000), L2 (multitask)."""
    steps: int = 70000
    meta_batch: int = 25
    chunk: int | None = None
    validate_every: int = 0
    checkpoint_every: int = 1000
    l2: float = 0.0

    def validate(self, s="train"):
        self.steps = _int(f"{s}.steps", self.steps, 1)
        self.meta_batch = _int(f"{s}.meta_batch", self.meta_batch, 1)
        self.chunk = _int(f"{s}.chunk", self.chunk, 1, none=True)
        self.validate_every = _int(f"{s}.validate_every", self.validate_every, 0)
        self.checkpoint_every = _int(f"{s}.checkpoint_every", self.checkpoint_every, 1)
        self.l2 = _float(f"{s}.l2", self.l2, 0.0)


@dataclass
class EvaluateConfig:
    """The few-shot evaluation: adaptation steps, inner rate (default: the learner's), the
    baselines and their settings, the seed of the test tasks, whether to save a plot."""
    steps: list = field(default_factory=lambda: [0, 1, 5, 10])
    lr: float | None = None
    baselines: list = field(default_factory=lambda: ["scratch", "joint"])
    joint_steps: int = 5000
    joint_lr: float = 1e-3
    joint_tasks: int = 1000
    seed: int = 12345
    plot: bool = True

    def validate(self, s="evaluate"):
        self.steps = _list(f"{s}.steps", self.steps, lambda k, x: _int(k, x, 0), min_len=1)
        try:   # the rule mc.evaluate applies, checked before training
            _validation.step_counts(f"{s}.steps", self.steps)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        self.lr = _float(f"{s}.lr", self.lr, 0.0, none=True)
        self.baselines = _list(f"{s}.baselines", self.baselines,
                               lambda k, x: _str(k, x, BASELINES))
        self.joint_steps = _int(f"{s}.joint_steps", self.joint_steps, 1)
        self.joint_lr = _float(f"{s}.joint_lr", self.joint_lr, 0.0, open_lo=True)
        self.joint_tasks = _int(f"{s}.joint_tasks", self.joint_tasks, 1)
        self.seed = _int(f"{s}.seed", self.seed, 0)
        self.plot = _bool(f"{s}.plot", self.plot)


_SECTIONS = {"tasks": TasksConfig, "model": ModelConfig, "learner": LearnerConfig,
             "optimizer": OptimizerConfig, "weighting": WeightingConfig, "train": TrainConfig,
             "evaluate": EvaluateConfig}


@dataclass
class Config:
    """A whole experiment. ``output`` defaults to ``runs/<name>``; ``threads`` None uses the
    OpenMP default, -1 every core."""
    name: str = "experiment"
    seed: int = 0
    threads: int | None = None
    output: str | None = None
    dtype: str = "float32"
    tasks: TasksConfig = field(default_factory=TasksConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    learner: LearnerConfig = field(default_factory=LearnerConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    weighting: WeightingConfig = field(default_factory=WeightingConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)

    def validate(self):
        self.name = _name("name", self.name)
        self.seed = _int("seed", self.seed, 0)
        self.threads = _int("threads", self.threads, -1, 2**31 - 1, none=True)  # the core's int
        if self.threads == 0:
            raise ConfigError("threads must be -1 (all cores) or >= 1 (leave it out for the "
                              "default), got 0")
        self.output = None if self.output is None else _str("output", self.output)
        self.dtype = _str("dtype", self.dtype, ("float32", "float64"))
        for key in _SECTIONS:
            getattr(self, key).validate(key)
        self._check_model()
        if self.optimizer.kind == "none" and self.learner.kind != "reptile":
            raise ConfigError(f"optimizer.kind 'none' is only for learner.kind 'reptile' (its "
                              f"own outer step), got learner.kind {self.learner.kind!r}")
        if self.learner.kind == "multitask" and self.tasks.n_train == 0 \
                and self.tasks.family in ("sinusoid", "digits"):
            raise ConfigError("tasks.n_train must be >= 1 for learner.kind 'multitask' (it "
                              "trains on a fixed set of tasks)")
        if self.tasks.episodes and self.learner.kind == "multitask":
            raise ConfigError("tasks.episodes applies to the meta-learners (support/query "
                              "episodes); learner.kind 'multitask' trains on every row")
        if self.tasks.n_train and self.train.meta_batch > self.tasks.n_train:
            raise ConfigError(f"train.meta_batch must be <= tasks.n_train "
                              f"({self.tasks.n_train}), got {self.train.meta_batch}")
        return self

    def _check_model(self):
        """What the net of ``model`` must be for ``learner.kind`` (as :class:`metacore.MLP`,
        :class:`metacore.ProtoNet` and :class:`metacore.RidgeHead` refuse it)."""
        m, kind = self.model, self.learner.kind
        if self.learner.episodic:
            what = "ProtoNet" if kind == "protonet" else "RidgeHead"
            if not (self.tasks.family == "digits" or (self.tasks.family == "csv"
                                                       and self.tasks.loss == "cross_entropy")):
                raise ConfigError(f"learner.kind {kind!r} ({what}) classifies episodes: it needs "
                                  f"tasks.family 'digits', or 'csv' with tasks.loss "
                                  f"'cross_entropy', got tasks.family {self.tasks.family!r}"
                                  + (f" with tasks.loss {self.tasks.loss!r}"
                                     if self.tasks.family == "csv" else ""))
            if not m.hidden:
                raise ConfigError(f"model.hidden must have at least one entry for learner.kind "
                                  f"{kind!r}: the net [inputs, *hidden] is the embedding, the "
                                  f"last width its dimension")
        n_hidden = len(m.hidden) - (1 if self.learner.episodic else 0)
        if m.norm is not None and n_hidden < 1:
            raise ConfigError(f"model.norm {m.norm!r} normalises the hidden layers, but "
                              f"model.hidden {m.hidden} leaves none"
                              + (f" (learner.kind {kind!r}: the last entry is the embedding's "
                                 f"output)" if self.learner.episodic else ""))
        if m.norm == "batch" and kind == "ridgehead":
            raise ConfigError("model.norm 'batch' is not supported by learner.kind 'ridgehead' "
                              "(RidgeHead) yet: use 'layer', leave it out, or learner.kind "
                              "'protonet'")

    @property
    def output_dir(self) -> str:
        return self.output if self.output is not None else f"runs/{self.name}"

    def to_dict(self) -> dict:
        """Plain data, None values left out (loads back to an equal Config)."""
        def clean(d):
            return {k: (clean(v) if isinstance(v, dict) else v)
                    for k, v in d.items() if v is not None}
        return clean(dataclasses.asdict(self))

    def to_toml(self) -> str:
        """The config as TOML text (top-level keys, then one table per section)."""
        d = self.to_dict()
        lines = [f"{k} = {_toml_value(v)}" for k, v in d.items() if not isinstance(v, dict)]
        for k, v in d.items():
            if isinstance(v, dict):
                lines += ["", f"[{k}]"] + [f"{kk} = {_toml_value(vv)}" for kk, vv in v.items()
                                           if not isinstance(vv, dict)]
                for kk, vv in v.items():
                    if isinstance(vv, dict) and vv:
                        lines += ["", f"[{k}.{kk}]"] + [f"{a} = {_toml_value(b)}"
                                                        for a, b in vv.items()]
        return "\n".join(lines) + "\n"


def _toml_value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):     # a basic string: backslash, quote and control characters escaped
        return '"' + "".join(c if c >= " " and c not in '"\\\x7f' else f"\\u{ord(c):04x}"
                             for c in v) + '"'
    if isinstance(v, dict):    # a table inside a section's table: an inline table
        return "{" + ", ".join(f"{_toml_key(k)} = {_toml_value(x)}" for k, x in v.items()) + "}"
    return "[" + ", ".join(_toml_value(x) for x in v) + "]"


def _toml_key(k):
    return k if re.fullmatch(r"[A-Za-z0-9_-]+", k) else _toml_value(k)


def _section(cls, name, data):
    if not isinstance(data, dict):
        raise ConfigError(f"[{name}] must be a table, got {data!r}")
    known = [f.name for f in dataclasses.fields(cls)]
    for key in data:
        if key not in known:
            raise ConfigError(f"unknown key {name}.{key} (allowed: {', '.join(known)})")
    return cls(**data)


def from_dict(data) -> Config:
    """A validated Config from a parsed TOML table."""
    if not isinstance(data, dict):
        raise ConfigError(f"a config must be a table, got {type(data).__name__}")
    top = [f.name for f in dataclasses.fields(Config) if f.name not in _SECTIONS]
    kwargs = {}
    for key, value in data.items():
        if key in _SECTIONS:
            kwargs[key] = _section(_SECTIONS[key], key, value)
        elif key in top:
            kwargs[key] = value
        else:
            raise ConfigError(f"unknown key {key} (allowed: {', '.join(top + list(_SECTIONS))})")
    return Config(**kwargs).validate()


def _toml():
    if sys.version_info >= (3, 11):
        import tomllib
        return tomllib
    import tomli  # the conditional dependency for Python < 3.11
    return tomli


_TABLES = {("weighting", "settings"), ("optimizer", "schedule")}   # tables inside a section


def _override(data, item):
    """Apply one ``section.key=value`` or ``section.table.key=value`` (value in TOML syntax; bare
    words are strings); returns the key's path."""
    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"--set takes key=value (e.g. tasks.k_support=5), got {item!r}")
    toml = _toml()
    try:
        value = toml.loads(f"v = {text.strip()}")["v"]
    except toml.TOMLDecodeError:
        value = text.strip()
    *path, last = key.split(".")
    if path and path[0] not in _SECTIONS:
        raise ConfigError(f"--set {key}: {path[0]!r} is not a section (sections: "
                          f"{', '.join(_SECTIONS)})")
    if len(path) > 1 and (len(path) > 2 or tuple(path) not in _TABLES):
        raise ConfigError(f"--set {key}: {'.'.join(path)!r} is not a table (tables: "
                          f"{', '.join('.'.join(t) for t in sorted(_TABLES))})")
    table = data
    for part in path:
        table = table.setdefault(part, {})
        if not isinstance(table, dict):
            raise ConfigError(f"--set {key}: {part!r} is not a table in the file")
    table[last] = value
    return tuple(path) + (last,)


def _drop_strategy_settings(data, before, given):
    """After ``--set weighting.kind=...`` changed the strategy, drop the file's settings (and
    ``alpha``) of the old one; those given with --set stay."""
    w = data.get("weighting", {})
    if w.get("kind", "uniform") == before:
        return
    settings = w.get("settings")
    if isinstance(settings, dict):
        for k in [k for k in settings if ("weighting", "settings", k) not in given]:
            del settings[k]
    if "alpha" in w and ("weighting", "alpha") not in given:
        del w["alpha"]


def _drop_learner_keys(data, before, given):
    """After ``--set learner.kind=...`` changed the kind, drop the file's keys of the old kind
    that the new one does not take (``distance``, ``reg``, ..., ``first_order``: a config.toml
    written by ``train`` lists them all, resolved); those given with --set stay (and are refused
    by name if the new kind does not take them)."""
    learner = data.get("learner")
    if not isinstance(learner, dict) or learner.get("kind", "maml") == before:
        return
    kind = learner.get("kind")
    takes = {key: kinds for key, (kinds, _) in LearnerConfig.KIND_KEYS.items()}
    takes["first_order"] = LearnerConfig.FIRST_ORDER_KINDS
    for key, kinds in takes.items():
        if key in learner and kind not in kinds and ("learner", key) not in given:
            del learner[key]


_PATHS = ((None, "output"), ("tasks", "path"))   # keys holding file paths


def _resolve_paths(data, base):
    """Relative paths of the file (``output``, ``tasks.path``) made relative to ``base``, the
    file's folder, so a run does not depend on the current directory (--set values are resolved
    against the current directory instead, in loads: they are typed there)."""
    for section, key in _PATHS:
        table = data if section is None else data.get(section)
        if isinstance(table, dict) and isinstance(table.get(key), str) and table[key] \
                and not os.path.isabs(os.path.expanduser(table[key])):
            table[key] = os.path.normpath(os.path.join(base, table[key]))


def loads(text, overrides=(), base_dir=None) -> Config:
    """A validated Config from TOML text, with ``section.key=value`` overrides applied
    (``weighting.settings.NAME=VALUE`` sets one setting of the strategy; changing
    ``weighting.kind`` drops the file's settings of the previous strategy, changing
    ``learner.kind`` the file's keys of the previous kind the new one does not take).
    ``base_dir``: the folder relative paths in the text (``output``, ``tasks.path``) are resolved
    against (None: left as written, i.e. relative to the current directory)."""
    toml = _toml()
    try:
        data = toml.loads(text)
    except toml.TOMLDecodeError as exc:
        raise ConfigError(f"not valid TOML: {exc}") from None
    if base_dir is not None:
        _resolve_paths(data, os.fspath(base_dir))
    before = data.get("weighting", {}).get("kind", "uniform") \
        if isinstance(data.get("weighting"), dict) else None
    learner_before = data.get("learner", {}).get("kind", "maml") \
        if isinstance(data.get("learner"), dict) else None
    given = {_override(data, item) for item in overrides}
    # A path given with --set is typed relative to the current folder: kept absolute, so that
    # the run's config.toml, which records it, reads back from its own folder too.
    for section, key in _PATHS:
        table = data if section is None else data.get(section)
        given_here = ((key,) if section is None else (section, key)) in given
        if given_here and isinstance(table, dict) and isinstance(table.get(key), str) \
                and table[key]:
            table[key] = os.path.abspath(os.path.expanduser(table[key]))
    if ("weighting", "kind") in given and before is not None:
        _drop_strategy_settings(data, before, given)
    if ("learner", "kind") in given and learner_before is not None:
        _drop_learner_keys(data, learner_before, given)
    try:
        return from_dict(data)
    except ConfigError as exc:
        # a value given with --set is blamed on --set, not on the file it overrides: when the
        # message is about that key (it names the key it is about first)
        text = str(exc)
        if any(re.match(rf"(unknown key )?{re.escape('.'.join(key))}(?![\w.])", text)
               for key in given):
            raise _SetError(f"--set {text}") from None
        raise


class _SetError(ConfigError):
    """A ConfigError about a value given with ``--set`` (:func:`load` does not name the file)."""


def load(path, overrides=()) -> Config:
    """A validated Config from a TOML file (``overrides`` as in :func:`loads`); relative paths in
    the file are resolved against the file's folder."""
    with open(path, "rb") as fh:
        raw = fh.read()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path} is not UTF-8 text (byte {raw[exc.start:exc.start + 1]!r} at "
                          f"offset {exc.start} cannot be decoded: {exc.reason}); a TOML config "
                          f"is UTF-8 text") from None
    text = text.removeprefix("\ufeff")   # a byte-order mark (Notepad writes one), as CSV reading
    try:
        return loads(text, overrides, base_dir=os.path.dirname(os.path.abspath(path)))
    except _SetError:
        raise
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
