"""A fresh `pip install -e .` (the README's first command) can import every module it runs.

Found in user-acceptance testing: the simulator validates requests with :mod:`jsonschema`, which
was declared only in the ``test`` extra, so the README's first command died with
``ModuleNotFoundError: No module named 'jsonschema'`` on a fresh clone.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from functools import cache
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "reconcile"

# Extras whose modules are imported only when the user opted in (``--backend postgresql://``).
OPT_IN_EXTRAS = ("postgres",)


def _name(requirement: str) -> str:
    """The normalized distribution name of a requirement line (PEP 503)."""
    match = re.match(r"[A-Za-z0-9._-]+", requirement)
    assert match is not None, requirement
    return re.sub(r"[-_.]+", "-", match.group(0)).lower()


def _closure(names: set[str]) -> set[str]:
    """``names`` plus everything they require at run time (no extras), as installed here."""
    seen: set[str] = set()
    todo = list(names)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        todo.extend(_name(r) for r in requires if "extra ==" not in r)
    return seen


@cache
def _declared() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    names = {_name(r) for r in project["dependencies"]}
    for extra in OPT_IN_EXTRAS:
        names |= {_name(r) for r in project["optional-dependencies"][extra]}
    return _closure(names)


def _runtime_imports(path: Path) -> set[str]:
    """Top-level modules ``path`` imports outside ``if TYPE_CHECKING:`` blocks."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    type_only: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            type_only |= {id(child) for stmt in node.body for child in ast.walk(stmt)}
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return {m for m in found if m not in sys.stdlib_module_names and m not in ("reconcile", "__future__")}


def test_every_third_party_import_of_the_package_is_a_declared_runtime_dependency() -> None:
    distributions = metadata.packages_distributions()
    undeclared: dict[str, set[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        for module in _runtime_imports(path):
            provided_by = {_name(d) for d in distributions.get(module, [module])}
            if not provided_by & _declared():
                undeclared.setdefault(module, set()).add(str(path.relative_to(ROOT)))
    assert not undeclared, (
        "imported by the package but not installed by `pip install -e .` "
        f"(add them to [project] dependencies): {undeclared}"
    )


def test_the_check_sees_a_test_only_dependency() -> None:
    """The closure above excludes the test extra, so a module using pytest would be caught."""
    assert "pytest" not in _declared()
    assert "hypothesis" not in _declared()
