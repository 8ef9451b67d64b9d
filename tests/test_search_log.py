"""The search log a reader meets (issue 17): labelled softmax(alpha) tables and
metric rows, and the summary a search ends with."""

from __future__ import annotations

import torch
import torch.nn as nn

from fastdarts.nn import Network
from fastdarts.search import outputs
from fastdarts.search.callbacks import _kv, format_alphas
from fastdarts.space import genotypes as G

from .helpers import one_thread  # noqa: F401  (autouse fixture)


def test_alpha_rows_carry_a_header_of_ops_and_the_edge_names():
    model = Network(2, 10, 3, nn.CrossEntropyLoss())
    with torch.no_grad():
        model.arch_parameters()[0][1, G.PRIMITIVES.index("sep_conv_3x3")] += 2.0
    lines = format_alphas(model).splitlines()
    assert lines[0].startswith("  softmax(alpha_normal)") and "uniform = 0.125" in lines[0]
    assert lines[1].split() == ["edge", "none", "max3x3", "avg3x3", "skip", "sep3x3", "sep5x5",
                                "dil3x3", "dil5x5"]
    row = lines[3]  # edge 1: c_{k-1} -> 0, sep_conv_3x3 raised
    assert row.split()[:3] == ["c_{k-1}", "->", "0"] and row.count("*") == 1
    cells = row.split()[3:]
    assert cells[G.PRIMITIVES.index("sep_conv_3x3")].endswith("*")
    assert len(lines) == 2 + 14 + 2 + 14  # a header per cell kind, a row per edge
    # every number sits under its op: the columns line up with the header
    header = lines[1]
    star = row.index("*")
    assert header[star - len("sep3x3"):star] == "sep3x3"


def test_metric_rows_are_key_value():
    assert _kv({"train_loss": 2.5, "valid_n": 899}) == "train_loss=2.5000 valid_n=899"


class _Engine:
    epochs, steps_per_epoch, start_epoch, global_step, wall_seconds, num_classes = 2, 5, 0, 10, 12.0, 10
    genotype = G.DARTS_V2


def test_the_summary_names_each_output_and_the_learning(tmp_path):
    for name in ("genotype.json", "genotypes.jsonl", "checkpoint.pt", "normal.dot", "reduce.dot"):
        (tmp_path / name).write_text("")
    e = _Engine()
    uniform = [[0.125] * 8] * 14
    moved = [[0.05, 0.3] + [0.65 / 6] * 6] * 14
    e.history = [{"epoch": 0, "seconds": 4.0, "valid_acc": 0.5, "alphas": {"normal": uniform}},
                 {"epoch": 1, "seconds": 6.0, "valid_acc": 0.8, "alphas": {"normal": moved}}]
    text = outputs.summary(e, str(tmp_path), "cnn")
    assert "2 epochs x 5 steps" in text and "1.000 s per step" in text
    assert "final valid_acc=0.8000 (chance 0.10); softmax(alpha) spans 0.050 to 0.300" in text
    assert f"train it: fastdarts train cnn --arch {tmp_path}/genotype.json" in text
    assert f"--resume {tmp_path}/checkpoint.pt" in text
    assert "graphviz's dot is not installed" in text and f"dot -Tpng {tmp_path}/normal.dot" in text
    assert "alphas.png" not in text  # only what exists is listed


def test_the_embedded_default_moves_the_alphas_visibly(tmp_path, monkeypatch):
    """The demo's architecture learning rate: a few steps at the embedded default's
    settings move softmax(alpha) visibly off uniform (at the original's 3e-4 the whole
    3-epoch demo stayed within 0.123..0.127).  Validation stubbed: not what is checked."""
    from fastdarts import config
    from fastdarts.loop import callbacks as loop_cb
    from fastdarts.search import CNNSearchConfig, search_cnn
    from fastdarts.search.callbacks import softmax_alphas

    monkeypatch.setattr(loop_cb.Validation, "epoch_end", lambda self, e: None)
    monkeypatch.setattr(outputs.AlphaPlot, "search_end", lambda self, e: None)
    small = config.defaults(CNNSearchConfig, small=True)
    small.update(init_channels=2, batch_size=16, epochs=1, max_steps_per_epoch=4, quiet=True,
                 save=str(tmp_path / "s"), impl="reference")
    engine = search_cnn(CNNSearchConfig(**small))
    probs = torch.tensor([softmax_alphas(engine.model)[k] for k in ("normal", "reduce")])
    assert float(probs.max() - probs.min()) > 0.01  # at 3e-4, 4 steps move it < 0.001
