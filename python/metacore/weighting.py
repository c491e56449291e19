r"""Task weighting: how α in f(θ) = Σ_i α_i f_i(θ) + (λ/2)‖θ‖² is set while :func:`metacore.fit`
trains.

A strategy gives the initial α for T tasks and, for adaptive strategies, a state of its own that the
core's train state holds and checkpoints save; the core's loop applies the rule at every step (the
GIL released). ``FitResult.history.weights`` holds α at every evaluation, and
``history.step_weights`` (with ``record_task_losses=True``) α at every step.

Fixed:
    :class:`Uniform` (α_i = 1/T), :class:`Fixed` (α as given).
From evaluations (between chunks of steps):
    :class:`EvalDriven` (softmax of losses, or dynamic task prioritisation).
From the step's losses (no extra pass, except FAMO's forward pass):
    :class:`DWA`, :class:`Uncertainty`, :class:`RLW`, :class:`FAMO`.
From the per-task gradients (one parallel ``task_grads`` pass per step, then O(T²P) for the Gram
matrix K = G_s G_sᵀ over the shared parameters and at most O(T³) for the solver):
    :class:`GradNorm`, :class:`MGDA`, :class:`PCGrad`, :class:`CAGrad`, :class:`IMTLG`,
    :class:`NashMTL`, :class:`AlignedMTL`, :class:`GradVac`.

The combining strategies (all gradient-based ones but GradNorm) produce coefficients β with
d = Σ_i β_i ∇_s f_i on the shared parameters s (the trunk with per-task heads, else all of θ); the
step's gradient is d there, the plain mean (1/T) Σ_i ∇f_i on the head parameters, plus λθ. β is
what α (and the history) shows. The Gram matrix and the gradient norms are formed on rows
scaled by exact powers of two where their squares would overflow or underflow, so gradients of any
finite size work: a common scale 2^k of every task gradient leaves β unchanged, bit for bit (it
divides β by 2^k for Nash-MTL and for MGDA's ``"l2"`` and ``"loss+l2"``). Every adaptive strategy needs every task and row at each step
(``batch_tasks`` and ``batch_rows`` None); EvalDriven works with batches.

``fit(weighting=None)`` uses the objective's own ``weights``.
"""

from __future__ import annotations

import numpy as np

from . import _validation

__all__ = ["Weighting", "Uniform", "Fixed", "EvalDriven", "DWA", "Uncertainty", "RLW", "FAMO",
           "GradNorm", "MGDA", "PCGrad", "CAGrad", "IMTLG", "NashMTL", "AlignedMTL", "GradVac",
           "from_dict"]


class Weighting:
    """A rule that sets the task weights α."""

    #: whether this rule's α may have negative entries (IMTL-G's and Aligned-MTL's closed
    #: forms); the others keep α >= 0, which is how a checkpoint's α is checked
    signed_alpha = False

    def initial_alpha(self, n_tasks) -> np.ndarray:
        """α (T,) float64 at step 0."""
        raise NotImplementedError

    def state_size(self, n_tasks) -> int:
        """Length of the strategy's own float64 state in the train state (0 for fixed α)."""
        return 0

    def initial_state(self, n_tasks) -> np.ndarray:
        """The strategy's own state (float64, ``state_size(n_tasks)``) at step 0."""
        return np.zeros(self.state_size(n_tasks))

    def core_config(self):
        """For the library's own use: the core's WeightingConfig, or None for a fixed α."""
        return None

    def to_dict(self) -> dict:
        """Plain data (JSON-serialisable) that :func:`from_dict` turns back into this strategy."""
        raise NotImplementedError

    def __eq__(self, other):
        return type(other) is type(self) and other.to_dict() == self.to_dict()

    def __repr__(self):
        d = self.to_dict()
        d.pop("name")
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in d.items())})"


class Uniform(Weighting):
    """α_i = 1/T for every task: the plain mean of the task losses."""

    def initial_alpha(self, n_tasks):
        return np.full(n_tasks, 1.0 / n_tasks)

    def to_dict(self):
        return {"name": "Uniform"}


