"""Resident memory over 100,000 calls of every public operation (and of refused calls).

    PYTHONPATH=python python benchmarks/memory_soak.py [--calls 100000] [-k SUBSTRING]

For each operation in tests/public_calls.py: a warm-up of calls/10, then ``--calls`` calls on a
small problem (6 ragged tasks, a 4-8-3 tanh net with a softmax head, float64); prints the
resident set size before and after and the growth per call. Exits 1 if any operation grew by
more than 1 MiB. Linux only (reads /proc/self/statm).
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))

from public_calls import ERROR_CALLS, PUBLIC_CALLS, problem, rss_bytes, soak  # noqa: E402

LIMIT = 1024 * 1024


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=100_000)
    parser.add_argument("-k", default="", help="only operations whose name contains this")
    args = parser.parse_args(argv)
    p = problem()
    names = [n for n in list(PUBLIC_CALLS) + list(ERROR_CALLS) if args.k in n]
    print(f"{'operation':34s} {'calls':>8s} {'us/call':>8s} {'RSS before':>11s} "
          f"{'RSS after':>10s} {'growth':>9s} {'B/call':>7s}")
    worst = 0
    for name in names:
        before, after, seconds = soak(name, p, args.calls)
        growth = after - before
        worst = max(worst, growth)
        print(f"{name:34s} {args.calls:8d} {seconds / args.calls * 1e6:8.1f} "
              f"{before / 2**20:8.1f} MiB {after / 2**20:6.1f} MiB {growth / 1024:5.0f} KiB "
              f"{growth / args.calls:7.2f}", flush=True)
    print(f"process RSS at the end: {rss_bytes() / 2**20:.1f} MiB; largest growth "
          f"{worst / 1024:.0f} KiB ({'ok' if worst <= LIMIT else 'FAILED'}: limit 1 MiB)")
    return 0 if worst <= LIMIT else 1


if __name__ == "__main__":
    sys.exit(main())
