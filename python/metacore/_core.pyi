"""Types of metacore's compiled core (csrc/bindings/*.cpp); checked against the built module by
tests/test_stubs.py.

Every array argument must be a C-contiguous numpy array of exactly the dtype shown: nothing is
converted. The classes ending in 32/64 work in float32/float64; the functions typed with ``_F``
dispatch on the dtype of ``theta`` (or ``grads``) and return arrays of that dtype.
``n_threads``: None = the OpenMP default, -1 = all cores, k >= 1 = k threads.
"""

from collections.abc import Sequence
from typing import Any, Literal, TypedDict, TypeVar, overload

import numpy as np
from numpy.typing import NDArray

_F = TypeVar("_F", np.float32, np.float64)
_F32 = NDArray[np.float32]
_F64 = NDArray[np.float64]
_I64 = NDArray[np.int64]

_Activation = Literal["relu", "tanh"]
_Loss = Literal["mse", "logistic", "cross_entropy"]
_Rows = Literal["all", "support", "query"]
_Learner = Literal["maml", "reptile", "metasgd", "anil", "protonet", "ridge", "imaml"]
_OptimizerKind = Literal["sgd", "adam", "adamw"]
_Schedule = Literal["constant", "step", "cosine", "linear"]
_WeightingKind = Literal[
    "fixed", "eval_driven", "dwa", "uncertainty", "rlw", "famo", "gradnorm", "mgda", "pcgrad",
    "cagrad", "imtlg", "nashmtl", "aligned_mtl", "gradvac",
]
_Normalization = Literal["none", "l2", "loss", "loss+l2"]
_StepStatus = Literal["ok", "nonfinite_loss", "nonfinite_grad", "nonfinite_update",
                      "weighting_failed"]

# Every bound class is made by pybind11's metaclass (pybind11_builtins.pybind11_type).
class _pybind11_type(type): ...

# --- the module (module.cpp) ------------------------------------------------------------------

__version__: str

class _BuildInfo(TypedDict):
    version: str
    compiler: str
    cxx_standard: int
    openmp: bool
    openmp_version: int
    simd_targets: str
    simd_active: str
    simd_cpu: str
    default_threads: int
    max_threads: int
    usable_processors: int
    sanitize: str

def build_info() -> _BuildInfo: ...
def request_stop(on: bool = True) -> None: ...
def parallel_for_probe(
    n: int,
    n_threads: int | None,
    work_us: float = 0.0,
    hold_us: float = 0.0,
    fail_at: int = -1,
) -> tuple[_I64, _I64, int, int, bool]:
    """Test probe of the one parallel-for: (thread index per item, runs per item, overlaps,
    OS threads used, whether a thread other than the caller ran an item)."""

# --- the net (net_bindings.cpp) ---------------------------------------------------------------

class Net(metaclass=_pybind11_type):
    """An MLP's shape: layer sizes, activation, loss and number of output heads."""

    def __init__(
        self,
        layer_sizes: Sequence[int],
        activation: _Activation,
        loss: _Loss,
        n_heads: int,
        norm: Literal["batch", "layer"] | None = None,
        head: Literal["full", "bias"] = "full",
    ) -> None: ...
    @property
    def n_params(self) -> int: ...
    @property
    def layer_sizes(self) -> list[int]: ...
    def predict(
        self, theta: NDArray[_F], X: NDArray[_F], head: int = 0, n_threads: int | None = None
    ) -> NDArray[_F]: ...

# --- the weighted multi-task objective (objective_bindings.cpp) ---------------------------------
# value_and_grad -> (value, grad or None when not want_grad, task_losses)
# task_grads -> (task_grads (n_tasks, n_params), task_losses)

