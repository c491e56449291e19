r"""The few-shot evaluation protocol: adapt to every held-out task on its support rows, score its
query rows, and summarise over tasks with a 95% confidence interval.

For each number of adaptation steps s, task i gives φ_i^s (s SGD steps from θ on its support rows,
by the learner's rule: Meta-SGD's learned rates, ANIL's head-only loop) and the query loss
L_i^s = mean over its query rows of the row loss at φ_i^s (and, for classifiers, the accuracy).
Over T tasks the report gives the mean m = (1/T) Σ_i L_i^s and the half-width of its confidence
interval

    h = t_{(1+c)/2, T−1} · s_L / √T,   s_L² = (1/(T−1)) Σ_i (L_i^s − m)²,

the Student-t interval of the mean (the "±" of Li et al. 2017 and Finn et al. 2017), clipped to
the metric's range and withheld below ``MIN_TASKS_FOR_CI`` tasks (:func:`~.statistics.interval`).

A task whose adaptation diverged (a non-finite prediction or query loss) is diverged in every
metric: its loss is inf and its accuracy NaN, never the chance level of an argmax over NaN; a
summary over it is not finite and a table shows "diverged".
"""

from __future__ import annotations

import decimal
import math
import time
from dataclasses import dataclass, field

import numpy as np

from .. import _validation
from ..adapt import query_predictions
from ..models import MLP
from ..train.loop import progress_bar
from .statistics import MIN_TASKS_FOR_CI, interval
from ..data.taskset import TaskSet

__all__ = ["evaluate", "EvalReport"]