class Fixed(Weighting):
    """α as given: T non-negative finite weights with a positive sum, kept constant (not
    normalised: Σ α_i f_i is the objective as written)."""

    def __init__(self, alpha):
        # a private copy: float_array may return the caller's own array (or a view of it), which
        # a later write would change after these checks, and freezing it would freeze theirs
        alpha = _validation.owned(
            _validation.float_array("alpha", alpha, ndim=1, dtype=np.float64), alpha)
        if alpha.shape[0] == 0:
            raise ValueError("alpha must have one entry per task, got an empty array")
        if (alpha < 0).any():
            i = int(np.argmax(alpha < 0))
            raise ValueError(f"alpha must be non-negative, got {alpha[i]} for task {i}")
        if alpha.sum() <= 0:
            raise ValueError("alpha must have a positive sum, got all zeros")
        self.alpha = _validation.frozen(alpha)

    def initial_alpha(self, n_tasks):
        if self.alpha.shape[0] != n_tasks:
            raise ValueError(f"weighting Fixed(alpha) has {self.alpha.shape[0]} weights but the "
                             f"objective has {n_tasks} tasks")
        return self.alpha.copy()

    def to_dict(self):
        return {"name": "Fixed", "alpha": self.alpha.tolist()}



class _Adaptive(Weighting):
    """A strategy the core runs: its settings are its constructor's keyword arguments."""

    _kind = None
    _core_args = {}       # the core's name for each setting that differs from ours

    def __init__(self, **settings):
        self._settings = settings
        self.core_config()   # checks the ranges once, with the core's messages

    def __getattr__(self, name):
        settings = self.__dict__.get("_settings", {})
        if name in settings:
            return settings[name]
        raise AttributeError(name)

    def initial_alpha(self, n_tasks):
        return np.full(n_tasks, 1.0 / n_tasks)

    def state_size(self, n_tasks):
        return int(self.core_config().state_size(n_tasks))

    def core_config(self):
        from . import _core
        args = {self._core_args.get(k, k): v for k, v in self._settings.items()
                if self._core_args.get(k, k) is not None}
        args.update(self._extra_core_args())
        try:
            return _core.WeightingConfig(kind=self._kind, **args)
        except ValueError as exc:
            raise ValueError(f"{type(self).__name__}: {exc}") from None

    def _extra_core_args(self):
        return {}

    def to_dict(self):
        return {"name": type(self).__name__, **self._settings}


class EvalDriven(_Adaptive):
    r"""α from evaluation results: every ``eval_every`` steps each task is evaluated (the
    ``fit`` validation TaskSet when it has the same T tasks, else the training tasks: each on its
    query rows, or on all its rows when it has none), giving each task a loss ℓ_i and a score
    κ_i ∈ [0, 1]:

    - ``metric="loss"``: ℓ_i the evaluation loss, κ_i = exp(−ℓ_i) (any loss head);
    - ``metric="accuracy"`` (classifiers: loss heads "logistic" and "cross_entropy"): κ_i the
      task's accuracy, ℓ_i = 1 − κ_i its error rate — the seed's "adjust α from each task's test
      accuracy".

    Then

    - ``rule="softmax"``: α = softmax(ℓ / τ) — work most on the worst tasks (with accuracy, ℓ lies
      in [0, 1]: a τ well below 1, e.g. 0.1, makes the weights differ markedly);
    - ``rule="dtp"`` (dynamic task prioritisation, Guo et al., ECCV 2018): κ̄_i ← (1 − β) κ̄_i + β κ_i
      (κ̄_i = κ_i at the first evaluation), w_i = −(1 − κ̄_i)^γ log κ̄_i, α = w / Σ w.

    α sums to 1. Defaults: ``metric="loss"``, ``eval_every=100``, ``temperature=1.0``,
    ``gamma=2.0``, ``beta=0.5``.
    """

    _kind = "eval_driven"
    _core_args = {"eval_every": None, "rule": None, "metric": None}

    def __init__(self, rule="softmax", *, metric="loss", eval_every=100, temperature=1.0,
                 gamma=2.0, beta=0.5):
        from . import _validation as c
        rule = c.choice("rule", rule, ("softmax", "dtp"))
        metric = c.choice("metric", metric, ("loss", "accuracy"))
        eval_every = c.integer("eval_every", eval_every, minimum=1)
        super().__init__(rule=rule, metric=metric, eval_every=eval_every,
                         temperature=c.real("temperature", temperature),
                         gamma=c.real("gamma", gamma), beta=c.real("beta", beta))

    def _extra_core_args(self):
        return {"dtp": self._settings["rule"] == "dtp"}


