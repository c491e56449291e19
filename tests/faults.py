"""Fault injection for the Ray backend's tests: workers that die or stall on cue, as a crashed or
hung machine would. It lives with the tests, never in the package; RayBackend(worker_class=...)
takes it. The actors import this module, so the test cluster puts tests/ on their PYTHONPATH."""

import os
import signal

from metacore.train.backends import BatchWorker, MetaWorker, ShardWorker


class _Fault:
    """Fails at the call number written in the marker file (the first actor to reach it removes
    the file, so exactly one actor fails once)."""

    marker = None   # set on a subclass made per test: the path of the marker file

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls = 0

    def fail(self):
        os._exit(1)

    def maybe_fail(self):
        self.calls += 1
        try:
            with open(self.marker) as f:
                at = int(f.read().strip() or 0)
        except (FileNotFoundError, ValueError, TypeError):
            at = None
        if at is not None and self.calls >= at:
            try:
                os.remove(self.marker)
            except FileNotFoundError:
                pass
            else:
                self.fail()


class _Stall:
    def fail(self):
        """Stops itself (SIGSTOP: alive, holding its resources, never answering)."""
        os.kill(os.getpid(), signal.SIGSTOP)


class DyingWorker(_Fault, ShardWorker):
    """A multi-task shard worker that exits abruptly on cue."""

    def partials(self, *args):
        self.maybe_fail()
        return super().partials(*args)

    def task_grads(self, theta):
        self.maybe_fail()
        return super().task_grads(theta)


class StallingWorker(_Stall, DyingWorker):
    """A multi-task shard worker that stops (SIGSTOP) on cue."""


class SlowStartingWorker(DyingWorker):
    """A multi-task shard worker whose start (and every restart) takes ``delay`` seconds, as on a
    machine too busy to start a process promptly; it exits on cue like DyingWorker."""

    delay = 0.0   # set on a subclass made per test

    def __init__(self, *args, **kwargs):
        import time
        time.sleep(self.delay)
        super().__init__(*args, **kwargs)


class DyingBatchWorker(_Fault, BatchWorker):
    """A drawn-batch multi-task worker that exits abruptly on cue."""

    def partials(self, *args):
        self.maybe_fail()
        return super().partials(*args)


class StallingBatchWorker(_Stall, DyingBatchWorker):
    """A drawn-batch multi-task worker that stops (SIGSTOP) on cue."""


class DyingMetaWorker(_Fault, MetaWorker):
    """A meta-learning worker that exits abruptly on cue."""

    def meta_partials(self, theta, seed, step, b0, b1):
        self.maybe_fail()
        return super().meta_partials(theta, seed, step, b0, b1)


class StallingMetaWorker(_Stall, DyingMetaWorker):
    """A meta-learning worker that stops (SIGSTOP) on cue."""


class _Refuse:
    refusal = None   # set on a subclass made per test: a call that raises the library's refusal

    def fail(self):
        """Raises what the library raises for input it refuses (a source that cannot draw the
        step's episodes, bad labels), here on the actor, mid-run."""
        self.refusal()


class RefusingWorker(_Refuse, DyingWorker):
    """A multi-task shard worker whose step raises the library's ValueError/TypeError on cue."""


class RefusingMetaWorker(_Refuse, DyingMetaWorker):
    """A meta-learning worker whose step raises the library's ValueError/TypeError on cue."""


def _bound(base, marker, **extra):
    return type(base.__name__ + "At", (base,), {"marker": os.fspath(marker),
                                                "__module__": __name__, **extra})


def dying_worker(marker, meta=False, batched=False):
    """A worker class (multi-task shards, drawn batches with batched=True, or meta-learning with
    meta=True) that exits on cue."""
    return _bound(DyingMetaWorker if meta else DyingBatchWorker if batched else DyingWorker,
                  marker)


def stalling_worker(marker, meta=False, batched=False):
    """A worker class (multi-task shards, drawn batches with batched=True, or meta-learning with
    meta=True) that stops on cue."""
    return _bound(StallingMetaWorker if meta else StallingBatchWorker if batched
                  else StallingWorker, marker)


def slow_starting_worker(marker, delay):
    """A multi-task shard worker class that takes ``delay`` s to start or restart and exits on
    cue."""
    return _bound(SlowStartingWorker, marker, delay=float(delay))


def refusing_worker(marker, refusal, meta=False):
    """A worker class (multi-task shards, or meta-learning with meta=True) whose call on cue
    runs ``refusal()`` (picklable; it raises the library's own error) instead of answering."""
    return _bound(RefusingMetaWorker if meta else RefusingWorker, marker,
                  refusal=staticmethod(refusal))
