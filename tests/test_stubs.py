"""python/metacore/_core.pyi describes the compiled module exactly.

Two checks, because pybind11 functions carry no ``__text_signature__``, so mypy's stubtest cannot
inspect their parameters:
- stubtest: every public name exists on both sides, properties are properties, methods are methods,
  classes are classes, and the stub itself type-checks;
- the pybind11 docstrings: every stubbed function and method has the runtime's parameters, in
  order, with the same names, kinds (positional-only, keyword-only) and default values.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest

import metacore
from metacore import _core

HERE = pathlib.Path(__file__).resolve().parent
STUB = pathlib.Path(metacore.__file__).with_name("_core.pyi")
ALLOWLIST = HERE / "stubtest_allowlist.txt"

# pybind11 names the parameters it was given no py::arg for arg0, arg1, ...: positional only.
UNNAMED = re.compile(r"arg\d+")


def test_stubtest_finds_no_difference(tmp_path):
    if importlib.util.find_spec("mypy") is None:
        pytest.skip("mypy is not installed: pip install '.[test]' to check the stubs")
    pkg_root = os.path.dirname(os.path.dirname(metacore.__file__))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [pkg_root, env.get("PYTHONPATH")]))
    # In a fresh directory: no project mypy config applies; .mypy_cache stays out of the tree.
    proc = subprocess.run(
        [sys.executable, "-m", "mypy.stubtest", "metacore._core", "--allowlist", str(ALLOWLIST),
         "--concise"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"stubtest found differences:\n{proc.stdout}{proc.stderr}"


# --- parameters, from the pybind11 docstrings -------------------------------------------------
def _shape(args: ast.arguments, *, unnamed_positional: bool) -> str:
    """The parameters as a signature, e.g. "(_, /, theta, X, head=0, *, kind)"; a positional-only
    parameter's name is no part of the interface, so it is written "_"."""
    positional = [*args.posonlyargs, *args.args]
    defaults = [None] * (len(positional) - len(args.defaults)) + list(args.defaults)
    params, n_posonly = [], 0
    for i, (arg, default) in enumerate(zip(positional, defaults)):
        posonly = (i < len(args.posonlyargs) or (i == 0 and arg.arg == "self")
                   or (unnamed_positional and UNNAMED.fullmatch(arg.arg)))
        if posonly:
            n_posonly = len(params) + 1
        params.append(("_" if posonly else arg.arg) + _default(default))
    if n_posonly:
        params.insert(n_posonly, "/")
    if args.vararg is not None:
        params.append(f"*{args.vararg.arg}")
    elif args.kwonlyargs:
        params.append("*")
    params += [arg.arg + _default(d) for arg, d in zip(args.kwonlyargs, args.kw_defaults)]
    if args.kwarg is not None:
        params.append(f"**{args.kwarg.arg}")
    return f"({', '.join(params)})"


def _default(node: ast.expr | None) -> str:
    return "" if node is None else f"={ast.literal_eval(node)!r}"


def runtime_shapes(obj) -> set[str]:
    """The parameter shapes of a pybind11 function: one per overload."""
    doc = obj.__doc__ or ""
    lines = doc.splitlines()
    if len(lines) > 1 and lines[1] == "Overloaded function.":
        sigs = [m.group(1) for m in re.finditer(r"^\d+\. (.*)$", doc, re.M)]
    else:
        sigs = lines[:1]
    shapes = set()
    for sig in sigs:
        # An argument type pybind11 did not know yet is printed as its C++ name (metacore::X).
        try:
            tree = ast.parse(f"def {sig.replace('::', '.')}: ...")
        except SyntaxError:
            pytest.fail(f"cannot read the pybind11 signature {sig!r}")
        shapes.add(_shape(tree.body[0].args, unnamed_positional=True))
    return shapes


