r"""Meta-learners: MAML (and MAML++), first-order MAML, Reptile, Meta-SGD and ANIL, computed by
the core.

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
θ ← θ + ε_s·mean_i(φ_i − θ): its meta-gradient is the direction mean_i(θ − φ_i) and its outer step is
the outer optimizer, by default SGD with ε_s annealed linearly from ``outer_lr`` to 0.

Learners own no training loop: ``mc.fit(mc.MetaObjective(learner, tasks, meta_batch=25), θ₀, ...)``
meta-trains any of them with the one θ-update loop of :mod:`metacore.train`. The meta-batch runs in
parallel over tasks; results are bit-identical for any thread count.
MAML++ (per-layer, per-step rates, the annealed multi-step loss, first order for the first steps:
Antoniou et al. 2019) is a set of options of :class:`MAML`.
Papers: Finn et al. 2017 (MAML), Nichol et al. 2018 (Reptile), Li et al. 2017 (Meta-SGD),
Raghu et al. 2020 (ANIL), Snell et al. 2017 (ProtoNet: no inner loop, see :class:`ProtoNet`),
Bertinetto et al. 2019 (R2D2's closed-form ridge head, :class:`RidgeHead`), Rajeswaran et al. 2019
(iMAML's implicit meta-gradient, :class:`IMAML`).
"""

from __future__ import annotations

import warnings
import weakref

import numpy as np

from . import _validation
from . import optim
from .models import MLP
from .data.tasks import EpisodeSource, SinusoidSource
from .data.taskset import TaskSet

_FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
# a number in this range is normal and finite in float32, hence in float64 too
_F32_NORMAL = (float(np.finfo(np.float32).tiny), float(np.finfo(np.float32).max))

__all__ = ["Learner", "MAML", "FOMAML", "Reptile", "MetaSGD", "ANIL", "ProtoNet", "from_dict",
           "EpisodeLearner", "RidgeHead", "IMAML"]


class _LastBatch:
    """The last batch a learner checked (weak references); copies and pickles start empty."""
    __slots__ = ("entry",)

    def __init__(self):
        self.entry = None

    def __reduce__(self):
        return (_LastBatch, ())


