"""Showing evaluation reports: a text table, a JSON file and a plot of the adaptation curves
(matplotlib, optional: ``pip install 'metacore[plot]'``)."""

from __future__ import annotations

import json
import math
import os

from .protocol import EvalReport

__all__ = ["format_table", "save_json", "load_json", "plot"]


def _reports(reports):
    items = list(reports.values()) if isinstance(reports, dict) else list(reports)
    if not items or not all(isinstance(r, EvalReport) for r in items):
        raise TypeError("reports must be a non-empty sequence of EvalReport")
    return items


def _cell(mean, ci, scale=1.0, digits=3):
    if not math.isfinite(mean):
        return "diverged"
    if abs(mean * scale) >= 1e4:    # blowing up: the order of magnitude is what matters
        return f"{mean * scale:.1e}"
    text = f"{mean * scale:.{digits}f}"
    return text if math.isnan(ci) else f"{text} ± {ci * scale:.{digits}f}"


def format_table(reports, metric="loss", title=None) -> str:
    """One row per report, one column per number of adaptation steps: mean ± 95% CI of the query
    ``metric`` ("loss", or "accuracy" shown in percent)."""
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
                         _cell(row[metric], row[metric + "_ci"], scale, digits))
        body.append(cells)
    widths = [max(len(line[c]) for line in [head] + body) for c in range(len(head))]
    fmt = lambda cells: "  ".join(  # noqa: E731
        c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))
    n = items[0].n_tasks
    what = "accuracy (%)" if metric == "accuracy" else "query loss"
    lines = [title or f"{what} after adaptation, mean ± 95% CI over {n} tasks",
             fmt(head), fmt(["-" * w for w in widths])]
    return "\n".join(lines + [fmt(b) for b in body])


def save_json(reports, path, extra=None):
    """Write the reports' summaries (and ``extra``, a JSON-serialisable dict) to ``path``."""
    data = {"reports": [r.to_dict() for r in _reports(reports)]}
    if extra:
        data.update(extra)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as fh:
        json.dump(data, fh, indent=2)
    return path


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
        h = [0.0 if math.isnan(row[metric + "_ci"]) else row[metric + "_ci"] for row in rows]
        ax.plot(x, m, marker="o", label=r.name)
        ax.fill_between(x, [a - b for a, b in zip(m, h)], [a + b for a, b in zip(m, h)],
                        alpha=0.2)
    ax.set_xlabel("adaptation steps")
    ax.set_ylabel(f"query {metric}")
    ax.set_title(title or f"few-shot adaptation ({items[0].n_tasks} tasks, 95% CI)")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
