"""metacore: meta-learning and multi-task learning with a C++17 + OpenMP core.

The compiled core (``metacore._core``) computes; this package decides what to compute.
"""

import os as _os
import warnings as _warnings
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


# The core reads METACORE_ISA once when it loads and ignores a name it does not know: say so.
_ISA_NAMES = ("avx512", "x86-64-v4", "avx2", "x86-64-v3", "baseline", "x86-64", "sse2")
if _os.environ.get("METACORE_ISA") and _os.environ["METACORE_ISA"] not in _ISA_NAMES:
    _warnings.warn(f"METACORE_ISA={_os.environ['METACORE_ISA']!r} is not one of "
                   f"{', '.join(_ISA_NAMES)} (lower case): ignored, the core runs "
                   f"{_core.build_info()['simd_active']}", RuntimeWarning, stacklevel=2)


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
