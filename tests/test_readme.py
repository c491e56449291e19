"""Every Python snippet in the README runs as written: each ```python block is extracted and run
in a fresh interpreter, in an empty folder, against the metacore under test."""

import os
import pathlib
import re
import subprocess
import sys

import pytest

import metacore as mc

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)


def test_the_readme_has_snippets():
    assert len(BLOCKS) >= 5


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_snippet_runs_as_written(index, tmp_path):
    source = BLOCKS[index]
    for module, marks in (("ray", ("RayBackend",)), ("sklearn", ("sklearn",)),
                          ("PIL", ("datasets.omniglot",)), ("scipy", ("datasets.school",))):
        if any(m in source for m in marks):
            pytest.importorskip(module)
    package = str(pathlib.Path(mc.__file__).resolve().parents[1])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        p for p in (package, os.environ.get("PYTHONPATH")) if p), MPLBACKEND="Agg")
    run = subprocess.run([sys.executable, "-c", source], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, f"README snippet {index} failed:\n{source}\n{run.stderr[-3000:]}"


TOML_BLOCKS = re.findall(r"```toml\n(.*?)```", README.read_text(encoding="utf-8"), re.S)


@pytest.mark.parametrize("index", range(len(TOML_BLOCKS)))
def test_readme_toml_snippet_is_a_valid_experiment(index):
    """Every ```toml block of the README is an experiment file `metacore train` accepts."""
    from metacore.app import config
    assert config.loads(TOML_BLOCKS[index]).to_dict()