class Objective32(metaclass=_pybind11_type):
    """The weighted multi-task loss over packed task arrays, in float32 (keeps the arrays alive)."""

    def __init__(
        self,
        net: Net,
        X: _F32,
        y: _F32,
        offsets: _I64,
        n_support: _I64,
        task_ids: _I64,
        rows: _Rows,
    ) -> None: ...
    @property
    def n_params(self) -> int: ...
    @property
    def n_tasks(self) -> int: ...
    def value_and_grad(
        self, theta: _F32, weights: _F32, l2: float, want_grad: bool, n_threads: int | None = None
    ) -> tuple[float, _F32 | None, _F32]: ...
    def task_grads(self, theta: _F32, n_threads: int | None = None) -> tuple[_F32, _F32]: ...
    def hvp(
        self, theta: _F32, v: _F32, weights: _F32, l2: float, n_threads: int | None = None
    ) -> _F32: ...
    def plan_info(self) -> dict[str, int]: ...

class Objective64(metaclass=_pybind11_type):
    """The weighted multi-task loss over packed task arrays, in float64 (keeps the arrays alive)."""

    def __init__(
        self,
        net: Net,
        X: _F64,
        y: _F64,
        offsets: _I64,
        n_support: _I64,
        task_ids: _I64,
        rows: _Rows,
    ) -> None: ...
    @property
    def n_params(self) -> int: ...
    @property
    def n_tasks(self) -> int: ...
    def value_and_grad(
        self, theta: _F64, weights: _F64, l2: float, want_grad: bool, n_threads: int | None = None
    ) -> tuple[float, _F64 | None, _F64]: ...
    def task_grads(self, theta: _F64, n_threads: int | None = None) -> tuple[_F64, _F64]: ...
    def hvp(
        self, theta: _F64, v: _F64, weights: _F64, l2: float, n_threads: int | None = None
    ) -> _F64: ...
    def plan_info(self) -> dict[str, int]: ...

# --- meta-learning and adaptation (meta_bindings.cpp) -----------------------------------------
# y: (n,) or (n, cols) with cols = n_outputs for mse, 1 (labels) otherwise.

def meta_value_and_grad(
    net: Net,
    learner: _Learner,
    inner_lr: float,
    inner_steps: int,
    first_order: bool,
    theta: NDArray[_F],
    X: NDArray[_F],
    y: NDArray[_F],
    offsets: _I64,
    n_support: _I64,
    n_threads: int | None = None,
    per_step_rates: bool = False,
    multi_step_loss: bool = False,
    msl_anneal_steps: int = 1,
    first_order_until: int = 0,
    reg: float = 1.0,
    cg_steps: int = 5,
    step: int = 0,
) -> tuple[float, NDArray[_F], NDArray[_F], float]:
    """(mean query loss after adaptation, meta-gradient, per-task query losses, mean support loss
    before adaptation); MAML++'s options, iMAML's λ (reg) and conjugate-gradient steps, and the
    global step `step` that sets MAML++'s order and multi-step-loss weights"""

def msl_weights(inner_steps: int, msl_anneal_steps: int, step: int) -> NDArray[np.float64]:
    """(inner_steps,) MAML++'s multi-step-loss weights at global step `step`."""

def adapt(
    net: Net,
    theta: NDArray[_F],
    X_support: NDArray[_F],
    y_support: NDArray[_F],
    steps: int,
    lr: float,
    rates: NDArray[_F] | None = None,
    head_only: bool = False,
) -> NDArray[_F]: ...
def adapt_predict(
    net: Net,
    theta: NDArray[_F],
    X_support: NDArray[_F],
    y_support: NDArray[_F],
    X_query: NDArray[_F],
    steps: int,
    lr: float,
    rates: NDArray[_F] | None = None,
    head_only: bool = False,
) -> NDArray[_F]: ...
def adapt_batch(
    net: Net,
    theta: NDArray[_F],
    X: NDArray[_F],
    y: NDArray[_F],
    offsets: _I64,
    n_support: _I64,
    steps: int,
    lr: float,
    rates: NDArray[_F] | None = None,
    head_only: bool = False,
    want_theta: bool = True,
    want_pred: bool = True,
    n_threads: int | None = None,
) -> tuple[NDArray[_F] | None, NDArray[_F] | None]:
    """(adapted parameters (n_tasks, n_params) or None, query predictions or None)"""

