"""Fault injection for the Ray backend's tests: shard workers that die or stall on cue, as a
crashed or hung machine would. It lives with the tests, never in the package; RayBackend(worker_class=...) takes
it. The actors import this module, so the test cluster puts tests/ on their PYTHONPATH."""

import os
import signal

from metacore.train.backends import ShardWorker


class DyingWorker(ShardWorker):
    """Exits abruptly at the call number written in the marker file (the first actor to reach it
    removes the file, so exactly one actor dies once)."""

    marker = None   # set on a subclass made per test: the path of the marker file

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls = 0

    def fail(self):
        os._exit(1)

    def partials(self, theta, want_grad):
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
        return super().partials(theta, want_grad)


class StallingWorker(DyingWorker):
    """Stops itself (SIGSTOP: alive, holding its resources, never answering) where a DyingWorker
    would exit."""

    def fail(self):
        os.kill(os.getpid(), signal.SIGSTOP)


def dying_worker(marker):
    """A DyingWorker class bound to this marker file."""
    return type("DyingWorkerAt", (DyingWorker,), {"marker": os.fspath(marker),
                                                 "__module__": __name__})


def stalling_worker(marker):
    """A StallingWorker class bound to this marker file."""
    return type("StallingWorkerAt", (StallingWorker,), {"marker": os.fspath(marker),
                                                       "__module__": __name__})
