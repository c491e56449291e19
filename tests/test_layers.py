"""The package's layers (DESIGN.md, "Layers"), read from the source with ``ast``, not at runtime.

Every import of every module of python/metacore counts, including the ones inside functions:

- no import cycle between modules (a lazy import inside a function still makes one);
- no upward import: a module imports only from its own layer or the layers below;
- no module reaches into another module's private members: ``obj._name`` on anything but
  ``self``/``cls``/``super()``, and ``from mod import _name``, are refused. The compiled core
  ``_core`` and the argument checker ``_validation`` are the package's private *modules* of
  layer 0 and may be imported and named by every layer.

Violations in files of the training engine, which is being rewritten, are listed in PENDING; that
list may only shrink: an entry that no longer occurs fails the test, so it has to be removed.
"""

from __future__ import annotations

import ast
import pathlib
import shutil
import textwrap
from dataclasses import dataclass

import pytest

PACKAGE_DIR = pathlib.Path(__file__).resolve().parents[1] / "python" / "metacore"

# Bottom to top; a module may import from its own layer and those below it. The facade
# (``metacore/__init__``) sits below app: it imports everything but app, and app may use the
# public API through it; nothing beneath the facade imports it.
LAYERS = (
    ("core", ("metacore._core", "metacore._validation")),
    ("data", ("metacore.data",)),
    ("models", ("metacore.models",)),
    ("updates", ("metacore.adapt", "metacore.optim", "metacore.weighting")),
    ("learners", ("metacore.learners",)),
    ("problems", ("metacore.problems",)),
    ("train", ("metacore.train",)),
    ("evaluation", ("metacore.evaluation",)),
    ("sklearn", ("metacore.sklearn",)),
    ("facade", ("metacore",)),
    ("app", ("metacore.app",)),
    ("main", ("metacore.__main__",)),
)
# The same numerics in plain NumPy: beside the stack, not in it.
REFERENCE = "metacore.reference"
REFERENCE_MAY_IMPORT = ("metacore._validation", "metacore.models")
REFERENCE_IMPORTED_FROM = "facade"   # and the layers above it

PACKAGE = "metacore"
COMPILED = ("metacore._core",)              # no .py file to read
PRIVATE_MODULES_ALLOWED = ("_core", "_validation")
SAME_OBJECT = ("self", "cls")               # and super()
# Underscore names that are documented public API of the standard library.
DOCUMENTED_UNDERSCORE = {("os", "_exit")}
NAMEDTUPLE_API = ("_replace", "_asdict", "_fields", "_make", "_field_defaults")

# (importer, name) of violations waiting for a fix elsewhere; nothing may be added.
PENDING = set()

# Imports kept only by a deprecated wrapper (API.md: "learner.fit(...) is a deprecated wrapper of
# mc.fit(mc.MetaObjective(...)) for one release"). They run when the wrapper is called, never at
# import time, and leave the graph with the wrapper; the test fails once they are gone.
DEPRECATION_SHIMS = {
    ("metacore.learners", "metacore.problems"),
    ("metacore.learners", "metacore.train.fit"),
}


@dataclass(frozen=True)
class Violation:
    kind: str        # "cycle", "upward", "private"
    importer: str    # the module that imports or reaches in
    name: str        # the module imported, or the private name reached for
    where: str       # path:line
    message: str

    @property
    def key(self):
        return (self.importer, self.name)


# --- reading the package ----------------------------------------------------------------------
def module_files(package_dir):
    """{module name: path} of every .py file under package_dir (a package named by its dir)."""
    root = package_dir.parent
    out = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def is_private(name):
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def resolve(importer, is_package, node, known):
    """[(module imported, private names taken from it)] for one Import/ImportFrom node.

    ``from pkg import name`` imports the module pkg.name when there is one, else pkg itself."""
    if isinstance(node, ast.Import):
        return [(a.name, ()) for a in node.names]
    if node.level:
        package = importer.split(".") if is_package else importer.split(".")[:-1]
        base = package[:len(package) - (node.level - 1)]
        base = ".".join(base + ([node.module] if node.module else []))
    else:
        base = node.module
    out, names = [], []
    for alias in node.names:
        sub = f"{base}.{alias.name}"
        if sub in known:
            out.append((sub, ()))
        else:
            names.append(alias.name)
    if names:
        out.append((base, tuple(n for n in names if is_private(n))))
    return out