class Learner:
    """What every meta-learner shares: the model, the inner loop (``inner_lr``, ``inner_steps``)
    and whether the meta-gradient is first order. Subclasses: :class:`MAML`, :class:`FOMAML`,
    :class:`ANIL`, :class:`MetaSGD`, :class:`Reptile`."""

    kind = "maml"

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

    def param_groups(self) -> dict:
        """Named ranges ``{name: (begin, end)}`` of the parameters this learner trains, for
        optimizer parameter groups (``metacore.optim``, ``groups=``): ``"model"``, the net's θ
        (entries 0..P); learners that pack meta-parameters after θ add them — ``"rates"`` (MAML
        with ``per_step_rates``, Meta-SGD) and ``"head"`` (RidgeHead's log λ and scale)."""
        P = self.model.n_params
        groups = {"model": (0, P)}
        if self.n_params > P:
            groups[self._packed_group] = (P, self.n_params)
        return groups

    _packed_group = "rates"     # the name of what a learner packs after θ

    # --- arguments ---------------------------------------------------------------------------
    def check_params(self, theta, name="theta"):
        """θ (or Meta-SGD's packed parameters) checked: a float32/float64 array of shape
        (n_params,)."""
        P = self.n_params
        arr = _validation.as_array(name, theta)
        if arr.dtype.kind != "f" or arr.dtype.newbyteorder("=") not in _validation.FLOAT_DTYPES:
            raise TypeError(f"{name} must be a float32 or float64 array, got dtype {arr.dtype}"
                            f"{_validation.object_entries(name, arr)}")
        if arr.ndim != 1 or arr.shape[0] != P:
            raise ValueError(f"{name} must have shape ({P},) for {type(self).__name__} on this "
                             f"model, got {arr.shape}")
        dtype = _validation.work_dtype(arr.dtype)
        self.check_dtype(dtype)
        return _validation.float_array(name, arr, ndim=1, dtype=dtype)

    def check_dtype(self, dtype):
        """The hyper-parameters checked against the working dtype (θ's): a non-zero ``inner_lr``
        must stay a normal, finite number in it (1e-50 is 0 in float32 and would silently
        freeze the inner loop). ValueError naming the argument otherwise."""
        lr = self.inner_lr
        if lr != 0.0 and not _F32_NORMAL[0] <= lr <= _F32_NORMAL[1]:   # else fine in both dtypes
            _validation.step_size("inner_lr", lr, dtype)

    def check_batch(self, batch, dtype, name="batch"):
        """``batch`` checked for meta-learning (support and query rows in every task, labels that
        fit the model) and converted to ``dtype``."""
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
        self.check_labels(batch, name)
        return batch.astype(dtype)

    def _checked_batch(self, batch, dtype):
        """check_batch for the meta-gradient calls, remembered for the last batch: a TaskSet is
        immutable (its arrays are read-only), so the same batch object at the same dtype, for the
        same model, passes the same checks again. Weak references: the cache keeps nothing alive."""
        self.check_dtype(dtype)      # the fast path of _evaluate skips check_params
        memo = self.__dict__.get("_batch_memo")
        if memo is None:
            memo = self.__dict__.setdefault("_batch_memo", _LastBatch())
        hit = memo.entry
        if hit is not None and hit[0]() is batch and hit[1] == dtype and hit[2] is self.model:
            ts = hit[3]()
            if ts is not None:
                return ts
        ts = self.check_batch(batch, dtype)
        memo.entry = (weakref.ref(batch), dtype, self.model, weakref.ref(ts))
        return ts

    def check_labels(self, batch, name="batch"):
        """The batch's labels checked for this learner: those the model's loss head takes."""
        batch.check_labels(self.model.loss, self.model.n_outputs)

    def check_source(self, source, name="tasks"):
        """A task source checked against the model: episodes need a cross-entropy model with
        their features as inputs and one output per class; sinusoids a 1-in, 1-out mse model."""
        model = self.model
        if isinstance(source, EpisodeSource):
            if (model.loss != "cross_entropy" or model.n_outputs != source.n_way
                    or model.n_features != source.n_features):
                raise ValueError(f"{name}: {source.n_way}-way episodes of {source.n_features} "
                                 f"features need a cross-entropy model with {source.n_features} "
                                 f"inputs and {source.n_way} outputs, got {model!r}")
        elif isinstance(source, SinusoidSource):
            if model.n_features != 1 or model.n_outputs != 1 or model.loss != "mse":
                raise ValueError(f"{name}: the sinusoid family needs a model with 1 input, "
                                 f"1 output and loss 'mse', got {model!r}")

    def core_spec(self):
        """(kind, inner_lr, inner_steps, first_order) as the compiled core takes them."""
        return self.kind, self.inner_lr, self.inner_steps, self.first_order

    def core_options(self) -> dict:
        """Keyword options of the compiled meta-step beyond ``core_spec``: MAML++'s and iMAML's
        (``reg``, ``cg_steps``); none for the others."""
        return {}

    def core_net(self):
        """The compiled net the core's meta-gradient runs (the model's)."""
        return self.model.core_net()

    @property
    def query_head(self) -> str:
        """The loss head that scores query outputs in evaluation (the model's)."""
        return self.model.loss

    def query_outputs(self, theta, ts, *, steps, lr, head_only=False, n_threads=None):
        """Outputs on the query rows of every task of ``ts`` (task after task) after ``steps``
        steps of adaptation with rates ``lr`` (what ``adapt_rule`` gave): what
        ``mc.evaluate`` scores with ``query_head``."""
        from .adapt import query_predictions
        return query_predictions(self.model, theta, ts, steps=steps, lr=lr, head_only=head_only,
                                 n_threads=n_threads)

    # --- the meta-objective ------------------------------------------------------------------
    def meta_value_and_grad(self, theta, batch, *, step=0):
        """(meta-loss, meta-gradient) over every task of ``batch`` (a TaskSet whose tasks all
        have support and query rows): the mean query loss after adaptation, and its gradient
        with respect to the learner's parameters (θ's dtype). ``step`` (int >= 0): the global
        outer step, which sets MAML++'s order (``first_order_until``) and multi-step-loss
        weights; other learners ignore it."""
        loss, grad, _, _ = self._evaluate(theta, batch, step)
        return loss, grad

    def meta_value(self, theta, batch, *, step=0) -> float:
        """The meta-loss alone."""
        return self._evaluate(theta, batch, step)[0]

    def query_losses(self, theta, batch, n_threads=None) -> np.ndarray:
        """(T,) float64: each task's query loss after this learner's inner loop on its support
        rows — the meta-loss per task. ``n_threads`` None: the learner's setting."""
        from . import _core
        params = self.check_params(theta)
        ts = self._checked_batch(batch, params.dtype)
        kind, lr, steps, _ = self.core_spec()
        # The loss does not depend on the meta-gradient's order: first order skips the HVPs.
        # MAML++'s multi-step loss is off here: the loss after the last step.
        options = dict(self.core_options(), multi_step_loss=False)
        losses = _core.meta_value_and_grad(self.core_net(), kind, lr, steps, True, params,
                                           ts.X, ts.y, ts.offsets, ts.n_support,
                                           self.n_threads if n_threads is None
                                           else _validation.n_threads(n_threads), **options)[2]
        return np.asarray(losses, dtype=np.float64)

    def _evaluate(self, theta, batch, step=0):
        from . import _core
        if (type(theta) is np.ndarray and theta.dtype in _FLOAT_DTYPES and theta.ndim == 1
                and (f := theta.flags).c_contiguous and f.aligned
                and theta.shape[0] == self.n_params
                and type(self).check_params is Learner.check_params):
            params = theta  # the meta-step's common call; finiteness is checked by the core
        else:
            params = self.check_params(theta)
        ts = self._checked_batch(batch, params.dtype)
        if type(step) is not int or not 0 <= step <= _validation.INT64_MAX:
            step = _validation.integer("step", step, minimum=0)
        return _core.meta_value_and_grad(self.core_net(), *self.core_spec(), params, ts.X,
                                         ts.y, ts.offsets, ts.n_support, self.n_threads,
                                         step=step, **self.core_options())

    # --- adapting to a new task --------------------------------------------------------------
    def adapt_rule(self, theta):
        """(θ, inner rates — a scalar or one per parameter —, head_only) of this learner's inner
        loop at its parameters ``theta``, as ``mc.adapt`` takes them (for the library's own use:
        adapt and evaluation)."""
        return theta, self.inner_lr, False

    def adapt(self, theta, X_support, y_support, *, steps=None):
        """θ adapted by this learner's inner loop (``steps`` defaults to inner_steps)."""
        from .adapt import adapt
        theta, lr, head_only = self.adapt_rule(self.check_params(theta))
        return adapt(self.model, theta, X_support, y_support,
                     steps=self.inner_steps if steps is None else steps, lr=lr,
                     head_only=head_only)

    def adapt_predict(self, theta, X_support, y_support, X_query, *, steps=None):
        """Outputs on X_query of the net adapted by this learner's inner loop."""
        from .adapt import adapt_predict
        theta, lr, head_only = self.adapt_rule(self.check_params(theta))
        return adapt_predict(self.model, theta, X_support, y_support, X_query,
                             steps=self.inner_steps if steps is None else steps, lr=lr,
                             head_only=head_only)

    # --- training: plain data for the one loop ----------------------------------------------
    def default_optimizer(self, steps) -> optim.Optimizer:
        """The outer optimizer ``mc.fit`` uses when none is given: Adam, lr 1e-3 (Finn et al.)."""
        return optim.Adam(lr=1e-3)

    def inner_rates(self, params):
        """The learned inner learning rates in ``params`` (Meta-SGD), else None."""
        return None

    def to_dict(self) -> dict:
        """Plain data (JSON-serialisable) that :func:`from_dict` turns back into this learner,
        with its model."""
        return {"kind": type(self).__name__, "model": self.model.spec(),
                "inner_lr": self.inner_lr, "inner_steps": self.inner_steps,
                "first_order": self.first_order}

    def __eq__(self, other):
        return type(other) is type(self) and other.to_dict() == self.to_dict()

    def fit(self, tasks, theta0, *, meta_batch=25, steps=1000, optimizer=None, validation=None,
            validate_every=None, progress=True, seed=0, n_threads=None, chunk=100):
        """Deprecated: use ``mc.fit(mc.MetaObjective(learner, tasks, meta_batch=...), theta0,
        ...)``, which this calls (``validate_every`` is its ``eval_every`` — by default every
        ``chunk`` steps when there is validation —, ``chunk`` its ``chunk_size``). ``validation``
        may still be a callable(θ) -> float. Returns a :class:`~metacore.FitResult`, whose history
        still answers the old keys ``["meta_loss"]``, ``["support_loss"]``, ``["validation"]``
        (with a DeprecationWarning). Removed in the next release."""
        warnings.warn("learner.fit(...) is deprecated and will be removed in the next release: use "
                      "mc.fit(mc.MetaObjective(learner, tasks, meta_batch=...), theta0, ...)",
                      DeprecationWarning, stacklevel=2)
        from .problems import MetaObjective
        from .train.fit import fit   # the deprecation shim's upward imports
        problem = MetaObjective(self, tasks, meta_batch=meta_batch, n_threads=n_threads)
        scores, callbacks = {}, ()
        if callable(validation):     # the old form: a function of θ, run at each evaluation
            score = validation
            callbacks = (lambda e: scores.__setitem__(e.step, float(score(e.theta))),)
            validation = None
        every = validate_every or (chunk if (validation is not None or callbacks) else steps)
        res = fit(problem, theta0, optimizer=optimizer, steps=steps, validation=validation,
                  eval_every=every, callbacks=callbacks, progress=progress, seed=seed,
                  chunk_size=chunk)
        if callbacks:
            scores.setdefault(res.step, float(score(res.theta)))
            res.history.val_loss = np.array([scores.get(int(t), np.nan)
                                             for t in res.history.eval_step])
        return res

    def __repr__(self):
        fo = ", first_order=True" if self.first_order else ""
        return (f"{type(self).__name__}({self.model!r}, inner_lr={self.inner_lr}, "
                f"inner_steps={self.inner_steps}{fo})")


