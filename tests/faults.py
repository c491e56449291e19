"""Fault injection for the Ray backend's tests: a shard worker that dies on cue, as a crashed
machine would. It lives with the tests, never in the package; RayBackend(worker_class=...) takes
it. The actors import this module, so the test cluster puts tests/ on their PYTHONPATH."""

import os

from metacore.train.backends import ShardWorker


class DyingWorker(ShardWorker):
    """Exits abruptly at the call number written in the marker file (the first actor to reach it
    removes the file, so exactly one actor dies once)."""

    marker = None   # set on a subclass made per test: the path of the marker file

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls = 0

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
                os._exit(1)
        return super().partials(theta, want_grad)


def dying_worker(marker):
    """A DyingWorker class bound to this marker file."""
    return type("DyingWorkerAt", (DyingWorker,), {"marker": os.fspath(marker),
                                                 "__module__": __name__})