def layer_of(module):
    """(index, layer name) of a metacore module, ("reference", ...) beside the stack, or None."""
    parts = module.split(".")
    if module.startswith(REFERENCE + ".") or module == REFERENCE:
        return None, "reference"
    for i in range(len(parts), 0, -1):
        prefix = ".".join(parts[:i])
        for index, (name, modules) in enumerate(LAYERS):
            if prefix in modules and (prefix != "metacore" or module == "metacore"):
                return index, name
    return None, None


def describe(module):
    return f"{module} ({layer_of(module)[1] or 'no'} layer)"


def owning_module(module, known):
    """The module file a dotted import name lands in (``metacore.x.y`` -> ``metacore.x``)."""
    parts = module.split(".")
    for i in range(len(parts), 0, -1):
        if ".".join(parts[:i]) in known:
            return ".".join(parts[:i])
    return None


def import_violation(importer, target):
    """Why ``importer`` may not import ``target`` (both metacore modules), or None."""
    (i, layer), (j, target_layer) = layer_of(importer), layer_of(target)
    facade = [n for n, _ in LAYERS].index(REFERENCE_IMPORTED_FROM)
    if layer == "reference":
        ok = target_layer == "reference" or target in REFERENCE_MAY_IMPORT
        return None if ok else ("reference/ may import only itself and "
                                + ", ".join(REFERENCE_MAY_IMPORT))
    if target_layer == "reference":
        return None if i >= facade else "only the facade and above import reference/"
    if j > i:
        return f"upward import: layer {layer!r} imports from layer {target_layer!r}"
    return None


def scan(package_dir):
    """(violations, import graph {importer: {imported: first line}}, modules without a layer)."""
    files = module_files(package_dir)
    known = set(files) | set(COMPILED)
    graph, violations, shims = {}, [], set()
    for importer, path in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        rel = path.relative_to(package_dir.parent.parent)
        edges = graph.setdefault(importer, {})
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                where = f"{rel}:{node.lineno}"
                for module, private_names in resolve(importer, path.name == "__init__.py", node,
                                                     known):
                    for name in private_names:
                        violations.append(Violation(
                            "private", importer, name, where,
                            f"{where}: {importer} imports the private name {name!r} from "
                            f"{module}"))
                    private_parts = [p for p in module.split(".")[1:]
                                     if is_private(p) and p not in PRIVATE_MODULES_ALLOWED]
                    if private_parts and module != importer:
                        violations.append(Violation(
                            "private", importer, module, where,
                            f"{where}: {importer} imports the private module {module}"))
                    if module.split(".")[0] != PACKAGE:
                        continue
                    target = owning_module(module, known)
                    if target is None:
                        violations.append(Violation(
                            "upward", importer, module, where,
                            f"{where}: {importer} imports {module}, which is no module of "
                            f"the package"))
                    elif (importer, target) in DEPRECATION_SHIMS:
                        shims.add((importer, target))
                    elif target != importer:
                        edges.setdefault(target, node.lineno)
            elif isinstance(node, ast.Attribute) and is_private(node.attr):
                if isinstance(node.ctx, ast.Store) or node.attr in PRIVATE_MODULES_ALLOWED \
                        or node.attr in NAMEDTUPLE_API:
                    continue
                owner = node.value
                if isinstance(owner, ast.Name) and (
                        owner.id in SAME_OBJECT or (owner.id, node.attr) in DOCUMENTED_UNDERSCORE):
                    continue
                if isinstance(owner, ast.Call) and isinstance(owner.func, ast.Name) \
                        and owner.func.id == "super":
                    continue
                where = f"{rel}:{node.lineno}"
                violations.append(Violation(
                    "private", importer, node.attr, where,
                    f"{where}: {importer} reaches into {ast.unparse(owner)}.{node.attr}, a "
                    f"private member of another object"))
    unassigned = sorted(m for m in files if layer_of(m)[1] is None)
    for importer, edges in graph.items():
        path = files[importer]
        for target, line in edges.items():
            if importer in unassigned or target in unassigned:
                continue
            why = import_violation(importer, target)
            if why:
                where = f"{path.relative_to(package_dir.parent.parent)}:{line}"
                violations.append(Violation("upward", importer, target, where,
                                            f"{where}: {importer} imports {describe(target)}: "
                                            f"{why}"))
    violations += cycle_violations(graph, files, package_dir)
    for importer, target in DEPRECATION_SHIMS - shims:
        violations.append(Violation("stale", importer, target, "tests/test_layers.py",
                                    f"the deprecation shim {importer} -> {target} is gone: remove "
                                    f"it from DEPRECATION_SHIMS"))
    return violations, graph, unassigned


