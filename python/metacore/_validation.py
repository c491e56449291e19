"""The one argument checker: every public entry point validates through these helpers, so every
message names the argument, what was expected and what came."""

from __future__ import annotations

import numbers
import os

import numpy as np

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
INT64_MIN, INT64_MAX = -2**63, 2**63 - 1    # what the core's int64 counts and sizes hold
UINT64_MAX = 2**64 - 1
NUMERIC_KINDS = "biuf"                      # bool, ints, floats: what numeric arguments may hold
_FAST_DTYPES = FLOAT_DTYPES                 # native float32/float64: float_array's fast path


def _show(value):
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def scalar(value):
    """The scalar a 0-d NumPy array holds (``np.array(3)`` -> 3, as NumPy's own indexing takes
    it); anything else as it is. The one rule every scalar argument follows: integer, real
    and boolean ones, and ``lr``."""
    if isinstance(value, np.ndarray) and value.ndim == 0:
        return value[()]
    return value


def is_integer(value):
    """Whether ``value`` is an integer argument: a Python or NumPy integer, or a 0-d array of
    one (:func:`scalar`); never a bool (True is no count), a float (3.0 included) or an array
    of one or more dimensions."""
    value = scalar(value)
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def integer(name, value, minimum=None, maximum=None):
    """An integer (:func:`is_integer`: NumPy integers and 0-d integer arrays accepted, bools and
    floats refused) within [minimum, maximum], as a Python int; a bound left None is the
    int64 one, as the core counts in int64 (so 2**63 is a ValueError naming ``name``, never
    pybind11's signature dump). Pass a larger ``maximum`` where the value never reaches the core."""
    if not is_integer(value):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__} {_show(value)}")
    value = int(scalar(value))
    minimum = INT64_MIN if minimum is None else minimum
    maximum = INT64_MAX if maximum is None else maximum
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {value}")
    return value


def real(name, value, minimum=None, maximum=None, min_open=False, max_open=False):
    """A finite real number (a 0-d array as the number it holds, :func:`scalar`; bools refused)
    within [minimum, maximum]; ``min_open``/``max_open`` exclude the end."""
    value = scalar(value)
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {_show(value)}")
    value = float(value)
    if not np.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    if minimum is not None and (value < minimum or (min_open and value == minimum)):
        op = ">" if min_open else ">="
        raise ValueError(f"{name} must be {op} {minimum}, got {value}")
    if maximum is not None and (value > maximum or (max_open and value == maximum)):
        op = "<" if max_open else "<="
        raise ValueError(f"{name} must be {op} {maximum}, got {value}")
    return value


def boolean(name, value):
    """A bool (numpy bools and 0-d bool arrays accepted; 0/1 and other truthy values refused)."""
    value = scalar(value)
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {type(value).__name__} {_show(value)}")
    return bool(value)


def optional_integer(name, value, minimum=None, maximum=None):
    """None, or an integer within [minimum, maximum]."""
    return None if value is None else integer(name, value, minimum=minimum, maximum=maximum)


def instance(name, value, types, what):
    """``value`` if it is one of ``types``; ``what`` says in words what was expected."""
    if not isinstance(value, types):
        raise TypeError(f"{name} must be {what}, got {type(value).__name__} {_show(value)}")
    return value


def choice(name, value, allowed):
    if not isinstance(value, str) or value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}, got {_show(value)}")
    return value


def int_sequence(name, value, min_len=1, minimum=None):
    try:
        items = list(value)
    except TypeError:
        raise TypeError(f"{name} must be a sequence of integers, got {type(value).__name__}") from None
    if len(items) < min_len:
        raise ValueError(f"{name} must have at least {min_len} entries, got {len(items)}")
    return [integer(f"{name}[{i}]", v, minimum=minimum) for i, v in enumerate(items)]


def step_counts(name, value):
    """Adaptation step counts: integers >= 0, increasing, each once (a report's rows, tables and
    curves follow their order)."""
    steps = int_sequence(name, value, minimum=0)
    if any(b <= a for a, b in zip(steps, steps[1:])):
        raise ValueError(f"{name} must be increasing, each step count once, got {tuple(steps)}")
    return steps


