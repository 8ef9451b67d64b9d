"""The search engine, its callbacks, checkpoint/resume and the CLI (tiny CPU runs)."""

from __future__ import annotations

import json
import os

import pytest
import torch

from fastdarts import cli
from fastdarts.search import Callback, CancelBatch, CheckpointError, CNNSearchConfig, search_cnn
from fastdarts.search import callbacks as cb
from fastdarts.search.checkpoint import atomic_save
from fastdarts.search.cnn import build


def _cfg(tmp_path, **kw):
    base = dict(init_channels=2, layers=3, batch_size=16, epochs=2, save=str(tmp_path / "run"),
                max_steps_per_epoch=2, quiet=True, impl="reference")
    base.update(kw)
    return CNNSearchConfig(**base)


class Recorder(Callback):
    order = -1000  # sees every event, before any callback can cancel

    def __init__(self):
        self.events = []

    def __call__(self, event, engine):
        self.events.append(event)


def test_events_fire_in_order_and_a_user_callback_can_cancel(tmp_path):
    rec = Recorder()

    class SkipSecond(Callback):
        order = -100

        def batch_begin(self, e):
            if e.step == 1:
                raise CancelBatch

    engine = search_cnn(_cfg(tmp_path, epochs=1), callbacks=[rec, SkipSecond()])
    ev = rec.events
    assert ev[0] == "search_begin" and ev[-1] == "search_end"
    assert ev[1:8] == ["epoch_begin", "batch_begin", "after_arch_step", "after_backward",
                       "after_weight_step", "batch_end", "batch_begin"]
    assert ev[8] == "epoch_end"  # the second batch was cancelled at batch_begin
    assert ev.count("batch_end") == 1
    assert engine.history and "valid_acc" in engine.history[0]


def test_cosine_lr_values():
    c = cb.CosineLR(0.025, 0.001, 50)
    assert c.lr_at(0) == pytest.approx(0.025)
    assert c.lr_at(25) == pytest.approx(0.013)
    assert c.lr_at(50) == pytest.approx(0.001)


def test_engine_equals_a_hand_written_original_loop(tmp_path):
    """The engine's order (architect step with the current lr, then the weight step
    with clipping) against the same loop written out, from the same seed."""
    cfg = _cfg(tmp_path, epochs=2, unrolled=True)
    engine = search_cnn(cfg)
    manual = build(_cfg(tmp_path, epochs=2, unrolled=True, save=str(tmp_path / "m")))
    model, arch, opt = manual.model, manual.architect, manual.optimizer
    sched = cb.CosineLR(cfg.learning_rate, cfg.learning_rate_min, cfg.epochs)
    for epoch in range(cfg.epochs):
        lr = sched.lr_at(epoch)
        for g in opt.param_groups:
            g["lr"] = lr
        valid_iter = manual.valid_loader.infinite()
        for step, (x, y) in enumerate(manual.train_loader):
            if step >= cfg.max_steps_per_epoch:
                break
            xv, yv = next(valid_iter)
            arch.step(x, y, xv, yv, lr, opt, True)
            opt.zero_grad()
            loss = model._loss(x, y)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
    for a, b in zip(engine.model.arch_parameters(), model.arch_parameters()):
        assert torch.equal(a, b)
    for a, b in zip(engine.model.parameters(), model.parameters()):
        assert torch.equal(a, b)


@pytest.mark.parametrize("impl", ["reference", "fused"])
def test_resume_equals_an_unbroken_search(tmp_path, impl):
    full = search_cnn(_cfg(tmp_path, epochs=3, impl=impl, save=str(tmp_path / "full")))
    part = search_cnn(_cfg(tmp_path, epochs=3, impl=impl, save=str(tmp_path / "part")),
                      callbacks=[_StopAfter(1)])
    assert part.stopped and len(part.history) == 1
    ckpt = str(tmp_path / "part" / "checkpoint.pt")
    resumed = search_cnn(_cfg(tmp_path, epochs=3, impl=impl, save=str(tmp_path / "part"), resume=ckpt))
    for a, b in zip(full.model.arch_parameters(), resumed.model.arch_parameters()):
        assert torch.equal(a, b)
    for a, b in zip(full.model.parameters(), resumed.model.parameters()):
        assert torch.equal(a, b)
    assert [r["epoch"] for r in resumed.history] == [0, 1, 2]
    lines = (tmp_path / "part" / "genotypes.jsonl").read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in lines] == [0, 1, 2]


class _StopAfter(Callback):
    order = 100  # after the checkpoint of that epoch

    def __init__(self, n):
        self.n = n

    def epoch_end(self, e):
        if e.epoch + 1 == self.n:
            from fastdarts.search import CancelSearch

            raise CancelSearch


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    path = str(tmp_path / "c.pt")
    atomic_save({"v": 1}, path)

    def broken_save(obj, f, *a, **k):
        with open(f, "wb") as fh:
            fh.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError):
        atomic_save({"v": 2}, path)
    monkeypatch.undo()
    assert torch.load(path) == {"v": 1}
    assert os.listdir(tmp_path) == ["c.pt"]


def test_corrupt_and_mismatched_checkpoints_are_refused(tmp_path):
    search_cnn(_cfg(tmp_path, epochs=1))
    ckpt = tmp_path / "run" / "checkpoint.pt"
    good = ckpt.read_bytes()
    with pytest.raises(CheckpointError, match="was written by another search configuration"):
        build(_cfg(tmp_path, init_channels=4, resume=str(ckpt), save=str(tmp_path / "x")))
    bad = tmp_path / "bad.pt"
    bad.write_bytes(good[: len(good) // 2])
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        build(_cfg(tmp_path, resume=str(bad), save=str(tmp_path / "y")))
    assert ckpt.read_bytes() == good  # nothing the user had was touched


def test_cli_search_writes_outputs_and_reports_bad_data(tmp_path, capsys):
    save = tmp_path / "cli"
    rc = cli.main(["search", "cnn", "--epochs", "1", "--max_steps_per_epoch", "2", "--layers", "3",
                   "--init_channels", "2", "--save", str(save), "--quiet", "--impl", "reference"])
    assert rc == 0
    for name in ("genotype.json", "genotypes.jsonl", "normal.dot", "reduce.dot", "checkpoint.pt"):
        assert (save / name).exists(), name
    assert "genotype = Genotype(" in capsys.readouterr().out
    assert "digraph normal" in (save / "normal.dot").read_text()
    rc = cli.main(["search", "cnn", "--data", str(tmp_path / "missing"), "--save", str(save)])
    assert rc == 2
    assert "no CIFAR-10 found" in capsys.readouterr().err
    assert cli.main(["train", "cnn"]) == 2


def test_several_seeds_run_and_are_summarised(tmp_path, capsys):
    save = tmp_path / "seeds"
    rc = cli.main(["search", "cnn", "--seeds", "2", "--seed", "5", "--epochs", "1",
                   "--max_steps_per_epoch", "1", "--layers", "3", "--init_channels", "2",
                   "--batch_size", "8", "--save", str(save), "--quiet"])
    assert rc == 0
    rows = json.loads((save / "summary.json").read_text())
    assert [r["seed"] for r in rows] == [5, 6] and all(r["ok"] for r in rows)
    assert (save / "seed-5" / "genotype.json").exists() and (save / "seed-6" / "genotype.json").exists()
    assert "| 5 | True |" in (save / "summary.md").read_text()
