"""Arrays with the same values in other layouts and memory kinds, for the tests that check every
entry point gives the plain array's result (test_array_inputs) or refuses it clearly
(test_bad_input)."""

from __future__ import annotations

import numpy as np

LAYOUTS = ("plain", "big_endian", "strided", "negative_strides", "fortran", "readonly",
           "memmap", "memmap_readonly", "view", "unaligned")


def layout(a, how, tmp_path=None):
    """``a`` with the same values and dtype in another layout or memory: one of LAYOUTS."""
    a = np.ascontiguousarray(a)
    if how == "plain":
        return a.copy()
    if how == "big_endian":
        return a.astype(a.dtype.newbyteorder(">"))
    if how == "strided":
        big = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), dtype=a.dtype)
        big[..., ::2] = a
        return big[..., ::2]
    if how == "negative_strides":
        return a[::-1].copy()[::-1]
    if how == "fortran":
        return np.asfortranarray(a)
    if how == "readonly":
        b = a.copy()
        b.flags.writeable = False
        return b
    if how in ("memmap", "memmap_readonly"):
        path = tmp_path / f"m{len(list(tmp_path.iterdir()))}.dat"
        m = np.memmap(path, dtype=a.dtype, mode="w+", shape=a.shape)
        m[...] = a
        m.flush()
        return m if how == "memmap" else np.memmap(path, dtype=a.dtype, mode="r",
                                                   shape=a.shape)
    if how == "view":           # a C-contiguous view into a larger, writeable buffer
        big = np.zeros((a.size + 3,), dtype=a.dtype)
        big[1:a.size + 1] = a.reshape(-1)
        return big[1:a.size + 1].reshape(a.shape)
    if how == "unaligned":      # C-contiguous, but at an odd byte offset of its buffer
        buf = np.zeros(a.nbytes + 1, dtype=np.uint8)
        out = np.ndarray(a.shape, dtype=a.dtype, buffer=buf, offset=1)
        out[...] = a
        assert not out.flags.aligned and out.flags.c_contiguous
        return out
    raise AssertionError(how)
