"""docs/errors.md lists every error code the gateway can answer with or write on a job."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CODE_NAMES = {"code", "error_code", "CODE"}
# Classes whose first argument is an upstream failure code.
UPSTREAM_FAILURES = {
    "UpstreamError",
    "UpstreamUnavailable",
    "UpstreamRejected",
}


def _codes_in(tree: ast.AST) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg in CODE_NAMES:
            value = node.value
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                found.add(value.value)
        elif isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant):
            names = {t.id for t in node.targets if isinstance(t, ast.Name)}
            if names & CODE_NAMES and isinstance(node.value.value, str):
                found.add(node.value.value)
        elif isinstance(node, ast.Call) and node.args:
            func = node.func
            name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
            first = node.args[0]
            if name in UPSTREAM_FAILURES and isinstance(first, ast.Constant):
                found.add(str(first.value))
    return found


def test_every_error_code_is_documented() -> None:
    codes: set[str] = set()
    for path in (ROOT / "app").rglob("*.py"):
        codes |= _codes_in(ast.parse(path.read_text()))
    assert len(codes) > 30  # the scan finds the codes at all
    documented = (ROOT / "docs" / "errors.md").read_text()
    missing = sorted(code for code in codes if f"`{code}`" not in documented)
    assert not missing, f"add these codes to docs/errors.md: {missing}"