def stub_functions() -> dict[str, list[ast.FunctionDef]]:
    """Every function and method of the stub by dotted name (overloads together), not properties."""
    out: dict[str, list[ast.FunctionDef]] = {}

    def visit(body, prefix):
        for node in body:
            if isinstance(node, ast.ClassDef):
                visit(node.body, f"{prefix}{node.name}.")
            elif isinstance(node, ast.FunctionDef):
                decorators = {ast.unparse(d) for d in node.decorator_list}
                if "property" not in decorators:
                    out.setdefault(prefix + node.name, []).append(node)

    visit(ast.parse(STUB.read_text()).body, "")
    return out


STUBBED = stub_functions()


def test_the_stub_declares_functions_and_methods():
    assert {"build_info", "Net.__init__", "Net.predict", "TrainState64.run_objective",
            "block_partials", "MetaStep32.generate"} <= STUBBED.keys()


@pytest.mark.parametrize("name", sorted(STUBBED))
def test_stub_parameters_match_the_runtime(name):
    obj = _core
    for part in name.split("."):
        obj = getattr(obj, part, None)
        assert obj is not None, f"{name} is in the stub but not in metacore._core"
    stub = {_shape(f.args, unnamed_positional=False) for f in STUBBED[name]}
    runtime = runtime_shapes(obj)
    assert stub == runtime, (
        f"{name}: the stub's parameters differ from the runtime's\n"
        f"  stub:    {' | '.join(sorted(stub))}\n  runtime: {' | '.join(sorted(runtime))}\n"
        f"  runtime docstring: {obj.__doc__}")


# --- the values the stub spells out -----------------------------------------------------------
def stub_classes_and_aliases() -> tuple[dict[str, ast.ClassDef], dict[str, set[str]]]:
    """The stub's top-level classes, and its Literal aliases with their values."""
    classes, literals = {}, {}
    for node in ast.parse(STUB.read_text()).body:
        if isinstance(node, ast.ClassDef):
            classes[node.name] = node
        elif (isinstance(node, ast.Assign) and isinstance(node.value, ast.Subscript)
              and ast.unparse(node.value.value) == "Literal"):
            elts = node.value.slice.elts if isinstance(node.value.slice, ast.Tuple) else [
                node.value.slice]
            literals[node.targets[0].id] = {ast.literal_eval(e) for e in elts}
    return classes, literals


def test_build_info_keys_and_types_match_the_stub():
    classes, _ = stub_classes_and_aliases()
    fields = {n.target.id: ast.unparse(n.annotation) for n in classes["_BuildInfo"].body
              if isinstance(n, ast.AnnAssign)}
    info = _core.build_info()
    assert {k: type(v).__name__ for k, v in info.items()} == fields


def _choices_of(call) -> set[str]:
    """The names a binding accepts, read from the ValueError it raises for an unknown one."""
    with pytest.raises(ValueError, match="must be one of") as err:
        call()
    listed = str(err.value).split("must be one of ", 1)[1].rsplit(", got ", 1)[0]
    return set(re.findall(r"'([^']*)'", listed))


def _objective_with_rows(rows):
    net = _core.Net([1, 1], "relu", "mse", 1)
    one = np.ones((2, 1))
    return _core.Objective64(net, one, one, np.array([0, 2]), np.array([1]), np.array([0]), rows)


CHOICES = {
    "_Activation": lambda: _core.Net([1, 1], "?", "mse", 1),
    "_Loss": lambda: _core.Net([1, 1], "relu", "?", 1),
    "_Rows": lambda: _objective_with_rows("?"),
    "_Learner": lambda: _core.MetaStep64(_core.Net([1, 4, 1], "relu", "mse", 1), "?", 0.1, 1,
                                         False, 1),
    "_OptimizerKind": lambda: _core.OptimizerConfig(kind="?", lr=0.1),
    "_Schedule": lambda: _core.OptimizerConfig(kind="sgd", lr=0.1, schedule="?"),
    "_WeightingKind": lambda: _core.WeightingConfig(kind="?"),
    "_Normalization": lambda: _core.WeightingConfig(kind="fixed", normalization="?"),
}


@pytest.mark.parametrize("alias", sorted(CHOICES))
def test_literal_choices_match_what_the_core_accepts(alias):
    _, literals = stub_classes_and_aliases()
    assert literals[alias] == _choices_of(CHOICES[alias])
