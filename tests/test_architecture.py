"""The architecture, checked where import-linter cannot look: the modules its contracts call
pure make no call that reaches outside (files, the terminal, code from strings), and every
module of the packages is named by a contract as pure or left to the shells on purpose.

The list of pure modules is read from pyproject.toml's import-linter contracts: one list."""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import pytest

from tests.conftest import ROOT

OUTSIDE = {"open", "print", "input", "exec", "eval", "compile", "breakpoint", "__import__"}


def pure_modules() -> list[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    contracts = config["tool"]["importlinter"]["contracts"]
    found: list[str] = []
    for contract in contracts:
        if contract["name"].startswith(("Pure cores do no I/O", "The storage codec")):
            found += contract["source_modules"]
    return sorted(found)


def files_of(module: str) -> list[Path]:
    base = ROOT / module.replace(".", "/")
    if base.is_dir():
        return sorted(base.rglob("*.py"))
    return [base.with_suffix(".py")]


def test_the_contracts_name_pure_modules_that_exist() -> None:
    modules = pure_modules()
    assert "reconciler.chain.verify" in modules
    assert "qss.codec" in modules
    for module in modules:
        assert all(path.is_file() for path in files_of(module)), module


@pytest.mark.parametrize("module", pure_modules())
def test_a_pure_module_calls_nothing_outside(module: str) -> None:
    calls = []
    for path in files_of(module):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id in OUTSIDE
            ):
                calls.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.func.id}()")
    assert calls == []
