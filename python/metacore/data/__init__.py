"""Tasks and where they come from: the packed :class:`TaskSet`, task families and sources
(:mod:`.tasks`), the bundled digits episodes and tabular files of your own."""

from . import tasks
from .taskset import TaskSet

__all__ = ["TaskSet", "tasks"]
