r"""Optimizers and learning-rate schedules for the θ-update loop, applied by the compiled core.

Every optimizer turns the gradient g_t of step t (0-based) into an update of θ in three stages:

1. **Clipping** (``clip_norm=c``, optional; Pascanu et al., 2013): if ‖g_t‖₂ > c,
   g_t ← g_t · c / ‖g_t‖₂ (the global norm over all of θ, as ``torch.nn.utils.clip_grad_norm_``).
2. **Schedule**: η_t = lr · s(t), with s from :func:`constant`, :func:`step`, :func:`cosine`, each
   optionally preceded by a linear warm-up (:func:`warmup`).
3. **The rule** of :class:`SGD`, :class:`Adam` or :class:`AdamW` — exactly the updates of
   ``torch.optim.SGD``, ``Adam`` and ``AdamW`` (no dampening, no AMSGrad).

**Parameter groups** (``groups=``, as the ``param_groups`` of ``torch.optim``): named ranges of θ
with their own base learning rate and weight decay, e.g. ``Adam(1e-3, groups={"rates": {"lr":
1e-4}})`` trains MAML++'s or Meta-SGD's learned inner rates ten times slower than the weights —
Adam moves every entry by about its learning rate per step whatever its scale, and an inner rate
of 0.01 moved by 1e-3 a step changes by 10 % a step. The problem names its groups
(``learner.param_groups()``: ``"model"`` for the net's θ, ``"rates"`` for learned inner rates,
``"head"`` for RidgeHead's log λ and scale; a multi-task objective with per-task heads:
``"shared"`` and ``"heads"``); :func:`metacore.fit` resolves the names (:meth:`Optimizer.bind`).
The schedule's factor multiplies every group's rate, and clipping uses the norm over all of θ.

The state (moment buffers m, v) starts at zero; an optimizer object only carries hyper-parameters,
so one object can drive many runs. ``opt.update(theta, grad, state, step)`` applies one step to your
own arrays (in place), for loops written outside :func:`metacore.fit`.
"""

from __future__ import annotations

import copy
import math

import numpy as np

from . import _validation

__all__ = ["Schedule", "constant", "step", "cosine", "linear", "warmup", "Optimizer", "SGD", "Adam",
           "AdamW", "from_dict"]

SCHEDULES = ("constant", "step", "cosine", "linear")


