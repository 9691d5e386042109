"""The package layout is the pipeline: each stage imports only from stages before it, and no
module imports itself back through others (docs/architecture.md draws the same order).

Every ``import`` is read from the source, module-level and function-level alike. A function-level
import of a SPA module is allowed only for the modules that import torch (``import spa`` must stay
light); any other one is a cycle being hidden, or an import that belongs at the top.
"""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx
import pytest

ROOT = Path(__file__).resolve().parents[1]

#: The stages in pipeline order; a module belongs to the longest prefix that names it.
LAYERS = [
    ("spa.errors", "spa.version", "spa.records"),
    ("spa.model",),
    ("spa.analysis",),
    ("spa.scoring",),
    ("spa.criteria",),
    ("spa.planning",),
    ("spa.passes",),
    ("spa.rewrite",),
    ("spa.check",),
    ("spa.report",),
    ("spa.pipeline",),
    ("spa.torch",),
    ("spa.cli",),
    ("spa",),
]
#: SPA modules that import torch at module level: only these may be imported inside a function.
HEAVY = ("spa.model.onnx_torch", "spa.model.onnx_torch_ops", "spa.torch")


def source_modules() -> dict[str, Path]:
    """Dotted module name -> file, for ``spa/`` and the two folders installed inside it."""
    found: dict[str, Path] = {}
    for folder, dotted in ((ROOT / "spa", "spa"), (ROOT / "passes", "spa.passes"), (ROOT / "criteria", "spa.criteria")):
        for f in sorted(folder.rglob("*.py")):
            parts = list(f.relative_to(folder).with_suffix("").parts)
            if dotted == "spa" and parts[0] in ("passes", "criteria"):
                continue  # links a development checkout may add so that spa.passes resolves in place
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join([dotted, *parts])] = f
    return found


MODULES = source_modules()
_IMPORTS: dict[str, list[tuple[str, int, bool]]] = {}


def layer(module: str) -> int:
    best, index = -1, -1
    for i, prefixes in enumerate(LAYERS):
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and len(p) > best:
                best, index = len(p), i
    assert index >= 0, f"{module} is in no layer of {LAYERS}"
    return index


def imports(module: str) -> list[tuple[str, int, bool]]:
    """``(imported SPA module, line, module_level)`` for every import statement in ``module``."""
    if module not in _IMPORTS:
        _IMPORTS[module] = _read_imports(module)
    return _IMPORTS[module]


def _read_imports(module: str) -> list[tuple[str, int, bool]]:
    path = MODULES[module]
    tree = ast.parse(path.read_text(), str(path))
    inner = {id(sub) for fn in ast.walk(tree) if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
             for sub in ast.walk(fn) if isinstance(sub, (ast.Import, ast.ImportFrom))}
    out = []
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            targets = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in MODULES else node.module
                       for a in node.names]
        for t in targets:
            if t == "spa" or t.startswith("spa."):
                assert t in MODULES, f"{path}:{node.lineno} imports {t}, which is not a SPA module"
                out.append((t, node.lineno, id(node) not in inner))
    return out


def test_every_module_sits_in_a_stage() -> None:
    assert {layer(m) for m in MODULES} == set(range(len(LAYERS)))


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_point_back_down_the_pipeline(module: str) -> None:
    upward = [f"{t} (line {line}, stage {LAYERS[layer(t)][0]})" for t, line, _ in imports(module)
              if layer(t) > layer(module)]
    assert not upward, f"{module} (stage {LAYERS[layer(module)][0]}) imports from later stages: {upward}"
    hidden = [f"{t} (line {line})" for t, line, top in imports(module) if not top and not t.startswith(HEAVY)]
    assert not hidden, f"{module} imports SPA modules inside functions (move them to the top): {hidden}"


def test_no_import_cycles() -> None:
    g = nx.DiGraph()
    for m in MODULES:
        for t, _, _ in imports(m):
            if t != m and not m.startswith(t + "."):  # a module may name its own package's __init__
                g.add_edge(m, t)
    cycles = list(nx.simple_cycles(g))
    assert not cycles, "import cycles: " + "; ".join(" -> ".join([*c, c[0]]) for c in cycles[:5])


def test_import_spa_stays_light() -> None:
    light = [t for m in MODULES if not m.startswith(HEAVY) for t, _, top in imports(m) if top and t.startswith(HEAVY)]
    assert not light, f"modules import torch-backed modules at module level: {light}"


def _subclasses(package: str, base: type) -> list[type]:
    import importlib
    import inspect
    import pkgutil

    pkg = importlib.import_module(package)
    found = []
    for info in pkgutil.iter_modules(pkg.__path__):
        mod = importlib.import_module(f"{package}.{info.name}")
        found += [c for _, c in inspect.getmembers(mod, inspect.isclass)
                  if issubclass(c, base) and c is not base and c.__module__ == mod.__name__]
    return found


def test_every_pass_and_criterion_says_what_it_does() -> None:
    from spa.criteria.base import Criterion
    from spa.passes.base import Pass

    classes = _subclasses("spa.passes", Pass) + _subclasses("spa.criteria", Criterion)
    assert len(classes) >= 20
    undocumented = [f"{c.__module__}.{c.__name__}" for c in classes if not (c.__dict__.get("__doc__") or "").strip()]
    assert not undocumented, f"classes without a docstring saying what they do and refuse: {undocumented}"
