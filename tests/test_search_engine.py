"""The search engine and its callbacks (tiny CPU searches; fastdarts.search.engine,
fastdarts.search.callbacks).  The helpers at the top are shared with
tests/test_checkpoint.py and tests/test_search_cnn.py."""

from __future__ import annotations

import io
import math
import os
import stat
import sys
from types import SimpleNamespace

import pytest
import torch
import torch.nn as nn

from fastdarts.data import DeviceLoader, ImageData, search_split
from fastdarts.search import Callback, CancelBatch, CancelEpoch, CancelSearch, Engine
from fastdarts.search import callbacks as cb
from fastdarts.search.checkpoint import Checkpoint
from fastdarts.search.cnn import CNNSearch, model_classes, seed_everything
from fastdarts.space import genotypes as G

from .helpers import one_thread  # noqa: F401  (autouse fixture)

ARGS = dict(momentum=0.9, weight_decay=3e-4, arch_learning_rate=3e-4, arch_weight_decay=1e-3)


def tiny_data(n: int = 64, size: int = 8, num_classes: int = 3, seed: int = 0) -> ImageData:
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8)
    labels = torch.randint(0, num_classes, (n,), generator=g)
    return ImageData(images, labels, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), num_classes, "tiny")


def tiny_parts(seed: int = 2, impl: str = "reference", C: int = 2, layers: int = 3, batch: int = 8,
               num_classes: int = 3, n: int = 64):
    """(model, architect, optimizer, train loader, valid loader, eval loader), seeded."""
    seed_everything(seed)
    w_half, a_half = search_split(tiny_data(n=n, num_classes=num_classes), 0.5)
    train = DeviceLoader(w_half, batch, "cpu", augment=True, seed=seed)
    valid = DeviceLoader(a_half, batch, "cpu", augment=True, seed=seed + 1)
    evaluate = DeviceLoader(a_half, 64, "cpu", augment=False, shuffle=False)
    Network, Architect = model_classes("cnn", impl)
    model = Network(C, num_classes, layers, nn.CrossEntropyLoss())
    optimizer = torch.optim.SGD(model.parameters(), 0.025, momentum=0.9, weight_decay=3e-4)
    architect = Architect(model, SimpleNamespace(**ARGS))
    return model, architect, optimizer, train, valid, evaluate


def tiny_engine(save=None, *, epochs: int = 2, unrolled: bool = False, impl: str = "reference",
                callbacks=(), standard: bool = True, max_steps=None, grad_clip: float = 5.0, **kw):
    """A CNNSearch with the standard callbacks (those of build()) plus ``callbacks``."""
    model, architect, optimizer, train, valid, evaluate = tiny_parts(impl=impl, **kw)
    cbs = [cb.CosineLR(0.025, 0.001, epochs), cb.ArchitectureUpdate(), cb.GradClip(grad_clip)]
    if standard:
        cbs += [cb.TrainMetrics(), cb.Validation(evaluate), cb.Logger(quiet=True)]
    if save is not None:
        cbs += [cb.GenotypeLog(str(save)), cb.CellDrawing(str(save)), Checkpoint(str(save))]
    engine = CNNSearch(model, architect, optimizer, train, valid, epochs=epochs, unrolled=unrolled,
                       device="cpu", callbacks=[*cbs, *callbacks], lr=0.025, max_steps_per_epoch=max_steps)
    engine.config_key = {"impl": impl, "unrolled": unrolled, "C": kw.get("C", 2),
                         "layers": kw.get("layers", 3)}
    return engine


def params_equal(m1, m2) -> bool:
    """Weights, buffers (BatchNorm running statistics) and alphas all bitwise equal."""
    s1, s2 = m1.state_dict(), m2.state_dict()
    return (s1.keys() == s2.keys() and all(torch.equal(s1[k], s2[k]) for k in s1)
            and all(torch.equal(a, b) for a, b in zip(m1.arch_parameters(), m2.arch_parameters())))


# --------------------------------------------------------------------------- events


class Recorder(Callback):
    order = -1000  # first: sees every event before anything can cancel

    def __init__(self):
        self.events = []

    def __call__(self, event, engine):
        self.events.append((event, engine.epoch, engine.step))


class ListEngine(Engine):
    """The bare engine over a fixed list of batches (no model): the loop's logic alone."""

    def __init__(self, epochs, batches, callbacks=()):
        super().__init__(epochs, callbacks)
        self.batches = batches
        self.done = []

    def train_batches(self):
        yield from self.batches

    def one_batch(self, batch):
        self.fire("after_arch_step")
        self.fire("after_backward")
        self.done.append((self.epoch, batch))
        self.fire("after_weight_step")


BATCH_EVENTS = ["batch_begin", "after_arch_step", "after_backward", "after_weight_step", "batch_end"]