PER_STEP_RATES = ("layer",)
MSL_ANNEAL_STEPS = 7500      # the multi-step loss's default annealing length (Antoniou et al.)


class MAML(Learner):
    r"""Model-agnostic meta-learning (Finn et al., 2017): exact second-order meta-gradient through
    all ``inner_steps`` steps, or first-order MAML with ``first_order=True``.

    MAML++ (Antoniou et al., 2019, "How to train your MAML", section 4), by keyword options:

    - ``per_step_rates="layer"`` (LSLR): a learned inner rate per layer and per inner step,
      step j moving layer l's weights and biases by r_{j,l}·∇L_s(φ_j). The learner's parameters
      are packed ``[θ (P), r (inner_steps × n_layers, step-major)]``: ``init(theta)`` packs θ with
      every rate = inner_lr, ``split(params)`` returns (θ, r of shape (inner_steps, n_layers)).
      ∂L/∂r_{j,l} = −Σ_{p∈l} g_{j+1,p} ∇L_s(φ_j)_p. Adapting for more steps than the k =
      ``inner_steps`` trained ones (``adapt``, ``adapt_predict``, ``mc.evaluate``) takes every
      step j >= k with the rates ``extra_step_rates(params)``: on each layer the smallest
      positive rate of its k learned ones, r_{k,l} = min{r_{j,l} : r_{j,l} > 0}, or 0 (the layer
      stays put) where none is positive. The paper defines no rate past step k; a fixed k-step
      loop may learn a large last step (trained as an end point) or a negative one (an ascent
      step), and repeating either can diverge (the sinusoid demo's MAML++ did after 10 steps),
      while the smallest descent step a layer was trained to take continues descent on the
      support loss.
    - ``multi_step_loss=True`` (MSL): the meta-loss is Σ_{j=1..k} w_j(s) L_q(φ_j), with weights
      annealed over the global outer step s (``msl_weights``): all start at 1/k; over
      ``msl_anneal_steps`` steps the first k − 1 decay linearly to 0.03/k and the last grows to
      1 − 0.03(k − 1)/k (the paper's code anneals over its first 15 epochs of 500 iterations:
      the default 7,500). The returned loss is that weighted sum; ``query_losses`` and
      validation score L_q(φ_k).
    - ``first_order_until=S`` (int >= 0): first-order meta-gradients for the global steps
      s < S, exact second order from s = S on (the paper's derivative-order annealing).

    ``msl_anneal_steps`` set without ``multi_step_loss=True``, or ``first_order_until`` > 0 with
    ``first_order=True``, would do nothing: the constructor warns (UserWarning naming it).

    Both schedules are functions of the global step (``mc.fit`` passes it; resume is
    bit-identical); ``meta_value_and_grad(θ, batch, step=s)`` evaluates them at step s.
    Raises TypeError/ValueError naming the argument for a bad option.
    """
    kind = "maml"

    def __init__(self, model, inner_lr=0.01, inner_steps=1, first_order=False, n_threads=None,
                 *, per_step_rates=None, multi_step_loss=False,
                 msl_anneal_steps=MSL_ANNEAL_STEPS, first_order_until=0):
        super().__init__(model, inner_lr=inner_lr, inner_steps=inner_steps,
                         first_order=first_order, n_threads=n_threads)
        if per_step_rates is not None:
            per_step_rates = _validation.choice("per_step_rates", per_step_rates, PER_STEP_RATES)
            n_rates = self.inner_steps * model.n_layers     # packed after θ, in float64 at most
            _validation.fits_in_memory(
                f"inner_steps={self.inner_steps} with per_step_rates={per_step_rates!r} "
                f"({n_rates} learned rates, one per inner step and layer)",
                8 * (n_rates + model.n_params))
        self.per_step_rates = per_step_rates
        if not isinstance(multi_step_loss, (bool, np.bool_)):
            raise TypeError(f"multi_step_loss must be a bool, got "
                            f"{type(multi_step_loss).__name__}")
        self.multi_step_loss = bool(multi_step_loss)
        self.msl_anneal_steps = _validation.integer("msl_anneal_steps", msl_anneal_steps,
                                                    minimum=1)
        self.first_order_until = _validation.integer("first_order_until", first_order_until,
                                                     minimum=0)
        # Options set away from their default that the others make inert: a warning naming
        # each (as scikit-learn warns at fit for an ignored hyper-parameter), not an error, so a
        # grid over the options still runs. The CLI refuses the same keys (app.config).
        if not self.multi_step_loss and self.msl_anneal_steps != MSL_ANNEAL_STEPS:
            warnings.warn(f"msl_anneal_steps={self.msl_anneal_steps} is ignored without "
                          f"multi_step_loss=True (it anneals the multi-step loss's weights)",
                          UserWarning, stacklevel=2)
        if self.first_order and self.first_order_until:
            warnings.warn(f"first_order_until={self.first_order_until} is ignored with "
                          f"first_order=True (every meta-gradient is first order)",
                          UserWarning, stacklevel=2)

    @property
    def n_params(self) -> int:
        P = self.model.n_params
        return P + self.inner_steps * self.model.n_layers if self.per_step_rates else P

    def core_options(self):
        return {"per_step_rates": self.per_step_rates is not None,
                "multi_step_loss": self.multi_step_loss,
                "msl_anneal_steps": self.msl_anneal_steps,
                "first_order_until": self.first_order_until}

    def msl_weights(self, step) -> np.ndarray:
        """(inner_steps,) float64: the multi-step-loss weights at global step ``step``
        (w[j−1] weighs L_q(φ_j)); all but the last are zero without ``multi_step_loss``."""
        from . import _core
        step = _validation.integer("step", step, minimum=0)
        if not self.multi_step_loss:
            w = np.zeros(self.inner_steps)
            w[-1] = 1.0
            return w
        return np.asarray(_core.msl_weights(self.inner_steps, self.msl_anneal_steps, step))

    def _need_rates(self, what):
        if self.per_step_rates is None:
            raise ValueError(f"{what}: this MAML has no learned rates (per_step_rates=None)")

    def init(self, theta):
        """θ packed with the learned rates (all inner_lr) when ``per_step_rates``, else θ."""
        theta = _validation.theta("theta", theta, self.model.n_params)
        self.check_dtype(theta.dtype)      # the rates are packed in θ's dtype
        if self.per_step_rates is None:
            return theta.copy()
        rates = np.full(self.inner_steps * self.model.n_layers, self.inner_lr, dtype=theta.dtype)
        return np.concatenate([theta, rates])

    def split(self, params):
        """(θ, rates (inner_steps, n_layers)): views into packed parameters."""
        self._need_rates("split")
        params = self.check_params(params, "params")
        P = self.model.n_params
        return params[:P], params[P:].reshape(self.inner_steps, self.model.n_layers)

    def _layer_ends(self):
        ends = [w for w, _, _ in self.model.layers()][1:] + [self.model.n_params]
        return np.diff([0] + ends)

    def extra_step_rates(self, params) -> np.ndarray:
        """(n_layers,) the rates of the adaptation steps past the k = ``inner_steps`` trained ones,
        params' dtype: per layer l the smallest positive learned rate min{r_{j,l} : r_{j,l} > 0},
        0 where none is positive (see the class docstring). ValueError without learned rates."""
        self._need_rates("extra_step_rates")
        return self._extra_rates(self.split(params)[1])

    @staticmethod
    def _extra_rates(rates):
        """Per column of rates (k, n_layers): the smallest positive entry, 0 if none."""
        positive = rates > 0
        smallest = np.where(positive, rates, np.inf).min(axis=0)
        return np.where(positive.any(axis=0), smallest, 0).astype(rates.dtype)

    def adapt_rule(self, params):
        if self.per_step_rates is None:
            return params, self.inner_lr, False
        theta, rates = self.split(params)
        # a rate that is subnormal in θ's dtype would silently freeze its layer
        _validation.rates("theta", rates.reshape(-1), rates.dtype, offset=theta.shape[0])
        # one row of per-parameter rates per step, layer l's parameters getting r_{j,l}, and a
        # last row for every step past the trained ones (the core takes row min(j, k))
        rows = np.vstack([rates, self._extra_rates(rates)[None]])
        return theta, np.repeat(rows, self._layer_ends(), axis=1), False

    def inner_rates(self, params):
        return None if self.per_step_rates is None else np.array(self.split(params)[1])

    def to_dict(self):
        d = super().to_dict()
        if self.per_step_rates is not None:
            d["per_step_rates"] = self.per_step_rates
        if self.multi_step_loss:
            d["multi_step_loss"] = True
            d["msl_anneal_steps"] = self.msl_anneal_steps
        if self.first_order_until:
            d["first_order_until"] = self.first_order_until
        return d

    def __repr__(self):
        text = super().__repr__()[:-1]
        if self.per_step_rates is not None:
            text += f", per_step_rates={self.per_step_rates!r}"
        if self.multi_step_loss:
            text += f", multi_step_loss=True, msl_anneal_steps={self.msl_anneal_steps}"
        if self.first_order_until:
            text += f", first_order_until={self.first_order_until}"
        return text + ")"


