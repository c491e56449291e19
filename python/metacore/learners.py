r"""Meta-learners: MAML, first-order MAML, Reptile, Meta-SGD and ANIL, computed by the core.

Every learner adapts θ to task i by k SGD steps on its support rows (no L2 in the inner loop),

    φ_0 = θ,   φ_{j+1} = φ_j − r ⊙ ∇L_s(φ_j),   j = 0..k−1,

and scores the adapted φ_k on the task's query rows; the meta-loss is the mean over the meta-batch
of L_q(φ_k). The rate vector r is ``inner_lr`` everywhere (MAML, Reptile), ``inner_lr`` on the
output layer and 0 on the hidden layers (ANIL), or learned per parameter (Meta-SGD).

The meta-gradient is exact through all k steps by reverse accumulation with Hessian-vector
products (forward-over-reverse through the net), never an unrolled graph; memory O(k·P) per task:

    g_k = ∇L_q(φ_k),   g_j = g_{j+1} − H_s(φ_j)(r ⊙ g_{j+1}),   ∂L_q/∂θ = g_0.

First order (``first_order=True``) drops the Hessian terms: ∂L_q/∂θ ≈ ∇L_q(φ_k). Meta-SGD also
learns r: ∂L_q/∂r = −Σ_j g_{j+1} ⊙ ∇L_s(φ_j). Reptile moves θ toward the adapted parameters,
θ ← θ + ε·mean_i(φ_i − θ), with ε annealed linearly from ``outer_lr`` to 0 over ``fit``'s steps.

The meta-batch runs in parallel over tasks; results are bit-identical for any thread count.
Papers: Finn et al. 2017 (MAML), Nichol et al. 2018 (Reptile), Li et al. 2017 (Meta-SGD),
Raghu et al. 2020 (ANIL).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from . import _validation
from .models import MLP
from .data.taskset import TaskSet

__all__ = ["MAML", "Reptile", "MetaSGD", "ANIL", "MetaFitResult"]


@dataclass
class MetaFitResult:
    """What ``learner.fit`` returns.

    theta: the learned parameters (Meta-SGD: θ and the rates packed, see ``MetaSGD.split``).
    history: ``meta_loss`` (steps,) the mean query loss after adaptation at each step,
    ``support_loss`` (steps,) the mean support loss before adaptation, and ``validation``, a list
    of (step, value) pairs.
    """
    theta: np.ndarray
    history: dict = field(default_factory=dict)


class _Learner:
    _kind = "maml"

    def __init__(self, model, inner_lr=0.01, inner_steps=1, first_order=False, n_threads=None):
        if not isinstance(model, MLP):
            raise TypeError(f"model must be a metacore model (MLP), got {type(model).__name__}")
        if model.task_heads is not None:
            raise ValueError(f"model: meta-learning adapts one shared output layer to each task; "
                             f"per-task heads (task_heads={model.task_heads}) are not supported")
        self.model = model
        self.inner_lr = _validation.real("inner_lr", inner_lr, minimum=0.0)
        self.inner_steps = _validation.integer("inner_steps", inner_steps, minimum=1)
        if not isinstance(first_order, (bool, np.bool_)):
            raise TypeError(f"first_order must be a bool, got {type(first_order).__name__}")
        self.first_order = bool(first_order)
        self.n_threads = _validation.n_threads(n_threads)

    @property
    def n_params(self) -> int:
        """Length of the parameter vector this learner optimises."""
        return self.model.n_params

    # --- arguments ---------------------------------------------------------------------------
    def _params(self, theta, name="theta"):
        P = self.n_params
        arr = np.asarray(theta)
        if arr.dtype not in _validation.FLOAT_DTYPES:
            raise TypeError(f"{name} must be a float32 or float64 array, got dtype {arr.dtype}")
        if arr.ndim != 1 or arr.shape[0] != P:
            raise ValueError(f"{name} must have shape ({P},) for {type(self).__name__} on this "
                             f"model, got {arr.shape}")
        return _validation.float_array(name, arr, ndim=1, dtype=arr.dtype)

    def _batch(self, batch, dtype, name="batch"):
        if not isinstance(batch, TaskSet):
            raise TypeError(f"{name} must be a TaskSet with support/query splits, "
                            f"got {type(batch).__name__}")
        if batch.n_features != self.model.n_features:
            raise ValueError(f"{name} has {batch.n_features} features but the model expects "
                             f"{self.model.n_features}")
        for counts, what in ((batch.n_support, "support"), (batch.n_query, "query")):
            if (counts == 0).any():
                i = int(np.argmax(counts == 0))
                raise ValueError(f"{name}: task {i} has no {what} rows; meta-learning needs "
                                 f"support rows to adapt on and query rows to score")
        batch.check_labels(self.model.loss, self.model.n_outputs)
        return batch.astype(dtype)

    def _core_args(self):
        return self._kind, self.inner_lr, self.inner_steps, self.first_order

    # --- the meta-objective ------------------------------------------------------------------
    def meta_value_and_grad(self, theta, batch):
        """(meta-loss, meta-gradient) over every task of ``batch`` (a TaskSet whose tasks all
        have support and query rows): the mean query loss after adaptation, and its gradient
        with respect to the learner's parameters (θ's dtype)."""
        loss, grad, _, _ = self._evaluate(theta, batch)
        return loss, grad

    def meta_value(self, theta, batch) -> float:
        """The meta-loss alone."""
        return self._evaluate(theta, batch)[0]

    def _evaluate(self, theta, batch):
        from . import _core
        params = self._params(theta)
        ts = self._batch(batch, params.dtype)
        return _core.meta_value_and_grad(self.model.core_net(), *self._core_args(), params, ts.X,
                                         ts.y, ts.offsets, ts.n_support, self.n_threads)

    # --- adapting to a new task --------------------------------------------------------------
    def _adapt_rule(self, theta):
        """(θ, lr, head_only) for the adapt path."""
        return theta, self.inner_lr, False

    def adapt(self, theta, X_support, y_support, *, steps=None):
        """θ adapted by this learner's inner loop (``steps`` defaults to inner_steps)."""
        from .adapt import adapt
        theta, lr, head_only = self._adapt_rule(self._params(theta))
        return adapt(self.model, theta, X_support, y_support,
                     steps=self.inner_steps if steps is None else steps, lr=lr,
                     head_only=head_only)

    def adapt_predict(self, theta, X_support, y_support, X_query, *, steps=None):
        """Outputs on X_query of the net adapted by this learner's inner loop."""
        from .adapt import adapt_predict
        theta, lr, head_only = self._adapt_rule(self._params(theta))
        return adapt_predict(self.model, theta, X_support, y_support, X_query,
                             steps=self.inner_steps if steps is None else steps, lr=lr,
                             head_only=head_only)

    # --- training ----------------------------------------------------------------------------
    def _outer(self, optimizer):
        """The optimizer as plain data for the core (None: the learner's own outer step)."""
        from ._meta_fit import optimizer_spec
        return optimizer_spec(optimizer if optimizer is not None else _default_adam())

    def fit(self, tasks, theta0, *, meta_batch=25, steps=1000, optimizer=None, validation=None,
            validate_every=None, progress=True, seed=0, n_threads=None, chunk=100):
        """Meta-train from ``theta0`` for ``steps`` meta-steps.

        tasks: a TaskSet to sample ``meta_batch`` distinct tasks from at every step (step s draws
        with CounterRng(seed, s)), or a task source such as ``mc.tasks.SinusoidSource()`` that
        generates fresh tasks every step. optimizer: the outer optimizer (default Adam, lr 1e-3).
        validation: None, a TaskSet (its meta-loss is recorded) or a callable(theta) -> float,
        evaluated every ``validate_every`` steps (default: after every chunk). The core runs
        ``chunk`` steps at a time with the GIL released; a tqdm bar shows progress when tqdm is
        installed. Returns a :class:`MetaFitResult`. A non-finite loss stops the run with a
        FloatingPointError naming the step; the parameters are those before that step.
        """
        from ._meta_fit import run_fit
        return run_fit(self, tasks, theta0, meta_batch=meta_batch, steps=steps,
                       optimizer=optimizer, validation=validation, validate_every=validate_every,
                       progress=progress, seed=seed, n_threads=n_threads, chunk=chunk)

    def __repr__(self):
        fo = ", first_order=True" if self.first_order else ""
        return (f"{type(self).__name__}({self.model!r}, inner_lr={self.inner_lr}, "
                f"inner_steps={self.inner_steps}{fo})")