# --- learning-rate schedules ---------------------------------------------------------------------
class Schedule:
    r"""A learning-rate factor s(t) for step t = 0, 1, ...: the update of step t uses lr · s(t).

    With a warm-up of w steps starting at factor s₀ (``warmup_start``):
    s(t) = s₀ + (1 − s₀) · t / w for t < w, and s(t) = base(t − w) afterwards, where base is

    - ``"constant"``: base(u) = 1;
    - ``"step"``: base(u) = γ^⌊u / every⌋ (``torch.optim.lr_scheduler.StepLR``);
    - ``"cosine"``: base(u) = m + (1 − m) · (1 + cos(π u / n)) / 2 for u < n, then m
      (``CosineAnnealingLR`` held at its floor; Loshchilov & Hutter, 2017), m = ``min_factor``;
    - ``"linear"``: base(u) = 1 − u / n for u < n, then 0 (Reptile's annealed outer step,
      Nichol et al., 2018).

    Build one with :func:`constant`, :func:`step`, :func:`cosine`, :func:`linear` and
    :func:`warmup`.
    """

    __slots__ = ("kind", "every", "gamma", "steps", "min_factor", "warmup", "warmup_start")

    def __init__(self, kind="constant", *, every=1, gamma=0.1, steps=1, min_factor=0.0, warmup=0,
                 warmup_start=0.0):
        self.kind = _validation.choice("schedule kind", kind, SCHEDULES)
        self.every = _validation.integer("every", every, minimum=1)
        self.gamma = _validation.real("gamma", gamma, minimum=0.0, maximum=1.0, min_open=True)
        self.steps = _validation.integer("steps", steps, minimum=1)
        self.min_factor = _validation.real("min_factor", min_factor, minimum=0.0, maximum=1.0)
        self.warmup = _validation.integer("warmup steps", warmup, minimum=0)
        self.warmup_start = _validation.real("start_factor", warmup_start, minimum=0.0, maximum=1.0)

    def factor(self, t) -> float:
        """s(t), computed in Python (the core computes the same formula)."""
        t = _validation.integer("step", t, minimum=0)
        if t < self.warmup:
            return self.warmup_start + (1.0 - self.warmup_start) * t / self.warmup
        u = t - self.warmup
        if self.kind == "step":
            return self.gamma ** (u // self.every)
        if self.kind == "cosine":
            if u >= self.steps:
                return self.min_factor
            m = self.min_factor
            return m + (1.0 - m) * 0.5 * (1.0 + math.cos(math.pi * u / self.steps))
        if self.kind == "linear":
            return 0.0 if u >= self.steps else 1.0 - u / self.steps
        return 1.0

    def to_dict(self) -> dict:
        return {name: getattr(self, name) for name in self.__slots__}

    @classmethod
    def from_dict(cls, d) -> "Schedule":
        """The schedule ``d`` describes: ``{"kind": ..., <its settings>}`` — ``constant``;
        ``step`` (``every``, ``gamma``); ``cosine`` (``steps``, ``min_factor``); ``linear``
        (``steps``) — each optionally with a warm-up (``warmup`` steps from ``warmup_start``).
        Unknown keys are refused naming the key and the allowed ones; a length the kind needs
        (``every``, ``steps``) must be given."""
        d = dict(_validation.instance("schedule", d, dict, "a dict"))
        if "kind" not in d:
            raise ValueError(f"schedule needs a 'kind' (one of {', '.join(SCHEDULES)}), got {d!r}")
        _refuse_unknown("schedule", d, cls.__slots__)
        needed = {"step": ("every",), "cosine": ("steps",), "linear": ("steps",)}.get(d["kind"], ())
        missing = [k for k in needed if k not in d]
        if missing:
            raise ValueError(f"schedule {d['kind']!r} needs {', '.join(map(repr, missing))}")
        return cls(d.pop("kind"), **d)

    def __eq__(self, other):
        return isinstance(other, Schedule) and self.to_dict() == other.to_dict()

    def __repr__(self):
        parts = {"constant": "", "step": f"every={self.every}, gamma={self.gamma}",
                 "cosine": f"steps={self.steps}, min_factor={self.min_factor}",
                 "linear": f"steps={self.steps}"}[self.kind]
        text = f"{self.kind}({parts})"
        if self.warmup:
            text = f"warmup({self.warmup}, {text}, start_factor={self.warmup_start})"
        return text


def constant() -> Schedule:
    """s(t) = 1: the learning rate as given."""
    return Schedule("constant")


def step(every, gamma=0.1) -> Schedule:
    """s(t) = γ^⌊t / every⌋: multiply the learning rate by ``gamma`` (in (0, 1]) every ``every``
    steps."""
    return Schedule("step", every=every, gamma=gamma)


def cosine(steps, min_factor=0.0) -> Schedule:
    """s(t) = m + (1 − m)(1 + cos(π t / steps)) / 2 for t < steps, then m: a half-cosine from lr
    down to ``min_factor`` · lr over ``steps`` steps (SGDR without restarts; Loshchilov & Hutter,
    2017)."""
    return Schedule("cosine", steps=steps, min_factor=min_factor)


def linear(steps) -> Schedule:
    """s(t) = 1 − t / steps for t < steps, then 0: a linear decay of the learning rate to 0 over
    ``steps`` steps (Reptile's outer step size; Nichol et al., 2018)."""
    return Schedule("linear", steps=steps)


def warmup(steps, then=None, start_factor=0.0) -> Schedule:
    """A linear warm-up over ``steps`` steps from ``start_factor`` · lr to lr (Goyal et al., 2017),
    followed by the schedule ``then`` (default :func:`constant`), which starts counting its own
    steps when the warm-up ends: ``warmup(100, cosine(900))`` spans 1,000 steps."""
    steps = _validation.integer("steps", steps, minimum=1)
    then = constant() if then is None else _validation.instance("then", then, Schedule, "a Schedule")
    if then.warmup:
        raise ValueError("then must be a schedule without a warm-up of its own")
    d = then.to_dict()
    d.update(warmup=steps, warmup_start=start_factor)
    return Schedule.from_dict(d)


GROUP_KEYS = ("lr", "weight_decay")


def _groups_arg(groups):
    """``{name: {"lr": > 0, "weight_decay": >= 0}}`` checked (either key optional), as a new
    dict of plain floats; None gives {}."""
    if groups is None:
        return {}
    groups = _validation.instance("groups", groups, dict,
                                  "a dict {group name: {'lr': ..., 'weight_decay': ...}} or None")
    out = {}
    for name, settings in groups.items():
        if not isinstance(name, str):
            raise TypeError(f"groups: a group name must be a str, got {type(name).__name__}")
        where = f"groups[{name!r}]"
        settings = _validation.instance(where, settings, dict,
                                        "a dict with 'lr' and/or 'weight_decay'")
        _refuse_unknown(where, settings, GROUP_KEYS)
        g = {}
        if "lr" in settings:
            g["lr"] = _validation.real(f"{where}['lr']", settings["lr"], minimum=0.0,
                                       min_open=True)
        if "weight_decay" in settings:
            g["weight_decay"] = _validation.real(f"{where}['weight_decay']",
                                                 settings["weight_decay"], minimum=0.0)
        if not g:
            raise ValueError(f"{where} sets nothing: give 'lr' and/or 'weight_decay'")
        out[name] = g
    return out


def _schedule_arg(schedule):
    if schedule is None:
        return constant()
    return _validation.instance("schedule", schedule, Schedule,
                            "a metacore.optim schedule (constant, step, cosine, linear, warmup) "
                            "or None")


# --- optimizers ----------------------------------------------------------------------------------
class Optimizer:
    """Hyper-parameters of one optimizer; see :class:`SGD`, :class:`Adam`, :class:`AdamW`."""

    kind = None

    def __init__(self, lr, weight_decay, clip_norm, schedule, groups=None):
        self.lr = _validation.real("lr", lr, minimum=0.0, min_open=True)
        self.weight_decay = _validation.real("weight_decay", weight_decay, minimum=0.0)
        self.clip_norm = None if clip_norm is None else _validation.real(
            "clip_norm", clip_norm, minimum=0.0, min_open=True)
        self.schedule = _schedule_arg(schedule)
        self.groups = _groups_arg(groups)
        self._ranges = None      # [(begin, end, lr, weight_decay)] once bound to a layout

    def bind(self, layout) -> "Optimizer":
        """A copy with the parameter groups resolved to ranges of θ. ``layout``: the problem's
        named ranges, ``{name: (begin, end)}`` (``learner.param_groups()``,
        ``objective.param_groups()``). ValueError naming the group for a name the layout lacks
        or two chosen groups that overlap. :func:`metacore.fit` calls it; call it yourself before
        :meth:`update` in a loop of your own."""
        layout = _validation.instance("layout", layout, dict, "a dict {name: (begin, end)}")
        ranges = []
        for name, settings in self.groups.items():
            if name not in layout:
                raise ValueError(f"groups: no parameter group {name!r} in this problem; its groups "
                                 f"are {', '.join(map(repr, layout)) or 'none'}")
            begin, end = (int(x) for x in layout[name])
            ranges.append((begin, end, settings.get("lr", self.lr),
                           settings.get("weight_decay", self.weight_decay), name))
        ranges.sort()
        for a, b in zip(ranges, ranges[1:]):
            if b[0] < a[1]:
                raise ValueError(f"groups: {a[4]!r} and {b[4]!r} overlap (entries {a[0]}..{a[1]} "
                                 f"and {b[0]}..{b[1]} of θ): choose disjoint groups")
        bound = copy.copy(self)
        bound._ranges = [r[:4] for r in ranges if r[1] > r[0]]
        return bound

    # the settings, as the core and the checkpoint files see them
    def _settings(self) -> dict:
        raise NotImplementedError

    def core_config(self):
        """The compiled configuration (built on each call: the attributes may have changed)."""
        from . import _core
        s = self.schedule
        return _core.OptimizerConfig(
            kind=self.kind, lr=self.lr, weight_decay=self.weight_decay,
            clip_norm=self.clip_norm or 0.0, schedule=s.kind, every=s.every, gamma=s.gamma,
            period=s.steps, min_factor=s.min_factor, warmup=s.warmup,
            warmup_start=s.warmup_start, groups=self._bound_ranges(), **self._core_settings())

    def _bound_ranges(self):
        if not self.groups:
            return []
        if self._ranges is None:
            raise ValueError(f"groups {list(self.groups)} name parameter groups of a problem: "
                             f"bind the optimizer first (opt.bind(learner.param_groups())); "
                             f"metacore.fit does it")
        return self._ranges

    def _core_settings(self) -> dict:
        raise NotImplementedError

    @property
    def moments(self) -> tuple:
        """Names of the moment buffers this optimizer keeps, each of θ's shape."""
        raise NotImplementedError

    def check_dtype(self, dtype):
        """ValueError naming ``lr`` (or ``eps``) when it is zero or subnormal — or overflows — in
        the working dtype of θ (``lr=1e-50`` is 0 in float32): the update would silently freeze
        θ or divide by zero; naming ``weight_decay`` or ``clip_norm`` when it overflows there.
        :func:`metacore.fit` and :meth:`update` call it."""
        for name, value in self._step_sizes() + self._group_step_sizes():
            _validation.step_size(name, value, dtype)
        # factors of θ and g in the working dtype: beyond its range they are inf there
        _validation.in_dtype_range("weight_decay", self.weight_decay, dtype)
        for name, g in self.groups.items():
            if "weight_decay" in g:
                _validation.in_dtype_range(f"groups[{name!r}]['weight_decay']",
                                           g["weight_decay"], dtype)
        if self.clip_norm is not None:
            _validation.in_dtype_range("clip_norm", self.clip_norm, dtype)

    def _step_sizes(self):
        return (("lr", self.lr),)

    def _group_step_sizes(self):
        return tuple((f"groups[{name!r}]['lr']", g["lr"]) for name, g in self.groups.items()
                     if "lr" in g)

    def lr_at(self, step) -> float:
        """The learning rate η_t = lr · s(t) used by the update of step ``step``."""
        return self.lr * self.schedule.factor(step)

    def init_state(self, theta) -> dict:
        """Zero moment buffers for θ: ``{"m": ..., "v": ...}``, the ones this optimizer uses."""
        theta = _validation.float_array("theta", theta, ndim=1)
        return {name: np.zeros_like(theta) for name in self.moments}

    def update(self, theta, grad, state, step, n_threads=None) -> float:
        """One update of ``theta`` in place from ``grad`` at step ``step`` (0-based, for the
        schedule and Adam's bias correction); ``state`` (from :meth:`init_state`) is updated in place.
        Returns ‖grad‖₂ before clipping. ``theta`` and the state must be C-contiguous float32 or
        float64 arrays of θ's dtype; they are written, never copied. A non-finite gradient raises
        FloatingPointError and changes nothing."""
        from . import _core
        if not isinstance(theta, np.ndarray) or theta.dtype not in _validation.FLOAT_DTYPES:
            raise TypeError("theta must be a float32 or float64 numpy array (updated in place)")
        _validation.not_masked("theta", theta)   # its masked entries would be updated as values
        grad = _validation.float_array("grad", grad, ndim=1, dtype=theta.dtype, finite=False)
        state = _validation.instance("state", state, dict, "a dict from init_state")
        missing = [k for k in self.moments if k not in state]
        if missing:
            raise ValueError(f"state lacks the moment buffer(s) {missing} this optimizer needs")
        step_index = _validation.integer("step", step, minimum=0)
        self.check_dtype(theta.dtype)
        norm, _, finite = _core.optimizer_step(
            self.core_config(), step_index, theta, grad, state.get("m"), state.get("v"),
            _validation.n_threads(n_threads))
        if not finite:
            raise FloatingPointError(f"the update of step {step_index} is not finite "
                                     f"(gradient norm {norm})")
        return norm

    def to_dict(self) -> dict:
        """Plain data (JSON-serialisable) that :func:`from_dict` turns back into this optimizer."""
        d = {"kind": self.kind, "lr": self.lr, "weight_decay": self.weight_decay,
             "clip_norm": self.clip_norm, "schedule": self.schedule.to_dict()}
        d.update(self._settings())
        if self.groups:
            d["groups"] = {name: dict(g) for name, g in self.groups.items()}
        return d

    def __eq__(self, other):
        return type(other) is type(self) and other.to_dict() == self.to_dict()

    def __repr__(self):
        d = self.to_dict()
        d.pop("kind")
        d["schedule"] = self.schedule
        if "betas" in d:
            d["betas"] = self.betas
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in d.items())})"