class FOMAML(MAML):
    """First-order MAML (Finn et al., 2017, section 5.2): ``MAML(..., first_order=True)``, the
    meta-gradient ∇L_q(φ_k) without the Hessian terms."""

    def __init__(self, model, inner_lr=0.01, inner_steps=1, n_threads=None):
        super().__init__(model, inner_lr=inner_lr, inner_steps=inner_steps, first_order=True,
                         n_threads=n_threads)

    def to_dict(self):
        d = super().to_dict()
        del d["first_order"]
        return d


class ANIL(Learner):
    """Almost No Inner Loop (Raghu et al., 2020): the inner loop adapts the output layer only
    (rates inner_lr on the last layer, 0 on the hidden layers); the meta-gradient reaches every
    layer, second order through the head's adaptation unless ``first_order``."""
    kind = "anil"

    def adapt_rule(self, theta):
        return theta, self.inner_lr, True


class MetaSGD(Learner):
    """Meta-SGD (Li et al., 2017): learns θ and one inner learning rate per parameter.

    The learner's parameters are packed ``[θ (P), r (P)]`` (length 2P): ``init(theta)`` packs θ
    with r = inner_lr everywhere, ``split(params)`` returns views (θ, r). The rates are not
    constrained to be positive (as in the paper)."""
    kind = "metasgd"

    @property
    def n_params(self) -> int:
        return 2 * self.model.n_params

    def init(self, theta):
        """[θ, inner_lr · 1]: the packed parameters to start meta-training from."""
        theta = _validation.theta("theta", theta, self.model.n_params)
        self.check_dtype(theta.dtype)      # the rates are packed in θ's dtype
        return np.concatenate([theta, np.full_like(theta, self.inner_lr)])

    def split(self, params):
        """(θ, rates): views into packed parameters."""
        params = self.check_params(params, "params")
        P = self.model.n_params
        return params[:P], params[P:]

    def adapt_rule(self, params):
        theta, rates = self.split(params)
        # a rate that is subnormal in θ's dtype would silently freeze its parameter
        return theta, _validation.rates("theta", rates, rates.dtype, offset=theta.shape[0]), False

    def inner_rates(self, params):
        return np.array(self.split(params)[1])


class Reptile(Learner):
    """Reptile (Nichol et al., 2018): k inner SGD steps φ_i, then θ ← θ + ε_s·mean_i(φ_i − θ).

    ``meta_value_and_grad`` returns the mean query loss at φ_i and the direction mean_i(θ − φ_i),
    so the outer optimizer's plain step θ ← θ − ε_s·direction is Reptile's update. ``mc.fit``'s
    default outer optimizer for Reptile is that step: ``SGD(lr=outer_lr,
    schedule=linear(steps))``, ε_s annealed linearly from ``outer_lr`` to 0 over the run.
    """
    kind = "reptile"

    def __init__(self, model, inner_lr=0.01, inner_steps=5, outer_lr=0.1, n_threads=None):
        super().__init__(model, inner_lr=inner_lr, inner_steps=inner_steps, first_order=True,
                         n_threads=n_threads)
        self.outer_lr = _validation.real("outer_lr", outer_lr, minimum=0.0, min_open=True)

    def default_optimizer(self, steps):
        return optim.SGD(lr=self.outer_lr, schedule=optim.linear(steps))

    def to_dict(self):
        d = super().to_dict()
        del d["first_order"]
        d["outer_lr"] = self.outer_lr
        return d

    def __repr__(self):
        return (f"Reptile({self.model!r}, inner_lr={self.inner_lr}, "
                f"inner_steps={self.inner_steps}, outer_lr={self.outer_lr})")