# --- the report ----------------------------------------------------------------------------------
@dataclass(repr=False)
class EvalReport:
    """Per-task query losses (S, T) after each of ``steps`` adaptation steps (and accuracies for
    classifiers, else None); ``summary()`` gives mean ± 95% CI per step.

    ``losses`` and ``accuracies`` are kept as the report's own read-only float64 copies (the
    caller's arrays may change afterwards without changing the report or slipping a value past
    its checks). Raises TypeError for a ``name`` that is no str or arrays that hold no numbers,
    ValueError for shapes that do not match ``steps``, a negative loss or an accuracy outside
    [0, 1]."""

    name: str
    steps: tuple
    losses: np.ndarray
    accuracies: np.ndarray | None = None
    lr: object = None
    info: dict = field(default_factory=dict)

    def __post_init__(self):
        # a report built by hand (from saved per-task values) is checked as evaluate's are made:
        # a losses row per step count, the same (S, T) for accuracies, values in the metric's
        # range (the intervals are clipped to it), else its summary would be wrong or fail later
        if not isinstance(self.name, str):
            raise TypeError(f"name must be a str, got {type(self.name).__name__} {self.name!r}")
        self.steps = tuple(_validation.step_counts("steps", self.steps))
        self.losses = _validation.owned(_validation.float_array(
            "losses", self.losses, ndim=2, dtype=np.float64, finite=False), self.losses)
        shape = (len(self.steps), self.losses.shape[1])
        if self.losses.shape != shape or shape[1] == 0:
            raise ValueError(f"losses must have shape (len(steps), n_tasks) = ({shape[0]}, T) "
                             f"with T >= 1, got {self.losses.shape}")
        if (self.losses < 0).any() or np.isneginf(self.losses).any():
            bad = tuple(int(i) for i in np.argwhere(self.losses < 0)[0])
            raise ValueError(f"losses must be >= 0 (a loss's interval is clipped to [0, inf)), "
                             f"found {self.losses[bad]} at index {bad}")
        if self.accuracies is not None:
            self.accuracies = _validation.owned(_validation.float_array(
                "accuracies", self.accuracies, ndim=2, dtype=np.float64, finite=False),
                self.accuracies)
            if self.accuracies.shape != self.losses.shape:
                raise ValueError(f"accuracies must have the shape of losses "
                                 f"{self.losses.shape}, got {self.accuracies.shape}")
            out = ~np.isnan(self.accuracies) & ((self.accuracies < 0) | (self.accuracies > 1))
            if out.any():
                bad = tuple(int(i) for i in np.argwhere(out)[0])
                raise ValueError(f"accuracies must be in [0, 1] (NaN for a diverged task), "
                                 f"found {self.accuracies[bad]} at index {bad}")
            self.accuracies = _validation.frozen(self.accuracies)
        self.losses = _validation.frozen(self.losses)

    @property
    def n_tasks(self) -> int:
        return int(self.losses.shape[1])

    def summary(self, confidence=0.95, min_tasks=MIN_TASKS_FOR_CI) -> list:
        """One dict per step count: steps, loss, loss_ci (the half-width, NaN when there is no
        interval), loss_interval ([low, high] clipped to the metric's range, or None),
        loss_clipped (whether it was), and the same for accuracy; plus too_few_tasks (fewer than
        ``min_tasks``: means only)."""
        rows = []
        metrics = [("loss", self.losses, (0.0, math.inf))]
        if self.accuracies is not None:
            metrics.append(("accuracy", self.accuracies, (0.0, 1.0)))
        for j, s in enumerate(self.steps):
            row = {"steps": int(s)}
            for name, values, bounds in metrics:
                iv = interval(values[j], confidence, bounds, min_tasks)
                row[name], row[name + "_ci"] = iv.mean, iv.half_width
                row[name + "_interval"] = None if math.isnan(iv.low) else [iv.low, iv.high]
                row[name + "_clipped"] = iv.clipped
                row["too_few_tasks"] = iv.too_few
            rows.append(row)
        return rows

    def at(self, steps, metric="loss"):
        """(mean, 95% half-width) of ``metric`` ("loss" or "accuracy") after ``steps`` steps."""
        if steps not in self.steps:
            raise ValueError(f"steps: this report has step counts {tuple(self.steps)}, not "
                             f"{steps!r}")
        if metric not in ("loss", "accuracy") or (metric == "accuracy"
                                                  and self.accuracies is None):
            have = "'loss'" + (" or 'accuracy'" if self.accuracies is not None else "")
            raise ValueError(f"metric must be {have} for this report, got {metric!r}")
        row = self.summary()[list(self.steps).index(steps)]
        return row[metric], row[metric + "_ci"]

    def __repr__(self):
        metrics = "loss, accuracy" if self.accuracies is not None else "loss"
        rows = self.summary()
        last = rows[-1] if rows else None
        tail = ""
        if last is not None:
            key = "accuracy" if self.accuracies is not None else "loss"
            shown = f"{last[key]:.4g}"
            tail = f", {key} after {last['steps']} = {shown}"
            if not math.isnan(last[key + "_ci"]) and math.isfinite(last[key]):
                # rounded up, and widened by the mean's rounding: never narrower than computed
                h = last[key + "_ci"] + abs(last[key] - float(shown))
                tail += f" ± {_up_2_significant(h)}"
        return (f"EvalReport({self.name!r}, n_tasks={self.n_tasks}, "
                f"steps={tuple(int(s) for s in self.steps)}, metrics=({metrics}){tail})")

    def to_dataframe(self, confidence=0.95, min_tasks=MIN_TASKS_FOR_CI):
        """A pandas DataFrame, one row per step count of :meth:`summary`: ``method`` (the
        report's name), ``steps``, ``n_tasks``, ``loss`` (the mean over tasks), ``loss_ci`` (the
        half-width), ``loss_low``/``loss_high`` (the interval's ends clipped to [0, ∞); NaN with
        too few tasks), ``loss_clipped``, the same five ``accuracy*`` columns for classifiers, and
        ``too_few_tasks``. Concatenate several with ``pandas.concat``. ImportError without pandas
        (``pip install pandas``)."""
        pd = _validation.pandas("EvalReport.to_dataframe")
        metrics = ["loss"] + (["accuracy"] if self.accuracies is not None else [])
        records = []
        for row in self.summary(confidence, min_tasks):
            rec = {"method": self.name, "steps": row["steps"], "n_tasks": self.n_tasks}
            for m in metrics:
                low, high = row[m + "_interval"] or (math.nan, math.nan)
                rec.update({m: row[m], m + "_ci": row[m + "_ci"], m + "_low": low,
                            m + "_high": high, m + "_clipped": row[m + "_clipped"]})
            rec["too_few_tasks"] = row["too_few_tasks"]
            records.append(rec)
        return pd.DataFrame.from_records(records, columns=list(records[0]) if records else None)

    def to_dict(self) -> dict:
        """Plain data: name, steps, n_tasks, lr, info and the summary rows."""
        lr = self.lr       # a scalar however given (np.float32, 0-d array) as its value
        if lr is not None and not isinstance(lr, str):
            lr = float(lr) if np.ndim(lr) == 0 else "learned"
        return {"name": self.name, "steps": [int(s) for s in self.steps],
                "n_tasks": self.n_tasks, "lr": lr, "info": dict(self.info),
                "summary": self.summary()}


