"""Checkpoints of a search (fastdarts.search.checkpoint): round trip, exact resume,
atomic writes, clear errors for corrupt or mismatched files that never touch
what the user had, and loading that runs no code (a file from someone else)."""

from __future__ import annotations

import json
import os
import random

import numpy as np
import pytest
import torch

from fastdarts import cli
from fastdarts.loop import Callback, CheckpointError
from fastdarts.loop import state as state_mod
from fastdarts.search import checkpoint as ck

from .helpers import (  # noqa: F401  (one_thread: fixture)
    FORMS,
    StopAfter,
    assert_refused_in_one_line,
    malicious_checkpoint,
    one_thread,
    params_equal,
    tiny_engine,
)


def _states_equal(a, b) -> bool:
    if torch.is_tensor(a):
        return torch.is_tensor(b) and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_states_equal(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(_states_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, np.ndarray):
        return np.array_equal(a, b)
    return a == b


def test_round_trip_restores_everything(tmp_path):
    e = tiny_engine(tmp_path, epochs=3, callbacks=[StopAfter(1)], max_steps=2).run()
    path = tmp_path / "checkpoint.pt"
    state = ck.load_checkpoint(str(path))
    assert state["epoch"] == 1 and state["global_step"] == 2 and len(state["history"]) == 1
    assert set(state["rng"]) == {"python", "numpy", "torch", "cuda"}
    fresh = tiny_engine(epochs=3, max_steps=2, seed=7)  # other initial weights, alphas, loaders
    assert not params_equal(fresh.model, e.model)
    random.random()
    np.random.rand()
    torch.rand(1)  # move every RNG on
    ck.restore(fresh, state, str(path))
    assert params_equal(fresh.model, e.model)
    assert _states_equal(fresh.optimizer.state_dict(), e.optimizer.state_dict())
    assert _states_equal(fresh.architect.optimizer.state_dict(), e.architect.optimizer.state_dict())
    for k in ("train", "valid"):
        assert _states_equal(fresh.loaders[k].state_dict(), state["loaders"][k])
    assert _states_equal(state_mod.rng_states()["torch"], state["rng"]["torch"])
    assert random.getstate() == state["rng"]["python"]
    assert fresh.start_epoch == 1 and fresh.global_step == 2 and fresh.history == e.history
    assert fresh.lr == e.lr


@pytest.mark.parametrize("unrolled, epochs", [(False, 3), (True, 2)], ids=["first_order", "second_order"])
def test_resume_equals_an_unbroken_search(tmp_path, unrolled, epochs):
    """Stopped after epoch 1 and resumed: bitwise the same alphas, weights and BN
    statistics.  2 batches per epoch of a 4-batch pass: the checkpoint is taken with
    both loaders mid-pass, and the second epoch ends exactly at the end of a pass.
    (Second order: 2 epochs, to keep the test short.)"""
    full = tiny_engine(tmp_path / "full", epochs=epochs, max_steps=2, unrolled=unrolled).run()
    part = tiny_engine(tmp_path / "part", epochs=epochs, max_steps=2, unrolled=unrolled,
                       callbacks=[StopAfter(1)]).run()
    assert part.stopped and len(part.history) == 1
    assert not params_equal(part.model, full.model)
    random.seed(123)
    torch.manual_seed(123)  # whatever happened in between
    resumed = tiny_engine(tmp_path / "part", epochs=epochs, max_steps=2, unrolled=unrolled, seed=5)
    ck.restore(resumed, ck.load_checkpoint(str(tmp_path / "part" / "checkpoint.pt")))
    resumed.run()
    assert params_equal(resumed.model, full.model)
    assert [r["epoch"] for r in resumed.history] == list(range(epochs))
    assert [r["train_loss"] for r in resumed.history] == [r["train_loss"] for r in full.history]
    lines = (tmp_path / "part" / "genotypes.jsonl").read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in lines] == list(range(epochs))
    assert lines == (tmp_path / "full" / "genotypes.jsonl").read_text().splitlines()


