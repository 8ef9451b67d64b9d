"""Checkpoints of a search: everything an exact resume needs, written atomically.

A checkpoint holds the weights (``model.state_dict()``), the alphas, both optimizers,
the epoch to run next, the global step, the lr, the per-epoch history, every RNG
state (python, numpy, torch CPU, torch CUDA when present) and the data loaders'
``state_dict()``: tensors and plain data only, so loading it runs no code.
Resuming from it continues the search exactly: on the CPU the alphas and weights
are bitwise those of a search that was never stopped.

The write is atomic (:func:`fastdarts.loop.state.atomic_save`), so a crash or a
full disk mid-write leaves the previous checkpoint intact.  Reading checks the format and
that the checkpoint fits the search (configuration, alpha shapes, weight names and
shapes, optimizer groups) before touching anything, and says which file and what
differs."""

from __future__ import annotations

import os

import torch

from .. import distributed
from ..loop.engine import Callback
from ..loop.state import (
    CheckpointError,
    atomic_save,
    rank_rng_states,
    read_checkpoint,
    rng_states,
    set_rng_states,
    set_torch_rng_states,
)

FORMAT = "fastdarts-search-checkpoint-v1"


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


REQUIRED = ("config", "epoch", "global_step", "model", "alphas", "optimizer", "arch_optimizer",
            "loaders", "rng", "history", "lr")


def load_checkpoint(path: str, trust: bool = False) -> dict:
    """Read a checkpoint written by :class:`Checkpoint` (on the CPU); CheckpointError
    naming the file when it is missing, truncated, not one of ours or asks for more
    than tensors and plain data.  Loading runs no code unless ``trust`` (full
    unpickle, for a file you trust: :func:`fastdarts.loop.state.read_checkpoint`)."""
    state = read_checkpoint(path, FORMAT, what="fastdarts search checkpoint",
                            start_afresh="start afresh", trust=trust)
    missing = [k for k in REQUIRED if k not in state]
    if missing:
        raise CheckpointError(f"{path!r} is incomplete: it lacks {', '.join(missing)}")
    return state


def _shapes(sd: dict) -> dict:
    return {k: tuple(v.shape) for k, v in sd.items() if torch.is_tensor(v)}


def check_fits(e, state: dict, path: str = "checkpoint") -> None:
    """Raise CheckpointError (saying which file and what differs) unless ``state``
    belongs to this search: same configuration, alphas, weights, optimizers, loaders."""
    saved, now = state["config"], e.config_key
    diff = {k: (saved.get(k), now.get(k)) for k in sorted(set(saved) | set(now))
            if saved.get(k) != now.get(k)}
    if diff:
        listed = "; ".join(f"{k}: checkpoint {a!r}, now {b!r}" for k, (a, b) in diff.items())
        raise CheckpointError(f"{path!r} was written by another search configuration ({listed}); "
                              "resume with the flags it was started with, or start a new search")
    alphas = e.model.arch_parameters()
    old = [tuple(a.shape) for a in state["alphas"]]
    if old != [tuple(a.shape) for a in alphas]:
        raise CheckpointError(f"{path!r} has alphas of shapes {old}, this search space "
                              f"{[tuple(a.shape) for a in alphas]}")
    have, want = _shapes(state["model"]), _shapes(e.model.state_dict())
    if have != want:
        missing = sorted(set(want) - set(have))[:5]
        extra = sorted(set(have) - set(want))[:5]
        shape = [f"{k}: {have[k]} vs {want[k]}" for k in sorted(set(have) & set(want))
                 if have[k] != want[k]][:5]
        raise CheckpointError(f"{path!r} does not fit this model: missing {missing}, unexpected "
                              f"{extra}, shape (checkpoint vs model) {shape}")
    for name, opt in (("optimizer", e.optimizer), ("arch_optimizer", e.architect.optimizer)):
        groups = state[name].get("param_groups", [])
        if [len(g["params"]) for g in groups] != [len(g["params"]) for g in opt.param_groups]:
            raise CheckpointError(f"{path!r}: its {name} state has parameter groups of sizes "
                                  f"{[len(g['params']) for g in groups]}, this search's "
                                  f"{[len(g['params']) for g in opt.param_groups]}")
    if set(state["loaders"]) != set(e.loaders):
        raise CheckpointError(f"{path!r} has loader states {sorted(state['loaders'])}, this search "
                              f"{sorted(e.loaders)}")


def restore(e, state: dict, path: str = "checkpoint") -> None:
    """Put the engine back where the checkpoint was taken: weights, alphas, both
    optimizers, loaders, every RNG, epoch/step, history and lr.  Everything is
    checked first (:func:`check_fits`), so a checkpoint that does not fit raises
    before anything is changed."""
    check_fits(e, state, path)
    device = next(e.model.parameters()).device
    e.model.load_state_dict(state["model"])
    with torch.no_grad():
        for a, s in zip(e.model.arch_parameters(), state["alphas"]):
            a.copy_(s.to(device))
    e.optimizer.load_state_dict(state["optimizer"])
    e.architect.optimizer.load_state_dict(state["arch_optimizer"])
    for k, ld in e.loaders.items():
        ld.load_state_dict(state["loaders"][k])
    set_rng_states(state["rng"])
    if state.get("rng_ranks"):  # a data-parallel checkpoint (same world size: config_key)
        set_torch_rng_states(state["rng_ranks"][distributed.world()[0]])
    e.start_epoch = state["epoch"]
    e.global_step = state["global_step"]
    e.history = list(state["history"])
    e.lr = state["lr"]


class Checkpoint(Callback):
    """<save>/checkpoint.pt after every ``every`` epochs and at the end, written
    atomically (rank 0 only).  Only whole epochs are checkpointed: an epoch that
    ``engine.stop`` cut short is not (resuming it would skip its remaining batches)."""

    order = 90

    def __init__(self, save_dir: str, every: int = 1):
        self.path = os.path.join(save_dir, "checkpoint.pt")
        self.every = max(1, int(every))

    def epoch_end(self, e):
        if not getattr(e, "epoch_complete", True):
            return
        if (e.epoch + 1) % self.every == 0 or e.epoch + 1 == e.epochs:
            ranks = rank_rng_states()  # every rank takes part
            if distributed.is_rank0():
                state = state_of(e)
                if ranks is not None:
                    state["rng_ranks"] = ranks
                atomic_save(state, self.path)