def _up_2_significant(x):
    """``x`` >= 0 rounded up to 2 significant digits, as text (``.2g`` rounds to nearest)."""
    if not math.isfinite(x) or x == 0.0:
        return f"{x:.2g}"
    d = decimal.Decimal(repr(x))
    q = d.quantize(decimal.Decimal(1).scaleb(d.adjusted() - 1), decimal.ROUND_CEILING)
    return f"{float(q):.2g}"


# --- evaluation ----------------------------------------------------------------------------------
def _row_losses(loss, pred, y):
    """Row losses (n,) and correctness (n,) or None, in float64."""
    z = np.asarray(pred, dtype=np.float64)
    if loss == "mse":
        z = z.reshape(y.shape[0], -1)
        return ((z - y.reshape(z.shape)) ** 2).mean(axis=1), None
    if loss == "logistic":
        z = z.reshape(-1)
        # log(1 + e^{−z}) for y = 1, log(1 + e^{z}) for y = 0
        row = (np.maximum(z, 0.0) - y * z) + np.log1p(np.exp(-np.abs(z)))
        return row, ((z > 0) == (y > 0.5))
    m = z.max(axis=1, keepdims=True)
    labels = y.astype(np.int64)
    # (max − z_y) + log Σ exp(z − max): never m + log(...) − z_y, which loses log 2 at z ~ 1e16;
    # the sum as 1 + the others' through log1p, so a confident row keeps its small loss
    e = np.exp(z - m)
    e[np.arange(z.shape[0]), z.argmax(axis=1)] = 0.0
    row = (m[:, 0] - z[np.arange(z.shape[0]), labels]) + np.log1p(e.sum(axis=1))
    return row, (z.argmax(axis=1) == labels)


def _rule(model, theta, lr, learner):
    """(θ, lr, head_only, lr for the report) from the arguments."""
    if learner is None:
        lr = 0.01 if lr is None else lr
        return theta, lr, False, float(lr) if np.ndim(lr) == 0 else "learned"
    if learner.model != model:
        raise ValueError(f"learner's model {learner.model!r} differs from model {model!r}")
    theta, rates, head_only = learner.adapt_rule(learner.check_params(theta))
    if lr is None:
        lr = rates
    # a scalar however given (0.01, np.float32(0.01), a 0-d array) is shown as its value
    return theta, lr, head_only, float(lr) if np.ndim(lr) == 0 else "learned"