def sinusoid_tasks(
    k_support: int,
    k_query: int,
    amplitude: tuple[float, float],
    phase: tuple[float, float],
    x_range: tuple[float, float],
    seed: int,
    step: int,
    n_tasks: int,
    float32: bool,
) -> tuple[NDArray[Any], NDArray[Any], _I64, _I64]:
    """(X, y, offsets, n_support); X and y are float32 when float32 else float64"""

def episode_tasks(
    X: NDArray[_F],
    class_offsets: _I64,
    n_way: int,
    k_shot: int,
    q_query: int,
    seed: int,
    step: int,
    n_tasks: int,
) -> tuple[NDArray[_F], NDArray[_F], _I64, _I64]:
    """(X, y, offsets, n_support) of the N-way K-shot episodes a meta-step over this pool draws"""

def prototypes(embeddings: NDArray[_F], y_support: NDArray[_F]) -> NDArray[_F]:
    """(N, D) class prototypes: the mean embedding of the support rows of each class 0..N-1"""

def prototype_logits(prototypes: NDArray[_F], embeddings: NDArray[_F]) -> NDArray[_F]:
    """(n, N) logits -||e_r - c_k||^2 of embedded rows against the prototypes"""

# --- the ridge head and iMAML's adaptation (heads_bindings.cpp) ----------------------------------

def ridge_head_weights(embeddings: NDArray[_F], y_support: NDArray[_F], reg: float) -> NDArray[_F]:
    """(D + 1, N) ridge weights X_s^T (X_s X_s^T + reg I)^-1 Y of support embeddings (n, D) with a
    bias column and one-hot labels 0..N-1; the last row is the bias."""

def ridge_head_logits(weights: NDArray[_F], embeddings: NDArray[_F], scale: float) -> NDArray[_F]:
    """(n, N) logits scale * [E, 1] W of embedded rows under ridge weights W (D + 1, N)."""

def imaml_adapt(
    net: Net,
    theta: NDArray[_F],
    X_support: NDArray[_F],
    y_support: NDArray[_F],
    steps: int,
    lr: float,
    reg: float,
) -> NDArray[_F]:
    """phi after `steps` steps phi <- phi - lr (grad L_s(phi) + reg (phi - theta)) from theta."""

def imaml_adapt_batch(
    net: Net,
    theta: NDArray[_F],
    X: NDArray[_F],
    y: NDArray[_F],
    offsets: _I64,
    n_support: _I64,
    steps: int,
    lr: float,
    reg: float,
    n_threads: int | None = None,
) -> NDArray[_F]:
    """Every task's query outputs after iMAML's proximal inner loop on its support rows, task after
    task (query rows, k)."""

# --- the training loop (train_bindings.cpp) ---------------------------------------------------

class ChunkResult(metaclass=_pybind11_type):
    """What one chunk of steps recorded: per-step arrays (read-only views) and why it stopped."""

    def __init__(self, n_steps: int, n_tasks: int, record_task_losses: bool = False) -> None: ...
    @property
    def n_steps(self) -> int: ...
    @property
    def n_tasks(self) -> int: ...
    @property
    def steps_done(self) -> int: ...
    @property
    def status(self) -> _StepStatus: ...
    @property
    def bad_task(self) -> int: ...
    @property
    def n_bad_tasks(self) -> int: ...
    @property
    def objective(self) -> _F64: ...
    @property
    def grad_norm(self) -> _F64: ...
    @property
    def lr(self) -> _F64: ...
    @property
    def support_loss(self) -> _F64: ...
    @property
    def task_losses(self) -> _F64 | None: ...
    @property
    def alpha(self) -> _F64 | None: ...

# generate(k_support, k_query, amplitude, phase, x_range): bound without argument names, so
# positional only.