def test_events_fire_in_order():
    rec = Recorder()
    e = ListEngine(2, ["a", "b"], [rec]).run()
    names = [ev for ev, _, _ in rec.events]
    per_epoch = ["epoch_begin", *BATCH_EVENTS * 2, "epoch_end"]
    assert names == ["search_begin", *per_epoch * 2, "search_end"]
    assert [(ep, st) for ev, ep, st in rec.events if ev == "batch_begin"] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert e.global_step == 4 and not e.stopped


def test_callbacks_run_by_order_and_can_be_added():
    seen = []

    def make(tag, order):
        class C(Callback):
            def epoch_begin(self, e):
                seen.append(tag)
        c = C()
        c.order = order
        return c

    e = ListEngine(1, ["a"], [make("late", 5), make("early", -5), make("mid1", 0), make("mid2", 0)])
    e.add_callback(make("added", -1))
    e.run()
    assert seen == ["early", "added", "mid1", "mid2", "late"]


def test_cancel_batch_epoch_and_search():
    class Cancel(Callback):
        order = -100

        def __init__(self):
            self.calls = 0

        def batch_begin(self, e):
            if e.epoch == 0 and e.step == 1:
                raise CancelBatch       # skip batch b of epoch 0
            if e.epoch == 1 and e.step == 1:
                raise CancelEpoch       # skip the rest of epoch 1
            if e.epoch == 2:
                raise CancelSearch      # stop at the start of epoch 2

    rec = Recorder()
    e = ListEngine(5, ["a", "b", "c"], [rec, Cancel()]).run()
    assert e.done == [(0, "a"), (0, "c"), (1, "a")]
    assert e.stopped
    names = [ev for ev, _, _ in rec.events]
    assert names.count("epoch_end") == 2          # epochs 0 and 1 (cancelled) end; 2 was stopped
    assert names[-1] == "search_end"
    assert names.count("batch_end") == 3


def test_stop_flag_ends_after_the_batch():
    class StopAt(Callback):
        def batch_end(self, e):
            if e.global_step == 3:
                e.stop = True

    rec = Recorder()
    e = ListEngine(5, ["a", "b", "c"], [rec, StopAt()]).run()
    assert e.done == [(0, "a"), (0, "b"), (0, "c"), (1, "a")]
    assert e.stopped and not e.epoch_complete
    names = [ev for ev, _, _ in rec.events]
    assert names[-2:] == ["epoch_end", "search_end"]


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


# --------------------------------------------------------------------------- callbacks


def test_cosine_lr_values_and_modern_semantics():
    c = cb.CosineLR(0.025, 0.001, 50)
    assert c.lr_at(0) == 0.025
    assert c.lr_at(25) == pytest.approx(0.013, abs=1e-12)
    assert c.lr_at(50) == pytest.approx(0.001, abs=1e-12)
    assert c.lr_at(10) == pytest.approx(0.001 + 0.024 * (1 + math.cos(math.pi * 10 / 50)) / 2, abs=1e-15)
    assert all(c.lr_at(i) > c.lr_at(i + 1) for i in range(50))
    # epoch e uses lr(e): what CosineAnnealingLR gives after e scheduler.step() calls
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.025)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, 50, eta_min=0.001)
    for epoch in range(50):
        assert opt.param_groups[0]["lr"] == pytest.approx(c.lr_at(epoch), rel=1e-9)
        opt.step()
        sched.step()


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
    want = [cb.CosineLR(0.025, 0.001, 3).lr_at(i) for i in range(3)]
    assert seen == [(i, want[i], want[i]) for i in range(3)]
    assert etas == want


def test_grad_clip_clips_and_keeps_direction():
    lin = nn.Linear(10, 10)
    for p in lin.parameters():
        p.grad = torch.full_like(p, 3.0)
    before = torch.cat([p.grad.flatten() for p in lin.parameters()])
    assert before.norm() > 5
    cb.GradClip(5.0).after_backward(SimpleNamespace(model=lin))
    after = torch.cat([p.grad.flatten() for p in lin.parameters()])
    assert after.norm() == pytest.approx(5.0, rel=1e-5)
    assert torch.allclose(after / after.norm(), before / before.norm())
    # small gradients are left alone
    for p in lin.parameters():
        p.grad = torch.full_like(p, 1e-3)
    cb.GradClip(5.0).after_backward(SimpleNamespace(model=lin))
    assert all(torch.equal(p.grad, torch.full_like(p, 1e-3)) for p in lin.parameters())


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
                    callbacks=[cb.TrainMetrics(), cb.Validation(tiny_parts()[5]),
                               cb.Logger(report_freq=1, stream=out)]).run()
    text = out.getvalue()
    assert "epoch 1/2 lr 0.02500 train_loss" in text and "epoch 2/2 lr 0.01300" in text
    assert "valid_acc" in text and "genotype = Genotype(" in text
    assert "softmax(alpha_normal)" in text and "softmax(alpha_reduce)" in text
    assert text.count("train 000 loss") == 2 and text.count("train 001 loss") == 2
    assert "\r" not in text  # not a terminal: no progress bar
    row = e.history[-1]
    assert {"epoch", "lr", "train_loss", "train_acc", "valid_loss", "valid_acc", "genotype",
            "alphas"} <= set(row)
    assert len(row["alphas"]["normal"]) == 14 and sum(row["alphas"]["normal"][0]) == pytest.approx(1)
    quiet = io.StringIO()
    tiny_engine(epochs=1, max_steps=1, standard=False,
                callbacks=[cb.TrainMetrics(), cb.Logger(stream=quiet, quiet=True)]).run()
    assert quiet.getvalue() == ""


