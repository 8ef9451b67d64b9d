"""``fastdarts search cnn --space nb201``: the in-process CLI end to end on the embedded
digits (outputs, the exact resume), the classes it builds, and its one-line refusals."""

from __future__ import annotations

import json

import pytest
import torch

from fastdarts import cli, methods
from fastdarts.config import ConfigError
from fastdarts.loop.state import read_checkpoint
from fastdarts.methods import Method
from fastdarts.reference.cnn import nb201 as R
from fastdarts.search import CNNSearchConfig, outputs
from fastdarts.search import callbacks as cb
from fastdarts.search import cnn as search_cnn_mod
from fastdarts.search.checkpoint import FORMAT
from fastdarts.search.cnn import build, method_config
from fastdarts.space import genotypes as G
from fastdarts.space import nb201 as S

from .helpers import one_thread, tiny_data  # noqa: F401  (autouse fixture)

FLAGS = ["search", "cnn", "--space", "nb201", "--init_channels", "2", "--batch_size", "16",
         "--max_steps_per_epoch", "2", "--quiet"]


def _alphas(save):
    return read_checkpoint(str(save / "checkpoint.pt"), FORMAT, what="t", start_afresh="t")["alphas"]


def test_cli_search_writes_the_arch_string_and_resumes_exactly(tmp_path, capsys):
    once, split = tmp_path / "once", tmp_path / "split"
    assert cli.main([*FLAGS, "--epochs", "2", "--save", str(once)]) == 0
    out = capsys.readouterr().out
    arch = (once / "arch.txt").read_text().strip()
    assert f"genotype = {arch}" in out
    S.validate_arch(arch)
    saved = json.loads((once / "genotype.json").read_text())
    assert saved["space"] == "nb201" and saved["nb201"] == arch and saved["ops"] == S.NB201_OPS
    assert G.from_dict(saved) == arch
    lines = [json.loads(x) for x in (once / "genotypes.jsonl").read_text().splitlines()]
    assert [x["epoch"] for x in lines] == [0, 1] and lines[-1]["nb201"] == arch
    dot = (once / "cell.dot").read_text()
    assert dot.startswith("digraph cell") and "label=" in dot
    alphas = _alphas(once)
    assert [tuple(a.shape) for a in alphas] == [(6, 5)]
    # stop after one epoch, resume for the second: the same alphas, bit for bit
    assert cli.main([*FLAGS, "--epochs", "1", "--save", str(split)]) == 0
    assert cli.main([*FLAGS, "--epochs", "2", "--save", str(split),
                     "--resume", str(split / "checkpoint.pt")]) == 0
    assert torch.equal(_alphas(split)[0], alphas[0])
    assert (split / "arch.txt").read_text().strip() == arch
    # a checkpoint of another space (or cell count) is refused in one line
    capsys.readouterr()
    assert cli.main([*FLAGS, "--epochs", "3", "--cells_per_stage", "2", "--save", str(split),
                     "--resume", str(split / "checkpoint.pt")]) == 2
    err = capsys.readouterr().err
    assert "cells_per_stage: checkpoint 1, now 2" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("impl", ["fused", "reference"])
def test_build_makes_the_nb201_supernet_of_the_impl(tmp_path, impl):
    cfg = method_config("darts", space="nb201", impl=impl, init_channels=2, cells_per_stage=2,
                        save=str(tmp_path / "s"), quiet=True, epochs=1, max_steps_per_epoch=1)
    e = build(cfg)
    m = e.model
    assert isinstance(m, R.TinyNetworkDarts)
    assert (type(m).__module__ == "fastdarts.nn.nb201") == (impl == "fused")
    assert m._C == 2 and m._layerN == 2 and len(m.cells) == 8 and m._num_classes == 10
    assert not m._track_running_stats and m.op_names == S.NB201_OPS
    assert [tuple(a.shape) for a in e.architect.optimizer.param_groups[0]["params"]] == [(6, 5)]
    assert all(p is not m.alphas for p in e.optimizer.param_groups[0]["params"])
    assert cb.alpha_kinds(m) == ["nb201"]
    assert outputs.edge_names("nb201", 6) == ["0 -> 1", "0 -> 2", "1 -> 2", "0 -> 3", "1 -> 3", "2 -> 3"]
    table = cb.format_alphas(m)
    assert "nor3x3" in table and "2 -> 3" in table


@pytest.fixture
def other_method():
    m = methods.register(Method(name="toy-nb201", paper="nobody", summary="test"))
    yield m
    del methods.METHODS["toy-nb201"]


def test_refusals_are_one_line_config_errors(tmp_path, other_method, monkeypatch, capsys):
    base = dict(space="nb201", save=str(tmp_path / "s"), quiet=True)
    with pytest.raises(ConfigError, match="--space nb201 runs --method darts only"):
        method_config("toy-nb201", **base)
    with pytest.raises(ConfigError, match=r"--op_set: unknown op set 'mine'; known: darts, nb201"):
        method_config("darts", op_set="mine", **base)
    with pytest.raises(ConfigError, match="--op_set applies to --space nb201"):
        method_config("darts", op_set="nb201", save=str(tmp_path / "s"))
    with pytest.raises(ConfigError, match="drop --cuda_graph"):
        method_config("darts", cuda_graph=True, **base)
    # 18x18 images: the two stride-2 blocks need sides that are multiples of 4
    monkeypatch.setattr(search_cnn_mod, "load_digits_images",
                        lambda: tiny_data(n=16, size=18, num_classes=10))
    with pytest.raises(ConfigError, match="--space nb201: .*multiples of 4.*height is 18"):
        build(CNNSearchConfig(**base, init_channels=2, cells_per_stage=1))
    assert cli.main([*FLAGS, "--op_set", "mine", "--save", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("fastdarts: error: --op_set: unknown op set") and "\n" not in err
