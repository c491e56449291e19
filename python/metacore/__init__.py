"""metacore: meta-learning and multi-task learning with a C++17 + OpenMP core.

The compiled core (``metacore._core``) computes; this package decides what to compute.
"""

from importlib.metadata import PackageNotFoundError, version as _dist_version

from . import _core, optim, reference, weighting
from .adapt import adapt, adapt_batch, adapt_predict
from .data import TaskSet, tasks
from .data import datasets
from .evaluation import baselines, report
from .evaluation.protocol import EvalReport, evaluate
from .evaluation.statistics import mean_ci
from .learners import ANIL, FOMAML, MAML, MetaSGD, ProtoNet, Reptile
from .learners import IMAML, RidgeHead
from .models import MLP, Linear, Logistic, Softmax
from .problems import MetaObjective, Objective
from .train import backends as distributed
from .train.checkpoint import load, save
from .train.fit import fit
from .train.result import EarlyStopping, FitDivergedError, FitEvent, FitResult, History
from .train.state import Checkpoint

try:
    __version__ = _dist_version("metacore")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = _core.__version__


def build_info() -> dict:
    """How the compiled core was built: version, compiler, C++ standard, OpenMP (on/off, version),
    the SIMD instruction sets the hot loops were compiled for and the one in use, thread counts."""
    return dict(_core.build_info())


__all__ = [
    "MLP", "Linear", "Logistic", "Softmax", "Objective", "TaskSet",
    "build_info", "reference", "tasks", "datasets", "__version__",
    "MAML", "FOMAML", "Reptile", "MetaSGD", "ANIL", "ProtoNet", "RidgeHead", "IMAML", "MetaObjective", "adapt", "adapt_predict",
    "adapt_batch", "optim", "weighting", "fit", "FitResult", "History", "FitEvent",
    "FitDivergedError", "EarlyStopping",
    "Checkpoint", "save", "load", "distributed",
    "evaluate", "EvalReport", "mean_ci", "baselines", "report",
]


def __getattr__(name):
    # Deprecated names kept for one release.
    if name == "MetaFitResult":
        import warnings
        warnings.warn("mc.MetaFitResult is deprecated: learner.fit now returns an mc.FitResult",
                      DeprecationWarning, stacklevel=2)
        return FitResult
    raise AttributeError(f"module 'metacore' has no attribute {name!r}")
