"""The dependency rule of docs/architecture.md, checked on every import, top-level or not.

Layers, lowest first; a module may import its own layer and those below, never one above:

    errors (and retry) < {converters, blocks} < {settings, names, home} < engine < flows < ops
           < deployments < server < cli < testing

Converters depend on nothing above their own contract: ``converters.*`` and the error tree.
``fileflow.testing`` (what the tests and the benchmarks share) is the top layer, so nothing of the
product imports it; ``bench/`` imports it, never ``tests/``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

LAYERS: list[tuple[str, ...]] = [
    ("fileflow.errors", "fileflow.retry"),
    ("converters", "blocks"),
    ("fileflow.settings", "fileflow.names", "fileflow.home"),
    ("fileflow.engine",),
    ("flows",),
    ("fileflow.ops",),
    ("deployments",),
    ("fileflow.server",),
    ("fileflow.cli",),
    ("fileflow.testing",),
]
PACKAGES = ("fileflow", "flows", "converters", "blocks", "deployments")


def layer_of(module: str) -> int | None:
    best = None
    for index, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if module == prefix or module.startswith(prefix + "."):
                if best is None or len(prefix) > best[1]:
                    best = (index, len(prefix))
    return None if best is None else best[0]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path) -> list[tuple[int, str]]:
    """(line, imported module) for every import of a project package in ``path``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # ``from fileflow import names`` imports fileflow.names: a package root has no layer
            found += [(node.lineno, node.module if layer_of(node.module) is not None else f"{node.module}.{a.name}")
                      for a in node.names]
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
    return [(line, m) for line, m in found if m.split(".")[0] in PACKAGES]


def sources() -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py"))


def test_every_module_has_a_layer():
    unplaced = [module_name(p) for p in sources() if layer_of(module_name(p)) is None and module_name(p) != "fileflow"]
    assert unplaced == [], f"modules outside every layer of docs/architecture.md: {unplaced}"


def test_imports_point_down_only():
    broken = []
    for path in sources():
        importer = module_name(path)
        own = layer_of(importer)
        for line, imported in imports_of(path):
            theirs = layer_of(imported)
            if theirs is None:  # a package root such as ``import fileflow``
                continue
            if own is not None and theirs > own:
                broken.append(f"{path.relative_to(ROOT)}:{line} {importer} imports {imported} "
                              f"({'/'.join(LAYERS[theirs])} is above {'/'.join(LAYERS[own])})")
    assert broken == [], "imports that point up:\n" + "\n".join(broken)


def test_converters_depend_only_on_their_contract():
    outside = [
        f"{p.relative_to(ROOT)}:{line} imports {m}"
        for p in (ROOT / "converters").rglob("*.py")
        for line, m in imports_of(p)
        if not (m == "converters" or m.startswith("converters.") or m == "fileflow.errors")
    ]
    assert outside == []


@pytest.mark.parametrize("module, imported, ok", [
    ("fileflow.engine.mediator", "fileflow.ops.limits", False),
    ("fileflow.ops.status", "fileflow.server.exporter", False),
    ("converters.ocr", "fileflow.settings", False),
    ("fileflow.cli.app", "fileflow.server.stack", True),
    ("fileflow.cli.app", "fileflow.testing.samplegen", False),
    ("flows.router", "fileflow.engine.mediator", True),
])
def test_the_rule_itself(module, imported, ok):
    """The checker tells an upward import from a downward one (so the tests above can fail)."""
    assert (layer_of(imported) <= layer_of(module)) is ok


def test_no_module_beside_an_entrypoint_shadows_the_standard_library():
    """Prefect puts a deployment entrypoint's folder on sys.path in the process that runs it: a
    flows/email.py there made httpx's ``import email`` load the e-mail steps, and every step of a
    process worker's run crashed at start."""
    import sys

    import yaml

    spec = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    folders = {(ROOT / d["entrypoint"].split(":")[0]).parent for d in spec["deployments"]}
    shadowing = [str(p.relative_to(ROOT)) for folder in folders for p in folder.glob("*.py")
                 if p.stem in sys.stdlib_module_names]
    assert shadowing == []


def test_bench_never_imports_the_tests():
    """bench/ takes what it shares with the tests from fileflow.testing; tests/ is not a library."""
    found = []
    for path in sorted((ROOT / "bench").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
            found += [f"{path.relative_to(ROOT)}:{node.lineno} imports {n}" for n in names
                      if n == "tests" or n.startswith("tests.")]
    assert found == [], "bench/ imports tests/:\n" + "\n".join(found)
