"""scikit-learn estimators on the metacore engine (needs scikit-learn and SciPy; not imported by
``import metacore``).

- :class:`MultiTaskMLPRegressor`, :class:`MultiTaskMLPClassifier`: ``fit(X, y, groups=task)``
  minimises Σ_i α_i f_i(θ) over the tasks with a weighting strategy, a shared head or one head
  per task;
- :class:`MetaMLPRegressor`, :class:`MetaMLPClassifier`: ``fit(X, y, groups=task)`` meta-trains
  (MAML, FOMAML, ANIL, Meta-SGD, Reptile) on episodes re-drawn from the tasks, and
  ``adapt(X_support, y_support)`` returns a fitted estimator for a new task.

They follow scikit-learn's conventions (hyper-parameters in ``__init__``, learned state in
trailing-underscore attributes, ``clone``, pipelines, grid search, pickling) and pass its
estimator checks, except those listed in ``EXPECTED_FAILED_CHECKS`` with their reasons. As
scikit-learn's MLPs they expect features of about unit scale (``make_pipeline(StandardScaler(),
estimator)``); ``fit`` warns with :class:`DataScaleWarning` when they are far from it, and the
regressors take ``normalize_y=True`` for a target that is. To pass
``groups`` through ``GridSearchCV``/``cross_validate`` to ``fit``, enable metadata routing
(``sklearn.set_config(enable_metadata_routing=True)``) and ``est.set_fit_request(groups=True)``.
"""

from .meta import MetaMLPClassifier, MetaMLPRegressor
from .multitask import MultiTaskMLPClassifier, MultiTaskMLPRegressor
from .scaling import DataScaleWarning

__all__ = ["MultiTaskMLPRegressor", "MultiTaskMLPClassifier", "MetaMLPRegressor",
           "MetaMLPClassifier", "DataScaleWarning"]
