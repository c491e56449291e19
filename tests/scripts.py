"""The repository's scripts (benchmarks/, examples/) loaded as modules, so tests can call their
functions: they are files to run, not part of the installed package."""

import importlib.util
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]


def load(relative_path, name):
    """The script at ``ROOT / relative_path`` imported as the module ``name``."""
    spec = importlib.util.spec_from_file_location(name, ROOT / relative_path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
