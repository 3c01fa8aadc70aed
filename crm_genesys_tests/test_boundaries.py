"""Production code imports nothing from the demo, and nothing from the tests (the oracle lives
there): checked on every import statement of the package, function-level ones included."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).parents[1] / "crm_genesys"
DEMO_MODULES = frozenset(
    {
        "crm_genesys.demo",
        "crm_genesys.crm.demo",
        "crm_genesys.crm.simulate",
        "crm_genesys.crm._pools",
    }
)
# The demo itself and the command line that starts it.
MAY_IMPORT_THE_DEMO = frozenset(
    {
        "crm_genesys/demo.py",
        "crm_genesys/cli.py",
        "crm_genesys/crm/demo.py",
        "crm_genesys/crm/simulate.py",
    }
)


def imported_modules(source: str, module: str, is_package: bool = False) -> set[str]:
    """Every module an import statement in `source` (module `module`) names, relative imports
    resolved; for `from a import b`, both `a` and `a.b` (b may be a module)."""
    tree = ast.parse(source)
    package = module.split(".") if is_package else module.split(".")[:-1]
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package[: len(package) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def modules_of(path: Path) -> set[str]:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    is_package = parts[-1] == "__init__"
    module = ".".join(parts[:-1] if is_package else parts)
    return imported_modules(path.read_text(encoding="utf-8"), module, is_package)


def test_the_walker_sees_every_kind_of_import() -> None:
    code = (
        "import crm_genesys.crm.demo\n"
        "from crm_genesys.crm import simulate\n"
        "def f():\n    from . import _pools\n    from ..demo import run_demo\n"
    )
    assert imported_modules(code, "crm_genesys.crm.source") >= DEMO_MODULES
    assert imported_modules("from . import x", "crm_genesys.crm", is_package=True) == {
        "crm_genesys.crm",
        "crm_genesys.crm.x",
    }


def test_production_code_imports_neither_the_demo_nor_the_tests() -> None:
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        name = path.relative_to(PACKAGE.parent).as_posix()
        modules = modules_of(path)
        if name not in MAY_IMPORT_THE_DEMO:
            offenders += [f"{name} imports {m}" for m in sorted(modules & DEMO_MODULES)]
        offenders += [
            f"{name} imports {m}" for m in sorted(modules) if m.startswith("crm_genesys_tests")
        ]
    assert offenders == []