class MetaStep32(metaclass=_pybind11_type):
    """A meta-learner's step over tasks it samples (or generates), in float32."""

    def __init__(
        self,
        net: Net,
        learner: _Learner,
        inner_lr: float,
        inner_steps: int,
        first_order: bool,
        meta_batch: int,
        n_threads: int | None = None,
        per_step_rates: bool = False,
        multi_step_loss: bool = False,
        msl_anneal_steps: int = 1,
        first_order_until: int = 0,
        reg: float = 1.0,
        cg_steps: int = 5,
    ) -> None: ...
    @property
    def n_params(self) -> int: ...
    def sample_from(self, X: _F32, y: _F32, offsets: _I64, n_support: _I64) -> None: ...
    def generate(
        self,
        k_support: int,
        k_query: int,
        amplitude: tuple[float, float],
        phase: tuple[float, float],
        x_range: tuple[float, float],
        /,
    ) -> None: ...
    def episodes_from(
        self, X: _F32, class_offsets: _I64, n_way: int, k_shot: int, q_query: int
    ) -> None: ...
    @property
    def meta_batch(self) -> int: ...
    @property
    def n_blocks(self) -> int: ...
    def block_partials(
        self,
        theta: _F32,
        seed: int,
        step: int,
        b0: int,
        b1: int,
    ) -> tuple[_F32, _F64, _F64]:
        """Blocks [b0, b1) of step `step`'s meta-batch at theta, on the step's own threads: (partials (b1-b0, n_params), query losses, support losses) of their tasks (float64)."""

class MetaStep64(metaclass=_pybind11_type):
    """A meta-learner's step over tasks it samples (or generates), in float64."""

    def __init__(
        self,
        net: Net,
        learner: _Learner,
        inner_lr: float,
        inner_steps: int,
        first_order: bool,
        meta_batch: int,
        n_threads: int | None = None,
        per_step_rates: bool = False,
        multi_step_loss: bool = False,
        msl_anneal_steps: int = 1,
        first_order_until: int = 0,
        reg: float = 1.0,
        cg_steps: int = 5,
    ) -> None: ...
    @property
    def n_params(self) -> int: ...
    def sample_from(self, X: _F64, y: _F64, offsets: _I64, n_support: _I64) -> None: ...
    def generate(
        self,
        k_support: int,
        k_query: int,
        amplitude: tuple[float, float],
        phase: tuple[float, float],
        x_range: tuple[float, float],
        /,
    ) -> None: ...
    def episodes_from(
        self, X: _F64, class_offsets: _I64, n_way: int, k_shot: int, q_query: int
    ) -> None: ...
    @property
    def meta_batch(self) -> int: ...
    @property
    def n_blocks(self) -> int: ...
    def block_partials(
        self,
        theta: _F64,
        seed: int,
        step: int,
        b0: int,
        b1: int,
    ) -> tuple[_F64, _F64, _F64]:
        """Blocks [b0, b1) of step `step`'s meta-batch at theta, on the step's own threads: (partials (b1-b0, n_params), query losses, support losses) of their tasks (float64)."""

# The train state's arrays are read-only views of its own buffers; m and v are None when the
# optimizer keeps no such moment; the weighting state is float64 in both precisions.