def test_resume_with_the_fused_classes(tmp_path):
    full = tiny_engine(tmp_path / "full", epochs=2, max_steps=2, impl="fused").run()
    tiny_engine(tmp_path / "part", epochs=2, max_steps=2, impl="fused", callbacks=[StopAfter(1)]).run()
    resumed = tiny_engine(tmp_path / "part", epochs=2, max_steps=2, impl="fused")
    ck.restore(resumed, ck.load_checkpoint(str(tmp_path / "part" / "checkpoint.pt")))
    assert params_equal(resumed.run().model, full.model)


def test_resume_after_a_crash_between_log_and_checkpoint(tmp_path):
    """genotypes.jsonl got a line for epoch 1 but the process died before checkpoint
    1 was written: the resume from checkpoint 0 rewrites the log without doubles."""
    tiny_engine(tmp_path, epochs=3, max_steps=1, callbacks=[StopAfter(1)]).run()
    with open(tmp_path / "genotypes.jsonl", "a") as f:
        f.write('{"epoch": 1, "space": "cnn", "normal": [')  # cut short by the crash
    resumed = tiny_engine(tmp_path, epochs=3, max_steps=1)
    ck.restore(resumed, ck.load_checkpoint(str(tmp_path / "checkpoint.pt")))
    resumed.run()
    lines = (tmp_path / "genotypes.jsonl").read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in lines] == [0, 1, 2]


def test_only_whole_epochs_are_checkpointed(tmp_path):
    class StopMidEpoch(Callback):
        def batch_end(self, e):
            if e.epoch == 1 and e.step == 0:
                e.stop = True

    tiny_engine(tmp_path, epochs=3, max_steps=2, callbacks=[StopMidEpoch()]).run()
    assert ck.load_checkpoint(str(tmp_path / "checkpoint.pt"))["epoch"] == 1  # epoch 0's


