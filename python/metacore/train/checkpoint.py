"""The one checkpoint format, written by :func:`save` (and by ``metacore train``), read by
:func:`load`: one ``.npz`` file holding the arrays and a JSON description (the ``"meta"`` entry, a
string array), read back with ``allow_pickle=False``.

A checkpoint holds the train state (:class:`~metacore.train.state.Checkpoint`): θ, the model spec,
the problem (multi-task or the meta-learner and its meta-batch), the optimizer (settings and
moment buffers), the weighting (settings, α and its own state), the seed and the step counter, the
early-stopping record and, for meta-learning, the per-step losses the next evaluation's training
loss averages (``recent_losses``, an optional entry: files without it still load). Passed back to :func:`metacore.fit` it resumes the
run exactly: a run stopped at step s and resumed gives bit-identical results to one that never
stopped. Files are written atomically (a unique temporary file in the same folder, flushed to
disk, then renamed over the target), and :func:`load` reads only the entries it expects, after
checking their declared shapes.
"""

from __future__ import annotations

import copy
import json
import math
import os
import struct
import tempfile
import tokenize
import zipfile
import zlib

import numpy as np

from .. import _validation
from .. import optim as _optim
from .. import weighting as _weighting
from ..learners import from_dict as learner_from_dict
from ..models import MLP
from .result import FitResult
from .signal_guard import Dying, WriteGuard, interrupt_behind
from .state import Checkpoint

__all__ = ["save", "load", "write_atomic", "write_json", "json_text"]

FORMAT = "metacore-checkpoint"
VERSION = 2


def save(path, what, *, model=None, info=None):
    """Write ``what`` — a :class:`~metacore.FitResult`, a
    :class:`~metacore.train.state.Checkpoint` or θ (an array) — to ``path`` (written as given;
    ``.npz`` recommended), atomically: a unique temporary file in the same folder is written,
    flushed to disk and renamed over ``path``, so a crash or Ctrl-C mid-write leaves the previous
    file. ``model`` adds the model spec when saving a bare θ; ``info`` adds your own
    JSON-serialisable metadata (finite numbers). Returns the path.

    A bare θ must be a 1-D, finite float32 or float64 array (its dtype is kept; an integer θ is a
    TypeError naming ``theta``, as everywhere θ is taken), of the model's length when ``model``
    is given (else a ValueError). Raises TypeError for a ``model`` that is no metacore model or
    an ``info`` that is no dict, ValueError for ``info`` that is not JSON with finite numbers,
    and what :func:`write_atomic` raises for a bad ``path``."""
    if model is not None:
        model = _validation.instance("model", model, MLP, "a metacore model (MLP)")
    if isinstance(what, FitResult):
        ck = what.checkpoint()
    elif isinstance(what, Checkpoint):
        ck = what
    else:
        theta = _validation.theta("theta", what, model.n_params if model is not None else None)
        ck = Checkpoint(theta, model=model)
    if model is not None or info is not None:     # the caller's checkpoint stays as it was
        ck = copy.copy(ck)
    if model is not None:
        ck.model = model
    if info is not None:
        ck.info = dict(ck.info, **_validation.instance("info", info, dict, "a dict"))
    arrays, meta = _to_plain(ck)
    try:
        # refused, not nulled: a checkpoint reloads as it was saved
        meta_text = json_text(meta, non_finite="error", indent=None)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"info must be JSON-serialisable with finite numbers: {exc}") from None
    arrays["meta"] = np.array(meta_text)
    return write_atomic(path, lambda f: np.savez(f, **arrays))