def cycle_violations(graph, files, package_dir):
    """One violation per import edge that lies on a cycle, naming a shortest such cycle."""
    out = []
    for importer, edges in graph.items():
        for target, line in edges.items():
            path = shortest_path(graph, target, importer)
            if path is None:
                continue
            where = f"{files[importer].relative_to(package_dir.parent.parent)}:{line}"
            cycle = " -> ".join([importer] + path)
            out.append(Violation("cycle", importer, target, where,
                                 f"{where}: {importer} imports {target}, which imports it back: "
                                 f"import cycle {cycle}"))
    return out


def shortest_path(graph, start, goal):
    """Modules from start to goal along imports (breadth first), or None."""
    previous, frontier = {start: None}, [start]
    while frontier:
        nxt = []
        for module in frontier:
            if module == goal:
                path = []
                while module is not None:
                    path.append(module)
                    module = previous[module]
                return path[::-1]
            for target in graph.get(module, {}):
                if target not in previous:
                    previous[target] = module
                    nxt.append(target)
        frontier = nxt
    return None


@pytest.fixture(scope="module")
def scanned():
    return scan(PACKAGE_DIR)


def _failures(violations, kind):
    new = [v for v in violations if v.kind == kind and v.key not in PENDING]
    return "\n".join(sorted({v.message for v in new}))


# --- the specification ------------------------------------------------------------------------
def test_every_module_has_a_layer_and_every_layer_entry_exists(scanned):
    _, graph, unassigned = scanned
    assert not unassigned, f"modules in no layer (add them to LAYERS): {unassigned}"
    known = set(graph) | set(COMPILED)
    stale = [m for _, modules in LAYERS for m in modules if m not in known]
    assert not stale, f"LAYERS names modules that do not exist any more: {stale}"


def test_no_import_cycles(scanned):
    failures = _failures(scanned[0], "cycle")
    if failures:
        pytest.fail(f"import cycles between modules:\n{failures}", pytrace=False)


def test_no_upward_imports(scanned):
    failures = _failures(scanned[0], "upward")
    if failures:
        pytest.fail(f"imports against the layers:\n{failures}", pytrace=False)


def test_no_module_reaches_into_another_modules_private_members(scanned):
    failures = _failures(scanned[0], "private")
    if failures:
        pytest.fail("private members used from outside (make the name public, documented as for "
                    f"the library's own use, or move the helper):\n{failures}", pytrace=False)


def test_deprecation_shims_are_still_there(scanned):
    failures = _failures(scanned[0], "stale")
    if failures:
        pytest.fail(failures, pytrace=False)


def test_pending_violations_only_shrink(scanned):
    found = {v.key for v in scanned[0]}
    fixed = sorted(PENDING - found)
    if fixed:
        pytest.fail(f"no longer violations, remove them from PENDING: {fixed}", pytrace=False)


# --- the checker catches what it is meant to --------------------------------------------------
def test_checker_reports_planted_violations(tmp_path):
    pkg = tmp_path / "python" / "metacore"
    shutil.copytree(PACKAGE_DIR, pkg, ignore=shutil.ignore_patterns("*.so", "__pycache__"))

    def plant(rel, code):
        path = pkg / rel
        path.write_text(path.read_text(encoding="utf-8") + textwrap.dedent(code),
                        encoding="utf-8")
        return len(path.read_text(encoding="utf-8").splitlines())

    up = plant("models.py", """
        def planted():
            from .evaluation import protocol
        """)
    cyc = plant("data/tabular.py", "from . import tasks\n")
    reach = plant("adapt.py", "def planted(model):\n    return model._hidden()\n")
    take = plant("weighting.py", "from .models import _planted\n")
    facade = plant("optim.py", "import metacore\n")
    side = plant("reference/net.py", "from ..data import TaskSet\n")
    violations, _, _ = scan(pkg)
    got = {(v.kind, v.importer, v.name, v.where.rsplit(":", 1)[1]) for v in violations}
    assert ("upward", "metacore.models", "metacore.evaluation.protocol", str(up)) in got
    assert ("upward", "metacore.optim", "metacore", str(facade)) in got
    assert ("upward", "metacore.reference.net", "metacore.data", str(side)) in got
    assert ("cycle", "metacore.data.tabular", "metacore.data.tasks", str(cyc)) in got
    assert ("private", "metacore.adapt", "_hidden", str(reach)) in got
    assert ("private", "metacore.weighting", "_planted", str(take)) in got
    message = next(v.message for v in violations if v.importer == "metacore.data.tabular"
                   and v.kind == "cycle")
    assert "metacore.data.tabular -> metacore.data.tasks -> metacore.data.tabular" in message
    assert f"python/metacore/data/tabular.py:{cyc}" in message
