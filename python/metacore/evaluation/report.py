"""Showing evaluation reports: a text table, a JSON file and a plot of the adaptation curves
(matplotlib, optional: ``pip install 'metacore[plot]'``)."""

from __future__ import annotations

import decimal
import json
import math
import os

from .. import _validation
from ..train.checkpoint import write_atomic, write_json
from .protocol import EvalReport
from .statistics import MIN_TASKS_FOR_CI

__all__ = ["format_table", "save_json", "load_json", "plot", "LOG_SCALE_RATIO"]


def _shown(label):
    """``label`` on one line of a table: a character that is not printable (a line break, a
    tab, another control character) written as repr writes it, so rows stay rows."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in label)


def _named(reports):
    """[(label, report)]: a dict's keys label its reports, else each report's ``name``."""
    if isinstance(reports, EvalReport):
        reports = [reports]
    if isinstance(reports, dict):
        pairs = [(str(k), r) for k, r in reports.items()]
    else:
        try:
            pairs = [(getattr(r, "name", None), r) for r in reports]
        except TypeError:
            raise TypeError("reports must be a dict {label: EvalReport} or a non-empty sequence "
                            f"of EvalReport, got {type(reports).__name__}") from None
    if not pairs or not all(isinstance(r, EvalReport) for _, r in pairs):
        raise TypeError("reports must be a dict {label: EvalReport} or a non-empty sequence of "
                        "EvalReport")
    return pairs


def _rounded(x, digits, rounding):
    """``x`` rounded at ``digits`` decimals towards ``rounding`` (decimal.ROUND_CEILING or
    ROUND_FLOOR) as text, from its shortest decimal form (``repr``), so 0.07 stays 0.070."""
    if not math.isfinite(x):
        return f"{x:.{digits}f}"
    return f"{decimal.Decimal(repr(x)).quantize(decimal.Decimal(1).scaleb(-digits), rounding):f}"


def _half_width(mean, ci, shown_mean, digits):
    """The half-width as shown next to ``shown_mean`` (the mean as printed): rounded up, and
    widened by the mean's own rounding, so shown mean ± shown half-width covers the computed
    interval [mean − ci, mean + ci]: rounding never shows an interval narrower than computed."""
    return _rounded(ci + abs(mean - float(shown_mean)), digits, decimal.ROUND_CEILING)


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
        return (f"{text} [{_rounded(low * scale, digits, decimal.ROUND_FLOOR)}, "
                f"{_rounded(high * scale, digits, decimal.ROUND_CEILING)}]*")
    return f"{text} ± {_half_width(mean * scale, ci * scale, text, digits)}"


def _with_metric(pairs, metric):
    """The (label, report) pairs that have ``metric`` (reports without accuracies are left out
    of an accuracy table or plot); ValueError when none has it."""
    pairs = [(label, r) for label, r in pairs if metric == "loss" or r.accuracies is not None]
    if not pairs:
        raise ValueError(f"metric={metric!r}: none of the reports has accuracies (regression "
                         "tasks have a loss only)")
    return pairs


def format_table(reports, metric="loss", title=None) -> str:
    """One row per report, one column per number of adaptation steps: mean ± 95% CI of the query
    ``metric`` ("loss", or "accuracy" shown in percent). ``reports``: a dict {label: EvalReport}
    (the keys label the rows) or a sequence of EvalReport (labelled by their ``name``). The
    half-width is rounded up, widened by the mean's rounding, so the interval shown covers the one
    computed. An interval the metric's range cuts is shown as its clipped ends (rounded outward)
    with a ``*``; a report with too few tasks for an interval gets means
    only, and a note says so. Reports without accuracies are left out of an accuracy table;
    ValueError when none has them (as :func:`plot`). A label's or the title's characters that
    are not printable (line breaks, tabs, other control characters) are shown escaped, as repr
    shows them, so each row stays one line. TypeError for ``reports`` that are no EvalReports
    or a ``title`` that is no str; ValueError for another ``metric``."""
    pairs = _named(reports)
    metric = _validation.choice("metric", metric, ("loss", "accuracy"))
    if title is not None:
        _validation.instance("title", title, str, "a str or None")
    pairs = _with_metric(pairs, metric)
    items = [r for _, r in pairs]
    steps = sorted({s for r in items for s in r.steps})
    scale, digits = (100.0, 1) if metric == "accuracy" else (1.0, 3)
    head = ["method"] + [f"{s} step{'s' if s != 1 else ''}" for s in steps]
    body = []
    for label, r in pairs:
        rows = {row["steps"]: row for row in r.summary()}
        cells = [_shown(label)]
        for s in steps:
            row = rows.get(s)
            cells.append("" if row is None or metric not in row else
                         _cell(row, metric, scale, digits))
        body.append(cells)
    widths = [max(len(line[c]) for line in [head] + body) for c in range(len(head))]
    fmt = lambda cells: "  ".join(  # noqa: E731
        c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))
    counts = sorted({r.n_tasks for r in items})
    n = str(counts[0]) if len(counts) == 1 else "/".join(str(c) for c in counts)
    what = "accuracy (%)" if metric == "accuracy" else "query loss"
    lines = [_shown(title) if title else f"{what} after adaptation, mean ± 95% CI over {n} task"
             f"{'' if counts == [1] else 's'}",
             fmt(head), fmt(["-" * w for w in widths])]
    notes = []
    few = [(label, r) for label, r in pairs
           if any(row.get("too_few_tasks") for row in r.summary())]
    if few:
        notes.append("too few tasks for a 95% CI (" + ", ".join(
            f"{_shown(label)}: {r.n_tasks}" for label, r in few)
            + f"; at least {MIN_TASKS_FOR_CI} needed): means only")
    if any(c.endswith("]*") for b in body for c in b):
        hi = "100" if metric == "accuracy" else "∞"
        notes.append(f"* interval clipped to the metric's range [0, {hi}]")
    return "\n".join(lines + [fmt(b) for b in body] + notes)


def save_json(reports, path, extra=None):
    """Write the reports' summaries (and ``extra``, a JSON-serialisable dict) to ``path``; a
    dict's keys replace the reports' names, as in :func:`format_table`. The file is strict JSON
    (RFC 8259), written atomically: a number that is not finite — the mean of a diverged method
    (inf), an interval withheld for too few tasks (NaN) — is written as ``null``. Raises
    TypeError for ``reports`` that are no EvalReports, an ``extra`` that is no dict or holds a
    value JSON cannot hold (before any file is touched), ValueError for an ``extra`` with the
    key "reports", and what :func:`~metacore.train.checkpoint.write_atomic` raises for a bad
    ``path``."""
    data = {"reports": [dict(r.to_dict(), name=label) for label, r in _named(reports)]}
    if extra is not None and not isinstance(extra, dict):
        raise TypeError(f"extra must be a dict or None, got {type(extra).__name__}")
    if extra and "reports" in extra:     # it would silently replace the reports
        raise ValueError("extra must not have the key 'reports' (the reports are saved under it)")
    if extra:
        data.update(extra)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    return write_json(path, data)


def load_json(path) -> dict:
    """The dict :func:`save_json` wrote; its non-finite numbers read back as None (files of
    earlier versions, with NaN and Infinity tokens, read as NaN and inf)."""
    with open(path) as fh:
        return json.load(fh)


# Above this ratio of the largest to the smallest positive mean loss plotted, ``yscale="auto"`` draws
# the loss on a log axis: one curve that blows up (a learner whose loss grows by orders of
# magnitude) would otherwise flatten every other curve onto the x axis. A well-behaved adaptation
# curve spans about one order of magnitude (the README's sinusoid MAML: 2.749 at 0 steps to 0.101
# at 10, 27×), so 50 keeps it linear; a 20-step demo whose MAML++ loss jumps from 3 to 220 after
# 1 step while Meta-SGD stays at 3 (77×) goes log.
LOG_SCALE_RATIO = 50.0


def _auto_log(values):
    positive = [v for v in values if math.isfinite(v) and v > 0]
    return bool(positive) and max(positive) / min(positive) > LOG_SCALE_RATIO


def plot(reports, path=None, metric="loss", title=None, *, ax=None, yscale="auto"):
    """Adaptation curves: the mean query ``metric`` ("loss" or "accuracy") against the number of
    adaptation steps, one curve per report (a dict's keys label them, as in
    :func:`format_table`), with its 95% CI as a band.

    Honest by construction: the band is the interval clipped to the metric's range (accuracy in
    [0, 1], loss ≥ 0); a report with too few tasks for an interval (fewer than
    ``MIN_TASKS_FOR_CI``) has no band and says so in the legend ("no CI: 3 tasks"); diverged
    points (an infinite mean) are left out and the legend says from which step. ``yscale``:
    "linear", "log", or "auto" — log for the loss when the largest positive mean plotted exceeds
    the smallest by more than ``LOG_SCALE_RATIO`` (50×), else linear (a wide band alone does not
    switch); accuracy stays linear. Reports without accuracies are left out of an accuracy plot.

    ax: a matplotlib Axes to draw on (the caller's figure, any backend); None creates a
    :class:`matplotlib.figure.Figure` without pyplot, so no backend is selected or switched and
    no global figure is left open. path: where to save the figure (PNG, SVG, PDF, … by its
    extension), written atomically. Returns ``path`` when given, else the Figure drawn on.
    Raises ImportError naming ``pip install 'metacore[plot]'`` without matplotlib (with or
    without ``path``: no call ends without its plot and without saying why), TypeError for
    ``reports`` that are no EvalReports or an ``ax`` that is no matplotlib Axes, ValueError for
    another ``metric`` or ``yscale``, for an accuracy plot of reports without accuracies and for
    a file extension matplotlib cannot write.
    """
    pairs = _named(reports)
    metric = _validation.choice("metric", metric, ("loss", "accuracy"))
    yscale = _validation.choice("yscale", yscale, ("auto", "linear", "log"))
    try:
        from matplotlib.figure import Figure
        from matplotlib.axes import Axes
    except ImportError:
        raise ImportError("metacore.report.plot needs matplotlib: pip install 'metacore[plot]' "
                          "(or pip install matplotlib)") from None
    if ax is not None and not isinstance(ax, Axes):
        raise TypeError(f"ax must be a matplotlib Axes or None, got {type(ax).__name__}")
    own = ax is None
    if own:
        fig = Figure(figsize=(5.5, 3.8))
        ax = fig.add_subplot()
    else:
        fig = ax.figure
    pairs = _with_metric(pairs, metric)
    plotted, any_band = [], False
    for label, r in pairs:
        rows = [row for row in r.summary() if metric in row]
        finite = [row for row in rows if math.isfinite(row[metric])]   # diverged points left out
        x = [row["steps"] for row in finite]
        m = [row[metric] for row in finite]
        notes = []
        if any(row["too_few_tasks"] for row in rows):
            notes.append(f"no CI: {r.n_tasks} task{'s' if r.n_tasks != 1 else ''}")
        gone = [row["steps"] for row in rows if not math.isfinite(row[metric])]
        if gone:
            notes.append(f"diverged from {min(gone)} step{'s' if min(gone) != 1 else ''}")
        line, = ax.plot(x, m, marker="o",
                        label=label + (f" ({'; '.join(notes)})" if notes else ""))
        plotted += m
        band = [(i, row[metric + "_interval"]) for i, row in enumerate(finite)
                if row[metric + "_interval"] is not None]
        if band:   # the interval's clipped ends, only where there is one
            any_band = True
            bx = [x[i] for i, _ in band]
            lo, hi = [b[0] for _, b in band], [b[1] for _, b in band]
            ax.fill_between(bx, lo, hi, alpha=0.2, color=line.get_color(), linewidth=0)
    log = yscale == "log" or (yscale == "auto" and metric == "loss" and _auto_log(plotted))
    if log:
        ax.set_yscale("log", nonpositive="clip")
    ax.set_xlabel("adaptation steps")
    ax.set_ylabel(f"query {metric}" + (" (log scale)" if log else ""))
    counts = sorted({r.n_tasks for _, r in pairs})
    tasks = f"{counts[0]} task{'' if counts[0] == 1 else 's'}" if len(counts) == 1 else \
        f"{'/'.join(str(c) for c in counts)} tasks"
    ax.set_title(title or f"few-shot adaptation ({tasks}{', 95% CI' if any_band else ''})")
    ax.legend()
    ax.grid(alpha=0.3)
    if path is None:
        if own:
            fig.tight_layout()
        return fig
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fmt = os.path.splitext(path)[1][1:].lower() or "png"
    if own:    # the caller's figure keeps its own layout
        fig.tight_layout()
    write_atomic(path, lambda f: fig.savefig(f, format=fmt, dpi=120))
    return path