class SGD(Optimizer):
    r"""Stochastic gradient descent with optional (Nesterov) momentum, as ``torch.optim.SGD``.

    With d_t = g_t + wd · θ_t (wd = ``weight_decay``, an L2 term added to the gradient):

    - no momentum (μ = 0): θ_{t+1} = θ_t − η_t d_t;
    - heavy ball (Polyak, 1964): b_t = μ b_{t−1} + d_t (b_{−1} = 0), θ_{t+1} = θ_t − η_t b_t;
    - Nesterov (Sutskever et al., 2013, in PyTorch's form): θ_{t+1} = θ_t − η_t (d_t + μ b_t).

    Parameters: ``lr`` > 0 (required), ``momentum`` μ in [0, 1) (default 0), ``nesterov`` (default
    False; needs μ > 0), ``weight_decay`` >= 0 (default 0), ``clip_norm`` > 0 or None,
    ``schedule`` (default constant), ``groups`` (parameter groups, see the module docstring:
    ``{name: {"lr": ..., "weight_decay": ...}}``, either key optional). State: ``m`` = b when
    μ > 0.
    """

    kind = "sgd"

    def __init__(self, lr, *, momentum=0.0, nesterov=False, weight_decay=0.0, clip_norm=None,
                 schedule=None, groups=None):
        super().__init__(lr, weight_decay, clip_norm, schedule, groups)
        self.momentum = _validation.real("momentum", momentum, minimum=0.0, maximum=1.0, max_open=True)
        self.nesterov = _validation.boolean("nesterov", nesterov)
        if self.nesterov and self.momentum == 0.0:
            raise ValueError("nesterov=True needs momentum > 0, got momentum=0.0")

    @property
    def moments(self):
        return ("m",) if self.momentum > 0 else ()

    def _settings(self):
        return {"momentum": self.momentum, "nesterov": self.nesterov}

    def _core_settings(self):
        return {"momentum": self.momentum, "nesterov": self.nesterov}