DISTANCES = ("sqeuclidean",)


class EpisodeLearner(Learner):
    """What the learners that classify an episode by its own class labels share (:class:`ProtoNet`,
    :class:`RidgeHead`): the net ``embedding_model`` embeds rows (any number of outputs D >= 1; its
    loss head is never used); every task is an episode whose support rows carry each class
    0..N−1 and whose query labels are among them; no inner gradient steps."""
    _adapts_by = "a closed form"

    def __init__(self, embedding_model, n_threads=None):
        super().__init__(embedding_model, inner_lr=0.0, inner_steps=1, first_order=True,
                         n_threads=n_threads)
        # The core reads one label column per row: a net of the same layers whose head takes
        # class labels (its loss is never evaluated).
        m = embedding_model
        self._labelled = MLP(list(m.layer_sizes), activation=m.activation,
                             loss="cross_entropy" if m.n_outputs >= 2 else "logistic",
                             norm=m.norm)

    def core_net(self):
        return self._labelled.core_net()

    @property
    def query_head(self) -> str:
        return "cross_entropy"

    def check_source(self, source, name="tasks"):
        who = type(self).__name__
        if not isinstance(source, EpisodeSource):
            raise ValueError(f"{name}: {who} classifies; it needs classification episodes "
                             f"(mc.tasks.EpisodeSource, ClassImages.source), got "
                             f"{type(source).__name__}")
        if source.n_features != self.model.n_features:
            raise ValueError(f"{name}: episodes of {source.n_features} features need an "
                             f"embedding model with {source.n_features} inputs, got "
                             f"{self.model!r}")

    def check_labels(self, batch, name="batch"):
        """Episode labels: one integer class per row; in every task a support row of each class
        0..N−1 and query labels below N (the model's loss head plays no part)."""
        who = type(self).__name__
        y = np.asarray(batch.y)
        if y.ndim == 2 and y.shape[1] == 1:
            y = y[:, 0]
        if y.ndim != 1:
            raise ValueError(f"{name}: {who} needs one class label per row, got y of shape "
                             f"{y.shape}")
        if (y < 0).any() or (y != np.floor(y)).any():
            r = int(np.argmax((y < 0) | (y != np.floor(y))))
            raise ValueError(f"{name}: row {r} has class label {y[r]}, not an integer >= 0")
        for i in range(batch.n_tasks):
            a, b = int(batch.offsets[i]), int(batch.offsets[i + 1])
            s = a + int(batch.n_support[i])
            support = y[a:s].astype(np.int64)
            n_classes = int(support.max()) + 1
            if np.unique(support).size != n_classes:
                raise ValueError(f"{name}: task {i}: {who} needs a support row of every class "
                                 f"0..{n_classes - 1}, got support labels "
                                 f"{sorted(set(support.tolist()))}")
            if y[s:b].max() >= n_classes:
                raise ValueError(f"{name}: task {i} has query label {int(y[s:b].max())} but its "
                                 f"support rows only have classes 0..{n_classes - 1}")

    def _embed(self, theta, X, n_threads=None, name="X"):
        """Embeddings (n, D) of rows X, errors naming X as the caller's argument ``name``."""
        X = self._check_rows(_validation.float_array(name, X, ndim=2, dtype=theta.dtype), name)
        E = self.model.predict(theta, X, n_threads=self.n_threads if n_threads is None
                               else n_threads)
        return E.reshape(E.shape[0], -1)

    def _check_rows(self, X, name):
        """X (2-D) with the model's columns and at least one row, else a ValueError naming it."""
        if X.shape[1] != self.model.n_features:
            raise ValueError(f"{name} must have {self.model.n_features} columns (the model's "
                             f"inputs), got shape {X.shape}")
        if X.shape[0] == 0:
            raise ValueError(f"{name} must have at least 1 row(s), got shape {X.shape}")
        return X

    def _embed_episode(self, theta, X_support, y_support, X_query):
        """(support labels, support embeddings, query embeddings) of one episode, the rows
        embedded in one forward pass as in training (with ``norm="batch"`` they share the
        episode's statistics)."""
        y = _validation.float_array("y_support", y_support, ndim=1, dtype=theta.dtype)
        Xs = _validation.float_array("X_support", X_support, ndim=2, dtype=theta.dtype)
        Xq = _validation.float_array("X_query", X_query, ndim=2, dtype=theta.dtype)
        for X, what in ((Xs, "X_support"), (Xq, "X_query")):
            self._check_rows(X, what)
        E = self._embed(theta, np.vstack([Xs, Xq]))
        return y, E[:Xs.shape[0]], E[Xs.shape[0]:]

    def _episode_embeddings(self, theta, ts, n_threads=None):
        """(support labels, support embeddings, query embeddings) of every task of ts in turn;
        with batch statistics each episode is its own forward pass, as in training."""
        per_task = self.model.norm == "batch"
        E = None if per_task else self._embed(theta, ts.X, n_threads)
        y = ts.y.reshape(-1)
        for i in range(ts.n_tasks):
            a, b = int(ts.offsets[i]), int(ts.offsets[i + 1])
            s = a + int(ts.n_support[i])
            Ei = self._embed(theta, ts.X[a:b], n_threads) if per_task else E[a:b]
            yield y[a:s], Ei[:s - a], Ei[s - a:]

    def _no_steps(self, steps):
        if steps is not None and steps != 0:
            raise ValueError(f"steps: {type(self).__name__} adapts by {self._adapts_by}, not by "
                             f"gradient steps; pass steps=None or 0, got {steps!r}")

    @staticmethod
    def _stack_padded(blocks, dtype):
        """Per-task logit blocks stacked task after task (n_query, N_max); tasks with fewer than
        N_max classes get −inf in the missing columns."""
        width = max(z.shape[1] for z in blocks)
        out = np.full((sum(z.shape[0] for z in blocks), width), -np.inf, dtype=dtype)
        r = 0
        for z in blocks:
            out[r:r + z.shape[0], :z.shape[1]] = z
            r += z.shape[0]
        return out