class TrainState32(metaclass=_pybind11_type):
    """theta, optimizer moments, task weights alpha, weighting state, step and seed, in float32."""

    def __init__(
        self,
        theta: _F32,
        config: OptimizerConfig,
        alpha: _F32,
        weighting_size: int,
        seed: int,
    ) -> None: ...
    @property
    def theta(self) -> _F32: ...
    @property
    def m(self) -> _F32 | None: ...
    @property
    def v(self) -> _F32 | None: ...
    @property
    def alpha(self) -> _F32: ...
    @property
    def weighting(self) -> _F64: ...
    @property
    def step(self) -> int: ...
    @property
    def seed(self) -> int: ...
    def set_alpha(self, alpha: _F32) -> None: ...
    def restore(
        self,
        theta: _F32,
        m: _F32 | None,
        v: _F32 | None,
        alpha: _F32,
        weighting: _F64,
        step: int,
    ) -> None: ...
    def run_objective(
        self,
        objective: Objective32,
        config: OptimizerConfig,
        batch_tasks: int,
        batch_rows: int,
        l2: float,
        n_steps: int,
        n_threads: int | None = None,
        record_task_losses: bool = False,
        weighting: WeightingConfig | None = None,
        n_shared: int = -1,
    ) -> ChunkResult: ...
    def run_meta(
        self,
        meta_step: MetaStep32,
        config: OptimizerConfig,
        n_steps: int,
        n_threads: int | None = None,
    ) -> ChunkResult: ...
    def take_step(
        self,
        result: ChunkResult,
        j: int,
        config: OptimizerConfig,
        value: float,
        grad: _F32 | None,
        task_losses: _F32,
        counted: _I64,
        n_threads: int | None = None,
    ) -> bool:
        """Step j of `result` from a value and gradient computed elsewhere, exactly as the core's
        own loop finishes a step; False when the chunk must stop."""
    def set_weighting(self, weighting: _F64) -> None: ...
    def evaluate_weighting(self, config: WeightingConfig, losses: _F64, scores: _F64) -> None: ...

class TrainState64(metaclass=_pybind11_type):
    """theta, optimizer moments, task weights alpha, weighting state, step and seed, in float64."""

    def __init__(
        self,
        theta: _F64,
        config: OptimizerConfig,
        alpha: _F64,
        weighting_size: int,
        seed: int,
    ) -> None: ...
    @property
    def theta(self) -> _F64: ...
    @property
    def m(self) -> _F64 | None: ...
    @property
    def v(self) -> _F64 | None: ...
    @property
    def alpha(self) -> _F64: ...
    @property
    def weighting(self) -> _F64: ...
    @property
    def step(self) -> int: ...
    @property
    def seed(self) -> int: ...
    def set_alpha(self, alpha: _F64) -> None: ...
    def restore(
        self,
        theta: _F64,
        m: _F64 | None,
        v: _F64 | None,
        alpha: _F64,
        weighting: _F64,
        step: int,
    ) -> None: ...
    def run_objective(
        self,
        objective: Objective64,
        config: OptimizerConfig,
        batch_tasks: int,
        batch_rows: int,
        l2: float,
        n_steps: int,
        n_threads: int | None = None,
        record_task_losses: bool = False,
        weighting: WeightingConfig | None = None,
        n_shared: int = -1,
    ) -> ChunkResult: ...
    def run_meta(
        self,
        meta_step: MetaStep64,
        config: OptimizerConfig,
        n_steps: int,
        n_threads: int | None = None,
    ) -> ChunkResult: ...
    def take_step(
        self,
        result: ChunkResult,
        j: int,
        config: OptimizerConfig,
        value: float,
        grad: _F64 | None,
        task_losses: _F64,
        counted: _I64,
        n_threads: int | None = None,
    ) -> bool:
        """Step j of `result` from a value and gradient computed elsewhere, exactly as the core's
        own loop finishes a step; False when the chunk must stop."""
    def set_weighting(self, weighting: _F64) -> None: ...
    def evaluate_weighting(self, config: WeightingConfig, losses: _F64, scores: _F64) -> None: ...

# --- optimizers (optim_bindings.cpp) ----------------------------------------------------------

