"""Benchmarks of prediction over many rows: ``MLP.predict`` of a 64-64-64-5 net on 20,000 rows,
plain, with batch statistics and with layer normalisation, against ``mc.reference.predict``.

Run with ``PYTHONPATH=python python -m pytest benchmarks/test_predict_bench.py --benchmark-only``.

Batch normalisation over the rows of the pass (the transductive statistics of the MAML paper's
Omniglot net) makes every row's output depend on all rows, so the core predicts them in one pass
over all 20,000 rows instead of blocks of 32: the case that shows the pass's memory (its buffers
are allocated per call and touched once). Each benchmark first checks the core's output against
the float64 reference.
"""

from __future__ import annotations

import numpy as np
import pytest

import metacore as mc

ROWS = 20_000
SIZES = [64, 64, 64, 5]
NORMS = (None, "batch", "layer")


def _workload(norm):
    model = mc.MLP(SIZES, norm=norm)
    theta = model.init(seed=0, dtype=np.float32)
    X = np.random.default_rng(0).normal(size=(ROWS, SIZES[0])).astype(np.float32)
    return model, theta, X


@pytest.mark.parametrize("norm", NORMS, ids=lambda n: f"norm={n}")
def test_predict_core(benchmark, timed, norm):
    model, theta, X = _workload(norm)
    benchmark.group = f"predict {ROWS} rows, MLP {SIZES}, norm={norm}"
    expect = mc.reference.predict(model, theta.astype(np.float64), X.astype(np.float64))
    np.testing.assert_allclose(model.predict(theta, X, n_threads=1), expect, rtol=1e-4, atol=1e-4)
    timed(lambda: model.predict(theta, X, n_threads=1), contender="core", threads=1, rows=ROWS,
          norm=str(norm))


@pytest.mark.parametrize("norm", NORMS, ids=lambda n: f"norm={n}")
def test_predict_reference(benchmark, timed, blas_one_thread, norm):
    model, theta, X = _workload(norm)
    benchmark.group = f"predict {ROWS} rows, MLP {SIZES}, norm={norm}"
    theta64, X64 = theta.astype(np.float64), X.astype(np.float64)
    timed(lambda: mc.reference.predict(model, theta64, X64), contender="reference (NumPy)",
          threads=1, blas=blas_one_thread, rows=ROWS, norm=str(norm))