class ProtoNet(EpisodeLearner):
    r"""Prototypical networks (Snell et al., 2017): few-shot classification by the nearest class
    mean in an embedding space learned by the net.

    ``embedding_model`` (an :class:`~metacore.MLP`, one shared output layer) maps a row x to its
    embedding e = f_θ(x): its outputs (n_outputs = D >= 1) are the embedding; its loss head is
    never used (any of mse, logistic, cross_entropy). For an episode whose support rows carry the
    labels 0..N−1 (every class at least one support row; query labels among them):

        c_k = (1/n_k) Σ_{s: y_s = k} f_θ(x_s),      z_qk = −‖f_θ(x_q) − c_k‖²,
        L(θ) = (1/n_q) Σ_q −log softmax(z_q)[y_q].

    The meta-loss is the mean of L over the meta-batch; its gradient is exact, through the
    prototypes and every embedding, computed in the core (no inner loop, no Hessian terms).
    ``adapt`` returns the prototypes (N, D) of the support rows, ``adapt_predict`` the logits
    z (n_q, N) of the query rows; ``steps`` must be None or 0 (nothing is adapted by gradient
    steps). ``mc.evaluate(model, θ, tasks, steps=(0,), learner=protonet)`` scores the prototype
    classifier (cross-entropy of z and accuracy of argmax z); other step counts are refused.
    Only the squared Euclidean distance (the paper's choice) is offered.
    """
    kind = "protonet"
    _adapts_by = "computing prototypes"

    def __init__(self, embedding_model, distance="sqeuclidean", n_threads=None):
        super().__init__(embedding_model, n_threads=n_threads)
        self.distance = _validation.choice("distance", distance, DISTANCES)

    # --- the prototype classifier ------------------------------------------------------------
    def adapt(self, theta, X_support, y_support, *, steps=None):
        """The prototypes (N, D): mean embedding of the support rows of each class 0..N−1."""
        from . import _core
        self._no_steps(steps)
        theta = self.check_params(theta)
        y = _validation.float_array("y_support", y_support, ndim=1, dtype=theta.dtype)
        return _core.prototypes(self._embed(theta, X_support, name="X_support"), y)

    def adapt_predict(self, theta, X_support, y_support, X_query, *, steps=None):
        """The logits −‖f_θ(x_q) − c_k‖² (n_q, N) of the query rows against the prototypes.
        Support and query rows are embedded in one forward pass, as in training (with
        ``norm="batch"`` they share the episode's statistics; ``adapt`` alone uses the support
        rows')."""
        from . import _core
        self._no_steps(steps)
        theta = self.check_params(theta)
        y, Es, Eq = self._embed_episode(theta, X_support, y_support, X_query)
        return _core.prototype_logits(_core.prototypes(Es, y), Eq)

    def query_outputs(self, theta, ts, *, steps, lr=None, head_only=False, n_threads=None):
        """Every task's query logits against its prototypes, task after task (n_query, N_max);
        tasks with fewer than N_max classes get −inf in the missing columns."""
        from . import _core
        self._no_steps(steps)
        theta = self.check_params(theta)
        ts = self.check_batch(ts, theta.dtype, "test_tasks")
        blocks = [_core.prototype_logits(_core.prototypes(Es, y), Eq)
                  for y, Es, Eq in self._episode_embeddings(theta, ts, n_threads)]
        return self._stack_padded(blocks, theta.dtype)

    def to_dict(self):
        return {"kind": "ProtoNet", "model": self.model.spec(), "distance": self.distance}

    def __repr__(self):
        return f"ProtoNet({self.model!r}, distance={self.distance!r})"


