"""The package's floors (README, "Layout"): every import of a fastdarts module,
at module level or inside a function, goes to the same floor or one below.
Read from the source with ``ast``, so nothing is imported to check it."""

from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1] / "fastdarts"

# floor of each top-level module or package of fastdarts (the README's table)
FLOORS = {
    "kernels": 0, "_ext": 0, "_C": 0,
    "space": 1, "data": 1,
    "backends": 2, "ops": 2, "reference": 2, "functional": 2, "config": 2,
    "nn": 3, "architect": 3, "flat_buffers": 3,
    "step": 4, "rnn_step": 4, "distributed": 4, "regression": 4,
    "loop": 5, "methods": 5,
    "search": 6, "train": 6, "profile": 6,
    "cli": 7, "__main__": 7,
}


def _module_of(path: pathlib.Path) -> list[str]:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    parts = list(rel.parts)
    return parts[:-1] if parts[-1] == "__init__" else parts


def _imports(path: pathlib.Path):
    """(line, 'fastdarts.x.y') for every import of a fastdarts module in ``path``."""
    here = _module_of(path)
    package = here if path.name == "__init__.py" else here[:-1]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "fastdarts":
                    yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - (node.level - 1)]
                target = ".".join([*base, *(node.module.split(".") if node.module else [])])
            elif node.module and node.module.split(".")[0] == "fastdarts":
                target = node.module
            else:
                continue
            if target == "fastdarts":  # from fastdarts import x, y: each name is a module
                for alias in node.names:
                    yield node.lineno, f"fastdarts.{alias.name}"
            else:
                yield node.lineno, target


def _floor(dotted: str) -> int | None:
    parts = dotted.split(".")
    if parts[0] != "fastdarts" or len(parts) < 2:
        return None
    return FLOORS.get(parts[1])


SOURCES = sorted(p for p in ROOT.rglob("*.py"))


def test_every_module_has_a_floor():
    tops = {_module_of(p)[1] for p in SOURCES if len(_module_of(p)) > 1}
    assert tops <= set(FLOORS), f"modules without a floor in FLOORS: {sorted(tops - set(FLOORS))}"


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT.parent)))
def test_no_import_reaches_up(path):
    here = _module_of(path)
    if len(here) < 2:  # fastdarts/__init__.py: the public surface re-exports every floor
        return
    mine = FLOORS[here[1]]
    up = [(line, target) for line, target in _imports(path)
          if (floor := _floor(target)) is not None and floor > mine]
    assert not up, f"{path.name} (floor {mine}) imports from above: {up}"