class DWA(_Adaptive):
    r"""Dynamic Weight Average (Liu, Johns & Davison, "End-to-End Multi-Task Learning with
    Attention", CVPR 2019). With L̄_i(k) the mean loss of task i over window k (``window`` steps):
    r_i = L̄_i(k−1) / L̄_i(k−2), α = softmax(r / τ) — tasks whose loss falls slowest get more
    weight. α = 1/T until two windows are complete. A task whose window loss was exactly 0 has
    r_i = 1 while it stays 0 and r_i = +∞ once it rises (the tasks at +∞ share α). α sums to 1
    (the paper's sums to T).
    Defaults: ``temperature=2.0`` (τ), ``window=1``."""

    _kind = "dwa"

    def __init__(self, *, temperature=2.0, window=1):
        super().__init__(temperature=_validation.real("temperature", temperature),
                         window=_validation.integer("window", window))


class Uncertainty(_Adaptive):
    r"""Homoscedastic uncertainty weighting (Kendall, Gal & Cipolla, CVPR 2018). Learned
    log-variances s_i = log σ_i² (s = 0 at the start) minimise, with θ,

    - regression form: Σ_i [ f_i / (2σ_i²) + log σ_i ] = Σ_i [ ½ e^{−s_i} f_i + ½ s_i ], α_i = ½ e^{−s_i};
    - classification form (``classification=True``): Σ_i [ f_i / σ_i² + log σ_i ], α_i = e^{−s_i}.

    After each θ step, s takes an Adam step (lr ``lr``, β = (0.9, 0.999)) on ∂/∂s_i = ½ − α_i f_i
    (bounded below by −1e100 so that Adam's second moment stays finite for any finite loss).
    The regression form's optimum is σ_i² = f_i (classification: σ_i² = 2 f_i); s is kept in
    [−30, 30] so that α stays finite when a loss is exactly 0. α is not normalised. State: s, Adam's m and v (3T). Defaults: ``lr=0.01``."""

    _kind = "uncertainty"

    def __init__(self, *, classification=False, lr=0.01):
        super().__init__(classification=_validation.boolean("classification", classification),
                         lr=_validation.real("lr", lr))


class RLW(_Adaptive):
    r"""Random Loss Weighting (Lin et al., "Reasonable Effectiveness of Random Weighting", TMLR
    2022): α = softmax(z), z_i ~ N(0, 1) drawn fresh every step from the counter-based generator
    keyed by (seed, step) — reproducible and resumable. α sums to 1. No settings."""

    _kind = "rlw"

    def __init__(self):
        super().__init__()


class FAMO(_Adaptive):
    r"""Fast Adaptive Multitask Optimization (Liu et al., NeurIPS 2023). Logits ξ (0 at the start),
    z = softmax(ξ). At step t, with the losses ℓ(t) from a forward pass: for t > 0, δ_i =
    log(ℓ_i(t−1) + ε) − log(ℓ_i(t) + ε) and ξ takes an Adam step (lr ``lr``, weight decay ``gamma``)
    on z ⊙ (δ − zᵀδ); then α_i = (z_i / (ℓ_i + ε)) / Σ_j z_j / (ℓ_j + ε), so the step follows
    ∇ Σ z_i log ℓ_i. ε = 1e-8. Costs one forward pass more than the bare objective, O(T) besides.
    State: ξ, m, v, ℓ(t−1) (4T). Defaults: ``lr=0.025``, ``gamma=0.001``."""

    _kind = "famo"

    def __init__(self, *, lr=0.025, gamma=0.001):
        super().__init__(lr=_validation.real("lr", lr), gamma=_validation.real("gamma", gamma))


class GradNorm(_Adaptive):
    r"""GradNorm (Chen et al., ICML 2018) on the shared parameters. Loss weights w (1 at the start)
    give α = w. With n_i = ‖∇_s f_i‖, G_i = w_i n_i, Ḡ = mean G, r_i = (f_i/f_i(0)) / mean_j (f_j/f_j(0)),
    L_grad = Σ_i |G_i − Ḡ r_i^a| with the target held constant (r_i = 1 for a task with
    f_i(0) = 0, and every r_i = 1 when all losses are 0 or a ratio overflows); after each step w
    takes an Adam step (lr ``lr``) on ∂L_grad/∂w_i / max_j n_j = sign(G_i − Ḡ r_i^a) n_i / max_j n_j,
    is clipped at 0 and renormalised to Σ w = T. Dividing by the largest norm makes the rule
    depend only on the ratios of the gradient norms (as the paper's L_grad does up to scale):
    Adam's ε would otherwise stall it for norms ≲ 1e-8 and its second moment overflow for norms
    ≳ 1e154; norms are summed with each row scaled by a power of two where its square would
    overflow or underflow. α sums to T. State: w, f(0), m, v (4T). Defaults: ``alpha=1.5`` (a),
    ``lr=0.025``."""

    _kind = "gradnorm"
    _core_args = {"alpha": "asymmetry"}

    def __init__(self, *, alpha=1.5, lr=0.025):
        super().__init__(alpha=_validation.real("alpha", alpha), lr=_validation.real("lr", lr))

    def initial_alpha(self, n_tasks):
        return np.ones(n_tasks)

    def initial_state(self, n_tasks):
        s = np.zeros(4 * n_tasks)
        s[:n_tasks] = 1.0
        return s


