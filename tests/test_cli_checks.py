"""What a new user meets first (issue 17): flags checked up front (one line, exit 2,
nothing written), a finished search or training run never replaced unasked, and
Ctrl-C as one line with the exact command that resumes."""

from __future__ import annotations

import os
import shlex

import pytest
import torch

from fastdarts import cli, config
from fastdarts.config import ConfigError
from fastdarts.search import cnn as search_cnn_mod
from fastdarts.search.cnn import CNNSearchConfig
from fastdarts.train.rnn import RNNTrainConfig

from .helpers import one_thread  # noqa: F401  (autouse fixture)


@pytest.fixture(autouse=True)
def no_validation(monkeypatch):
    """The per-epoch validation (the whole architecture half) is most of a tiny search's
    time and none of what these tests check."""
    from fastdarts.loop import callbacks as loop_cb

    monkeypatch.setattr(loop_cb.Validation, "epoch_end", lambda self, e: None)


TINY = ["--epochs", "2", "--max_steps_per_epoch", "2", "--layers", "3", "--init_channels", "2",
        "--batch_size", "16", "--impl", "reference", "--quiet"]


# ------------------------------------------------------------------ ranges, written once
@pytest.mark.parametrize("argv, message", [
    (["search", "cnn", "--batch_size", "-8"], "--batch_size must be >= 1, got -8"),
    (["search", "cnn", "--batch_size", "0"], "--batch_size must be >= 1, got 0"),
    (["search", "cnn", "--epochs", "-1"], "--epochs must be >= 1, got -1"),
    (["search", "cnn", "--train_portion", "1"], "--train_portion must be > 0 and < 1, got 1.0"),
    (["search", "cnn", "--learning_rate", "nan"], "--learning_rate must be >= 0, got nan"),
    (["search", "rnn", "--bptt", "1"], "--bptt must be >= 2, got 1"),
    (["search", "rnn", "--dropout", "1"], "--dropout must be >= 0 and < 1, got 1.0"),
    (["train", "cnn", "--batch_size", "-8"], "--batch_size must be >= 1, got -8"),
    (["train", "rnn", "--small_batch_size", "0"], "--small_batch_size must be >= 1 (or -1), got 0"),
    (["search", "cnn", "--threads", "0"], "--threads must be >= 1, got 0"),
    (["train", "cnn", "--threads", "-2"], "--threads must be >= 1, got -2"),
    (["search", "cnn", "--seeds", "0"], "--seeds must be >= 1, got 0"),
    (["profile", "cnn", "--steps", "0"], "--steps must be >= 1, got 0"),
    (["test", "cnn", "--checkpoint", "x.pt", "--batch_size", "0"], "--batch_size must be >= 1, got 0"),
    (["search", "cnn", "--device", "foo"], "--device foo: not a device"),
    (["search", "cnn", "--device", "meta"], "runs on cpu or cuda devices"),
])
def test_bad_numbers_and_devices_are_one_line_exit_2_before_anything_runs(tmp_path, capsys, argv,
                                                                          message):
    save = tmp_path / "out"
    rc = cli.main([*argv, "--save", str(save)] if argv[0] != "test" else argv)
    err = capsys.readouterr().err
    assert rc == 2
    assert err.strip() == f"fastdarts: error: {err.strip()[len('fastdarts: error: '):]}"
    assert len(err.strip().splitlines()) == 1 and message in err, err
    assert not save.exists()  # nothing written, nothing created


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a torch without a usable CUDA device")
@pytest.mark.parametrize("argv", [["search", "cnn", "--device", "cuda"], ["train", "cnn", "--gpu", "0"],
                                  ["test", "cnn", "--checkpoint", "x.pt", "--device", "cuda:0"]])
def test_cuda_without_cuda_is_one_line(capsys, argv):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "use --device cpu" in err, err


def test_every_numeric_field_declares_its_range():
    """A number without bounds would let a nonsense flag reach the run: every int/float
    flag of the four commands has one (the help text shows it)."""
    from fastdarts.search.rnn import RNNSearchConfig
    from fastdarts.train.cnn import CNNTrainConfig

    for cls in (CNNSearchConfig, RNNSearchConfig, CNNTrainConfig, RNNTrainConfig):
        for f in config.fields(cls):
            if config._base_type(f) in (int, float):
                assert f.metadata.get("bounds"), f"{cls.__name__}.{f.name} has no bounds"


def test_bounds_parse_and_reject_typos():
    assert config.parse_bounds("[1, inf)") == (1.0, True, float("inf"), False)
    assert config.bounds_text("(0, 1]") == "> 0 and <= 1"
    with pytest.raises(ValueError):
        config.setting(1, "x", bounds="1..inf")
    config.check_value("--x", -1, "[1, inf)", also=(-1,))  # an allowed special value
    with pytest.raises(ConfigError, match="--x must be >= 1"):
        config.check_value("--x", 0, "[1, inf)")


