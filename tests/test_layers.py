"""The package's import graph is one-way: each unit imports only itself and the units below it.

models / algorithms / rewards / sampling (and the small shared modules) sit below tasks and
environments (`envs`), which sit below the reward plug-ins (`methods`) and evaluation, below the trainer (`train`), below the recipes,
below the CLI (docs/recipes.md). Every import statement counts, including those inside functions.
"""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "jaxrl_self"
LAYERS = [  # lowest first; a unit may import the units of earlier layers and itself
    {"errors"},
    {"parallel", "algorithms", "metrics"},
    {"report"},
    {"models", "rewards"},
    {"sampling"},
    {"checkpoint", "tasks", "envs"},
    {"config"},
    {"eval"},
    {"methods"},
    {"train"},
    {"recipes"},
    {"cli"},
]
LEVEL = {unit: level for level, units in enumerate(LAYERS) for unit in units}


def unit_of(module: str) -> str:
    """`jaxrl_self.train.loop` -> "train"."""
    return module.split(".")[1]


def imported_units(path: Path) -> set[str]:
    """The jaxrl_self units the module at `path` imports (absolute imports; the package uses no relative ones)."""
    units = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.ImportFrom):
            assert not node.level, f"{path}: relative import"
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        units |= {unit_of(name) for name in names if name.startswith("jaxrl_self.")}
    return units


def test_every_unit_has_a_layer():
    units = {p.stem if p.parent == PACKAGE else p.relative_to(PACKAGE).parts[0] for p in PACKAGE.rglob("*.py")}
    assert units - {"__init__"} <= set(LEVEL), units - set(LEVEL)


def test_no_module_imports_a_higher_or_equal_unit():
    upward = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.parent == PACKAGE and path.stem == "__init__":
            continue
        unit = path.stem if path.parent == PACKAGE else path.relative_to(PACKAGE).parts[0]
        for imported in imported_units(path):
            if imported != unit and LEVEL[imported] >= LEVEL[unit]:
                upward.append(f"{path.relative_to(PACKAGE.parent)} ({unit}) imports {imported}")
    assert not upward, "\n".join(upward)


def test_the_check_finds_an_upward_import(tmp_path):
    """The check itself: a model module importing the trainer is caught."""
    module = tmp_path / "bad.py"
    module.write_text("def f():\n    from jaxrl_self.train.loop import train\n")
    assert imported_units(module) == {"train"} and LEVEL["train"] > LEVEL["models"]