def evaluate(model, theta, test_tasks, *, steps=(0, 1, 5, 10), lr=None, learner=None,
             name=None, n_threads=None, progress=True) -> EvalReport:
    """Few-shot evaluation of θ on held-out tasks.

    For every task of ``test_tasks`` (a TaskSet whose tasks all have support and query rows) and
    every s in ``steps``: adapt θ by s SGD steps on the support rows, then score the query rows.

    lr: the inner rate (a scalar or one per parameter); None uses the learner's (its inner_lr,
    or Meta-SGD's learned rates), else 0.01. learner: apply its adaptation rule (Meta-SGD:
    ``theta`` holds θ and the rates packed; ANIL: only the output layer adapts; ProtoNet: no
    steps, ``steps=(0,)``, its query rows scored by the prototype classifier's logits).
    progress: a tqdm bar (task evaluations done — tasks × step counts —, mean query loss so far,
    evaluations/s), shown once
    the evaluation has lasted a second and updated at least every second; False for none; or the
    caller's open bar (any object with tqdm's ``update`` and ``set_postfix``), advanced and left
    open. With a bar the tasks go to the core in chunks sized to take ~0.25 s each; each task is
    adapted on its own, so the report is bit-identical to one call over all tasks.
    Returns an :class:`EvalReport` (per-task losses, and accuracies for classifiers).
    """
    if not isinstance(model, MLP):
        raise TypeError(f"model must be a metacore model (MLP), got {type(model).__name__}")
    if not isinstance(test_tasks, TaskSet):
        raise TypeError(f"test_tasks must be a TaskSet, got {type(test_tasks).__name__}")
    if name is not None and not isinstance(name, str):   # tables, plots and JSON print it
        raise TypeError(f"name must be a str or None, got {type(name).__name__} {name!r}")
    if learner is not None and not (hasattr(learner, "adapt_rule")
                                    and hasattr(learner, "query_outputs")):
        raise TypeError(f"learner must be a metacore learner (mc.MAML(model), ...) or None, got "
                        f"{type(learner).__name__} {learner!r}")
    steps = tuple(_validation.step_counts("steps", steps))
    if (test_tasks.n_query == 0).any() or (test_tasks.n_support == 0).any():
        raise ValueError("test_tasks: every task needs support rows to adapt on and query rows "
                         "to score")
    theta, lr, head_only, lr_shown = _rule(model, theta, lr, learner)
    theta = _validation.theta("theta", theta, model.n_params)

    ts = test_tasks
    rows, _ = ts.query_rows()
    y_query = np.asarray(ts.y[rows], dtype=np.float64)
    bounds = np.concatenate([[0], np.cumsum(ts.n_query)[:-1]])
    losses = np.empty((len(steps), ts.n_tasks))
    head = model.loss if learner is None else learner.query_head
    accs = None if head == "mse" else np.empty((len(steps), ts.n_tasks))
    if not (hasattr(progress, "update") and hasattr(progress, "set_postfix")):
        progress = _validation.boolean("progress", progress)
    bar = progress_bar(progress, len(steps) * ts.n_tasks,
                       f"evaluate {name or (type(learner).__name__ if learner else 'theta')}",
                       unit="task", delay=1.0)

    def outputs(part, s):  # query outputs of the tasks ``part`` after s steps
        if learner is None:
            return query_predictions(model, theta, part, steps=s, lr=lr, head_only=head_only,
                                     n_threads=n_threads)
        return learner.query_outputs(theta, part, steps=s, lr=lr, head_only=head_only,
                                     n_threads=n_threads)

    try:
        for j, s in enumerate(steps):
            pred = outputs(ts, s) if bar is None else _in_chunks(outputs, ts, s, bar)
            _score(j, pred, head, y_query, bounds, rows, losses, accs, ts.n_query)
            if bar is not None:
                # refresh=False: a refresh would draw the bar before tqdm's delay has passed
                bar.set_postfix(steps=s, loss=f"{np.mean(losses[j]):.4g}", refresh=False)
    finally:
        if bar is not None and isinstance(progress, bool):
            bar.close()
    if name is None:
        name = type(learner).__name__ if learner is not None else "theta"
    return EvalReport(name=name, steps=steps, losses=losses, accuracies=accs, lr=lr_shown)


_CHUNK_SECONDS = 0.25   # a bar's update interval: well under tqdm's one second


def _in_chunks(outputs, ts, s, bar):
    """``outputs(ts, s)`` computed over consecutive chunks of tasks, the chunk size adapted so
    each core call takes about _CHUNK_SECONDS, advancing ``bar`` by the tasks done."""
    parts, start, size = [], 0, min(ts.n_tasks, 32)
    while start < ts.n_tasks:
        stop = min(ts.n_tasks, start + size)
        t0 = time.perf_counter()
        part = ts if (start, stop) == (0, ts.n_tasks) else ts.subset(slice(start, stop))
        parts.append(np.asarray(outputs(part, s)))
        elapsed = time.perf_counter() - t0
        bar.update(stop - start)
        size = max(1, min(4 * size, int(size * _CHUNK_SECONDS / max(elapsed, 1e-6))))
        start = stop
    if len(parts) == 1:
        return parts[0]
    if parts[0].ndim == 2:  # class logits padded per call to its own N_max with −inf
        width = max(p.shape[1] for p in parts)
        parts = [np.pad(p, ((0, 0), (0, width - p.shape[1])), constant_values=-np.inf)
                 for p in parts]
    return np.concatenate(parts)


def _score(j, pred, head, y_query, bounds, rows, losses, accs, n_query):
    """Row j of losses (and accs) from the query outputs ``pred`` of every task."""
    with np.errstate(over="ignore", invalid="ignore"):   # a diverged task scores inf
        row_loss, correct = _row_losses(head, pred, y_query)
        losses[j] = np.add.reduceat(row_loss, bounds) / n_query
    # NaN or +inf outputs mean divergence; a −inf logit is a class the task lacks (ProtoNet
    # pads episodes of fewer classes) and the loss already tells if every class is −inf.
    out = np.asarray(pred, dtype=np.float64).reshape(rows.shape[0], -1)
    bad_rows = np.isnan(out) | (out == np.inf)
    diverged = ~np.isfinite(losses[j]) | (np.add.reduceat(bad_rows.any(axis=1), bounds) > 0)
    losses[j][diverged] = np.inf
    if accs is not None:
        accs[j] = np.add.reduceat(correct.astype(np.float64), bounds) / n_query
        accs[j][diverged] = np.nan      # not the chance level of an argmax over NaN