class Adam(Optimizer):
    r"""Adam (Kingma & Ba, 2015) with bias correction, as ``torch.optim.Adam`` (amsgrad=False).

    With d_t = g_t + wd · θ_t (``weight_decay`` as an L2 term; see :class:`AdamW` for decoupled
    decay) and k = t + 1:

        m_t = β₁ m_{t−1} + (1 − β₁) d_t,        v_t = β₂ v_{t−1} + (1 − β₂) d_t²
        θ_{t+1} = θ_t − (η_t / (1 − β₁^k)) · m_t / (√v_t / √(1 − β₂^k) + ε)

    Defaults: ``lr=1e-3``, ``betas=(0.9, 0.999)`` (each in [0, 1)), ``eps=1e-8`` (> 0),
    ``weight_decay=0``, ``clip_norm=None``, ``schedule`` constant, ``groups=None`` (parameter
    groups with their own ``lr`` / ``weight_decay``; see the module docstring). State: ``m``,
    ``v``.
    """

    kind = "adam"

    def __init__(self, lr=1e-3, *, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                 clip_norm=None, schedule=None, groups=None):
        super().__init__(lr, weight_decay, clip_norm, schedule, groups)
        try:
            b = list(betas)
        except TypeError:
            raise TypeError(f"betas must be a pair (beta1, beta2), got "
                            f"{type(betas).__name__}") from None
        if len(b) != 2:
            raise ValueError(f"betas must be a pair (beta1, beta2), got {len(b)} entries")
        self.betas = (_validation.real("betas[0]", b[0], minimum=0.0, maximum=1.0, max_open=True),
                      _validation.real("betas[1]", b[1], minimum=0.0, maximum=1.0, max_open=True))
        self.eps = _validation.real("eps", eps, minimum=0.0, min_open=True)

    @property
    def moments(self):
        return ("m", "v")

    def _step_sizes(self):
        return (("lr", self.lr), ("eps", self.eps))

    def _settings(self):
        return {"betas": list(self.betas), "eps": self.eps}

    def _core_settings(self):
        return {"beta1": self.betas[0], "beta2": self.betas[1], "eps": self.eps}