def _umask():
    """The process's umask, read without changing it where the OS tells (Linux); else by the
    set-and-restore dance, once."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _umask()


def make_folder(path, what, create=True):
    """Creates the folder ``path`` (and its parents) for a run's files. NotADirectoryError
    naming ``what`` (the option or key that gave the path) when a file stands in the way — at
    ``path`` or at one of its parents — instead of the bare "[Errno 17] File exists".
    ``create=False`` only checks (before a long run that creates it at its end: an interrupted
    run then leaves no empty folder)."""
    blocked = NotADirectoryError(f"{what}: {os.fspath(path)!r} is not a folder (a file of that "
                                 f"name, or of one of its parent folders, is in the way): give "
                                 f"a folder for the run's files")
    if not create:
        at = os.path.abspath(os.fspath(path))
        while not os.path.exists(at) and os.path.dirname(at) != at:
            at = os.path.dirname(at)
        if not os.path.isdir(at):
            raise blocked
        return
    try:
        os.makedirs(path, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise blocked from None


def write_atomic(path, write):
    """Write a file at ``path`` with ``write(binary file)``, atomically and durably: into a unique
    temporary file in the same folder (so concurrent writers, threads or processes, never share
    one), flushed to disk, given the permissions a plain ``open`` would, then renamed over
    ``path``. Readers see the old file or the whole new one; the temporary file is removed on any
    error, Ctrl-C included. Returns ``path``. An empty ``path`` is a ValueError; a folder, or a
    path ending in a separator, an IsADirectoryError naming it; a missing folder a
    FileNotFoundError naming the folder; a ``path`` that is no path TypeError naming it."""
    path = _validation.path("path", path)
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    if not path:    # abspath('') is the current folder: the temporary file went into its parent
        raise ValueError("cannot write a file at an empty path: give a file name")
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise IsADirectoryError(f"cannot write {path}: it is a folder, not a file")
    # a trailing separator names a folder, present or not (the temporary file went beside it)
    if path.endswith(os.sep) or (os.altsep and path.endswith(os.altsep)):
        raise IsADirectoryError(f"cannot write {path}: it ends in {path[-1]!r}, so it names a "
                                f"folder, not a file")
    guard = WriteGuard()            # the signals' discipline: see signal_guard
    try:
        return _write_guarded(guard, path, folder, write)
    except Dying:       # raised at the edge of the guard's exit, before it ran: run it
        guard.finish()
        raise


def _write_guarded(guard, path, folder, write):
    with guard:
        guard.hold()                # until the try below owns the temporary file
        try:
            fd, tmp = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(path) + ".",
                                       suffix=".tmp")
        except BaseException as exc:
            guard.release()
            if not isinstance(exc, OSError):
                raise
            # name the folder asked for, not the temporary file's name
            what = ("no such folder" if isinstance(exc, (FileNotFoundError, NotADirectoryError))
                    else exc.strerror or type(exc).__name__)
            raise type(exc)(exc.errno, f"cannot write {path}: {what} {folder}") from None
        try:
            f = os.fdopen(fd, "wb")
        except BaseException:
            os.close(fd)
            os.remove(tmp)
            guard.release()
            raise
        try:
            guard.release()     # a signal that came meanwhile is raised here: the file goes
            with f:
                if hasattr(os, "fchmod"):   # mkstemp makes 0600 files; saved: 0666 & ~umask
                    os.fchmod(f.fileno(), 0o666 & ~_UMASK)
                write(f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException as exc:
            try:
                guard.hold()    # a second Ctrl-C waits until the file is gone
            finally:
                try:
                    f.close()
                    os.remove(tmp)
                except OSError:
                    pass
                finally:
                    guard.release()
            interrupt = interrupt_behind(exc)
            if interrupt is not exc:    # Ctrl-C inside np.savez surfaced as zipfile's ValueError
                raise interrupt.with_traceback(interrupt.__traceback__) from None
            raise
    return path


def json_text(data, *, non_finite="null", indent=2):
    """``data`` as strict JSON text (RFC 8259), the one JSON encoder of the package. JSON has no
    NaN or infinity (Python's json writes the tokens ``NaN``/``Infinity``, which strict parsers
    and JavaScript's JSON.parse reject): with ``non_finite="null"`` a non-finite float is
    written as ``null``; with ``"error"`` it is a ValueError (for data that must read back as
    it was). NumPy bool, integer and float (up to 64-bit) scalars are written as their values.
    Raises TypeError for a value JSON cannot hold and ValueError for a circular structure."""
    if non_finite not in ("null", "error"):
        raise ValueError(f"non_finite must be 'null' or 'error', got {non_finite!r}")
    data = _plain(data, set(), non_finite == "null")
    # allow_nan=False: the guarantee (a non-finite number left is an error, never a bare NaN)
    return json.dumps(data, indent=indent, allow_nan=False)


def _plain(value, open_ids, null):
    """``value`` with NumPy scalars as Python numbers and, when ``null``, non-finite floats as
    None; ``open_ids``: the containers being copied (a circular structure is a ValueError, as
    json.dumps says)."""
    if isinstance(value, float):          # np.float64 too
        return value if not null or math.isfinite(value) else None
    if isinstance(value, (np.bool_, np.integer, np.float16, np.float32)):
        return _plain(value.item(), open_ids, null)     # (a long double stays: TypeError)
    if isinstance(value, (dict, list, tuple)):
        if id(value) in open_ids:
            raise ValueError("Circular reference detected")
        open_ids.add(id(value))
        try:
            if isinstance(value, dict):
                return {k: _plain(v, open_ids, null) for k, v in value.items()}
            return [_plain(v, open_ids, null) for v in value]
        finally:
            open_ids.discard(id(value))
    return value


def write_json(path, data):
    """Write ``data`` to ``path`` as strict JSON (:func:`json_text`: NaN and ±inf as ``null``),
    UTF-8, atomically (:func:`write_atomic`). The text is made before any file is touched, so a
    value JSON cannot hold (TypeError) leaves the previous file as it was. Returns ``path``;
    raises what :func:`write_atomic` raises for a bad path."""
    text = json_text(data)
    return write_atomic(path, lambda f: f.write(text.encode("utf-8")))


def _to_plain(ck):
    arrays = {"theta": ck.theta}
    meta = {"format": FORMAT, "version": VERSION, "dtype": str(ck.theta.dtype),
            "n_params": int(ck.theta.shape[0]), "step": ck.step, "seed": ck.seed,
            "model": ck.model.spec() if ck.model is not None else None,
            "optimizer": ck.optimizer.to_dict() if ck.optimizer is not None else None,
            "weighting": ck.weighting.to_dict() if ck.weighting is not None else None,
            "moments": sorted(ck.moments), "info": ck.info, "best": None,
            "problem": ck.problem or None}
    for name, buf in ck.moments.items():
        arrays[f"moment_{name}"] = buf
    if ck.alpha is not None:
        arrays["alpha"] = np.asarray(ck.alpha)
        meta["n_tasks"] = int(arrays["alpha"].shape[0])
    if ck.weighting_state is not None:
        arrays["weighting_state"] = np.asarray(ck.weighting_state, dtype=np.float64)
        meta["weighting_size"] = int(arrays["weighting_state"].shape[0])
    if ck.recent_losses is not None:
        arrays["recent_losses"] = np.asarray(ck.recent_losses, dtype=np.float64)
        meta["n_recent"] = int(arrays["recent_losses"].shape[0])
    if ck.best is not None:
        arrays["best_theta"] = ck.best["theta"]
        meta["best"] = {k: v for k, v in ck.best.items() if k != "theta"}
    return arrays, meta


MAX_META_BYTES = 64 << 20    # the JSON description; anything larger is not a checkpoint
# What reading a damaged .npz raises besides OSError and ValueError: NumPy's .npy header parser
# on a mangled header (an unbalanced bracket: tokenize.TokenError; a stray character:
# SyntaxError), zipfile on damaged entry headers (flag bits of features it lacks:
# NotImplementedError; the encryption bit: RuntimeError; a short record: struct.error; damaged
# deflate data: zlib.error). Every reader of .npz files treats them as "the file is corrupt".
CORRUPT_NPZ_ERRORS = (zipfile.BadZipFile, OSError, EOFError, ValueError, tokenize.TokenError,
                      SyntaxError, NotImplementedError, RuntimeError, struct.error, zlib.error)
_NPY_HEADER_ERRORS = tuple(e for e in CORRUPT_NPZ_ERRORS if e is not ValueError)


def load(path) -> Checkpoint:
    """Read a file written by :func:`save` (no pickle). Only the entries the description names are
    read, each after its stored shape and dtype were checked against the description. A file that
    is not a checkpoint, is truncated or corrupt, or whose arrays do not match its description
    raises ValueError saying what is wrong; a missing file FileNotFoundError; a folder
    IsADirectoryError (naming the checkpoint.npz a run wrote in it, if any); a ``path`` that is
    no path TypeError naming it."""
    path = _validation.path("path", path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no checkpoint at {path!r}")
    if os.path.isdir(path):     # open() said only "[Errno 21] Is a directory: 'run'"
        inside = os.path.join(path, "checkpoint.npz")
        hint = f" (the one a run writes there is {inside!r})" if os.path.isfile(inside) else ""
        raise IsADirectoryError(f"{path!r} is a folder, not a checkpoint file (.npz): give the "
                                f"file{hint}")
    with open(path, "rb") as f:
        if f.read(4) != b"PK\x03\x04":     # not a zip archive: np.load would try a pickle
            raise ValueError(f"{path!r} is not a readable metacore checkpoint (.npz): a "
                             f"checkpoint is a zip archive, this file is not one")
        f.seek(0)
        try:
            z = np.load(f, allow_pickle=False)
        except CORRUPT_NPZ_ERRORS as exc:
            raise ValueError(f"{path!r} is not a readable metacore checkpoint (.npz): "
                             f"{exc}") from None
        with z:
            try:
                meta = _read_meta(path, z)
                return _from_plain(_Entries(z), meta)
            except (KeyError, TypeError, IndexError, AttributeError, OverflowError,
                    RecursionError, MemoryError) as exc:
                raise ValueError(f"{path!r}: the checkpoint is incomplete or corrupt "
                                 f"({exc!r})") from None
            except _NPY_HEADER_ERRORS as exc:     # zip and .npy damage; ValueError below
                raise ValueError(f"{path!r} is not a readable metacore checkpoint (.npz): "
                                 f"{exc}") from None
            except ValueError as exc:
                if str(exc).startswith(repr(path)):
                    raise
                raise ValueError(f"{path!r}: {exc}") from None


def _read_meta(path, z):
    if not hasattr(z, "files") or "meta" not in z.files:
        raise ValueError(f"{path!r} is not a metacore checkpoint: it has no 'meta' entry")
    if z.zip.getinfo("meta.npy").file_size > MAX_META_BYTES:
        raise ValueError(f"{path!r} is not a metacore checkpoint: its 'meta' entry is too large")
    try:
        text = z["meta"]
    except ValueError as exc:       # an object array: pickled data, never read
        raise ValueError(f"{path!r} is not a readable metacore checkpoint: {exc}") from None
    try:
        meta = json.loads(str(text))
    except RecursionError:      # e.g. 100,000 nested lists: no checkpoint nests that deep
        raise ValueError(f"{path!r}: the checkpoint's description is nested too deeply to be "
                         f"one") from None
    except ValueError as exc:
        raise ValueError(f"{path!r}: the checkpoint's description is not valid JSON: "
                         f"{exc}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"{path!r} is not a metacore checkpoint (format "
                         f"{meta.get('format') if isinstance(meta, dict) else None!r})")
    if meta.get("version") not in (1, VERSION):
        raise ValueError(f"{path!r} has checkpoint version {meta.get('version')!r}; this metacore "
                         f"reads versions 1 and {VERSION}")
    return meta


class _Entries:
    """The arrays of an open .npz, each read only after its header matched the description."""

    def __init__(self, z):
        self.z = z

    def __contains__(self, name):
        return name in self.z.files

    def expect(self, name, shape, dtype):
        if name not in self.z.files:
            raise ValueError(f"the checkpoint lacks the array {name!r}")
        with self.z.zip.open(f"{name}.npy") as f:
            version = np.lib.format.read_magic(f)
            read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                    else np.lib.format.read_array_header_2_0)
            stored_shape, _, stored_dtype = read(f)
        dtype = np.dtype(dtype)
        shape = tuple(shape) if shape is not None else stored_shape[:1]
        if stored_shape != shape or stored_dtype != dtype:
            raise ValueError(f"the checkpoint's {name!r} has shape {stored_shape} and dtype "
                             f"{stored_dtype}, its description says {shape} and {dtype}: the "
                             f"file is corrupt")
        # The declared size must fit in the stored entry: a header claiming 10^15 entries is
        # refused before numpy allocates for it.
        n_bytes = int(np.prod(shape, dtype=object)) * dtype.itemsize
        if n_bytes > self.z.zip.getinfo(f"{name}.npy").file_size:
            raise ValueError(f"the checkpoint's {name!r} declares shape {shape} ({n_bytes} "
                             f"bytes), more than its entry holds: the file is truncated or "
                             f"corrupt")
        a = self.z[name]
        if a.dtype.kind == "f" and not np.isfinite(a).all():
            raise ValueError(f"the checkpoint's {name!r} holds NaN or Inf: the file is corrupt")
        return a


def _best_record(best, step):
    """The early-stopping record (best score, its step, evaluations without improvement since),
    each field checked as the loop will use it: a damaged one is a ValueError here, not a
    TypeError in the middle of the resumed run."""
    if not isinstance(best, dict) or sorted(best) != ["bad_evals", "score", "step"]:
        raise ValueError(f"the checkpoint's early-stopping record must hold score, step and "
                         f"bad_evals, got {best!r}: the file is corrupt")
    try:
        return {"score": _validation.real("checkpoint best score", best["score"]),
                "step": _validation.integer("checkpoint best step", best["step"], minimum=0,
                                            maximum=step),
                "bad_evals": _validation.integer("checkpoint best bad_evals", best["bad_evals"],
                                                 minimum=0)}
    except TypeError as exc:
        raise ValueError(f"{exc}: the file is corrupt") from None


def _from_plain(entries, meta):
    dtype = _validation.float_dtype("checkpoint dtype", meta["dtype"])
    P = _validation.integer("checkpoint n_params", meta["n_params"], minimum=1)
    theta = entries.expect("theta", (P,), dtype)
    model = MLP.from_spec(meta["model"]) if meta["model"] is not None else None
    problem = meta.get("problem") or {}
    n_model = model.n_params if model is not None else P
    if problem.get("kind") == "meta":
        n_model = learner_from_dict(problem["learner"]).n_params
    if model is not None and n_model != P:
        raise ValueError(f"the checkpoint's θ has {P} entries but its model {model!r} has "
                         f"{n_model} parameters: the file is corrupt")
    opt = meta["optimizer"]
    if opt is not None and meta["version"] == 1:     # version 1 named the class
        opt = dict(opt, kind=opt.pop("name").lower())
    optimizer = _optim.from_dict(opt) if opt is not None else None
    weighting = _weighting.from_dict(meta["weighting"]) if meta["weighting"] is not None else None
    moments = {name: entries.expect(f"moment_{name}", (P,), dtype) for name in meta["moments"]}
    if optimizer is not None and sorted(optimizer.moments) != sorted(moments):
        raise ValueError(f"the checkpoint's moments {sorted(moments)} do not match its optimizer "
                         f"{optimizer!r}: the file is corrupt")
    if "v" in moments and (moments["v"] < 0).any():   # a mean of squares (Adam's second moment)
        raise ValueError("the checkpoint's moment 'v' (a mean of squared gradients) has a "
                         "negative entry: the file is corrupt")
    alpha = weighting_state = None
    if "n_tasks" in meta:
        n_tasks = _validation.integer("checkpoint n_tasks", meta["n_tasks"], minimum=0)
        alpha = entries.expect("alpha", (n_tasks,), dtype)
        if (alpha < 0).any() and not (weighting is not None and weighting.signed_alpha):
            i = int(np.argmax(alpha < 0))   # only IMTL-G and Aligned-MTL give negative ones
            raise ValueError(f"the checkpoint's task weights (alpha) must be non-negative for "
                             f"{weighting!r}, got {alpha[i]} for task {i}: the file is corrupt")
        if not problem:
            problem = {"kind": "multitask", "n_tasks": n_tasks}
        if "weighting_state" in entries:
            n = meta.get("weighting_size")      # version 1 did not declare it: any length
            shape = None if n is None else (
                _validation.integer("checkpoint weighting_size", n, minimum=0),)
            weighting_state = entries.expect("weighting_state", shape, np.float64)
    step = _validation.integer("checkpoint step", meta["step"], minimum=0)
    best = None
    if meta["best"] is not None:
        best = dict(_best_record(meta["best"], step),
                    theta=entries.expect("best_theta", (P,), dtype))
    recent = None
    if "n_recent" in meta:     # meta-learning's losses since the last evaluation on the grid
        n = _validation.integer("checkpoint n_recent", meta["n_recent"], minimum=0, maximum=step)
        recent = entries.expect("recent_losses", (n,), np.float64)
    seed = _validation.seed("checkpoint seed", meta["seed"])
    if not isinstance(meta["info"], dict):
        raise ValueError(f"the checkpoint's info must be a dict, got "
                         f"{type(meta['info']).__name__}")
    return Checkpoint(theta, model=model, optimizer=optimizer, moments=moments,
                      weighting=weighting, alpha=alpha, weighting_state=weighting_state, step=step,
                      seed=seed, best=best, info=meta["info"], problem=problem,
                      recent_losses=recent)