class OptimizerConfig(metaclass=_pybind11_type):
    """An optimizer (sgd, adam, adamw) and its learning-rate schedule; validated on construction."""

    def __init__(
        self,
        *,
        kind: _OptimizerKind,
        lr: float,
        momentum: float = 0.0,
        nesterov: bool = False,
        beta1: float = 0.9,
        beta2: float = 0.999,
        eps: float = 1e-08,
        weight_decay: float = 0.0,
        clip_norm: float = 0.0,
        schedule: _Schedule = "constant",
        every: int = 1,
        gamma: float = 0.1,
        period: int = 1,
        min_factor: float = 0.0,
        warmup: int = 0,
        warmup_start: float = 0.0,
        groups: Sequence[tuple[int, int, float, float]] = [],
    ) -> None: ...
    @property
    def uses_m(self) -> bool: ...
    @property
    def uses_v(self) -> bool: ...
    def lr_at(self, step: int) -> float: ...

def optimizer_step(
    config: OptimizerConfig,
    step: int,
    theta: NDArray[_F],
    grad: NDArray[_F],
    m: NDArray[_F] | None,
    v: NDArray[_F] | None,
    n_threads: int | None = None,
) -> tuple[float, float, bool]:
    """Updates theta (and m, v) in place; (gradient norm before clipping, lr used, all finite)"""

# --- the distributed objective (distributed_bindings.cpp) -------------------------------------

class BlockPlan(metaclass=_pybind11_type):
    """An objective's work units regrouped into reduction blocks; made by block_plan()."""

    @property
    def n_blocks(self) -> int: ...
    @property
    def n_units(self) -> int: ...

def block_plan(objective: Objective32 | Objective64, block_start: _I64) -> BlockPlan: ...

# -> (per-block gradient partials (n_blocks, n_params) or None when not want_grad, task losses)
@overload
def block_partials(
    objective: Objective32,
    plan: BlockPlan,
    theta: _F32,
    weights: _F32,
    want_grad: bool,
    n_threads: int | None = None,
) -> tuple[_F32 | None, _F64]: ...
@overload
def block_partials(
    objective: Objective64,
    plan: BlockPlan,
    theta: _F64,
    weights: _F64,
    want_grad: bool,
    n_threads: int | None = None,
) -> tuple[_F64 | None, _F64]: ...
def assign_blocks(unit_rows: _I64, n_params: int, itemsize: int) -> _I64: ...
@overload
def take_meta_step(
    state: TrainState32,
    result: ChunkResult,
    j: int,
    config: OptimizerConfig,
    parts: _F32,
    task_losses: _F64,
    support_losses: _F64,
    n_threads: int | None = None,
) -> bool: ...
@overload
def take_meta_step(
    state: TrainState64,
    result: ChunkResult,
    j: int,
    config: OptimizerConfig,
    parts: _F64,
    task_losses: _F64,
    support_losses: _F64,
    n_threads: int | None = None,
) -> bool:
    """Step j of `result` from a meta-step's block partials (n_blocks, n_params) in block order and its tasks' query and support losses, as the core's own loop finishes a meta-step; False when the chunk must stop."""
def combine_partials(
    parts: NDArray[_F] | None,
    task_loss: _F64,
    task_rows: _I64,
    weights: NDArray[_F],
    theta: NDArray[_F],
    l2: float,
    n_threads: int | None = None,
) -> tuple[float, NDArray[_F] | None, NDArray[_F]]:
    """(value, gradient or None when parts is None, task losses)"""


# The driver's multi-task step fed with the workers' answers, and a worker's share of a drawn
# batch's blocks (distributed_bindings.cpp).
class MultiTaskDriver32(metaclass=_pybind11_type):
    def __init__(
        self,
        objective: Objective32,
        batch_tasks: int,
        batch_rows: int,
        l2: float,
        weighting: WeightingConfig | None,
        n_shared: int,
    ) -> None: ...
    def begin(self, state: TrainState32) -> str:
        """Draws the step's batch, backs up α and the weighting state, sets α unless the step's losses are needed first; 'partials', 'losses_first' or 'task_grads'."""
    def losses_first(self, state: TrainState32, task_loss: _F64) -> None: ...
    def finish_partials(
        self,
        state: TrainState32,
        result: ChunkResult,
        j: int,
        config: OptimizerConfig,
        parts: _F32,
        losses: _F64,
        by_unit: bool,
        n_threads: int | None = None,
    ) -> bool: ...
    def finish_task_grads(
        self,
        state: TrainState32,
        result: ChunkResult,
        j: int,
        config: OptimizerConfig,
        task_grads: _F32,
        task_losses: _F32,
        n_threads: int | None = None,
    ) -> bool: ...
    def undo(self, state: TrainState32) -> None: ...
    @property
    def n_blocks(self) -> int: ...