class MGDA(_Adaptive):
    r"""MGDA-UB (Sener & Koltun, "Multi-Task Learning as Multi-Objective Optimization", NeurIPS
    2018). Gradients scaled by 1/c_i — c_i = 1 (``"none"``), ‖g_i‖ (``"l2"``), f_i (``"loss"``) or
    f_i‖g_i‖ (``"loss+l2"``) — then γ = argmin_{γ ∈ Δ} ‖Σ_i γ_i g_i / c_i‖², exactly, by Wolfe's
    minimum-norm-point algorithm (Wolfe, Math. Programming 11, 1976) on the Gram matrix (at most
    ``max_iter`` major cycles, then pairwise Frank–Wolfe steps for what rounding leaves; optimal to
    1e-12·max_i ‖g_i/c_i‖², on duplicate, collinear, zero and differently scaled tasks too; cut
    short by ``max_iter``, the best γ met). β_i = γ_i / c_i; a task with c_i = 0 (a loss or gradient at
    exactly 0) is left out with β_i = 0. The Gram matrix is formed on rows scaled by powers of two
    where their squares would leave the exponent range, and c_i is applied as mantissa and
    exponent, so any finite gradients and losses work (β finite while γ_i / c_i is): with
    ``"l2"`` d depends only on the tasks' directions, bit for bit. With ``"none"`` Σβ = 1 and d is the min-norm
    point of the convex hull of the task gradients. Defaults: ``normalization="none"``,
    ``max_iter=1000``."""

    _kind = "mgda"

    def __init__(self, *, normalization="none", max_iter=1000):
        super().__init__(normalization=_validation.instance("normalization", normalization, str,
                                                            "a string"),
                         max_iter=_validation.integer("max_iter", max_iter))


class PCGrad(_Adaptive):
    r"""Projecting Conflicting Gradients (Yu et al., "Gradient Surgery for Multi-Task Learning",
    NeurIPS 2020). For each task i, g_i' starts at g_i and for every other task j in a random order
    (a permutation from the counter-based generator keyed by (seed, step, i)): if g_i'·g_j < 0,
    g_i' ← g_i' − (g_i'·g_j / ‖g_j‖²) g_j. d = (1/T) Σ_i g_i' (the mean, to match α = 1/T's scale).
    After its projection on g_j, g_i' does not conflict with g_j. No settings."""

    _kind = "pcgrad"

    def __init__(self):
        super().__init__()


class CAGrad(_Adaptive):
    r"""Conflict-Averse Gradient descent (Liu et al., NeurIPS 2021). g_0 = mean gradient,
    w = argmin_{w ∈ Δ} g_wᵀg_0 + c‖g_0‖‖g_w‖ (g_w = Σ w_i g_i), d = (g_0 + c‖g_0‖/‖g_w‖ · g_w) /
    (1 + c²) — the official rescaling. β_i = (1/T + c‖g_0‖ w_i/‖g_w‖)/(1 + c²) (β = 1/(T(1 + c²))
    when g_0 = 0 or g_w = 0). The inner problem is solved to convergence, not for a fixed number
    of iterations: it equals min over t > 0 of g_wᵀg_0 + c‖g_0‖(‖g_w‖²/t + t)/2, whose problem for
    fixed t is the min-norm point of the points g_i + t g_0/(c‖g_0‖) (Wolfe's algorithm as in
    :class:`MGDA`, at most ``max_iter`` cycles each), and t = ‖g_w‖ is found by bisection.
    Defaults: ``c=0.5``, ``max_iter=250``."""

    _kind = "cagrad"

    def __init__(self, *, c=0.5, max_iter=250):
        super().__init__(c=_validation.real("c", c),
                         max_iter=_validation.integer("max_iter", max_iter))


