"""core sits at the bottom of the import graph: it imports no app of the project."""

from __future__ import annotations

import ast
from pathlib import Path

import core

APPS = ("identity_portal", "clients", "tokens", "audit")


def test_core_imports_no_app():
    imported = set()
    for path in Path(core.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {(path.name, alias.name.split(".")[0]) for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                imported.add((path.name, node.module.split(".")[0]))
    assert {(name, module) for name, module in imported if module in APPS} == set()
    assert ("jose.py", "cryptography") in imported  # the walk did see the modules


def test_no_app_keeps_its_own_base64url_or_thumbprint():
    """Only core.jose and the offline verifier's self-contained copy (audit.chain) define them."""
    root = Path(core.__file__).parent.parent
    owners = set()
    for app in APPS:
        for path in (root / app).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.FunctionDef) and node.name in (
                    "b64url",
                    "b64url_encode",
                    "jwk_thumbprint",
                    "_int_b64",
                ):
                    owners.add(str(path.relative_to(root)))
    assert owners == {"audit/chain.py"}
