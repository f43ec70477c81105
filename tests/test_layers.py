"""The import graph has no upward arrows: each package imports only the packages below it.

    towers  <-  mmdata, serving  <-  components  <-  pipeline  <-  app

towers/ (model code, the feature names and the shared contract) imports nothing
else of the project. bench/ and tests/ may import anything. Every import
statement counts, including those inside functions. Run alone with
`.venv/bin/python -m pytest tests/test_layers.py`.
"""

import ast
import pathlib

import pytest

pytestmark = pytest.mark.unit

ROOT = pathlib.Path(__file__).resolve().parent.parent
ALLOWED = {
    "towers": set(),
    "mmdata": {"towers"},
    "serving": {"towers"},
    "components": {"towers", "mmdata", "serving"},  # components.dataset_gen builds a dataset
    "pipeline": {"towers", "mmdata", "serving", "components"},
    "app": {"towers", "mmdata", "serving", "components", "pipeline"},
}


def imported_packages(path: pathlib.Path) -> dict[str, int]:
    """Project packages a file imports -> the line of the first such import."""
    found = {}
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        for name in names:
            top = name.split(".")[0]
            if top in ALLOWED:
                found.setdefault(top, node.lineno)
    return found


def upward_imports() -> list[str]:
    wrong = []
    for package, allowed in ALLOWED.items():
        for path in sorted((ROOT / package).rglob("*.py")):
            for imported, line in imported_packages(path).items():
                if imported != package and imported not in allowed:
                    wrong.append(f"{path.relative_to(ROOT)}:{line} imports {imported}")
    return wrong


def test_no_package_imports_a_layer_above_it():
    assert upward_imports() == []


def test_the_check_sees_an_upward_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from app.cli import main\n    import pipeline.pipeline\n")
    assert imported_packages(bad) == {"app": 2, "pipeline": 3}


def test_the_contract_imports_nothing_of_the_project():
    assert imported_packages(ROOT / "towers" / "contract.py") == {}
    assert imported_packages(ROOT / "towers" / "features.py") == {}