class AdamW(Adam):
    r"""Adam with decoupled weight decay (Loshchilov & Hutter, 2019), as ``torch.optim.AdamW``.

    The decay shrinks θ directly instead of entering the moments:

        θ_t ← θ_t (1 − η_t · wd),   then the :class:`Adam` update with d_t = g_t.

    Defaults as Adam except ``weight_decay=1e-2`` (PyTorch's default).
    """

    kind = "adamw"

    def __init__(self, lr=1e-3, *, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2,
                 clip_norm=None, schedule=None, groups=None):
        super().__init__(lr, betas=betas, eps=eps, weight_decay=weight_decay,
                         clip_norm=clip_norm, schedule=schedule, groups=groups)


_BY_KIND = {"sgd": SGD, "adam": Adam, "adamw": AdamW}
_KEYS = {"sgd": ("kind", "lr", "momentum", "nesterov", "weight_decay", "clip_norm", "schedule",
                 "groups"),
         "adam": ("kind", "lr", "betas", "eps", "weight_decay", "clip_norm", "schedule", "groups")}
_KEYS["adamw"] = _KEYS["adam"]


def _refuse_unknown(what, d, allowed):
    unknown = [k for k in d if k not in allowed]
    if unknown:
        raise ValueError(f"{what}: unknown key {unknown[0]!r}; the allowed keys are "
                         f"{', '.join(map(repr, allowed))}")


