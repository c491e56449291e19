#!/usr/bin/env python3
"""Run the metacore benchmark suite and print a markdown report with the issue's targets.

Usage (from the repository root)::

    python benchmarks/report.py                  # full run: all contenders, 1 and 2 threads
    python benchmarks/report.py --pinned         # one-thread runs only, under `taskset -c 0`
    python benchmarks/report.py --json A.json B.json   # report on existing --benchmark-json files

A full run is two pytest processes: the whole suite (JAX with one thread), then the JAX benchmarks
alone with ``--jax-threads=2`` (JAX fixes its thread pool when it is imported). Both write
``--benchmark-json`` files into ``--out`` (default: a fresh temporary folder).

The table gives, per workload, contender and thread count: the median (and min) time, the
speed-up (of the median) over
the per-task NumPy loop (one thread) and over JAX at the same thread count, and for (b) the bytes
of X streamed per second and that as a share of the NumPy-sum bandwidth (a 1 GiB float64 array).

Targets (from the issue; printed PASS/FAIL with the measured figures, never relaxed):

1. (a) core, 1 thread, >= 4x faster than JAX jitted (its fastest run at any thread count);
2. (a) core, 1 thread, >= 8x faster than the per-task NumPy loop;
3. (b) core, 1 thread, >= 80% of the NumPy-sum bandwidth (bytes of X / median time);
4. (a) core, 2 threads, >= 1.7x faster than 1 thread;
5. (b) core, 2 threads, >= 1.7x faster than 1 thread.

A target whose measurements are missing (a contender not installed, a pinned run without 2-thread
data) prints MISSING, which is not a pass. ``--check`` makes the script exit 1 unless every
target passes.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CONTENDER_ORDER = ["core", "numpy_loop", "numpy_vectorized", "jax", "torch", "numpy_sum"]
WORKLOAD_ORDER = ["a", "b", "c", "bandwidth"]
WORKLOAD_LABEL = {
    "a": "(a) logistic, 256 tasks",
    "b": "(b) logistic, 4096 tasks",
    "c": "(c) MLP 64-64-10 per-task grads",
    "bandwidth": "NumPy sum, 1 GiB",
}


# --- running the suite ---------------------------------------------------------------------------
def _env():
    """The environment for pytest: the source tree's python/ first on PYTHONPATH when it holds a
    built core (a development checkout), else unchanged (an installed metacore)."""
    env = dict(os.environ)
    src = REPO / "python"
    if any((src / "metacore").glob("_core*")):
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(src), env.get("PYTHONPATH")]))
    return env


def _pytest(json_path, extra, pinned):
    cmd = [sys.executable, "-m", "pytest", "benchmarks/", "--benchmark-only",
           f"--benchmark-json={json_path}", "--benchmark-columns=min,median,max,rounds",
           "--benchmark-sort=name", *extra]
    if pinned:
        if shutil.which("taskset") is None:
            sys.exit("report.py: --pinned needs `taskset` (util-linux)")
        cmd = ["taskset", "-c", "0", *cmd]
    print("$", shlex.join(cmd), flush=True)
    rc = subprocess.run(cmd, cwd=REPO, env=_env()).returncode
    if rc != 0:
        print(f"report.py: pytest exited with {rc}", file=sys.stderr)
    return rc


def run_suite(out_dir, pinned, budget, jax2, pytest_args):
    out_dir.mkdir(parents=True, exist_ok=True)
    common = [f"--bench-budget={budget}", *pytest_args]
    paths, rcs = [], []
    main = out_dir / ("pinned.json" if pinned else "main.json")
    rcs.append(_pytest(main, (["-k", "not 2threads"] if pinned else []) + common, pinned))
    paths.append(main)
    if jax2 and not pinned:
        second = out_dir / "jax2.json"
        rcs.append(_pytest(second, ["-k", "jax and 2threads", "--jax-threads=2", *common],
                           False))
        paths.append(second)
    return [p for p in paths if p.exists()], rcs


# --- reading results -----------------------------------------------------------------------------
def load(paths):
    rows, machine = {}, {}
    for path in paths:
        data = json.loads(Path(path).read_text())
        machine.setdefault("machine_info", data.get("machine_info", {}))
        for b in data.get("benchmarks", []):
            info = b.get("extra_info", {})
            if "contender" not in info:
                continue
            key = (info["workload"], info["contender"], int(info["threads"]))
            rows[key] = {"median": b["stats"]["median"], "min": b["stats"]["min"],
                         "rounds": b["stats"]["rounds"], "info": info, "name": b["name"]}
    return rows, machine


def median(rows, workload, contender, threads):
    r = rows.get((workload, contender, threads))
    return None if r is None else r["median"]


def bandwidth(rows):
    """GB/s of the NumPy sum baseline, or None."""
    r = rows.get(("bandwidth", "numpy_sum", 1))
    return None if r is None else r["info"]["bytes"] / r["median"] / 1e9


# --- the report ----------------------------------------------------------------------------------
def _fmt(x, spec, suffix=""):
    return "—" if x is None else f"{x:{spec}}{suffix}"


def table(rows):
    bw = bandwidth(rows)
    lines = ["| workload | contender | threads | median ms | min ms | × vs NumPy loop | "
             "× vs JAX (same threads) | GB/s (X) | % of NumPy-sum BW |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]

    def order(key):
        w, c, t = key
        return (WORKLOAD_ORDER.index(w) if w in WORKLOAD_ORDER else 99,
                CONTENDER_ORDER.index(c) if c in CONTENDER_ORDER else 99, t)

    for key in sorted(rows, key=order):
        w, c, t = key
        r = rows[key]
        m = r["median"]
        loop = median(rows, w, "numpy_loop", 1)
        jax = median(rows, w, "jax", t)
        vs_loop = loop / m if loop else None
        vs_jax = jax / m if jax else None
        gbs = pct = None
        if w in ("b", "bandwidth"):
            gbs = r["info"]["x_bytes"] / m / 1e9
            pct = 100.0 * gbs / bw if bw else None
        if w == "bandwidth":
            vs_loop = vs_jax = None
        lines.append(f"| {WORKLOAD_LABEL.get(w, w)} | {c} | {t} | {m * 1e3:.2f} | {r['min'] * 1e3:.2f} | "
                     f"{_fmt(vs_loop, '.1f', '×')} | {_fmt(vs_jax, '.2f', '×')} | "
                     f"{_fmt(gbs, '.1f')} | {_fmt(pct, '.0f', '%')} |")
    return "\n".join(lines)


def checks(rows):
    """[(description, status, measured figures)]."""
    out = []

    def ratio_check(desc, num, den, target, detail):
        if num is None or den is None:
            out.append((desc, "MISSING", detail + " (no measurement)"))
            return
        r = num / den
        out.append((desc, "PASS" if r >= target else "FAIL",
                    f"{r:.2f}× (target ≥ {target}×; {detail})"))

    core_a1 = median(rows, "a", "core", 1)
    core_a2 = median(rows, "a", "core", 2)
    core_b1 = median(rows, "b", "core", 1)
    core_b2 = median(rows, "b", "core", 2)

    jax_runs = {t: median(rows, "a", "jax", t) for t in (1, 2)}
    jax_runs = {t: m for t, m in jax_runs.items() if m is not None}
    jax_best_t = min(jax_runs, key=jax_runs.get) if jax_runs else None
    jax_best = jax_runs.get(jax_best_t)
    ratio_check("(a) core 1 thread ≥ 4× faster than JAX jitted", jax_best, core_a1, 4,
                f"JAX {_fmt(jax_best and jax_best * 1e3, '.2f')} ms at {jax_best_t} thread(s) "
                f"(its fastest) / core {_fmt(core_a1 and core_a1 * 1e3, '.2f')} ms")
    loop_a = median(rows, "a", "numpy_loop", 1)
    ratio_check("(a) core 1 thread ≥ 8× faster than the NumPy loop", loop_a, core_a1, 8,
                f"loop {_fmt(loop_a and loop_a * 1e3, '.2f')} ms / core "
                f"{_fmt(core_a1 and core_a1 * 1e3, '.2f')} ms")

    bw = bandwidth(rows)
    r_b1 = rows.get(("b", "core", 1))
    if bw is None or r_b1 is None:
        out.append(("(b) core 1 thread ≥ 80% of the NumPy-sum bandwidth", "MISSING",
                    "no measurement"))
    else:
        gbs = r_b1["info"]["x_bytes"] / r_b1["median"] / 1e9
        pct = 100.0 * gbs / bw
        extra = ""
        r_b2 = rows.get(("b", "core", 2))
        if r_b2 is not None:
            g2 = r_b2["info"]["x_bytes"] / r_b2["median"] / 1e9
            extra = f"; 2 threads: {g2:.1f} GB/s = {100.0 * g2 / bw:.0f}%"
        out.append(("(b) core 1 thread ≥ 80% of the NumPy-sum bandwidth",
                    "PASS" if pct >= 80.0 else "FAIL",
                    f"{pct:.0f}% ({gbs:.1f} GB/s of X vs NumPy sum {bw:.1f} GB/s{extra})"))

    ratio_check("(a) core 2 threads ≥ 1.7× faster than 1 thread", core_a1, core_a2, 1.7,
                f"1 thread {_fmt(core_a1 and core_a1 * 1e3, '.2f')} ms / 2 threads "
                f"{_fmt(core_a2 and core_a2 * 1e3, '.2f')} ms")
    ratio_check("(b) core 2 threads ≥ 1.7× faster than 1 thread", core_b1, core_b2, 1.7,
                f"1 thread {_fmt(core_b1 and core_b1 * 1e3, '.2f')} ms / 2 threads "
                f"{_fmt(core_b2 and core_b2 * 1e3, '.2f')} ms")
    return out


def machine_line(rows, machine):
    mi = machine.get("machine_info", {})
    cpu = mi.get("cpu", {}) if isinstance(mi.get("cpu"), dict) else {}
    infos = [r["info"] for r in rows.values()]
    affinity = sorted({i.get("affinity_cpus") for i in infos if "affinity_cpus" in i})
    versions = {}
    for i in infos:
        for k in ("jax_version", "torch_version", "simd"):
            if k in i:
                versions[k] = i[k]
    parts = [cpu.get("brand_raw") or mi.get("processor") or "unknown CPU",
             f"{cpu.get('count', os.cpu_count())} CPUs",
             f"CPUs the benchmarks could run on: {', '.join(map(str, affinity)) or '?'}",
             f"python {mi.get('python_version', '?')}"]
    parts += [f"{k} {v}" for k, v in versions.items()]
    return "; ".join(parts)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pinned", action="store_true",
                   help="run under `taskset -c 0`, one-thread benchmarks only (-k 'not 2threads')")
    p.add_argument("--json", nargs="+", metavar="FILE",
                   help="report on existing --benchmark-json files instead of running")
    p.add_argument("--out", type=Path, help="folder for the JSON files (default: a temp folder)")
    p.add_argument("--budget", type=float, default=1.0,
                   help="seconds of timed rounds per benchmark (default 1.0)")
    p.add_argument("--no-jax2", action="store_true",
                   help="skip the second, JAX-only pass with --jax-threads=2")
    p.add_argument("--check", action="store_true", help="exit 1 unless every target passes")
    p.add_argument("pytest_args", nargs="*", help="extra pytest arguments (after --)")
    args = p.parse_args(argv)

    rcs = []
    if args.json:
        paths = [Path(x) for x in args.json]
    else:
        out = args.out or Path(tempfile.mkdtemp(prefix="metacore-bench-"))
        paths, rcs = run_suite(out, args.pinned, args.budget, not args.no_jax2, args.pytest_args)
        print(f"\nbenchmark JSON: {', '.join(map(str, paths))}")
    rows, machine = load(paths)
    if not rows:
        sys.exit("report.py: no benchmark results")

    print("\n## metacore benchmarks\n")
    print(machine_line(rows, machine) + (" — pinned with `taskset -c 0`" if args.pinned else ""))
    print()
    print(table(rows))
    print("\n## targets\n")
    results = checks(rows)
    for desc, status, detail in results:
        print(f"- **{status}** {desc}: {detail}")
    if any(rc != 0 for rc in rcs):
        print("\nWARNING: a pytest run failed (see its output above); the table holds what ran.")
    if args.check and (any(s != "PASS" for _, s, _ in results) or any(rcs)):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