class RidgeHead(EpisodeLearner):
    r"""The closed-form ridge head of R2D2 (Bertinetto et al., 2019, "Meta-learning with
    differentiable closed-form solvers", section 3.2): every episode fits a ridge regression from
    the support embeddings to one-hot labels, in closed form; the net learns embeddings for which
    that fit classifies the query rows.

    ``embedding_model`` (an :class:`~metacore.MLP`, one shared output layer; its outputs, D >= 1,
    are the embedding e = f_θ(x); its loss head is never used). For an episode with support
    labels 0..N−1 (a support row of every class; query labels among them), X_s = [E_s, 1]
    (n_s × (D+1), a bias column) and Y the one-hot support labels (n_s × N):

        W = X_sᵀ (X_s X_sᵀ + λ I)⁻¹ Y            (Woodbury form: an n_s × n_s solve, Cholesky),
        z_q = s · [f_θ(x_q), 1] W,     L = (1/n_q) Σ_q −log softmax(z_q)[y_q].

    The learner's parameters are packed ``[θ (P), log λ, s]`` (length P + 2): the regulariser
    λ > 0 (learned as log λ) and the logit scale s are meta-parameters. ``init(theta)`` packs θ
    with λ = ``reg`` and s = ``scale``; ``split(params)`` returns (θ, λ, s). The meta-gradient
    is exact through the solve, with respect to θ, log λ and s (computed in the core, in double
    for the n_s × n_s system). R2D2 also learns an offset added to every logit; under the
    softmax cross-entropy it cancels (its gradient is identically 0), so it is left out.

    ``adapt`` returns the ridge weights W ((D+1) × N, last row the bias) of the support rows —
    the solve is the adaptation —, ``adapt_predict`` the query logits z (n_q, N); ``steps``
    must be None or 0. ``mc.evaluate(model, params, tasks, steps=(0,), learner=ridge)`` scores
    the ridge classifier. Raises ValueError naming the argument for bad labels, a non-positive
    ``reg`` or a non-finite ``scale``.
    """
    kind = "ridge"
    _adapts_by = "solving the ridge regression"
    _packed_group = "head"

    def __init__(self, embedding_model, reg=1.0, scale=1.0, n_threads=None):
        super().__init__(embedding_model, n_threads=n_threads)
        self.reg = _validation.real("reg", reg, minimum=0.0, min_open=True)
        self.scale = _validation.real("scale", scale)

    @property
    def n_params(self) -> int:
        return self.model.n_params + 2

    def init(self, theta):
        """[θ, log reg, scale]: the packed parameters to start meta-training from."""
        theta = _validation.theta("theta", theta, self.model.n_params)
        self.check_dtype(theta.dtype)      # λ and s are packed in θ's dtype
        return np.concatenate([theta, np.array([np.log(self.reg), self.scale], dtype=theta.dtype)])

    def check_dtype(self, dtype):
        """``scale`` must stay finite in the working dtype, where it is packed (log ``reg`` is
        within ±745 and always is)."""
        _validation.in_dtype_range("scale", self.scale, dtype)

    # log λ beyond this makes λ = exp(log λ) overflow or vanish in float64: the solve is undefined.
    MAX_ABS_LOG_REG = 700.0

    def check_params(self, params, name="theta"):
        """The packed [θ, log λ, s], checked; log λ must keep λ finite and > 0 (|log λ| ≤ 700)."""
        params = super().check_params(params, name)
        log_reg = float(params[self.model.n_params])
        if not abs(log_reg) <= self.MAX_ABS_LOG_REG:
            raise ValueError(f"{name}: log λ (entry {self.model.n_params}) must be within "
                             f"±{self.MAX_ABS_LOG_REG:g} so that λ = exp(log λ) is finite and > 0 "
                             f"in float64, got {log_reg:g}")
        return params

    def split(self, params):
        """(θ (a view), λ, s) of packed parameters."""
        params = self.check_params(params, "params")
        P = self.model.n_params
        return params[:P], float(np.exp(np.float64(params[P]))), float(params[P + 1])

    def adapt_rule(self, params):
        """(θ, [λ, s], False): evaluation hands the head's λ and s on as the "rates"."""
        theta, lam, scale = self.split(params)
        return theta, np.array([lam, scale]), False

    def _evaluate(self, theta, batch, step=0):
        out = super()._evaluate(theta, batch, step)
        self._check_solved(theta, out[0])
        return out

    def query_losses(self, theta, batch, n_threads=None) -> np.ndarray:
        losses = super().query_losses(theta, batch, n_threads)
        self._check_solved(theta, losses.sum())
        return losses

    def _check_solved(self, theta, loss):
        """The core's episode solve gives NaN when X Xᵀ + λI is not positive definite to
        rounding (λ too small for the embeddings): a ValueError saying so, as ``adapt`` does,
        instead of a NaN loss beside a gradient that leaves those episodes out."""
        if np.isfinite(loss):
            return
        params = self.check_params(theta)
        P = self.model.n_params
        lam, scale = float(np.exp(np.float64(params[P]))), float(params[P + 1])
        # the loss is exact at any finite logits: not finite means a failed solve, or logits
        # s·M beyond float64 (a scale near 1e300)
        raise ValueError(f"theta: the ridge head's λ = exp(theta[{P}]) = {lam:.3g} is too small "
                         f"for these embeddings: X Xᵀ + λ·I is not numerically positive definite "
                         f"in an episode of the batch (start from a larger reg), or its logit "
                         f"scale theta[{P + 1}] = {scale:.3g} overflows the logits")

    def adapt(self, params, X_support, y_support, *, steps=None):
        """The ridge weights W ((D+1), N) of the support rows (last row: the bias)."""
        self._no_steps(steps)
        theta, lam, _ = self.split(params)
        y = _validation.float_array("y_support", y_support, ndim=1, dtype=theta.dtype)
        return self._ridge_weights(self._embed(theta, X_support, name="X_support"), y, lam)

    def _ridge_weights(self, E, y, lam):
        """The core's ridge solve; its 'reg=... is too small' (the binding's argument) said of
        the head's λ, which training may have moved far from the ``reg`` it started at."""
        from . import _core
        try:
            return _core.ridge_head_weights(E, y, lam)
        except ValueError as exc:
            if "too small for these embeddings" not in str(exc):
                raise
            raise ValueError(f"theta: the ridge head's λ = exp(theta[{self.model.n_params}]) = "
                             f"{lam:.3g} is too small for these embeddings: X Xᵀ + λ·I is not "
                             f"numerically positive definite (started from reg={self.reg!r})"
                             ) from None

    def adapt_predict(self, params, X_support, y_support, X_query, *, steps=None):
        """The logits s · [f_θ(x_q), 1] W (n_q, N) of the query rows. Support and query rows are
        embedded in one forward pass, as in training (with ``norm="batch"`` they share the
        episode's statistics; ``adapt`` alone uses the support rows')."""
        from . import _core
        self._no_steps(steps)
        theta, lam, scale = self.split(params)
        y, Es, Eq = self._embed_episode(theta, X_support, y_support, X_query)
        return _core.ridge_head_logits(self._ridge_weights(Es, y, lam), Eq, scale)

    def query_outputs(self, params, ts, *, steps, lr=None, head_only=False, n_threads=None):
        """Every task's query logits under its ridge head, task after task (n_query, N_max);
        tasks with fewer than N_max classes get −inf in the missing columns. ``params``: the
        packed [θ, log λ, s], or θ alone with ``lr`` = [λ, s] (what ``adapt_rule`` gives)."""
        from . import _core
        self._no_steps(steps)
        if lr is None:
            theta, lam, scale = self.split(params)
        else:
            head = np.asarray(lr, dtype=np.float64).reshape(-1)
            if head.shape != (2,) or not np.isfinite(head).all() or head[0] <= 0:
                raise ValueError(f"lr: RidgeHead adapts by its ridge solve and takes no rate; "
                                 f"leave lr=None (got {lr!r})")
            theta = _validation.theta("theta", params, self.model.n_params)
            lam, scale = float(head[0]), float(head[1])
        ts = self.check_batch(ts, theta.dtype, "test_tasks")
        blocks = [_core.ridge_head_logits(self._ridge_weights(Es, y, lam), Eq, scale)
                  for y, Es, Eq in self._episode_embeddings(theta, ts, n_threads)]
        return self._stack_padded(blocks, theta.dtype)

    def to_dict(self):
        return {"kind": "RidgeHead", "model": self.model.spec(), "reg": self.reg,
                "scale": self.scale}

    def __repr__(self):
        return f"RidgeHead({self.model!r}, reg={self.reg}, scale={self.scale})"


