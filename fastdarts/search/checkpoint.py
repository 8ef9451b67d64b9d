"""Checkpoints of a search: everything an exact resume needs, written atomically."""

from __future__ import annotations

import os
import random

import numpy as np
import torch

from .engine import Callback

FORMAT = "fastdarts-search-checkpoint-v1"


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read or does not fit this search."""


def rng_states() -> dict:
    return {"python": random.getstate(), "numpy": np.random.get_state(),
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def set_rng_states(s: dict) -> None:
    random.setstate(s["python"])
    np.random.set_state(s["numpy"])
    torch.set_rng_state(s["torch"])
    if s.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(s["cuda"])


def atomic_save(obj, path: str) -> None:
    """torch.save to a temporary file beside ``path``, then rename: a crash mid-write
    leaves the previous checkpoint untouched."""
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def state_of(e) -> dict:
    return {
        "format": FORMAT,
        "config": e.config_key,
        "epoch": e.epoch + 1,  # the next epoch to run
        "global_step": e.global_step,
        "model": e.model.state_dict(),
        "alphas": [a.detach().clone() for a in e.model.arch_parameters()],
        "optimizer": e.optimizer.state_dict(),
        "arch_optimizer": e.architect.optimizer.state_dict(),
        "loaders": {k: ld.state_dict() for k, ld in e.loaders.items()},
        "rng": rng_states(),
        "history": e.history,
        "lr": e.lr,
    }


def load_checkpoint(path: str) -> dict:
    if not os.path.isfile(path):
        raise CheckpointError(f"no checkpoint at {path!r}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise CheckpointError(f"{path!r} is not a readable checkpoint ({type(exc).__name__}: {exc}); "
                              "it may be truncated: use an earlier one or start afresh") from exc
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path!r} is not a fastdarts search checkpoint ({FORMAT})")
    return state


def restore(e, state: dict, path: str = "checkpoint") -> None:
    """Put the engine back where the checkpoint was taken (raises before changing
    anything if the checkpoint does not fit)."""
    if state["config"] != e.config_key:
        diff = {k: (state["config"].get(k), v) for k, v in e.config_key.items()
                if state["config"].get(k) != v}
        raise CheckpointError(f"{path!r} was written by another search configuration; "
                              f"differences (checkpoint, now): {diff}")
    alphas = e.model.arch_parameters()
    if [tuple(a.shape) for a in state["alphas"]] != [tuple(a.shape) for a in alphas]:
        raise CheckpointError(f"{path!r} has alphas of shapes {[tuple(a.shape) for a in state['alphas']]}"
                              f", this model {[tuple(a.shape) for a in alphas]}")
    try:
        e.model.load_state_dict(state["model"])
    except RuntimeError as exc:
        raise CheckpointError(f"{path!r} does not fit this model: {exc}") from exc
    with torch.no_grad():
        for a, s in zip(alphas, state["alphas"]):
            a.copy_(s)
    e.optimizer.load_state_dict(state["optimizer"])
    e.architect.optimizer.load_state_dict(state["arch_optimizer"])
    for k, ld in e.loaders.items():
        ld.load_state_dict(state["loaders"][k])
    set_rng_states(state["rng"])
    e.start_epoch = state["epoch"]
    e.global_step = state["global_step"]
    e.history = list(state["history"])
    e.lr = state["lr"]


class Checkpoint(Callback):
    """<save>/checkpoint.pt after every ``every`` epochs and at the end (atomic)."""

    order = 90

    def __init__(self, save_dir: str, every: int = 1):
        self.path = os.path.join(save_dir, "checkpoint.pt")
        self.every = max(1, int(every))

    def epoch_end(self, e):
        if (e.epoch + 1) % self.every == 0 or e.epoch + 1 == e.epochs:
            from .callbacks import _is_rank0

            if _is_rank0():
                atomic_save(state_of(e), self.path)