# ------------------------------------------------------------------ nothing overwritten
def test_a_finished_search_is_not_replaced_unasked(tmp_path, capsys):
    save = tmp_path / "run"
    once = ["--epochs", "1", "--max_steps_per_epoch", "1"]
    assert cli.main(["search", "cnn", *TINY, *once, "--save", str(save)]) == 0
    before = {p: (save / p).read_bytes() for p in ("genotype.json", "genotypes.jsonl", "checkpoint.pt")}
    capsys.readouterr()
    rc = cli.main(["search", "cnn", *TINY, *once, "--seed", "5", "--save", str(save)])
    out, err = capsys.readouterr()
    err = err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and out == "", (out, err)
    assert f"--resume {save}/checkpoint.pt" in err and "--save DIR" in err and "--overwrite" in err
    assert {p: (save / p).read_bytes() for p in before} == before  # untouched
    # asked explicitly: replaced
    assert cli.main(["search", "cnn", *TINY, *once, "--seed", "5", "--save", str(save),
                     "--overwrite"]) == 0
    assert (save / "checkpoint.pt").read_bytes() != before["checkpoint.pt"]


def test_a_finished_training_run_is_not_replaced_unasked(tmp_path, capsys):
    save = tmp_path / "eval"
    save.mkdir()
    (save / "checkpoint.pt").write_bytes(b"an earlier run")
    rc = cli.main(["train", "cnn", "--epochs", "1", "--save", str(save)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "--resume" in err and "--overwrite" in err and len(err.splitlines()) == 1
    assert (save / "checkpoint.pt").read_bytes() == b"an earlier run"
    rc = cli.main(["train", "rnn", "--epochs", "1", "--save", str(save)])
    assert rc == 2 and "--continue_train" in capsys.readouterr().err


# ------------------------------------------------------------------ Ctrl-C
def _interrupt_at(monkeypatch, global_step: int):
    one_batch = search_cnn_mod.CNNSearch.one_batch

    def interrupted(self, batch):
        if self.global_step == global_step:
            raise KeyboardInterrupt
        return one_batch(self, batch)

    monkeypatch.setattr(search_cnn_mod.CNNSearch, "one_batch", interrupted)


def test_ctrl_c_is_one_line_with_the_command_that_resumes(tmp_path, capsys, monkeypatch):
    save = tmp_path / "run"
    one_batch = search_cnn_mod.CNNSearch.one_batch
    _interrupt_at(monkeypatch, 3)  # epoch 2, step 1 (2 steps per epoch)
    rc = cli.main(["search", "cnn", *TINY, "--save", str(save)])
    err = capsys.readouterr().err.strip()
    assert rc == 130 and len(err.splitlines()) == 1, err
    assert "interrupted in epoch 2/2, step 1" in err and "holds 1 finished epoch(s)" in err
    command = err.split("resume with: ", 1)[1]
    argv = shlex.split(command)
    assert argv[:3] == ["fastdarts", "search", "cnn"] and argv[-2:] == ["--resume", f"{save}/checkpoint.pt"]
    monkeypatch.setattr(search_cnn_mod.CNNSearch, "one_batch", one_batch)
    assert cli.main(argv[1:]) == 0  # the printed command resumes and finishes
    assert len((save / "genotypes.jsonl").read_text().splitlines()) == 2


def test_ctrl_c_before_the_first_checkpoint_says_nothing_is_saved(tmp_path, capsys, monkeypatch):
    save = tmp_path / "run"
    _interrupt_at(monkeypatch, 0)
    assert cli.main(["search", "cnn", *TINY, "--save", str(save)]) == 130
    err = capsys.readouterr().err.strip()
    assert "nothing saved yet" in err and "start again with: fastdarts search cnn" in err, err
    assert not os.path.exists(save / "checkpoint.pt")


# ------------------------------------------------------------------ one thread policy
@pytest.mark.parametrize("threads, small, env, expect", [
    (None, True, None, "1 CPU thread (the embedded default on a CPU"),
    (2, True, None, "2 CPU threads (--threads)"),
    (3, False, None, "3 CPU threads (--threads)"),
    (None, True, "2", "(OMP_NUM_THREADS)"),
])
def test_one_thread_policy_is_reported_as_set(monkeypatch, threads, small, env, expect):
    from argparse import Namespace

    if env is None:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    else:
        monkeypatch.setenv("OMP_NUM_THREADS", env)
    torch.set_num_threads(2)
    text = config.set_threads(Namespace(threads=threads, device="cpu"), small)
    assert expect in text, text
    assert text.startswith(f"{torch.get_num_threads()} CPU thread")  # what torch really uses


@pytest.mark.parametrize("argv", [
    ["train", "cnn", "--epochs", "1", "--max_steps_per_epoch", "1", "--layers", "2",
     "--init_channels", "2", "--batch_size", "8"],
    ["profile", "cnn", "--steps", "1", "--warmup", "0", "--no_ops", "--layers", "3",
     "--init_channels", "2", "--batch_size", "8", "--impl", "reference"],
])
def test_train_and_profile_follow_threads(tmp_path, capsys, monkeypatch, argv):
    """--threads reaches train and profile as it reaches search, and what they
    report is what torch ran with."""
    from fastdarts.train import cnn as train_cnn_mod

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(train_cnn_mod.TestAccuracy, "epoch_end", lambda self, e: None)  # not checked
    torch.set_num_threads(2)
    if argv[0] == "train":
        argv = [*argv, "--save", str(tmp_path / "eval")]
    assert cli.main([*argv, "--threads", "1"]) == 0
    out, err = capsys.readouterr()
    assert "threads: 1 CPU thread (--threads)" in out + err
    if argv[0] == "profile":
        assert "1 threads)" in out  # the report's device line
