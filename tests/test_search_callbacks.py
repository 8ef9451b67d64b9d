"""The search's callbacks and outputs on tiny CPU searches (fastdarts.search.callbacks,
fastdarts.search.outputs): the CNN engine against the original loop written out,
the log, the genotype files, the cell drawings and the alpha plot."""

from __future__ import annotations

import io
import math
import os
import stat
import sys

import pytest
import torch
import torch.nn as nn

from fastdarts import distributed
from fastdarts.loop import Callback, CancelBatch, progress
from fastdarts.loop import callbacks as loop_cb
from fastdarts.search import callbacks as cb
from fastdarts.search import outputs
from fastdarts.space import genotypes as G

from .helpers import (  # noqa: F401  (one_thread: autouse fixture)
    BATCH_EVENTS,
    Recorder,
    one_thread,
    params_equal,
    tiny_engine,
    tiny_parts,
)


def test_search_events_and_a_user_callback_that_cancels(tmp_path):
    """The real CNN engine: the per-batch event order, and a user callback that cancels
    every batch leaves weights and alphas untouched (nothing ran)."""
    rec = Recorder()
    e = tiny_engine(epochs=1, max_steps=2, callbacks=[rec])
    names = [ev for ev, _, _ in rec.events] if e.run() else None
    assert names == ["search_begin", "epoch_begin", *BATCH_EVENTS * 2, "epoch_end", "search_end"]

    class SkipAll(Callback):
        order = -100  # before the architecture update

        def batch_begin(self, e):
            raise CancelBatch

    e = tiny_engine(epochs=1, max_steps=2, callbacks=[SkipAll()], standard=False)
    before = {k: v.clone() for k, v in e.model.state_dict().items()}
    alphas = [a.detach().clone() for a in e.model.arch_parameters()]
    e.run()
    assert all(torch.equal(before[k], v) for k, v in e.model.state_dict().items())
    assert all(torch.equal(a, b) for a, b in zip(alphas, e.model.arch_parameters()))
    # and without the canceller, the same engine does change them
    e = tiny_engine(epochs=1, max_steps=2, standard=False).run()
    assert not all(torch.equal(a, b) for a, b in zip(alphas, e.model.arch_parameters()))


def test_the_engine_uses_lr_of_the_epoch_for_weights_and_eta():
    seen = []

    class Spy(Callback):
        order = -15  # after CosineLR, before the architecture update

        def batch_begin(self, e):
            seen.append((e.epoch, e.optimizer.param_groups[0]["lr"], e.lr))

    etas = []
    e = tiny_engine(epochs=3, max_steps=1, callbacks=[Spy()], standard=False)
    step = e.architect.step
    e.architect.step = lambda *a: (etas.append(a[4]), step(*a))
    e.run()
    want = [loop_cb.CosineLR(0.025, 0.001, 3).lr_at(i) for i in range(3)]
    assert seen == [(i, want[i], want[i]) for i in range(3)]
    assert etas == want


def test_grad_clip_runs_in_the_engine_before_the_weight_step():
    norms = []

    class Norm(Callback):
        order = 1000  # after GradClip

        def after_backward(self, e):
            norms.append(torch.cat([p.grad.flatten() for p in e.model.parameters()]).norm().item())

    tiny_engine(epochs=1, max_steps=2, grad_clip=1e-3, callbacks=[Norm()], standard=False).run()
    assert len(norms) == 2 and all(n <= 1e-3 * (1 + 1e-5) for n in norms)


def _original_loop(epochs, unrolled, impl="reference", n=32):
    """The original train_search.py, written out: per epoch the cosine lr of that
    epoch; per batch of the whole epoch the architect step on (train batch, next
    architecture batch) with eta = lr, then zero_grad, forward, loss, backward, clip 5,
    SGD step."""
    model, architect, optimizer, train, valid, _ = tiny_parts(impl=impl, n=n)
    valid_iter = valid.infinite()
    for epoch in range(epochs):
        lr = 0.001 + (0.025 - 0.001) * (1 + math.cos(math.pi * epoch / epochs)) / 2
        for g in optimizer.param_groups:
            g["lr"] = lr
        model.train()
        for x, y in train:
            xv, yv = next(valid_iter)
            architect.step(x, y, xv, yv, lr, optimizer, unrolled)
            optimizer.zero_grad()
            logits = model(x)
            loss = model._criterion(logits, y)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            optimizer.step()
    return model


@pytest.mark.parametrize("unrolled", [False, True], ids=["first_order", "second_order"])
def test_engine_reproduces_the_original_loop_exactly(unrolled):
    """2 epochs x 2 batches: weights, BatchNorm statistics and alphas bitwise equal."""
    engine = tiny_engine(epochs=2, unrolled=unrolled, n=32).run()
    assert engine.global_step == 4
    manual = _original_loop(2, unrolled)
    assert params_equal(engine.model, manual)
    # the search did move the alphas: the comparison is not between two no-ops
    fresh = tiny_parts()[0]
    assert not any(torch.equal(a, b) for a, b in zip(fresh.arch_parameters(), manual.arch_parameters()))