def seed(name, value):
    """A seed: an integer in [0, 2**64 - 1] (the core keys its generator on a uint64)."""
    return integer(name, value, minimum=0, maximum=UINT64_MAX)


def float_dtype(name, value):
    """np.float32 or np.float64 (anything np.dtype understands as one of them)."""
    try:
        dt = np.dtype(value)
    except TypeError:
        raise TypeError(f"{name} must be float32 or float64, got {_show(value)}") from None
    if dt not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be float32 or float64, got {dt}")
    return work_dtype(dt)


def work_dtype(dt):
    """The canonical working dtype equal to ``dt`` once in native byte order: one of
    FLOAT_DTYPES itself. Caches keyed by dtype use it, so an equal-but-distinct dtype object (one
    that crossed a process boundary, or carries metadata) finds the same entry."""
    dt = np.dtype(dt).newbyteorder("=")
    for known in FLOAT_DTYPES:
        if dt == known:
            return known
    raise TypeError(f"dtype must be float32 or float64, got {dt}")


def step_size(name, value, dtype):
    """A positive step size or epsilon ``value`` (already checked finite and > 0) that stays a
    normal, non-zero, finite number in the working ``dtype``: lr=1e-50 is 0 in float32, and a
    subnormal one is flushed to 0 by the core's arithmetic, silently freezing θ or dividing by 0."""
    dt = work_dtype(dtype)
    info = np.finfo(dt)
    if not value >= float(info.tiny):
        raise ValueError(f"{name}={value!r} is zero or subnormal in {dt} (the working dtype of "
                         f"θ): it must be >= {float(info.tiny):.3g}")
    if not value <= float(info.max):
        raise ValueError(f"{name}={value!r} exceeds {dt}'s range ({_range(dt)}), the working "
                         f"dtype of θ")
    return value


def rates(name, value, dtype, ndim=None, offset=0):
    """Per-parameter learning rates (Meta-SGD's, MAML++'s per-step ones, an ``lr`` array) as a
    C-contiguous array of the working ``dtype``: finite and in its range (as float_array), and
    every non-zero entry a normal number in it — an entry that is zero or subnormal there but not
    in what was given (1e-50 in float32) or a subnormal one (flushed to 0 by the core's arithmetic)
    would silently freeze its parameters, as a scalar rate would (step_size). Exact zeros are
    kept: a rate of 0 freezes a parameter on purpose. Negative rates are allowed (Meta-SGD's
    learned rates are not constrained). ``offset``: added to the index named in the message
    (the rates' position in a packed vector). Booleans are a TypeError (True is no rate)."""
    if as_array(name, value).dtype.kind == "b":
        raise TypeError(f"{name} must hold real rates, got booleans ({_show(value)})")
    arr = float_array(name, value, ndim=ndim, dtype=dtype)
    tiny = np.finfo(arr.dtype).tiny
    small = np.abs(arr) < tiny
    if small.any():
        source = as_array(name, value)
        bad = small & (source != 0) if source.shape == arr.shape else small & (arr != 0)
        if bad.any():
            at = tuple(int(i) for i in np.argwhere(bad)[0])
            given = source[at] if source.shape == arr.shape else arr[at]
            where = (at[0] + offset,) + at[1:] if at else at
            raise ValueError(f"{name} has the rate {float(given)!r} at index {where}, which is "
                             f"zero or subnormal in {arr.dtype} (the working dtype of θ): a "
                             f"non-zero rate must have magnitude >= {float(tiny):.3g} (or be "
                             f"exactly 0 to freeze its parameter)")
    return arr


def n_threads(value):
    """None = the OpenMP default (respects OMP_NUM_THREADS), -1 = all cores, k >= 1 = k threads."""
    if value is None:
        return None
    value = integer("n_threads", value, maximum=2**31 - 1)  # the core counts threads in an int
    if value == 0 or value < -1:
        raise ValueError(f"n_threads must be None, -1 (all cores) or >= 1, got {value}")
    return value


