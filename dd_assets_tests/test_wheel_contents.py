"""What the wheel ships: the library and its data files (schema, example workflows and data), never the tests.

Built with setuptools' ``build_py`` from ``pyproject.toml`` (what ``bdist_wheel`` puts into the wheel), in a copy of
the checkout so the build writes nothing into it, and offline (no build isolation to install).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _shipped(source: Path) -> set[str]:
    """The files of ``source``'s package a wheel ships: its modules and data files, not caches or local defs."""
    files = set()
    for path in source.rglob("*"):
        relative = path.relative_to(source.parent)
        if not path.is_file() or "__pycache__" in relative.parts or path.suffix == ".pyc":
            continue
        defs = ("dd_assets", "examples", "defs")
        if relative.parts[:3] == defs and relative.parts[3:] != ("__init__.py",):
            continue  # components scaffolded into this checkout are local (see examples/definitions.py)
        files.add(relative.as_posix())
    return files


def test_the_wheel_holds_the_library_and_its_data_files_only(tmp_path):
    checkout = tmp_path / "checkout"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("dd_assets", "dd_assets_tests"):
        shutil.copytree(REPO / name, checkout / name, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, checkout / name)
    built = tmp_path / "lib"
    done = subprocess.run(
        [sys.executable, "-c", "import setuptools; setuptools.setup()", "-q", "build_py", "--build-lib", str(built)],
        cwd=checkout,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    files = {path.relative_to(built).as_posix() for path in built.rglob("*") if path.is_file()}
    assert {name.split("/")[0] for name in files} == {"dd_assets"}  # no dd_assets_tests
    for data in (
        "dd_assets/workflow.schema.json",
        "dd_assets/examples/dagster.yaml",
        "dd_assets/examples/workflows/support_faq.yaml",
        "dd_assets/examples/data/passages.jsonl",
        "dd_assets/examples/yaml/quickstart.yaml",
        "dd_assets/examples/yaml/configs/customers.yaml",
    ):
        assert data in files
    assert files == _shipped(REPO / "dd_assets")  # every module and data file of the package, nothing else
