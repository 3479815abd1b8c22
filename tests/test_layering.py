"""The layering of DESIGN.md section 2, checked over the source tree: who may import whom.

policy/ and storage/ import nothing of ours above them, api/ never imports mta/, only mta's
composition root imports api/, no import cycle joins two modules or two subpackages, and every
package's __init__.py says in two lines what it holds and what it may import. Imports inside
functions count too: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("mta", "api", "policy", "storage")

# What each top-level package may import of ours besides itself: the path of a message is
# mta -> policy -> storage, and the API stands beside mta on the same two.
MAY_IMPORT: Mapping[str, frozenset[str]] = {
    "storage": frozenset(),
    "policy": frozenset(),
    "api": frozenset({"policy", "storage"}),
    "mta": frozenset({"policy", "storage"}),
}
# The composition root knows every part: it starts the API beside the MX.
COMPOSITION_ROOT: Mapping[str, frozenset[str]] = {
    "mta.cli": frozenset({"api"}),
    "mta.serve": frozenset({"api"}),
}


@dataclass(frozen=True)
class Module:
    name: str  # dotted; a package is its __init__.py
    path: Path
    is_package: bool


def modules(root: Path, packages: Iterable[str] = PACKAGES) -> dict[str, Module]:
    found: dict[str, Module] = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            is_package = parts[-1] == "__init__"
            name = ".".join(parts[:-1] if is_package else parts)
            found[name] = Module(name, path, is_package)
    return found


def imports(module: Module, known: Mapping[str, Module]) -> set[str]:
    """The modules of ours that `module` imports, anywhere in its body."""
    package = module.name if module.is_package else module.name.rpartition(".")[0]
    targets: set[str] = set()
    for node in ast.walk(ast.parse(module.path.read_text(), str(module.path))):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolved against the importing package
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                child = f"{base}.{alias.name}"
                targets.add(child if child in known else base)
    return {target for target in targets if target in known and target != module.name}


def graph(root: Path) -> dict[str, set[str]]:
    known = modules(root)
    return {name: imports(module, known) for name, module in known.items()}


def top(name: str) -> str:
    return name.partition(".")[0]


def layering_violations(edges: Mapping[str, set[str]]) -> list[str]:
    found = []
    for source, targets in sorted(edges.items()):
        allowed = MAY_IMPORT[top(source)] | {top(source)} | COMPOSITION_ROOT.get(source, set())
        found += [f"{source} -> {t}" for t in sorted(targets) if top(t) not in allowed]
    return found


def cycles(edges: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """Strongly connected components of more than one node (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in edges.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return sorted(found)


def package_of(name: str, packages: set[str]) -> str:
    return name if name in packages else name.rpartition(".")[0]


def holds(outer: str, inner: str) -> bool:
    return f"{inner}.".startswith(f"{outer}.")


def subpackage_edges(root: Path) -> dict[str, set[str]]:
    """Imports between packages where neither holds the other: a package's root modules may
    compose its subpackages, and subpackages may use their parent's shared modules."""
    known = modules(root)
    edges = graph(root)
    packages = {name for name, module in known.items() if module.is_package}
    between: dict[str, set[str]] = {package: set() for package in packages}
    for source, targets in edges.items():
        here = package_of(source, packages)
        for target in targets:
            there = package_of(target, packages)
            if not holds(here, there) and not holds(there, here):
                between[here].add(there)
    return between


def docstring_problems(root: Path) -> list[str]:
    found = []
    for module in modules(root).values():
        if not module.is_package:
            continue
        text = ast.get_docstring(ast.parse(module.path.read_text()))
        if not text:
            found.append(f"{module.name}: no docstring")
        elif len([line for line in text.splitlines() if line.strip()]) > 2 or (
            "import" not in text.lower()
        ):
            found.append(f"{module.name}: not two lines saying what it holds and may import")
    return found


@pytest.mark.parametrize("package", PACKAGES)
def test_package_imports_only_what_the_layering_allows(package: str) -> None:
    edges = {name: targets for name, targets in graph(ROOT).items() if top(name) == package}
    assert layering_violations(edges) == []


def test_no_import_cycle_joins_two_modules() -> None:
    assert cycles(graph(ROOT)) == []


def test_no_import_cycle_joins_two_subpackages() -> None:
    assert cycles(subpackage_edges(ROOT)) == []


def test_every_package_says_what_it_holds_and_may_import() -> None:
    assert docstring_problems(ROOT) == []


def test_the_checks_find_a_breach_a_cycle_and_a_silent_package(tmp_path: Path) -> None:
    """The rules above are only as good as their finder: a small tree that breaks each one."""
    files = {
        "policy/__init__.py": '"""Decisions."""\n',
        "policy/verdict.py": "from storage.rows import ROW\n",
        "storage/__init__.py": '"""Rows.\nMay import nothing of ours."""\n',
        "storage/rows.py": "ROW = 1\n",
        "api/__init__.py": '"""Routes.\nMay import policy and storage."""\n',
        "api/one/__init__.py": '"""One.\nMay import api.two."""\n',
        "api/one/a.py": "def f() -> None:\n    from api.two import b\n",
        "api/two/__init__.py": '"""Two.\nMay import api.one."""\n',
        "api/two/b.py": "from ..one import a\n",
        "mta/__init__.py": '"""Edge.\nMay import policy and storage."""\n',
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)

    assert layering_violations(graph(tmp_path)) == ["policy.verdict -> storage.rows"]
    assert cycles(graph(tmp_path)) == [["api.one.a", "api.two.b"]]
    assert cycles(subpackage_edges(tmp_path)) == [["api.one", "api.two"]]
    assert docstring_problems(tmp_path) == [
        "policy: not two lines saying what it holds and may import"
    ]