def _physical_memory():
    """Bytes of physical memory, or None where unknown."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def _human(n_bytes):
    n, unit = float(n_bytes), "B"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB", "ZiB", "YiB"):
        if n < 1024 or unit == "YiB":
            break
        n /= 1024
    return f"{n:.1f} {unit}"


def path(name, value):
    """os.fspath(value) for a path given as str, bytes or os.PathLike; TypeError naming the
    argument otherwise (os.fspath's own message names none)."""
    if not isinstance(value, (str, bytes, os.PathLike)):
        raise TypeError(f"{name} must be a path (str or os.PathLike), got "
                        f"{type(value).__name__} {_show(value)}")
    return os.fspath(value)


def fits_in_memory(what, n_bytes):
    """MemoryError naming ``what`` when ``n_bytes`` exceed the machine's physical memory: refuse
    before allocating, as an overcommitting OS may grant the memory and kill us when it is used."""
    mem = _physical_memory()
    if mem and n_bytes > mem:
        raise MemoryError(f"{what} would need {_human(n_bytes)}, more than this machine's "
                          f"{_human(mem)} of memory")


def not_masked(name, value):
    """``value``, unless it is a masked array: np.asarray (and scikit-learn's check_array) keep
    the data under the mask and drop the mask, so the masked entries would be used as values."""
    if isinstance(value, np.ma.MaskedArray):
        raise TypeError(f"{name} must not be a masked array: its mask would be ignored (drop the "
                        f"masked rows, or fill them with np.ma.filled, first)")
    return value


def as_array(name, value):
    """np.asarray(value), with conversion failures (ragged nesting, odd objects) as a TypeError
    naming the argument."""
    not_masked(name, value)
    try:
        return np.asarray(value)
    except Exception as exc:  # noqa: BLE001 - numpy raises ValueError, TypeError, OverflowError...
        raise TypeError(f"{name} must be array-like of numbers: {exc}") from None


def float_array(name, value, ndim=None, dtype=None, finite=True):
    """Convert an array-like of reals to a C-contiguous float array (a copy only when needed).

    ``dtype`` None keeps float32/float64 input and turns anything else into float64.
    ``ndim`` is an int or a tuple of allowed ranks.
    """
    if (type(value) is np.ndarray and value.dtype in _FAST_DTYPES
            and (f := value.flags).c_contiguous and f.aligned
            and (ndim is None or value.ndim == ndim
                 or (not isinstance(ndim, int) and value.ndim in ndim))
            and (dtype is None or value.dtype == dtype)):
        # Fast path (the latency calls): already what the core takes; a non-finite entry falls
        # through to the checks below, which name it.
        if not finite or _all_finite(value):
            return value
    arr = as_array(name, value)
    # by kind, not issubdtype(np.number): timedelta64 counts as a number there
    if arr.dtype.kind not in NUMERIC_KINDS:
        raise TypeError(f"{name} must hold real numbers, got dtype {arr.dtype}"
                        f"{object_entries(name, arr)}")
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if arr.ndim not in allowed:
            want = " or ".join(f"{k}-D" for k in allowed)
            raise ValueError(f"{name} must be {want}, got shape {arr.shape}")
    if dtype is None:
        dtype = arr.dtype if arr.dtype.newbyteorder("=") in FLOAT_DTYPES else np.float64
    dtype = np.dtype(dtype).newbyteorder("=")
    if dtype in FLOAT_DTYPES:
        dtype = work_dtype(dtype)
    if not (arr.flags.c_contiguous and arr.flags.aligned and arr.dtype == dtype):  # a copy
        fits_in_memory(f"{name} (shape {arr.shape}) as contiguous {dtype}",
                       arr.size * dtype.itemsize)
    source = arr
    with np.errstate(over="ignore"):      # a finite value beyond the dtype's range: named below
        arr = _contiguous(arr, dtype)
    if finite and arr.size and not _all_finite(arr):
        bad = np.argwhere(~np.isfinite(arr))[0]
        where = tuple(int(i) for i in bad)
        _beyond_range(name, source, dtype, where)
        raise ValueError(f"{name} must be finite, found {arr[where]} at index {where}")
    return arr


def owned(arr, source):
    """``arr`` (what :func:`float_array` and friends made of ``source``) as memory nobody else
    holds, for an object that keeps it: ``arr`` itself when it is a new array made from an
    ndarray, else a private copy. float_array returns the caller's own array when it already has
    the right dtype and layout, and a view (owndata False) may point into the caller's memory;
    a non-ndarray source (a list, or an object handing out its buffer) is copied too, as we
    cannot tell. Kept as given, the caller's later writes would change what was validated (a
    weight turned negative, a pool turned NaN) and freezing it would change the caller's array."""
    if arr is source or not arr.flags.owndata or not isinstance(source, np.ndarray):
        arr = copy_in_pieces(arr)     # Ctrl-C is handled during a large copy
    return arr


def frozen(arr):
    """A read-only view of ``arr``, made read-only itself (so an array only the caller of
    :func:`owned` holds): a view's flag cannot be turned back on while its base is read-only,
    so nobody can re-enable writes through the attribute that exposes it."""
    arr.flags.writeable = False
    return arr.view()


def object_entries(name, arr, limit=1 << 20):
    """What an object array holds, for float_array's refusal: its first entry that is no real
    number (a missing value: pandas' NA, None), or, when every entry looked at is one, where such
    an array comes from and how to convert it ("got dtype object" alone did not say that a
    DataFrame with nullable Float64 columns is one)."""
    if arr.dtype != object:
        return ""
    for count, (at, value) in enumerate(np.ndenumerate(arr)):
        if count >= limit:
            break
        if value is None or type(value).__name__ in ("NAType", "NaTType"):
            return (f" (a missing value, {value!r}, at index {at}: drop or fill the missing "
                    f"values first)")
        if not isinstance(value, (numbers.Real, np.bool_)):
            return f" ({type(value).__name__} {_show(value)} at index {at})"
    return (f" (Python objects, e.g. from a DataFrame with nullable Float64/Int64 columns: "
            f"convert with np.asarray({name}, dtype=float) first)")


# Elements per NumPy call when checking or converting a large array: Python handles a pending
# Ctrl-C between calls (one isfinite or cast over 2^27 entries took about a second).
PIECE = 1 << 20


def _all_finite(arr):
    """``np.isfinite(arr).all()`` for a C-contiguous array, in pieces of PIECE entries (and
    without a boolean array the size of ``arr``)."""
    if arr.size <= PIECE:
        return bool(np.isfinite(arr).all())
    flat = arr.reshape(-1)
    return all(np.isfinite(flat[a:a + PIECE]).all() for a in range(0, flat.size, PIECE))


def _contiguous(arr, dtype):
    """``np.ascontiguousarray(arr, dtype=dtype)``, converted in pieces along the first axis when
    large (the same values: the same cast, entry by entry)."""
    if (arr.flags.c_contiguous and arr.dtype == dtype) or arr.ndim == 0 or arr.size <= PIECE:
        # 'A': also aligned to the dtype, which ascontiguousarray does not ensure (a buffer at an
        # odd byte offset stays as it is) and the core's bindings refuse
        return np.require(arr, dtype=dtype, requirements=["C", "A"])
    return _copy_by_rows(arr, dtype)


def copy_in_pieces(arr):
    """A C-contiguous copy of ``arr`` (``np.array(arr, order="C")``), made in pieces of about
    PIECE entries along the first axis so that Ctrl-C is handled during a large copy."""
    if arr.ndim == 0 or arr.size <= PIECE:
        return np.array(arr, order="C", copy=True)
    return _copy_by_rows(arr, arr.dtype)


def _copy_by_rows(arr, dtype):
    """A new C-contiguous ``dtype`` array of ``arr``'s values, written about PIECE entries at a
    time along the first axis."""
    out = np.empty(arr.shape, dtype=dtype)
    step = max(1, PIECE // max(1, arr[0].size))
    for a in range(0, arr.shape[0], step):
        out[a:a + step] = arr[a:a + step]
    return out


def _beyond_range(name, source, dtype, where):
    """ValueError when ``source[where]`` is finite but became ±inf in ``dtype`` (a float64 value
    above float32's largest, ±3.4e38): out of range, not infinite, and the message says so."""
    value = source[where]
    if source.dtype.kind == "f" and not np.isfinite(value):
        return
    if dtype.kind != "f":
        return
    raise ValueError(f"{name} has {float(value)!r} at index {where}, which exceeds {dtype}'s range "
                     f"({_range(dtype)}), the dtype requested: rescale the data, or use float64")


def _range(dtype):
    """"±3.4e38" for float32: the largest finite magnitude of a float dtype, as people write it."""
    return "±" + f"{float(np.finfo(dtype).max):.2g}".replace("e+", "e")


def in_dtype_range(name, value, dtype):
    """A finite real ``value`` that stays finite in ``dtype`` (a float64 number above float32's
    largest, ±3.4e38, becomes inf there): ValueError naming ``name`` and the range otherwise."""
    dt = work_dtype(dtype)
    if not abs(value) <= float(np.finfo(dt).max):
        raise ValueError(f"{name}={value!r} exceeds {dt}'s range ({_range(dt)}), the working "
                         f"dtype of θ")
    return value


def theta(name, value, n_params, dtype=None):
    """θ as a 1-D float32/float64 array of length n_params (any length when None; dtype kept,
    in native byte order; others refused)."""
    arr = as_array(name, value)
    if arr.dtype.kind == "f" and arr.dtype.newbyteorder("=") in FLOAT_DTYPES:
        if dtype is None:
            dtype = work_dtype(arr.dtype)     # read-only input: a byte-swapped θ is converted
    elif dtype is None:
        raise TypeError(f"{name} must be a float32 or float64 array, got dtype {arr.dtype}"
                        f"{object_entries(name, arr)}")
    # Shape before conversion: a wrong-sized view (even a huge one) is refused without a copy.
    if n_params is not None and arr.ndim == 1 and arr.shape[0] != n_params:
        raise ValueError(f"{name} must have length {n_params} (the model's n_params), "
                         f"got {arr.shape[0]}")
    return float_array(name, arr, ndim=1, dtype=dtype)


def pandas(what):
    """The pandas module, imported on first use by ``what`` (e.g. ``"EvalReport.to_dataframe"``);
    ImportError naming ``pip install pandas`` when it is not installed (pandas is optional)."""
    try:
        import pandas as pd
    except ImportError:
        raise ImportError(f"{what} needs pandas, which is optional: pip install pandas") from None
    return pd


def renamed_text(text, names, strict=()):
    """``text`` (an error message about the arguments a caller's values were passed down as)
    with each argument name of ``names`` (argument -> the caller's name for it) standing as a word
    replaced by the caller's name ('lr=1e-320 is zero ...' -> 'learning_rate_init=1e-320 is zero
    ...'); names in ``strict`` (ordinary words: 'steps', 'scale') only where they read 'name=' or
    'name must'. The one renaming used by the scikit-learn estimators and
    the CLI's config errors. The arguments of a repr quoted in the message (``linear(steps=3)``,
    ``Adam(lr=0.001)``) are the object's own and stay as they are."""
    import re

    def rename(piece):
        for name, new in names.items():
            tail = r"(?=\s*=|\s+must\b)" if name in strict else r"(?![\w.])"
            piece = re.sub(rf"(?<![\w.]){re.escape(name)}{tail}", new.replace("\\", r"\\"),
                           piece)
        return piece
    pieces, at = [], 0
    for start, end in _repr_spans(text) + [(len(text), len(text))]:
        pieces += [rename(text[at:start]), text[start:end]]
        at = end
    return "".join(pieces)


def _repr_spans(text):
    """The (start, end) spans of ``Name(...)`` in ``text``, parentheses balanced, outermost only."""
    import re
    spans, at = [], 0
    for m in re.finditer(r"[A-Za-z_][\w.]*\(", text):
        if m.start() < at:
            continue
        depth, i = 0, m.end() - 1
        while i < len(text):
            depth += {"(": 1, ")": -1}.get(text[i], 0)
            if depth == 0:
                break
            i += 1
        at = i + 1
        spans.append((m.start(), min(at, len(text))))
    return spans


def rename_in(exc, names, strict=()):
    """``exc`` itself (same type, attributes and traceback) with its message passed through
    :func:`renamed_text`; returns it, for ``raise rename_in(exc, ...)``."""
    if exc.args and isinstance(exc.args[0], str):
        exc.args = (renamed_text(exc.args[0], names, strict),) + tuple(exc.args[1:])
    return exc
