"""What an exact resume needs, in every loop: the random states, seeding, and
checkpoint files written atomically and read with a clear error.

A write goes to a temporary file in the same directory and is renamed over the
old one (``os.replace`` is atomic on POSIX and Windows), so a crash or a full disk
mid-write leaves the previous checkpoint intact.  A read checks the format tag
before anything else uses the file and says which file is wrong and why.
"""

from __future__ import annotations

import os
import random

import numpy as np
import torch

from .. import distributed


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read or does not fit the run that reads it."""


def seed_everything(seed: int) -> None:
    """Seed python's, numpy's and torch's (CPU and every GPU) generators."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def torch_rng_states() -> dict:
    """torch's CPU and CUDA RNG states: what differs between the ranks of a
    data-parallel run (python's and numpy's are seeded alike on every rank)."""
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def set_torch_rng_states(s: dict) -> None:
    torch.set_rng_state(s["torch"])
    if s.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(s["cuda"])


def rng_states() -> dict:
    return {"python": random.getstate(), "numpy": np.random.get_state(), **torch_rng_states()}


def rank_rng_states() -> list | None:
    """Every rank's torch RNG states, gathered (a collective: every rank calls it);
    None in a single process.  A data-parallel run draws different dropout masks
    on each rank, so an exact resume needs them all."""
    if distributed.world()[1] == 1:
        return None
    return distributed.gather_objects(torch_rng_states())


def set_rng_states(s: dict) -> None:
    random.setstate(s["python"])
    np.random.set_state(s["numpy"])
    set_torch_rng_states(s)


def atomic_save(obj, path: str) -> None:
    """torch.save to a temporary file beside ``path``, then rename: a crash mid-write
    leaves the previous checkpoint untouched."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def read_checkpoint(path: str, fmt: str, *, what: str, start_afresh: str, write_one: str = "") -> dict:
    """The checkpoint dict at ``path`` (tensors on the CPU) if it carries the format
    tag ``fmt``; else a CheckpointError naming the file: missing, unreadable
    (``start_afresh`` says what to do instead) or not ``what`` (``write_one`` says
    how to make one).  The file is a pickle (the RNG states are not plain tensors):
    load only checkpoints you trust."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"no checkpoint at {path!r}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise CheckpointError(f"{path!r} is not a readable checkpoint ({type(exc).__name__}: {exc}); "
                              f"it may be truncated: use an earlier one or {start_afresh}") from exc
    if not isinstance(state, dict) or state.get("format") != fmt:
        raise CheckpointError(f"{path!r} is not a {what} ({fmt}){write_one}")
    return state
