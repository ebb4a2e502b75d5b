"""The domain stays pure: the engine and the business areas know result
codes, never HTTP statuses, and never the edges (http, link, service)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import double11

ROOT = Path(double11.__file__).parent
DOMAIN = sorted([*(ROOT / "engine").glob("*.py"), *(ROOT / "promotions").glob("*.py"),
                 *(ROOT / "quotas").glob("*.py"), ROOT / "spec.py", ROOT / "errors.py", ROOT / "areas.py"])
EDGES = ("double11.statuses", "double11.http", "double11.link", "double11.service")
# an HTTP status as a number in code: 200..599 where a status would be
STATUS_NUMBERS = set(range(200, 600))


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


@pytest.mark.unit
@pytest.mark.parametrize("path", DOMAIN, ids=lambda p: str(p.relative_to(ROOT)))
def test_the_domain_imports_no_edge(path):
    assert not {name for name in imports_of(path) if name.startswith(EDGES)}


@pytest.mark.unit
@pytest.mark.parametrize("path", DOMAIN, ids=lambda p: str(p.relative_to(ROOT)))
def test_the_domain_names_no_http_status(path):
    # a status key in an answer ({"status": 201}) or a status compared
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values):
                if isinstance(key, ast.Constant) and key.value == "status":
                    assert not (isinstance(value, ast.Constant) and value.value in STATUS_NUMBERS), \
                        f"{path.name}:{node.lineno} answers an HTTP status"
        if isinstance(node, ast.Name | ast.Attribute):
            name = node.id if isinstance(node, ast.Name) else node.attr
            assert name not in ("HTTP_STATUS", "STATUS_OF_CODE", "http_status"), f"{path.name}:{node.lineno}"