def test_logger_progress_bar_on_a_terminal(monkeypatch):
    class Tty(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.setattr(cb, "_tqdm", lambda: None)  # the built-in bar
    out = Tty()
    tiny_engine(epochs=1, max_steps=2, standard=False, callbacks=[cb.Logger(stream=out)]).run()
    assert "[" in out.getvalue() and "2/2" in out.getvalue()


def test_logger_only_on_rank0(monkeypatch):
    monkeypatch.setattr(cb, "_is_rank0", lambda: False)
    out = io.StringIO()
    tiny_engine(epochs=1, max_steps=1, standard=False, callbacks=[cb.Logger(stream=out)]).run()
    assert out.getvalue() == ""


def test_validation_is_eval_mode_no_grad_and_counts_everything():
    modes = []
    model, *_, evaluate = tiny_parts()
    hook = model.register_forward_hook(lambda m, i, o: modes.append((m.training, torch.is_grad_enabled())))
    e = SimpleNamespace(model=model, device=torch.device("cpu"), metrics={})
    cb.Validation(evaluate).epoch_end(e)
    hook.remove()
    assert modes and all(m == (False, False) for m in modes)
    assert model.training  # put back in train mode
    with torch.no_grad():
        model.eval()
        x, y = next(iter(evaluate))
        logits = model(x)
        model.train()
    assert e.metrics["valid_acc"] == (logits.argmax(1) == y).float().mean().item()
    assert e.metrics["valid_loss"] == pytest.approx(nn.functional.cross_entropy(logits, y).item(), rel=1e-5)


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
    monkeypatch.setattr(cb.shutil, "which", lambda name: str(fake) if name == "dot" else None)
    save = tmp_path / "out"
    save.mkdir()
    tiny_engine(save, epochs=1, max_steps=1).run()
    assert (save / "normal.png").read_text() == "-Tpng" and (save / "reduce.svg").read_text() == "-Tsvg"
    monkeypatch.setattr(cb.shutil, "which", lambda name: None)
    save2 = tmp_path / "out2"
    save2.mkdir()
    tiny_engine(save2, epochs=1, max_steps=1).run()
    assert sorted(os.listdir(save2)) == ["checkpoint.pt", "genotype.json", "genotypes.jsonl",
                                         "normal.dot", "reduce.dot"]


def test_alpha_plot_without_matplotlib_says_so_once(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import fails
    tiny_engine(epochs=2, max_steps=1, callbacks=[cb.AlphaPlot(str(tmp_path))]).run()
    err = capsys.readouterr().err
    assert err.count("alphas.png not written: matplotlib is not installed") == 1
    assert not (tmp_path / "alphas.png").exists()


def test_edge_names_follow_the_alpha_rows():
    names = cb.edge_names("normal", 14)
    assert names[:5] == ["c_{k-2} -> 0", "c_{k-1} -> 0", "c_{k-2} -> 1", "c_{k-1} -> 1", "0 -> 1"]
    assert names[-1] == "2 -> 3"
    rnn = cb.edge_names("recurrent", 36)
    assert rnn[:3] == ["0 -> 1", "0 -> 2", "1 -> 2"] and rnn[-1] == "7 -> 8"


def test_alpha_plot_with_matplotlib(tmp_path):
    pytest.importorskip("matplotlib")
    tiny_engine(epochs=2, max_steps=1, callbacks=[cb.AlphaPlot(str(tmp_path))]).run()
    assert (tmp_path / "alphas.png").read_bytes()[:4] == b"\x89PNG"


def test_tensorboard_is_silent_without_tensorboard(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    tb = cb.TensorBoard(str(tmp_path))
    tiny_engine(epochs=1, max_steps=1, callbacks=[tb]).run()
    assert tb.writer is None and capsys.readouterr().err == ""
    assert not (tmp_path / "tb").exists()