def test_atomic_write_keeps_the_old_checkpoint(tmp_path, monkeypatch):
    path = str(tmp_path / "checkpoint.pt")
    state_mod.atomic_save({"v": 1}, path)

    def crash_mid_write(obj, f, *a, **k):
        with open(f, "wb") as fh:
            fh.write(b"PK\x03\x04 half a checkpoint")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", crash_mid_write)
    with pytest.raises(OSError, match="No space left"):
        state_mod.atomic_save({"v": 2}, path)
    monkeypatch.undo()
    assert torch.load(path) == {"v": 1}
    assert os.listdir(tmp_path) == ["checkpoint.pt"]  # no temp file left behind

    def crash_at_rename(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(state_mod.os, "replace", crash_at_rename)
    with pytest.raises(KeyboardInterrupt):
        state_mod.atomic_save({"v": 3}, path)
    monkeypatch.undo()
    assert torch.load(path) == {"v": 1} and os.listdir(tmp_path) == ["checkpoint.pt"]


def test_a_crash_while_checkpointing_epoch_2_leaves_epoch_1(tmp_path, monkeypatch):
    class CrashSecondSave(Callback):
        order = 80  # before Checkpoint

        def epoch_end(self, e):
            if e.epoch == 1:
                def half_then_die(obj, f, *a, **k):
                    with open(f, "wb") as fh:
                        fh.write(b"partial")
                    raise SystemExit("killed")
                monkeypatch.setattr(torch, "save", half_then_die)

    with pytest.raises(SystemExit):
        tiny_engine(tmp_path, epochs=3, max_steps=1, callbacks=[CrashSecondSave()]).run()
    monkeypatch.undo()
    assert ck.load_checkpoint(str(tmp_path / "checkpoint.pt"))["epoch"] == 1
    assert sorted(os.listdir(tmp_path)) == ["checkpoint.pt", "genotypes.jsonl"]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """One finished tiny search's checkpoint (bytes) for the error tests."""
    d = tmp_path_factory.mktemp("saved")
    with torch.random.fork_rng():
        tiny_engine(d, epochs=1, max_steps=1).run()
    return (d / "checkpoint.pt").read_bytes()


def _write(tmp_path, data: bytes, name="checkpoint.pt"):
    p = tmp_path / name
    p.write_bytes(data)
    return str(p)


def _refused(tmp_path, path, match, **engine_kw):
    e = tiny_engine(epochs=1, max_steps=1, **engine_kw)
    before = {k: v.clone() for k, v in e.model.state_dict().items()}
    data = open(path, "rb").read()
    with pytest.raises(CheckpointError, match=match) as info:
        ck.restore(e, ck.load_checkpoint(path), path)
    assert path in str(info.value)  # says which file
    assert open(path, "rb").read() == data  # the file is untouched
    assert all(torch.equal(before[k], v) for k, v in e.model.state_dict().items())  # and the model
    return str(info.value)


def test_truncated_or_garbage_checkpoint(tmp_path, saved):
    for data in (saved[: len(saved) // 2], saved[:100], b"", b"not a checkpoint at all"):
        path = _write(tmp_path, data)
        with pytest.raises(CheckpointError, match="not a readable checkpoint.*truncated") as info:
            ck.load_checkpoint(path)
        assert path in str(info.value)
        assert open(path, "rb").read() == data
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        ck.load_checkpoint(str(tmp_path / "missing.pt"))


def test_a_torch_file_that_is_not_a_search_checkpoint(tmp_path, saved):
    path = str(tmp_path / "weights.pt")
    torch.save({"state_dict": {}}, path)
    with pytest.raises(CheckpointError, match="not a fastdarts search checkpoint"):
        ck.load_checkpoint(path)
    state = torch.load(_write(tmp_path, saved), weights_only=False)
    del state["arch_optimizer"], state["rng"]
    torch.save(state, path)
    with pytest.raises(CheckpointError, match="incomplete: it lacks arch_optimizer, rng"):
        ck.load_checkpoint(path)


def test_another_configuration_is_named(tmp_path, saved):
    path = _write(tmp_path, saved)
    msg = _refused(tmp_path, path, "another search configuration", unrolled=True)
    assert "unrolled: checkpoint False, now True" in msg


def test_another_search_space_or_shape(tmp_path, saved):
    path = _write(tmp_path, saved)
    e = tiny_engine(epochs=1, max_steps=1, C=3)
    e.config_key = tiny_engine(epochs=1, max_steps=1).config_key  # same config, other shapes
    before = {k: v.clone() for k, v in e.model.state_dict().items()}
    with pytest.raises(CheckpointError, match="does not fit this model.*shape"):
        ck.restore(e, ck.load_checkpoint(path), path)
    assert all(torch.equal(before[k], v) for k, v in e.model.state_dict().items())
    state = ck.load_checkpoint(path)
    state["alphas"] = [torch.zeros(10, 8), torch.zeros(10, 8)]  # 3 nodes instead of 4
    torch.save(state, path)
    _refused(tmp_path, path, r"alphas of shapes \[\(10, 8\), \(10, 8\)\].*\[\(14, 8\), \(14, 8\)\]")


def test_resume_through_search_cnn_refuses_without_touching_the_save_dir(tmp_path):
    from fastdarts.search import CNNSearchConfig
    from fastdarts.search.cnn import build

    save = tmp_path / "run"
    save.mkdir()
    (save / "genotypes.jsonl").write_text("precious\n")
    bad = _write(tmp_path, b"garbage", "bad.pt")
    cfg = CNNSearchConfig(init_channels=2, layers=3, batch_size=16, epochs=2, save=str(save),
                          max_steps_per_epoch=1, quiet=True, impl="reference", resume=bad)
    with pytest.raises(CheckpointError, match="bad.pt"):
        build(cfg)
    assert os.listdir(save) == ["genotypes.jsonl"] and (save / "genotypes.jsonl").read_text() == "precious\n"


# ---------------------------------------------------------------- loading runs no code

@pytest.mark.parametrize("form", FORMS)
def test_a_checkpoint_that_runs_code_is_refused(tmp_path, form):
    marker = tmp_path / "ran"
    path = malicious_checkpoint(tmp_path / "evil.pt", marker, form)
    with pytest.raises(CheckpointError) as info:
        ck.load_checkpoint(path)
    assert "--trust_checkpoint" in assert_refused_in_one_line(str(info.value), path, marker)


def test_the_malicious_checkpoint_does_run_code_when_trusted(tmp_path):
    """What makes the refusals above mean something: loaded in full (trust=True, what
    every load did before), the same file runs its command."""
    marker = tmp_path / "ran"
    path = malicious_checkpoint(tmp_path / "evil.pt", marker)
    with pytest.raises(CheckpointError, match="incomplete"):
        ck.load_checkpoint(path, trust=True)
    assert marker.exists()


@pytest.mark.parametrize("space", ["cnn", "rnn"])
def test_search_resume_refuses_a_checkpoint_that_runs_code(tmp_path, capsys, space):
    marker = tmp_path / "ran"
    path = malicious_checkpoint(tmp_path / "evil.pt", marker)
    rc = cli.main(["search", space, "--resume", path, "--save", str(tmp_path / "run"), "--epochs", "1",
                   "--max_steps_per_epoch", "1", "--quiet"])
    assert rc == 2
    assert_refused_in_one_line(capsys.readouterr().err, path, marker)


def _as_older_fastdarts_wrote_it(path: str, out: str) -> str:
    """The checkpoint at ``path`` with numpy's RNG state as np.random.get_state()'s
    ndarray tuple, as fastdarts wrote it before the plain format."""
    state = torch.load(path, weights_only=True)
    state["rng"]["numpy"] = state_mod.np.random.get_state()
    torch.save(state, out)
    return out


def test_a_checkpoint_of_an_older_fastdarts_needs_the_opt_in(tmp_path, saved):
    old = _as_older_fastdarts_wrote_it(_write(tmp_path, saved), str(tmp_path / "old.pt"))
    with pytest.raises(CheckpointError) as info:
        ck.load_checkpoint(old)
    msg = str(info.value)
    assert len(msg.splitlines()) == 1 and old in msg and "numpy.ndarray" in msg
    assert "if you trust this file" in msg and "--trust_checkpoint" in msg
    state = ck.load_checkpoint(old, trust=True)
    np.random.set_state(state["rng"]["numpy"])
    expected = np.random.rand(3)  # what numpy draws next from the state the old file holds
    e = tiny_engine(epochs=1, max_steps=1)
    with torch.random.fork_rng():
        ck.restore(e, state, old)
        assert np.array_equal(np.random.rand(3), expected)


def test_search_cli_trust_checkpoint_resumes_an_older_checkpoint(tmp_path, capsys):
    run = ["search", "cnn", "--epochs", "1", "--max_steps_per_epoch", "1", "--layers", "3",
           "--init_channels", "2", "--batch_size", "8", "--quiet"]
    assert cli.main([*run, "--save", str(tmp_path / "a")]) == 0
    old = _as_older_fastdarts_wrote_it(str(tmp_path / "a" / "checkpoint.pt"), str(tmp_path / "old.pt"))
    capsys.readouterr()
    assert cli.main([*run, "--save", str(tmp_path / "b"), "--resume", old]) == 2
    assert "--trust_checkpoint" in capsys.readouterr().err
    assert cli.main([*run, "--save", str(tmp_path / "b"), "--resume", old, "--trust_checkpoint"]) == 0


def test_rng_states_round_trip_through_a_file_that_loads_safely(tmp_path):
    """python's, numpy's (a cached gaussian included) and torch's streams continue
    exactly after a save and a weights_only load."""
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    np.random.randn()  # leaves the second gaussian of the pair cached in the state
    path = str(tmp_path / "rng.pt")
    state_mod.atomic_save({"rng": state_mod.rng_states()}, path)
    expected = (random.random(), np.random.randn(3), torch.rand(3))
    random.seed(9)
    np.random.seed(9)
    torch.manual_seed(9)
    state_mod.set_rng_states(torch.load(path, weights_only=True)["rng"])
    assert random.random() == expected[0]
    assert np.array_equal(np.random.randn(3), expected[1]) and torch.equal(torch.rand(3), expected[2])


def test_atomic_save_refuses_what_only_a_full_unpickle_loads(tmp_path):
    path = str(tmp_path / "checkpoint.pt")
    state_mod.atomic_save({"v": 1}, path)
    with pytest.raises(CheckpointError, match=r"not writing .*checkpoint.pt.*numpy.ndarray"):
        state_mod.atomic_save({"v": np.zeros(2)}, path)
    assert torch.load(path, weights_only=True) == {"v": 1} and os.listdir(tmp_path) == ["checkpoint.pt"]