class IMTLG(_Adaptive):
    r"""IMTL-G, the gradient half of Impartial Multi-Task Learning (Liu et al., ICLR 2021).
    With u_i = g_i/‖g_i‖, D rows g_1 − g_i and U rows u_1 − u_i (i = 2..T): α_{2..T} =
    g_1 Uᵀ (D Uᵀ)⁻¹, α_1 = 1 − Σ_{i≥2} α_i, d = Σ α_i g_i. Then d·u_i is the same for every task
    (d projects equally on every task's direction) and Σα = 1. A task with a zero gradient has no
    direction and gets α_i = 0; when the system is singular (e.g. tasks in the same direction) α is
    its least-squares solution nearest to uniform. No settings."""

    _kind = "imtlg"
    signed_alpha = True     # α_1 = 1 − Σ α_i and the solve put no sign on them

    def __init__(self):
        super().__init__()


class NashMTL(_Adaptive):
    r"""Nash-MTL (Navon et al., "Multi-Task Learning as a Bargaining Game", ICML 2022): α > 0 with
    (Kα)_i = 1/α_i, K = G Gᵀ — the Nash bargaining solution, d = Σ α_i g_i, so that g_i·d = 1/α_i.
    Solved exactly (not by the paper's sequence of convex programs) as the minimiser of the
    strictly convex, self-concordant ½αᵀKα − Σ log α_i (K plus a ridge of 1e-8·mean diag K) by
    damped Newton (Nesterov, "Introductory Lectures on Convex Optimization", §4.1.5): while the
    Newton decrement λ = √(−g·d) is >= 1/4, the longest of the steps 1, 1/2, 1/4, ... above
    1/(1+λ) that keeps α > 0 with a non-positive slope of the objective along d there (φ is
    convex on the line, so it falls at least as much as with the damped step 1/(1+λ), which is
    taken if none is), the full step below, until λ < 1e-7
    (the next would be below 1e-14), at most ``max_iter`` iterations. Every decision reads the
    gradient and the Newton step, never a difference of objective values, which near the optimum
    is below their rounding. Σ_i α_i (Kα)_i = T, so ‖d‖² = T. Defaults: ``max_iter=50``."""

    _kind = "nashmtl"

    def __init__(self, *, max_iter=50):
        super().__init__(max_iter=_validation.integer("max_iter", max_iter))


class AlignedMTL(_Adaptive):
    r"""Aligned-MTL (Senushkin et al., "Independent Component Alignment for Multi-Task Learning",
    CVPR 2023). K = G Gᵀ = V Λ Vᵀ (eigenvalues above max λ · T · machine-ε kept, by Jacobi
    rotations), B = √λ_min V Λ^{−½} Vᵀ: the aligned gradients B G are orthogonal with equal norm
    √λ_min (condition number 1). β = B 1 / T, d = Σ β_i g_i. No settings."""

    _kind = "aligned_mtl"
    signed_alpha = True     # β = B·1/T: column sums of a PSD matrix, which can be negative

    def __init__(self):
        super().__init__()


class GradVac(_Adaptive):
    r"""Gradient Vaccine (Wang et al., ICLR 2021). Targets φ̂_ij (0 at the start) of the cosine
    similarity of tasks i and j. For each task i, g_i' starts at g_i and for every other task j in
    a random order (counter-based, keyed by (seed, step, i)): φ = cos(g_i', g_j); if φ < φ̂_ij,
    g_i' ← g_i' + g_j ‖g_i'‖ (φ̂_ij √(1−φ²) − φ √(1−φ̂_ij²)) / (‖g_j‖ √(1−φ̂_ij²)); then
    φ̂_ij ← (1−β) φ̂_ij + β φ. d = (1/T) Σ g_i'. State: φ̂ (T², row-major). Defaults: ``beta=0.01``."""

    _kind = "gradvac"

    def __init__(self, *, beta=0.01):
        super().__init__(beta=_validation.real("beta", beta))


# For the library's own use (from_dict, the app's config): each strategy's class by its name.
BY_NAME = {cls.__name__: cls for cls in (
    Uniform, Fixed, EvalDriven, DWA, Uncertainty, RLW, FAMO, GradNorm, MGDA, PCGrad, CAGrad,
    IMTLG, NashMTL, AlignedMTL, GradVac)}


def from_dict(d) -> Weighting:
    """The strategy that ``w.to_dict()`` describes (as read from a checkpoint)."""
    d = dict(_validation.instance("weighting settings", d, dict, "a dict"))
    cls = BY_NAME.get(d.pop("name", None))
    if cls is None:
        raise ValueError(f"unknown weighting strategy in settings: {d!r}")
    return cls(**d)
