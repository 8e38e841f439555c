"""The planner is pure: no module it reaches in our packages does I/O, reads a clock or draws
random numbers (DESIGN.md section 2; STYLE.md "pure like h11").

Read from the source with `ast`, like import-linter's contracts: every first-party module
reachable from `reconciler.plan`, and what each imports directly. Third-party libraries
(pydantic, rfc8785) are judged by what they are used for, not scanned.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
FIRST_PARTY = ("reconciler", "builders", "qss")
# Modules that touch the world: files, processes, network, clocks, randomness, adapters.
FORBIDDEN = {
    "os", "io", "sys", "time", "datetime", "random", "secrets", "uuid", "subprocess",
    "socket", "shutil", "tempfile", "pathlib", "urllib", "http", "threading", "asyncio",
    "signal", "select", "pygit2", "psutil", "pynvml", "click", "rich", "watchfiles", "httpx",
    "redis", "zfec", "reconciler.files", "reconciler.cli", "reconciler.desired.folder",
    "reconciler.desired.lock", "reconciler.desired.shipped", "reconciler.chain",
}  # fmt: skip
# What the planner's own modules may import, besides themselves.
PLAN_MAY_IMPORT = {
    "__future__", "bisect", "collections", "dataclasses", "enum", "heapq", "json", "math", "re",
    "typing", "zlib", "rfc8785", "reconciler.errors", "reconciler.desired.model",
    "reconciler.desired.repository",
}  # fmt: skip


def _module_file(name: str) -> Path | None:
    base = ROOT.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imports(name: str) -> set[str]:
    path = _module_file(name)
    assert path is not None, name
    found: set[str] = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            found.add(module)
            # `from package import submodule` reaches the submodule too.
            found.update(
                f"{module}.{alias.name}"
                for alias in node.names
                if _module_file(f"{module}.{alias.name}") is not None
            )
    return found


def _within(module: str, prefixes: set[str]) -> str | None:
    return next((p for p in prefixes if module == p or module.startswith(p + ".")), None)


def _plan_modules() -> list[str]:
    folder = ROOT / "reconciler" / "plan"
    return sorted(
        "reconciler.plan" + ("" if p.stem == "__init__" else f".{p.stem}")
        for p in folder.glob("*.py")
    )


def test_the_planner_imports_only_pure_modules() -> None:
    for module in _plan_modules():
        for imported in _imports(module):
            if imported.startswith("reconciler.plan"):
                continue
            assert _within(imported, PLAN_MAY_IMPORT), f"{module} imports {imported}"


def test_nothing_the_planner_reaches_does_io() -> None:
    seen: set[str] = set()
    todo = _plan_modules()
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        for imported in _imports(module):
            bad = _within(imported, FORBIDDEN)
            assert bad is None, f"{module} imports {imported}, reached from reconciler.plan"
            if imported.split(".")[0] in FIRST_PARTY and _module_file(imported):
                todo.append(imported)
    assert "reconciler.desired.repository" in seen
