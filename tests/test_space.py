"""fastdarts.space, the search space every layer builds from, and the layering around it."""

from __future__ import annotations

import ast
import pathlib

import pytest
import torch
import torch.nn as nn

import fastdarts
from fastdarts import nn as fnn
from fastdarts import space
from fastdarts.reference import cnn

PACKAGE = pathlib.Path(fastdarts.__file__).parent


def _fastdarts_imports(path: pathlib.Path) -> set[str]:
    """The fastdarts modules a file imports, as dotted names (relative imports resolved)."""
    module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    package = module.split(".")[:-1]  # for an __init__.py, module ends in ".__init__"
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names if a.name.split(".")[0] == "fastdarts")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            if name.split(".")[0] == "fastdarts":
                names.add(name)
    return names


def _files(sub: str) -> list[pathlib.Path]:
    return sorted((PACKAGE / sub).rglob("*.py"))


def test_space_imports_nothing_of_fastdarts_but_itself():
    for path in _files("space"):
        for name in _fastdarts_imports(path):
            assert name.startswith("fastdarts.space"), (path.name, name)


def test_reference_never_imports_the_fused_layers():
    for path in _files("reference"):
        for name in _fastdarts_imports(path):
            assert name.split(".")[1] in ("space", "reference"), (path.name, name)


def test_public_names():
    assert fastdarts.genotypes is space.genotypes
    assert fastdarts.Genotype is space.Genotype and fastdarts.RNNGenotype is space.RNNGenotype
    # the reference keeps the original's names for the ops (the drop-in API)
    assert cnn.OPS is space.OPS and cnn.PRIMITIVES is space.PRIMITIVES
    assert cnn.SepConv is space.operations.SepConv


@pytest.mark.parametrize("memory", ["plain", "shared", "checkpoint"])
def test_fused_and_reference_networks_from_one_seed_are_identical(memory):
    """The fused Network is the reference's constructor with fused cells: the same module
    tree, state_dict (keys and values) and alphas from one seed, in every memory mode."""
    torch.manual_seed(3)
    ref = cnn.Network(4, 5, 5, nn.CrossEntropyLoss(), steps=3, multiplier=3)
    after_ref = torch.randn(3)
    torch.manual_seed(3)
    fused = fnn.Network(4, 5, 5, nn.CrossEntropyLoss(), steps=3, multiplier=3, memory=memory)
    assert torch.equal(torch.randn(3), after_ref)  # the same number of draws
    names = [(n, type(m).__name__) for n, m in ref.named_modules()]
    assert [n for n, _ in fused.named_modules()] == [n for n, _ in names]
    ref_sd, fused_sd = ref.state_dict(), fused.state_dict()
    assert list(fused_sd) == list(ref_sd)
    for name, a in ref_sd.items():
        assert torch.equal(fused_sd[name], a), name
    for a, b in zip(ref.arch_parameters(), fused.arch_parameters(), strict=True):
        assert torch.equal(a, b)
    assert all(type(c) is fnn.Cell for c in fused.cells)
    ops = [op for c in fused.cells for op in c._ops]
    assert len(ops) == 5 * 9 and all(type(op) is fnn.MixedOp and op.memory == memory for op in ops)
    assert fused.memory == memory
    twin = fused.new()
    assert type(twin) is fnn.Network and twin.memory == memory
    assert all(torch.equal(a, b) for a, b in zip(twin.arch_parameters(), fused.arch_parameters()))
    assert type(ref.new()) is cnn.Network


def test_fused_cell_rejects_an_unknown_memory_mode():
    with pytest.raises(ValueError, match="memory must be one of"):
        fnn.Cell(4, 4, 8, 8, 4, False, False, memory="none")
    with pytest.raises(ValueError, match="memory must be one of"):
        fnn.Network(4, 5, 5, nn.CrossEntropyLoss(), memory="none")
