"""Pieces both training loops share: the checkpoint format, its callback, a logger,
the device choice."""

from __future__ import annotations

import os
import sys
import time

import torch

from ..search.callbacks import _is_rank0
from ..search.checkpoint import CheckpointError, atomic_save, rng_states
from ..search.engine import Callback

FORMAT = "fastdarts-train-checkpoint-v1"


def pick_device(device: str | None) -> torch.device:
    return torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))


def load_train_checkpoint(path: str, kind: str | None = None) -> dict:
    """A training checkpoint written by :class:`TrainCheckpoint` (or a best-model file),
    on the CPU; CheckpointError with the reason when it cannot be used."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"no checkpoint at {path!r}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise CheckpointError(f"{path!r} is not a readable checkpoint ({type(exc).__name__}: {exc}); "
                              "it may be truncated: use an earlier one or train afresh") from exc
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path!r} is not a fastdarts training checkpoint ({FORMAT}); "
                              "write one with fastdarts train cnn|rnn")
    if kind is not None and state.get("kind") != kind:
        raise CheckpointError(f"{path!r} holds a trained {state.get('kind')} model, not a {kind} one")
    return state


def check_config(state: dict, config_key: dict, path: str) -> None:
    if state["config"] != config_key:
        diff = {k: (state["config"].get(k), v) for k, v in config_key.items()
                if state["config"].get(k) != v}
        raise CheckpointError(f"{path!r} was written by another training configuration; "
                              f"differences (checkpoint, now): {diff}")


def base_state(e) -> dict:
    """What every training checkpoint holds (the engine adds its own extras)."""
    return {"format": FORMAT, "kind": e.kind, "config": e.config_key, "genotype": e.genotype_dict,
            "model_args": e.model_args, "data": e.data_name, "epoch": e.epoch + 1,
            "global_step": e.global_step, "model": e.model.state_dict(),
            "optimizer": e.optimizer.state_dict(), "rng": rng_states(), "history": e.history,
            "lr": e.lr}


class TrainCheckpoint(Callback):
    """<save>/checkpoint.pt after every ``every`` epochs and at the end (atomic:
    temporary file + rename)."""

    order = 90

    def __init__(self, save_dir: str, every: int = 1):
        self.path = os.path.join(save_dir, "checkpoint.pt")
        self.every = max(1, int(every))

    def epoch_end(self, e):
        if ((e.epoch + 1) % self.every == 0 or e.epoch + 1 == e.epochs) and _is_rank0():
            atomic_save(e.state_dict(), self.path)


class TrainLogger(Callback):
    """One line per epoch (metrics, lr, seconds); appends the row to ``engine.history``."""

    order = 20

    def __init__(self, quiet: bool = False, stream=None):
        self.quiet = quiet
        self.stream = stream or sys.stdout

    def _print(self, *a):
        if not self.quiet and _is_rank0():
            print(*a, file=self.stream, flush=True)

    def search_begin(self, e):
        self.t0 = time.perf_counter()
        self._print(f"train {e.kind}: {e.epochs} epochs x {e.steps_per_epoch} steps, device {e.device}, "
                    f"{e.params_M:.6f} M parameters")

    def epoch_begin(self, e):
        self.t_epoch = time.perf_counter()

    def epoch_end(self, e):
        row = {"epoch": e.epoch, "lr": e.lr, **e.metrics, "seconds": time.perf_counter() - self.t_epoch}
        e.history.append(row)
        m = " ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in e.metrics.items())
        self._print(f"epoch {e.epoch + 1}/{e.epochs} lr {e.lr:.5f} {m} ({row['seconds']:.1f} s)")

    def search_end(self, e):
        self._print(f"training done in {time.perf_counter() - self.t0:.1f} s")
