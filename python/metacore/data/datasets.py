"""Real data sets, read from the files their authors publish (``mc.datasets``); nothing is
downloaded and the package ships no data.

- :func:`omniglot` / :func:`omniglot_minimal`: handwritten characters as classes of images
  (:class:`ClassImages`), drawn into N-way K-shot episodes by :meth:`ClassImages.episodes`.
- :func:`school` / :func:`school_splits`: 139 schools' exam scores, multi-task regression.
"""

from .class_images import ClassImages
from .omniglot import area_weights, omniglot, omniglot_minimal
from .school import school, school_splits

__all__ = ["ClassImages", "omniglot", "omniglot_minimal", "area_weights", "school",
           "school_splits"]
