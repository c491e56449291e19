"""Showing evaluation reports: a text table, a JSON file and a plot of the adaptation curves
(matplotlib, optional: ``pip install 'metacore[plot]'``)."""

from __future__ import annotations

import json
import math
import os

from ..train.checkpoint import write_atomic
from .protocol import EvalReport
from .statistics import MIN_TASKS_FOR_CI

__all__ = ["format_table", "save_json", "load_json", "plot"]


def _reports(reports):
    items = list(reports.values()) if isinstance(reports, dict) else list(reports)
    if not items or not all(isinstance(r, EvalReport) for r in items):
        raise TypeError("reports must be a non-empty sequence of EvalReport")
    return items


def _cell(row, metric, scale=1.0, digits=3):
    mean, ci = row[metric], row[metric + "_ci"]
    if not math.isfinite(mean):
        return "diverged"
    if abs(mean * scale) >= 1e4:    # blowing up: the order of magnitude is what matters
        return f"{mean * scale:.1e}"
    text = f"{mean * scale:.{digits}f}"
    if math.isnan(ci):
        return text
    if row.get(metric + "_clipped"):    # the metric's range cut the interval: show its ends
        low, high = row[metric + "_interval"]
        return f"{text} [{low * scale:.{digits}f}, {high * scale:.{digits}f}]*"
    return f"{text} ± {ci * scale:.{digits}f}"


def format_table(reports, metric="loss", title=None) -> str:
    """One row per report, one column per number of adaptation steps: mean ± 95% CI of the query
    ``metric`` ("loss", or "accuracy" shown in percent). An interval the metric's range cuts is
    shown as its clipped ends with a ``*``; a report with too few tasks for an interval gets means
    only, and a note says so."""
    items = _reports(reports)
    steps = sorted({s for r in items for s in r.steps})
    scale, digits = (100.0, 1) if metric == "accuracy" else (1.0, 3)
    head = ["method"] + [f"{s} step{'s' if s != 1 else ''}" for s in steps]
    body = []
    for r in items:
        rows = {row["steps"]: row for row in r.summary()}
        cells = [r.name]
        for s in steps:
            row = rows.get(s)
            cells.append("" if row is None or metric not in row else
                         _cell(row, metric, scale, digits))
        body.append(cells)
    widths = [max(len(line[c]) for line in [head] + body) for c in range(len(head))]
    fmt = lambda cells: "  ".join(  # noqa: E731
        c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))
    n = items[0].n_tasks
    what = "accuracy (%)" if metric == "accuracy" else "query loss"
    lines = [title or f"{what} after adaptation, mean ± 95% CI over {n} tasks",
             fmt(head), fmt(["-" * w for w in widths])]
    notes = []
    few = [r for r in items if any(row.get("too_few_tasks") for row in r.summary())]
    if few:
        notes.append("too few tasks for a 95% CI (" + ", ".join(
            f"{r.name}: {r.n_tasks}" for r in few) + f"; at least {MIN_TASKS_FOR_CI} needed): "
            "means only")
    if any(c.endswith("]*") for b in body for c in b):
        hi = "100" if metric == "accuracy" else "∞"
        notes.append(f"* interval clipped to the metric's range [0, {hi}]")
    return "\n".join(lines + [fmt(b) for b in body] + notes)


def save_json(reports, path, extra=None):
    """Write the reports' summaries (and ``extra``, a JSON-serialisable dict) to ``path``."""
    data = {"reports": [r.to_dict() for r in _reports(reports)]}
    if extra:
        data.update(extra)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    text = json.dumps(data, indent=2)    # fails (non-serialisable extra) before any file is touched
    return write_atomic(path, lambda f: f.write(text.encode()))


def load_json(path) -> dict:
    with open(path) as fh:
        return json.load(fh)


def plot(reports, path, metric="loss", title=None):
    """Adaptation curves (mean with the 95% band against steps) saved to ``path`` (PNG, SVG, …).
    Returns the path, or None when matplotlib is not installed."""
    items = _reports(reports)
    try:
        import matplotlib
        matplotlib.use("Agg")  # files only: never open a window
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for r in items:
        rows = [row for row in r.summary() if metric in row]
        rows = [row for row in rows if math.isfinite(row[metric])]   # diverged points left out
        x = [row["steps"] for row in rows]
        m = [row[metric] for row in rows]
        band = [row[metric + "_interval"] or [row[metric]] * 2 for row in rows]   # clipped ends
        ax.plot(x, m, marker="o", label=r.name)
        ax.fill_between(x, [b[0] for b in band], [b[1] for b in band], alpha=0.2)
    ax.set_xlabel("adaptation steps")
    ax.set_ylabel(f"query {metric}")
    ax.set_title(title or f"few-shot adaptation ({items[0].n_tasks} tasks, 95% CI)")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fmt = os.path.splitext(os.fspath(path))[1].lstrip(".").lower() or "png"
    try:
        write_atomic(path, lambda f: fig.savefig(f, dpi=120, format=fmt))
    finally:
        plt.close(fig)
    return path
