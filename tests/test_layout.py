"""The arrows point one way: gateway -> smpp, routing; never back.

Outside smpp/aio nothing in smpp imports asyncio, sockets or logging, so the
codec and session stay sans-IO; routing is pure decision logic.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def _modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("path", _modules("smpp"), ids=lambda p: str(p.relative_to(ROOT)))
def test_smpp_imports_nothing_of_the_application(path: Path) -> None:
    imported = _imports(path)
    assert not imported & {"gateway", "routing"}
    if "aio" not in path.relative_to(ROOT).parts and path.name != "bench.py":
        assert not imported & {"asyncio", "socket", "ssl", "logging", "selectors"}


@pytest.mark.parametrize("path", _modules("routing"), ids=lambda p: str(p.relative_to(ROOT)))
def test_routing_is_pure(path: Path) -> None:
    assert not _imports(path) & {"gateway", "asyncio", "socket", "logging", "sqlalchemy", "aiohttp"}
