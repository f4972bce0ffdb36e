"""
Tests of the shape of the C{revproxy} package itself: the rules of
C{ARCHITECTURE.md} that keep the layout honest, checked on the source.

Each rule is checked by reading every module's syntax tree, so a change
that breaks one fails here, naming the module, instead of in review.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "revproxy"

#: The most lines a module may have: past it, it is two concerns.
MAX_LINES = 500

#: Which of revproxy's packages each package may import (besides itself,
#: L{revproxy._compat}, L{revproxy.config}, L{revproxy.options} and
#: L{revproxy.deadline}):
#: arrows point down the table of ARCHITECTURE.md.
ALLOWED = {
    "routing": set(),
    "http": {"routing"},
    "upstream": {"routing"},
    "forward": {"routing", "http", "upstream"},
    "etcd": {"routing"},
    "ops": {"routing", "http", "upstream", "forward", "etcd"},
    "ctl": {"routing", "etcd"},
    "_compat": set(),
    "config": {"routing"},
    "options": {"routing"},
    "deadline": set(),
}

#: Attributes private to Twisted, treq or txaioetcd that revproxy uses,
#: only ever through L{revproxy._compat}.
KNOWN_PRIVATE_ATTRIBUTES = {
    "_exitSignal",
    "_observers",
    "_raiseSynchronously",
    "_waitingForPort",
    "_factory",
    "_monitoredProcessExited",
    "_parse",
    "_marshal",
    "_tempDataBuffer",
    "_tempDataLen",
    "_aborting",
    "_writeDisconnected",
    "_poller",
    "_selectables",
    "_doReadOrWrite",
}

#: Modules that may pick the global reactor: the composition roots.
ROOTS = {"revproxy.tap", "revproxy.ctl.main"}


def modules() -> Iterator[tuple[str, Path, ast.Module]]:
    """
    Every module of the package: its dotted name, path and syntax tree.
    """
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        yield ".".join(parts), path, ast.parse(path.read_text(), str(path))


def imports(tree: ast.Module) -> Iterator[tuple[str, list[str], int]]:
    """
    Every import in C{tree}, at any depth: the module, the names taken from
    it, and the line.
    """
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, [], node.lineno
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            yield node.module, [a.name for a in node.names], node.lineno


def topLevelImports(tree: ast.Module) -> Iterator[str]:
    """
    The revproxy modules that C{tree} imports when it is imported: imports
    in functions and under C{TYPE_CHECKING} are left out.
    """
    for node in tree.body:
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            yield node.module
            for alias in node.names:
                yield f"{node.module}.{alias.name}"


def packageOf(name: str) -> str | None:
    """
    The first-level part of a revproxy module name (C{"routing"} for
    C{revproxy.routing.table}), or L{None} for C{revproxy} itself.
    """
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else None


def _ownAttribute(node: ast.Attribute) -> bool:
    """
    Whether C{node} reads an attribute of the object itself (C{self.x},
    C{cls.x}, C{super().x}): one of revproxy's own names.
    """
    value = node.value
    if isinstance(value, ast.Name):
        return value.id in ("self", "cls")
    return (
        isinstance(value, ast.Call)
        and isinstance(value.func, ast.Name)
        and value.func.id == "super"
    )


class LayoutTests(SynchronousTestCase):
    """
    The package keeps the shape ARCHITECTURE.md gives it.
    """

    def test_moduleSize(self) -> None:
        """
        No module is longer than about 500 lines.
        """
        long = {
            name: n
            for name, path, _ in modules()
            if (n := len(path.read_text().splitlines())) > MAX_LINES
        }
        self.assertEqual(long, {})

    def test_docstrings(self) -> None:
        """
        Every module and package starts with a docstring saying what it
        owns, and every module names its tests, which exist.
        """
        for name, path, tree in modules():
            self.assertTrue(ast.get_docstring(tree), f"{name} has no docstring")
            if path.name in ("__init__.py", "__main__.py"):
                continue
            first = path.read_text().splitlines()[0]
            self.assertTrue(
                first.startswith("# -*- test-case-name: tests."),
                f"{name} names no tests",
            )
            testModule = first.split("test-case-name:")[1].split("-*-")[0].strip()
            testPath = ROOT.joinpath(*testModule.split(".")).with_suffix(".py")
            self.assertTrue(testPath.exists(), f"{name}: {testModule} does not exist")

    def test_arrowsPointDown(self) -> None:
        """
        Each package imports only the packages below it.
        """
        wrong = []
        for name, _, tree in modules():
            package = packageOf(name)
            if package is None or package in ("tap",):
                continue
            allowed = ALLOWED[package] | {package, "_compat", "config", "options", "deadline"}
            for module, _, line in imports(tree):
                if module.startswith("revproxy."):
                    target = packageOf(module)
                    if target not in allowed:
                        wrong.append(f"{name}:{line} imports {module}")
        self.assertEqual(wrong, [])

    def test_noCycles(self) -> None:
        """
        No two modules import each other, directly or through others, when
        they are imported.
        """
        known = {name for name, _, _ in modules()}
        graph = {
            name: {
                m
                for m in topLevelImports(tree)
                if m in known and m != name and not name.startswith(m + ".")
            }
            for name, _, tree in modules()
        }
        state: dict[str, int] = {}
        cycles: list[list[str]] = []

        def visit(node: str, stack: list[str]) -> None:
            state[node] = 1
            for nxt in sorted(graph[node]):
                if state.get(nxt) == 1:
                    cycles.append(stack[stack.index(nxt) :] + [nxt])
                elif nxt not in state:
                    visit(nxt, stack + [nxt])
            state[node] = 2

        for node in sorted(graph):
            if node not in state:
                visit(node, [node])
        self.assertEqual(cycles, [])

    def test_privateNamesOnlyInCompat(self) -> None:
        """
        Private names of other projects are imported or used only in
        L{revproxy._compat}.
        """
        found = []
        for name, _, tree in modules():
            if name == "revproxy._compat":
                continue
            for module, names, line in imports(tree):
                if module.startswith("revproxy"):
                    continue
                privateModule = any(
                    p.startswith("_") and not p.startswith("__")
                    for p in module.split(".")
                )
                privateName = [n for n in names if n.startswith("_")]
                if privateModule or privateName:
                    found.append(f"{name}:{line} imports {module} {privateName}")
            for node in ast.walk(tree):
                if (
                    isinstance(node, ast.Attribute)
                    and node.attr in KNOWN_PRIVATE_ATTRIBUTES
                    and not _ownAttribute(node)
                ):
                    found.append(f"{name}:{node.lineno} uses .{node.attr}")
        self.assertEqual(found, [])

    def test_pureCore(self) -> None:
        """
        Nothing in C{revproxy.routing} imports C{twisted.internet}.
        """
        found = [
            f"{name}:{line} imports {module}"
            for name, _, tree in modules()
            if name.startswith("revproxy.routing")
            for module, _, line in imports(tree)
            if module.startswith("twisted.internet")
        ]
        self.assertEqual(found, [])

    def test_globalReactor(self) -> None:
        """
        Only the composition roots import the global reactor.
        """
        found = []
        for name, _, tree in modules():
            if name in ROOTS:
                continue
            for module, names, line in imports(tree):
                if module == "twisted.internet.reactor" or (
                    module == "twisted.internet" and "reactor" in names
                ):
                    found.append(f"{name}:{line}")
        self.assertEqual(found, [])

    def test_checksSee(self) -> None:
        """
        The checks above see the package: they find its modules, imports
        and a known private attribute when one is there.
        """
        names = {name for name, _, _ in modules()}
        self.assertIn("revproxy.routing.table", names)
        self.assertIn("revproxy._compat", names)
        tree = ast.parse(
            "import x.y\nfrom a._b import _c\nr._exitSignal = None\nself._parse()\n"
        )
        self.assertEqual(
            list(imports(tree)), [("x.y", [], 1), ("a._b", ["_c"], 2)]
        )
        flagged = [
            n.attr
            for n in ast.walk(tree)
            if isinstance(n, ast.Attribute)
            and n.attr in KNOWN_PRIVATE_ATTRIBUTES
            and not _ownAttribute(n)
        ]
        self.assertEqual(flagged, ["_exitSignal"])