def test_engine_with_the_fused_classes_matches_the_original_loop_closely():
    """The same loop with fastdarts.nn.Network + fastdarts.Architect (first order)."""
    engine = tiny_engine(epochs=1, impl="fused", n=32).run()
    ref = _original_loop(1, False, impl="reference")
    for a, b in zip(engine.model.arch_parameters(), ref.arch_parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    for a, b in zip(engine.model.parameters(), ref.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_logger_lines_history_and_quiet():
    out = io.StringIO()
    e = tiny_engine(epochs=2, max_steps=2, standard=False,
                    callbacks=[loop_cb.TrainMetrics(), loop_cb.Validation(tiny_parts()[5]),
                               cb.Logger(report_freq=1, stream=out)]).run()
    text = out.getvalue()
    assert "epoch 1/2 lr=0.02500 train_loss=" in text and "epoch 2/2 lr=0.01300" in text
    assert "valid_acc" in text and "genotype = Genotype(" in text
    assert "softmax(alpha_normal)" in text and "softmax(alpha_reduce)" in text
    assert text.count("train step=000 loss=") == 2 and text.count("train step=001 loss=") == 2
    assert "\r" not in text  # not a terminal: no progress bar
    row = e.history[-1]
    assert {"epoch", "lr", "train_loss", "train_acc", "valid_loss", "valid_acc", "genotype",
            "alphas"} <= set(row)
    assert len(row["alphas"]["normal"]) == 14 and sum(row["alphas"]["normal"][0]) == pytest.approx(1)
    quiet = io.StringIO()
    tiny_engine(epochs=1, max_steps=1, standard=False,
                callbacks=[loop_cb.TrainMetrics(), cb.Logger(stream=quiet, quiet=True)]).run()
    assert quiet.getvalue() == ""


def test_logger_progress_bar_on_a_terminal(monkeypatch):
    class Tty(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.setattr(progress, "_tqdm", lambda: None)  # the built-in bar
    out = Tty()
    tiny_engine(epochs=1, max_steps=2, standard=False, callbacks=[cb.Logger(stream=out)]).run()
    assert "[" in out.getvalue() and "2/2" in out.getvalue()


def test_logger_only_on_rank0(monkeypatch):
    monkeypatch.setattr(distributed, "is_rank0", lambda: False)
    out = io.StringIO()
    tiny_engine(epochs=1, max_steps=1, standard=False, callbacks=[cb.Logger(stream=out)]).run()
    assert out.getvalue() == ""


def test_genotype_log_and_cell_drawing(tmp_path):
    e = tiny_engine(tmp_path, epochs=2, max_steps=1).run()
    lines = (tmp_path / "genotypes.jsonl").read_text().splitlines()
    assert len(lines) == 2
    final = G.load_json(tmp_path / "genotype.json")
    assert final == e.model.genotype()
    for kind in ("normal", "reduce"):
        dot = (tmp_path / f"{kind}.dot").read_text()
        assert dot.startswith(f"digraph {kind}")
        edges = [ln for ln in dot.splitlines() if "label=" in ln]
        assert len(edges) == 8  # two inputs for each of the 4 nodes
        assert [ln.split('label="')[1].split('"')[0] for ln in edges] == [op for op, _ in
                                                                          getattr(final, kind)]
        assert dot.count('-> "c_{k}"') == 4
    # a rerun in the same directory starts genotypes.jsonl afresh
    tiny_engine(tmp_path, epochs=1, max_steps=1).run()
    assert len((tmp_path / "genotypes.jsonl").read_text().splitlines()) == 1


def test_cell_drawing_renders_with_dot_when_installed(tmp_path, monkeypatch):
    fake = tmp_path / "bin" / "dot"
    fake.parent.mkdir()
    fake.write_text(f"#!{sys.executable}\nimport sys\nopen(sys.argv[-1], 'w').write(sys.argv[1])\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setattr(outputs.shutil, "which", lambda name: str(fake) if name == "dot" else None)
    save = tmp_path / "out"
    save.mkdir()
    tiny_engine(save, epochs=1, max_steps=1).run()
    assert (save / "normal.png").read_text() == "-Tpng" and (save / "reduce.svg").read_text() == "-Tsvg"
    monkeypatch.setattr(outputs.shutil, "which", lambda name: None)
    save2 = tmp_path / "out2"
    save2.mkdir()
    tiny_engine(save2, epochs=1, max_steps=1).run()
    assert sorted(os.listdir(save2)) == ["checkpoint.pt", "genotype.json", "genotypes.jsonl",
                                         "normal.dot", "reduce.dot"]


def test_alpha_plot_without_matplotlib_says_so_once(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import fails
    tiny_engine(epochs=2, max_steps=1, callbacks=[outputs.AlphaPlot(str(tmp_path))]).run()
    err = capsys.readouterr().err
    assert err.count("alphas.png not written: matplotlib is not installed") == 1
    assert not (tmp_path / "alphas.png").exists()


def test_edge_names_follow_the_alpha_rows():
    names = outputs.edge_names("normal", 14)
    assert names[:5] == ["c_{k-2} -> 0", "c_{k-1} -> 0", "c_{k-2} -> 1", "c_{k-1} -> 1", "0 -> 1"]
    assert names[-1] == "2 -> 3"
    rnn = outputs.edge_names("recurrent", 36)
    assert rnn[:3] == ["0 -> 1", "0 -> 2", "1 -> 2"] and rnn[-1] == "7 -> 8"


def test_alpha_plot_with_matplotlib(tmp_path):
    pytest.importorskip("matplotlib")
    tiny_engine(epochs=2, max_steps=1, callbacks=[outputs.AlphaPlot(str(tmp_path))]).run()
    assert (tmp_path / "alphas.png").read_bytes()[:4] == b"\x89PNG"
