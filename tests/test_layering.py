"""The package structure stays readable: no import back up into one's own package, small files.

"Back up" means: a module inside package ``weightshare.P`` imports a module above ``P``
(``weightshare.X``) that itself depends, directly or through other modules, on ``P`` again
(``weightshare.plots`` importing ``weightshare.report.collect`` while the report imported
``weightshare.plots`` was one). Every module is parsed, lazy imports inside functions included.
The Hydra plugins (``src/hydra_plugins``) are held to the same rule, and the arrows between
the two trees point one way: a plugin imports the library, the library never a plugin.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PKG = SRC / "weightshare"
PLUGINS = SRC / "hydra_plugins"
MAX_LINES = 450


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(p): p for root in (PKG, PLUGINS) for p in root.rglob("*.py")}


def _resolve(name: str) -> str | None:
    """The weightshare module an import of ``name`` loads (longest known prefix)."""
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


def _imports(module: str) -> Iterator[str]:
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else [])
                )
            names = [base] + [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        for name in names:
            target = _resolve(name)
            if target and target != module:
                yield target


GRAPH = {m: set(_imports(m)) for m in MODULES}


def _reaches(start: str, prefix: str) -> list[str] | None:
    """A chain of imports from ``start`` to a module under ``prefix``, if any."""
    seen, stack = {start}, [(start, [start])]
    while stack:
        node, chain = stack.pop()
        for nxt in GRAPH[node]:
            if nxt == prefix or nxt.startswith(prefix + "."):
                return [*chain, nxt]
            if nxt not in seen:
                seen.add(nxt)
                stack.append((nxt, [*chain, nxt]))
    return None


def test_no_module_imports_back_up_into_its_own_package() -> None:
    problems = []
    for module, targets in GRAPH.items():
        top, *rest = module.split(".")
        if not rest or (len(rest) < 2 and MODULES[module].name != "__init__.py"):  # a top-level module
            continue
        package = f"{top}.{rest[0]}"  # its subpackage (the __init__ included)
        for target in targets:
            if target.startswith(package + ".") or target == package:
                continue  # inside its own package
            chain = _reaches(target, package)
            if chain:
                problems.append(f"{module} imports {' -> '.join(chain)}")
    assert problems == []


def test_the_library_imports_no_plugin_and_no_plugin_another_plugins_private_module() -> None:
    library = [f"{m} imports {t}" for m, ts in GRAPH.items() if m.startswith("weightshare") for t in ts
               if t.startswith("hydra_plugins")]  # fmt: skip
    assert library == []
    private = [
        f"{m} imports {t}"
        for m, ts in GRAPH.items()
        if m.startswith("hydra_plugins.")
        for t in ts
        if t.startswith("hydra_plugins.") and t.split(".")[1] != m.split(".")[1] and "._" in t
    ]
    assert private == []


def test_construction_has_one_owner_the_builders() -> None:
    """The module gets its network and factories: it never calls back into the builders."""
    assert "weightshare.module" in GRAPH["weightshare.builders"]
    assert _reaches("weightshare.module", "weightshare.builders") is None


def test_the_import_graph_is_read_and_a_back_up_import_would_be_found() -> None:
    assert "weightshare.errors" in GRAPH["weightshare.module"]  # top-level from-imports are read
    assert "weightshare.data.datamodule" in GRAPH["weightshare.builders"]  # lazy imports too
    assert "weightshare.packed" in GRAPH["hydra_plugins.weightshare_packed_launcher._plan"]  # plugins too
    GRAPH["weightshare.errors"].add("weightshare.report.write")  # a made-up back-up edge
    try:
        assert _reaches("weightshare.errors", "weightshare.report") is not None
    finally:
        GRAPH["weightshare.errors"].discard("weightshare.report.write")


def test_no_source_file_is_over_the_line_limit() -> None:
    long = {str(p.relative_to(SRC)): n for p in PKG.rglob("*.py") if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert long == {}


def _plugin_imports(source: str) -> list[str]:
    """Names of ``hydra_plugins`` modules a source imports (lazy imports in functions included)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.split(".")[0] == "hydra_plugins"]
        elif (
            isinstance(node, ast.ImportFrom) and not node.level and (node.module or "").split(".")[0] == "hydra_plugins"
        ):
            found.append(str(node.module))
    return found


def test_the_library_never_imports_a_plugin() -> None:
    """Plugins build on ``weightshare``, never the reverse: what both sides need (the Optuna trial
    protocol) lives in the library (``weightshare.trial_protocol``)."""
    library = {m: p for m, p in MODULES.items() if m.startswith("weightshare")}
    assert library, "no library module found"
    found = {m: names for m, p in library.items() if (names := _plugin_imports(p.read_text()))}
    assert found == {}  # (a plugin may build on another plugin: the slurm launcher on hydra-submitit's)


def test_a_plugin_import_would_be_found() -> None:
    source = "def f():\n    from hydra_plugins.weightshare_optuna_sweeper._impl import X\nimport hydra_plugins.x\n"
    assert sorted(_plugin_imports(source)) == ["hydra_plugins.weightshare_optuna_sweeper._impl", "hydra_plugins.x"]
