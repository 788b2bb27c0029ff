"""The package's layers stay true: no import cycle, no import upward, no module or class too big to read.

The layers, lowest first (docs/architecture.md draws them): each module imports only from its own layer and the
layers below it. Imports inside functions count (a lazy import is still a dependency); imports under
``if TYPE_CHECKING:`` do not (they never run). The package root (``dd_assets/__init__.py``, the public API) and
``dd_assets/definitions.py`` (the example code location's stable name) stand above every layer.
"""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "dd_assets"
LAYERS = ("spec", "storage", "engine", "run", "assets", "tools", "examples")
ROOT_MODULES = {"dd_assets", "dd_assets.definitions"}
MAX_MODULE_LINES = 400
MAX_CLASS_LINES = 250


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _type_checking_block(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (
        (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
        or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")
    )


def imported_modules(path: Path, known: set[str]) -> set[str]:
    """The dd_assets modules ``path`` imports at run time (``from pkg import module`` names the module)."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if _type_checking_block(node):
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("dd_assets"))
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("dd_assets"):
            assert node.level == 0, f"{path}: relative import"
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                found.add(submodule if submodule in known else node.module)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text()))
    return {name for name in found if name in known}


def import_graph() -> dict[str, set[str]]:
    found = modules()
    return {name: imported_modules(path, set(found)) - {name} for name, path in found.items()}


def layer(module: str) -> int | None:
    parts = module.split(".")
    return LAYERS.index(parts[1]) if len(parts) > 1 and parts[1] in LAYERS else None


def test_every_module_is_in_a_layer():
    strays = [name for name in modules() if name not in ROOT_MODULES and layer(name) is None]
    assert strays == [], f"modules outside the layers {LAYERS}: {strays}"


def test_no_import_cycle():
    graph = import_graph()
    try:
        list(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as exc:
        pytest.fail(f"import cycle among dd_assets modules: {' -> '.join(exc.args[1])}")


def test_no_import_upward():
    upward = []
    for module, imports in import_graph().items():
        if module in ROOT_MODULES:
            continue
        upward += [f"{module} -> {target}" for target in imports if target in ROOT_MODULES]
        upward += [f"{module} -> {target}" for target in imports if (layer(target) or 0) > layer(module)]
    assert upward == [], "imports from a lower layer to a higher one (or to the package root):\n" + "\n".join(upward)


def test_no_module_or_class_too_big():
    too_big = []
    for name, path in modules().items():
        source = path.read_text()
        lines = len(source.splitlines())
        if lines > MAX_MODULE_LINES:
            too_big.append(f"module {name}: {lines} lines (at most {MAX_MODULE_LINES})")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.ClassDef):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_CLASS_LINES:
                    too_big.append(f"class {name}.{node.name}: {length} lines (at most {MAX_CLASS_LINES})")
    assert too_big == [], "\n".join(too_big)


# Dagster's private names dd_assets uses, each where it is used and why (a new one must be added here, with its reason).
DAGSTER_PRIVATE_IMPORTS = {
    "dd_assets.spec.yaml_values": {"dagster._utils.schedules": "is_valid_cron_schedule: as schedules check"},
    "dd_assets.storage.dagster_agreement": {
        "dagster._core.definitions.data_version": "CODE_VERSION_TAG, DATA_VERSION_TAG: recovered tags"
    },
    "dd_assets.run.progress": {"dagster._core.events": "EngineEventData: progress as events"},
    "dd_assets.run.dask_executor": {
        "dagster._core.execution.context.system": "PlanOrchestrationContext: the signature of Executor.execute"
    },
}


def test_dagster_private_names_are_used_only_where_listed():
    found: dict[str, set[str]] = {}
    for name, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("dagster._"):
                found.setdefault(name, set()).add(node.module)
            elif isinstance(node, ast.Import):
                found.setdefault(name, set()).update(a.name for a in node.names if a.name.startswith("dagster._"))
    found = {name: imports for name, imports in found.items() if imports}
    listed = {name: set(imports) for name, imports in DAGSTER_PRIVATE_IMPORTS.items()}
    assert found == listed, "private Dagster imports differ from DAGSTER_PRIVATE_IMPORTS in this test"


def test_the_graph_sees_lazy_imports_and_skips_type_checking(tmp_path):
    source = tmp_path / "sample.py"
    source.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from dd_assets.run.seeds import Seed\n"
        "def f():\n    from dd_assets.storage import lineage\n"
        "import dd_assets.spec.workflow\n"
    )
    known = set(modules())
    assert imported_modules(source, known) == {"dd_assets.storage.lineage", "dd_assets.spec.workflow"}


def summary(path: Path) -> str:
    """A module's first docstring sentence, on one line."""
    doc = ast.get_docstring(ast.parse(path.read_text())) or ""
    paragraph = " ".join(doc.strip().split("\n\n")[0].split())
    end = paragraph.find(". ")
    return paragraph if end < 0 else paragraph[: end + 1]


def module_tree() -> str:
    """The package drawn as a tree, one line per module (docs/architecture.md holds it)."""
    lines = ["dd_assets/"]
    for name in ("__init__.py", "definitions.py"):
        lines.append(f"├── {name:27} {summary(PACKAGE / name)}")
    for i, layer_name in enumerate(LAYERS):
        last = i == len(LAYERS) - 1
        folder = PACKAGE / layer_name
        lines.append(f"{'└' if last else '├'}── {layer_name + '/':27} {summary(folder / '__init__.py')}")
        files = sorted(path for path in folder.glob("*.py") if path.name != "__init__.py")
        for j, path in enumerate(files):
            branch = "└" if j == len(files) - 1 else "├"
            lines.append(f"{' ' if last else '│'}   {branch}── {path.name:23} {summary(path)}")
    return "\n".join(lines)


def test_the_architecture_doc_draws_every_module():
    doc = (PACKAGE.parent / "docs" / "architecture.md").read_text()
    assert module_tree() in doc, (
        "docs/architecture.md's tree differs from the package: print it anew with "
        "`python -m dd_assets_tests.test_architecture` and paste it in"
    )


if __name__ == "__main__":
    print(module_tree())
