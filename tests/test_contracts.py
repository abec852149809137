"""docs/CONTRACTS.md's module map is the code's: its "imported by" column against the imports.

Every ``import`` in app.py, p2p_demo/, train/, bench/ and scripts/ (the files git tracks) is read
with ``ast`` (those inside functions too), and for each row of the map the modules outside the row
that import one of its modules must be exactly those the row names (a path ending in ``/`` stands
for every module under it). Every module of p2p_demo/ and train/ must have a row.
"""

from __future__ import annotations

import ast
import functools
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CONTRACTS = ROOT / "docs" / "CONTRACTS.md"
SOURCES = ("p2p_demo", "train", "bench", "scripts")
MAPPED = ("p2p_demo", "train")  # every module of these needs a row
NONE = "—"


def source_files() -> list[Path]:
    """The code the map describes: git's tracked files (work in progress is not yet the code),
    every file where there is no git."""
    try:
        listed = subprocess.run(["git", "ls-files", "app.py", *SOURCES], cwd=ROOT, capture_output=True,
                                text=True, check=True).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        return [ROOT / "app.py"] + sorted(p for d in SOURCES for p in (ROOT / d).rglob("*.py"))
    return [ROOT / f for f in sorted(listed) if f.endswith(".py") and (ROOT / f).is_file()]


def module_files() -> dict[str, str]:
    """Dotted module name -> repo-relative path without ``.py`` (packages by their ``__init__``)."""
    out = {}
    for p in source_files():
        rel = p.relative_to(ROOT).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = rel.as_posix()
    return out


def imports_of(path: str, name: str, modules: dict[str, str]) -> set[str]:
    """The repo modules (paths) a file imports, wherever in the file; ``from pkg import mod`` counts mod."""
    tree = ast.parse((ROOT / f"{path}.py").read_text(encoding="utf-8"))
    package = name if path.endswith("__init__") else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            targets = [mod] + [f"{mod}.{a.name}" for a in node.names]
        else:
            continue
        found.update(modules[t] for t in targets if t in modules and t != name)
    return found


@functools.lru_cache(maxsize=1)
def import_graph() -> dict[str, set[str]]:
    """Module path -> the module paths that import it."""
    modules = module_files()
    importers: dict[str, set[str]] = {path: set() for path in modules.values()}
    for name, path in modules.items():
        for target in imports_of(path, name, modules):
            importers[target].add(path)
    return importers


def covers(token: str, path: str) -> bool:
    """Does a map token (``train/fit.py``, ``train/fit``, ``train/sources/``) stand for module ``path``?"""
    token = token.removesuffix(".py")
    if token.endswith("/"):
        return path.startswith(token)
    return path == token


@functools.lru_cache(maxsize=1)
def module_map() -> list[tuple[list[str], list[str]]]:
    """The rows of the module map: (the row's modules, its "imported by" tokens)."""
    text = CONTRACTS.read_text(encoding="utf-8")
    section = text.split("## Module map", 1)[1]
    rows = []
    for line in section.splitlines():
        if not line.startswith("| `"):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        assert len(cells) == 3, f"a module map row needs 3 cells: {line}"
        owned = re.findall(r"`([^`]+)`", cells[0])
        by = [] if cells[2] == NONE else re.findall(r"`([^`]+)`", cells[2])
        assert owned and (by or cells[2] == NONE), f"unreadable row: {line}"
        rows.append((owned, by))
    return rows


def test_the_module_map_parses():
    rows = module_map()
    assert len(rows) >= 15
    for owned, _ in rows:
        for token in owned:
            target = ROOT / token
            assert target.is_dir() if token.endswith("/") else target.is_file(), f"{token} does not exist"


def test_every_library_module_has_one_row():
    rows = module_map()
    graph = import_graph()
    for path in graph:
        if path.split("/")[0] not in MAPPED or path.endswith("__init__"):
            continue
        holders = [owned for owned, _ in rows if any(covers(t, path) for t in owned)]
        assert len(holders) == 1, f"{path}.py should be in exactly one row of the module map, is in {holders}"


@pytest.mark.parametrize("row", range(len(module_map())))
def test_imported_by_is_what_the_code_imports(row):
    owned, listed = module_map()[row]
    graph = import_graph()
    inside = {p for p in graph if any(covers(t, p) for t in owned)}
    actual = {imp for p in inside for imp in graph[p]} - inside
    not_listed = sorted(p for p in actual if not any(covers(t, p) for t in listed))
    stale = sorted(t for t in listed if not any(covers(t, p) for p in actual))
    assert not not_listed and not stale, (
        f"docs/CONTRACTS.md, row {owned}: imported by {not_listed} but the row does not say so; "
        f"the row names {stale}, which import none of its modules")


def test_the_library_imports_nothing_above_it():
    graph = import_graph()
    for target, importers in graph.items():
        if target.split("/")[0] in ("train", "bench", "scripts", "app"):
            assert not [p for p in importers if p.startswith("p2p_demo/")], f"p2p_demo imports {target}"