def _default_adam():
    return {"kind": "adam", "lr": 1e-3}


class MAML(_Learner):
    """Model-agnostic meta-learning (Finn et al., 2017): exact second-order meta-gradient through
    all ``inner_steps`` steps, or first-order MAML with ``first_order=True``."""
    _kind = "maml"


class ANIL(_Learner):
    """Almost No Inner Loop (Raghu et al., 2020): the inner loop adapts the output layer only
    (rates inner_lr on the last layer, 0 on the hidden layers); the meta-gradient reaches every
    layer, second order through the head's adaptation unless ``first_order``."""
    _kind = "anil"

    def _adapt_rule(self, theta):
        return theta, self.inner_lr, True


class MetaSGD(_Learner):
    """Meta-SGD (Li et al., 2017): learns θ and one inner learning rate per parameter.

    The learner's parameters are packed ``[θ (P), r (P)]`` (length 2P): ``init(theta)`` packs θ
    with r = inner_lr everywhere, ``split(params)`` returns views (θ, r). The rates are not
    constrained to be positive (as in the paper)."""
    _kind = "metasgd"

    @property
    def n_params(self) -> int:
        return 2 * self.model.n_params

    def init(self, theta):
        """[θ, inner_lr · 1]: the packed parameters to start meta-training from."""
        theta = _validation.theta("theta", theta, self.model.n_params)
        return np.concatenate([theta, np.full_like(theta, self.inner_lr)])

    def split(self, params):
        """(θ, rates): views into packed parameters."""
        params = self._params(params, "params")
        P = self.model.n_params
        return params[:P], params[P:]

    def _adapt_rule(self, params):
        theta, rates = self.split(params)
        return theta, rates, False


class Reptile(_Learner):
    """Reptile (Nichol et al., 2018): k inner SGD steps φ_i, then θ ← θ + ε·mean_i(φ_i − θ).

    ``meta_value_and_grad`` returns the mean query loss at φ_i and the direction mean_i(θ − φ_i),
    so a plain step θ ← θ − ε·direction is Reptile's update. ``fit`` without an optimizer uses
    that step with ε annealed linearly from ``outer_lr`` to 0; with an optimizer it feeds it the
    direction as the gradient.
    """
    _kind = "reptile"

    def __init__(self, model, inner_lr=0.01, inner_steps=5, outer_lr=0.1, n_threads=None):
        super().__init__(model, inner_lr=inner_lr, inner_steps=inner_steps, first_order=True,
                         n_threads=n_threads)
        self.outer_lr = _validation.real("outer_lr", outer_lr, minimum=0.0, min_open=True)

    def _outer(self, optimizer):
        if optimizer is None:
            return None
        from ._meta_fit import optimizer_spec
        return optimizer_spec(optimizer)

    def __repr__(self):
        return (f"Reptile({self.model!r}, inner_lr={self.inner_lr}, "
                f"inner_steps={self.inner_steps}, outer_lr={self.outer_lr})")