class MultiTaskDriver64(metaclass=_pybind11_type):
    def __init__(
        self,
        objective: Objective64,
        batch_tasks: int,
        batch_rows: int,
        l2: float,
        weighting: WeightingConfig | None,
        n_shared: int,
    ) -> None: ...
    def begin(self, state: TrainState64) -> str: ...
    def losses_first(self, state: TrainState64, task_loss: _F64) -> None: ...
    def finish_partials(
        self,
        state: TrainState64,
        result: ChunkResult,
        j: int,
        config: OptimizerConfig,
        parts: _F64,
        losses: _F64,
        by_unit: bool,
        n_threads: int | None = None,
    ) -> bool: ...
    def finish_task_grads(
        self,
        state: TrainState64,
        result: ChunkResult,
        j: int,
        config: OptimizerConfig,
        task_grads: _F64,
        task_losses: _F64,
        n_threads: int | None = None,
    ) -> bool: ...
    def undo(self, state: TrainState64) -> None: ...
    @property
    def n_blocks(self) -> int: ...

class MultiTaskBlocks32(metaclass=_pybind11_type):
    def __init__(self, objective: Objective32, batch_tasks: int, batch_rows: int) -> None: ...
    def partials(
        self,
        theta: _F32,
        alpha: _F32,
        seed: int,
        step: int,
        worker: int,
        n_workers: int,
        want_grad: bool,
        n_threads: int | None = None,
    ) -> tuple[_F32 | None, _F64]: ...

class MultiTaskBlocks64(metaclass=_pybind11_type):
    def __init__(self, objective: Objective64, batch_tasks: int, batch_rows: int) -> None: ...
    def partials(
        self,
        theta: _F64,
        alpha: _F64,
        seed: int,
        step: int,
        worker: int,
        n_workers: int,
        want_grad: bool,
        n_threads: int | None = None,
    ) -> tuple[_F64 | None, _F64]: ...

# --- task weighting (weighting_bindings.cpp) --------------------------------------------------
# The state arrays (float64, config.state_size(n_tasks) entries) are updated in place.

class WeightingConfig(metaclass=_pybind11_type):
    """A task-weighting strategy and its settings; validated on construction."""

    def __init__(
        self,
        *,
        kind: _WeightingKind,
        temperature: float = 2.0,
        window: int = 1,
        classification: bool = False,
        lr: float = 0.01,
        asymmetry: float = 1.5,
        c: float = 0.5,
        normalization: _Normalization = "none",
        beta: float = 0.01,
        gamma: float = 2.0,
        dtp: bool = False,
        max_iter: int = 250,
    ) -> None: ...
    def state_size(self, n_tasks: int) -> int: ...
    @property
    def uses_grads(self) -> bool: ...

def weighting_before(
    config: WeightingConfig, state: _F64, seed: int, step: int, losses: _F64
) -> _F64: ...
def weighting_after(config: WeightingConfig, state: _F64, step: int, losses: _F64) -> None: ...
def weighting_evaluate(
    config: WeightingConfig, state: _F64, losses: _F64, scores: _F64
) -> _F64: ...
def weighting_combine(
    config: WeightingConfig,
    grads: NDArray[_F],
    losses: NDArray[_F],
    state: _F64,
    seed: int,
    step: int,
    n_shared: int = -1,
    n_threads: int | None = None,
) -> tuple[_F64, NDArray[_F]]:
    """(task weights, combined gradient)"""
