"""Found by a review of the session's reliability work (issue 12): paths that name no file."""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import metacore as mc

SETTINGS = settings(max_examples=20, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


def test_an_empty_path_is_refused_and_nothing_is_written_beside_the_current_folder(
        tmp_path, monkeypatch):
    """mc.save('') (also `metacore predict --output ''`) made its temporary file in the parent of
    the current folder, abspath('') being the current folder, then failed renaming it to '' with
    a message naming the temporary file."""
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    with pytest.raises(ValueError, match="empty path") as err:
        mc.save("", np.zeros(3))
    assert ".tmp" not in str(err.value)
    assert sorted(os.listdir(tmp_path)) == ["here"] and os.listdir(here) == []


@SETTINGS
@given(name=st.sampled_from(["new", "p.csv", "ck.npz"]), exists=st.booleans(),
       sep=st.sampled_from([s for s in (os.sep, os.altsep) if s]))
def test_a_path_ending_in_a_separator_is_named_as_a_folder(tmp_path, name, exists, sep):
    """'runs/new/' (missing or a file) made a temporary file beside it and failed with
    "Not a directory: '.../..x1y2.tmp' -> 'runs/new/'": now refused naming the path."""
    folder = tmp_path / f"d{int(exists)}{name}"
    folder.mkdir(exist_ok=True)
    target = folder / name
    if exists:
        target.write_bytes(b"keep")
    path = str(target) + sep
    with pytest.raises(IsADirectoryError) as err:
        mc.save(path, np.zeros(3))
    msg = str(err.value)
    assert msg.startswith(f"cannot write {path}:") and ".tmp" not in msg, msg
    assert os.listdir(folder) == ([name] if exists else [])
    if exists:
        assert target.read_bytes() == b"keep"