class IMAML(Learner):
    r"""Implicit MAML (Rajeswaran et al., 2019, "Meta-Learning with Implicit Gradients", eq. 3–7).

    The inner loop approximately solves the proximal problem of task i,

        φ_i*(θ) = argmin_φ L_s(φ) + (λ/2)‖φ − θ‖²,

    by ``inner_steps`` gradient steps from θ, φ_{j+1} = φ_j − α (∇L_s(φ_j) + λ (φ_j − θ))
    (α = ``inner_lr``, λ = ``reg``). At a stationary point dφ*/dθ = (I + H_s(φ*)/λ)⁻¹ (eq. 6), so
    the meta-gradient of the query loss is

        g_i = (I + H_s(φ_i)/λ)⁻¹ ∇L_q(φ_i),

    solved by ``cg_steps`` steps of conjugate gradient from 0 on exact Hessian-vector products of
    the support loss at φ_i (eq. 7). It needs no trail of inner iterates: memory is a few vectors
    of P per task whatever ``inner_steps`` is. The meta-loss is the mean of L_q(φ_i) over the
    meta-batch. CG assumes I + H_s/λ positive definite (λ larger than the most negative curvature
    of L_s at φ); it stops early on non-positive curvature. The implicit gradient is exact only
    when the inner loop has converged: use enough ``inner_steps`` (and ``inner_lr`` < 2/(λ + the
    largest curvature)).

    The inner loop is monotone: a step that increases the proximal objective F(φ) = L_s(φ) +
    (λ/2)‖φ − θ‖² by more than rounding (16 ε of the working dtype, relative), or gives a
    non-finite loss, is undone and the rate halved for the rest of that task's loop (step
    halving, the simplest safeguard of a descent method; Nocedal & Wright, "Numerical
    Optimization", ch. 3). A fixed rate diverges once the curvature passes 2/α − λ, and
    meta-training sharpens L_s until it does (the K = 20 sinusoid: NaN at meta-step 845 before).
    Each of the k steps costs one gradient, rejected ones included; one more loss evaluation
    checks the last step.

    ``adapt`` / ``adapt_predict`` / ``mc.evaluate(..., learner=imaml)`` run the same proximal
    inner loop (``steps`` defaults to ``inner_steps``). Raises ValueError naming the argument for
    ``reg`` outside [√tiny, √max] of the working dtype (float64: 1.5e-154 to 1.3e154; float32:
    1.1e-19 to 1.8e19), ``inner_lr``·``reg`` >= 2 (the proximal step would not contract),
    ``inner_steps`` or ``cg_steps`` < 1, or a negative ``inner_lr``.
    """
    kind = "imaml"

    def __init__(self, model, reg=1.0, inner_lr=0.01, inner_steps=5, cg_steps=5, n_threads=None):
        super().__init__(model, inner_lr=inner_lr, inner_steps=inner_steps, first_order=False,
                         n_threads=n_threads)
        self.reg = _validation.real("reg", reg, minimum=0.0, min_open=True)
        self.cg_steps = _validation.integer("cg_steps", cg_steps, minimum=1)
        self.check_dtype(np.float64, "the widest dtype; float32's is [1.1e-19, 1.8e19]")
        self.check_contracting("inner_lr", self.inner_lr)

    def check_dtype(self, dtype, which="the working dtype"):
        """``reg`` within [√tiny, √max] of the working dtype (float64: 1.5e-154 to 1.3e154,
        float32: 1.1e-19 to 1.8e19): the inner loop multiplies φ − θ by λ and CG multiplies
        Hessian-vector products by 1/λ; beyond that interval these products of moderate
        vectors overflow or vanish. ValueError naming ``reg`` otherwise (``which``: what the
        message calls ``dtype``'s range; the constructor checks float64's before θ is known)."""
        super().check_dtype(dtype)
        if 1.1e-19 <= self.reg <= 1.8e19:     # inside [√tiny, √max] of float32 and float64
            return
        dt = _validation.work_dtype(dtype)
        info = np.finfo(dt)
        lo, hi = float(np.sqrt(info.tiny)), float(np.sqrt(info.max))
        if not lo <= self.reg <= hi:
            raise ValueError(f"reg={self.reg!r} is outside [{lo:.2g}, {hi:.2g}], the range for "
                             f"{dt} ({which}): iMAML's inner loop multiplies φ − θ by "
                             f"reg and its CG multiplies Hessian-vector products by 1/reg, which "
                             f"overflow or vanish beyond it")

    def check_contracting(self, lr_name, lr):
        """ValueError naming ``reg`` and ``lr_name`` unless lr·reg < 2: the proximal step
        φ ← φ − lr (∇L_s(φ) + reg (φ − θ)) multiplies φ − θ by 1 − lr·reg, which grows
        (|1 − lr·reg| >= 1) from lr·reg = 2 on and the inner loop diverges whatever L_s is."""
        if not lr * self.reg < 2.0:
            raise ValueError(f"reg={self.reg!r} with {lr_name}={lr!r}: {lr_name}·reg = "
                             f"{lr * self.reg:.3g} must be < 2, else the proximal inner step "
                             f"multiplies φ − θ by 1 − {lr_name}·reg (|·| >= 1) and diverges; "
                             f"lower reg or {lr_name}")

    def core_options(self):
        return {"reg": self.reg, "cg_steps": self.cg_steps}

    def adapt(self, theta, X_support, y_support, *, steps=None):
        """φ after the proximal inner loop (``steps`` defaults to inner_steps): (P,), θ's
        dtype."""
        from . import _core
        theta = self.check_params(theta)
        steps = self.inner_steps if steps is None else _validation.integer("steps", steps,
                                                                           minimum=0)
        X = _validation.float_array("X_support", X_support, ndim=2, dtype=theta.dtype)
        y = _validation.float_array("y_support", y_support, ndim=(1, 2), dtype=theta.dtype)
        return _core.imaml_adapt(self.model.core_net(), theta, X, y, steps, self.inner_lr,
                                 self.reg)

    def adapt_predict(self, theta, X_support, y_support, X_query, *, steps=None):
        """The outputs on X_query of the net after the proximal inner loop."""
        phi = self.adapt(theta, X_support, y_support, steps=steps)
        X_query = _validation.float_array("X_query", X_query, ndim=2, dtype=phi.dtype)
        if X_query.shape[1] != self.model.n_features:
            raise ValueError(f"X_query must have {self.model.n_features} columns (the model's "
                             f"inputs), got shape {X_query.shape}")
        return self.model.predict(phi, X_query, n_threads=self.n_threads)

    def query_outputs(self, theta, ts, *, steps, lr, head_only=False, n_threads=None):
        """Outputs on every task's query rows after ``steps`` proximal inner steps at rate
        ``lr``, task after task, tasks in parallel."""
        from . import _core
        theta = self.check_params(theta)
        steps = _validation.integer("steps", steps, minimum=0)
        lr = _validation.real("lr", lr, minimum=0.0)
        self.check_contracting("lr", lr)
        ts = self.check_batch(ts, theta.dtype, "test_tasks")
        preds = _core.imaml_adapt_batch(self.model.core_net(), theta, ts.X, ts.y, ts.offsets,
                                        ts.n_support, steps, lr, self.reg,
                                        self.n_threads if n_threads is None
                                        else _validation.n_threads(n_threads))
        return preds[:, 0] if preds.shape[1] == 1 else preds

    def to_dict(self):
        return {"kind": "IMAML", "model": self.model.spec(), "reg": self.reg,
                "inner_lr": self.inner_lr, "inner_steps": self.inner_steps,
                "cg_steps": self.cg_steps}

    def __repr__(self):
        return (f"IMAML({self.model!r}, reg={self.reg}, inner_lr={self.inner_lr}, "
                f"inner_steps={self.inner_steps}, cg_steps={self.cg_steps})")


_BY_NAME = {cls.__name__: cls for cls in (MAML, FOMAML, ANIL, MetaSGD, Reptile, ProtoNet,
                                             RidgeHead, IMAML)}


def from_dict(d) -> Learner:
    """The learner that ``learner.to_dict()`` describes (as read from a checkpoint)."""
    d = dict(_validation.instance("learner settings", d, dict, "a dict"))
    cls = _BY_NAME.get(d.pop("kind", None))
    if cls is None:
        raise ValueError(f"learner settings: kind must be one of {sorted(_BY_NAME)}, got {d!r}")
    model = MLP.from_spec(d.pop("model"))
    return cls(model, **d)