def from_dict(d) -> Optimizer:
    """The optimizer a plain dict describes — ``{"kind": "sgd" | "adam" | "adamw", "lr": ...,
    ...}`` as written by ``opt.to_dict()``, in a checkpoint or in a TOML file. Strict: an unknown
    kind or key raises ValueError naming it and the allowed ones; missing keys take the class's
    defaults; ``schedule`` is a dict for :meth:`Schedule.from_dict` (or absent: constant)."""
    d = dict(_validation.instance("optimizer settings", d, dict, "a dict"))
    kind = d.get("kind")
    if isinstance(kind, str):
        kind = kind.lower()
    if kind not in _BY_KIND:
        raise ValueError(f"unknown optimizer kind {d.get('kind')!r}: kind must be one of "
                         f"{', '.join(map(repr, _BY_KIND))}")
    _refuse_unknown(f"optimizer (kind {kind!r})", d, _KEYS[kind])
    d.pop("kind")
    if d.get("schedule") is not None:
        d["schedule"] = Schedule.from_dict(d["schedule"])
    if "betas" in d:
        d["betas"] = tuple(d["betas"])
    if "lr" not in d and kind == "sgd":
        raise ValueError("optimizer (kind 'sgd'): lr is required")
    return _BY_KIND[kind](**d)
