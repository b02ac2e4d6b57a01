"""The layer rule of ARCHITECTURE.md, checked on the source: every import of every module
(function-local ones included) points downward.

    core  ←  blobnode, raftmeta (each other's client only)  ←  frontend  ←  chaos, bench  ←  cairn
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("core", "blobnode", "raftmeta", "frontend", "chaos", "bench", "cairn")

# What each package may import of ours: a package name (any module of it) or a module.
ALLOWED: dict[str, set[str]] = {
    "core": set(),
    "blobnode": {"raftmeta.client"},
    "raftmeta": {"blobnode.client"},
    "frontend": {"raftmeta.client", "blobnode.client"},
    "chaos": {"raftmeta.client"},
    # benches of the state machine, and of the HTTP edge, bare
    "bench": {"chaos", "raftmeta.client", "raftmeta.state", "raftmeta.sm", "frontend.http_edge"},
    "cairn": {"blobnode", "raftmeta", "frontend", "chaos", "bench"},
}
# Third-party libraries that belong to one tier (and the benchmarks that measure it bare).
_HTTP = {"frontend", "bench"}
OWNED = {"quart": _HTTP, "quart_trio": _HTTP, "hypercorn": _HTTP, "h11": _HTTP, "pysyncobj": {"raftmeta"},
         "honcho": {"cairn"}}


def imports(path: Path) -> list[str]:
    """Every module ``path`` imports, anywhere in it (``from frontend import iam``: frontend.iam)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module in PACKAGES:
                found += [f"{node.module}.{alias.name}" for alias in node.names]
            else:
                found.append(node.module)
    return found


def modules() -> list[tuple[str, Path]]:
    return [(pkg, path) for pkg in PACKAGES for path in sorted((ROOT / pkg).rglob("*.py"))]


def allowed(pkg: str, name: str) -> bool:
    top = name.split(".")[0]
    if top in OWNED:
        return pkg in OWNED[top]
    if top not in PACKAGES or top in (pkg, "core"):
        return True
    return any(name == rule or name.startswith(rule + ".") for rule in ALLOWED[pkg])


@pytest.mark.parametrize(("pkg", "path"), modules(), ids=lambda v: str(v.relative_to(ROOT)) if isinstance(v, Path)
                         else v)
def test_every_import_points_downward(pkg: str, path: Path) -> None:
    wrong = [name for name in imports(path) if not allowed(pkg, name)]
    assert not wrong, f"{path.relative_to(ROOT)} imports {wrong} (see the layer rule in ARCHITECTURE.md)"


def test_nothing_below_the_top_imports_the_cli() -> None:
    for pkg, path in modules():
        if pkg != "cairn":
            assert not [n for n in imports(path) if n.split(".")[0] == "cairn"], path
