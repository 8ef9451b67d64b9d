"""The loop engine and the callbacks every loop shares (fastdarts.loop.engine,
fastdarts.loop.callbacks): event order, cancelling, the cosine lr, clipping,
validation and TensorBoard."""

from __future__ import annotations

import math
import sys
from types import SimpleNamespace

import pytest
import torch
import torch.nn as nn

from fastdarts.loop import Callback, CancelBatch, CancelEpoch, CancelSearch, Engine
from fastdarts.loop import callbacks as loop_cb

from .helpers import BATCH_EVENTS, Recorder, one_thread, tiny_engine, tiny_parts  # noqa: F401


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


def test_cosine_lr_values_and_modern_semantics():
    c = loop_cb.CosineLR(0.025, 0.001, 50)
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


def test_grad_clip_clips_and_keeps_direction():
    lin = nn.Linear(10, 10)
    for p in lin.parameters():
        p.grad = torch.full_like(p, 3.0)
    before = torch.cat([p.grad.flatten() for p in lin.parameters()])
    assert before.norm() > 5
    loop_cb.GradClip(5.0).after_backward(SimpleNamespace(model=lin))
    after = torch.cat([p.grad.flatten() for p in lin.parameters()])
    assert after.norm() == pytest.approx(5.0, rel=1e-5)
    assert torch.allclose(after / after.norm(), before / before.norm())
    # small gradients are left alone
    for p in lin.parameters():
        p.grad = torch.full_like(p, 1e-3)
    loop_cb.GradClip(5.0).after_backward(SimpleNamespace(model=lin))
    assert all(torch.equal(p.grad, torch.full_like(p, 1e-3)) for p in lin.parameters())


def test_validation_is_eval_mode_no_grad_and_counts_everything():
    modes = []
    model, *_, evaluate = tiny_parts()
    hook = model.register_forward_hook(lambda m, i, o: modes.append((m.training, torch.is_grad_enabled())))
    e = SimpleNamespace(model=model, device=torch.device("cpu"), metrics={})
    loop_cb.Validation(evaluate).epoch_end(e)
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


def test_tensorboard_is_silent_without_tensorboard(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    tb = loop_cb.TensorBoard(str(tmp_path))
    tiny_engine(epochs=1, max_steps=1, callbacks=[tb]).run()
    assert tb.writer is None and capsys.readouterr().err == ""
    assert not (tmp_path / "tb").exists()
