"""Pieces both training loops share: the checkpoint format, its callback, a logger,
the device choice, and data-parallel training over torch.distributed ranks
(``torchrun --nproc_per_node=N -m fastdarts train cnn|rnn ...``).

Data parallel: every rank builds the same model from the same seed, trains on its
shard of the data (--batch_size is per rank), and averages the weight gradients over
the ranks after backward, before clipping, with one collective per step
(:class:`GradAverage`).  The weights then stay identical on every rank; at each
epoch end the train metrics and the BatchNorm running statistics are averaged and
the models are checked identical (:class:`RankSync`) before anything is evaluated
or written.  The ranks draw their own augmentation, drop-path and dropout (seeds
from :func:`fastdarts.distributed.rank_seed`) but the same numpy stream (the RNN's
sequence lengths).  Only rank 0 prints and writes; the checkpoint holds every rank's
random state, so a resume on as many ranks continues exactly."""

from __future__ import annotations

import math
import os
import sys
import time

import torch

from .. import distributed
from ..loop.engine import Callback
from ..loop.state import (
    CheckpointError,
    atomic_save,
    read_checkpoint,
    rng_states,
    set_torch_rng_states,
    torch_rng_states,
)

FORMAT = "fastdarts-train-checkpoint-v1"


def pick_device(device: str | None) -> torch.device:
    return torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))


def load_train_checkpoint(path: str, kind: str | None = None, trust: bool = False) -> dict:
    """A training checkpoint written by :class:`TrainCheckpoint` (or a best-model file),
    on the CPU; CheckpointError with the reason when it cannot be used.  Loading runs
    no code unless ``trust`` (full unpickle, for a file you trust)."""
    state = read_checkpoint(path, FORMAT, what="fastdarts training checkpoint",
                            start_afresh="train afresh",
                            write_one="; write one with fastdarts train cnn|rnn", trust=trust)
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
            "lr": e.lr, "world_size": getattr(e, "world_size", 1)}


def rank_state(e) -> dict:
    """What differs between the ranks of a data-parallel run: the torch (and CUDA)
    random states and the train loaders' positions (numpy's state is the same on
    every rank and lives in ``rng``)."""
    return {**torch_rng_states(),
            "loaders": {k: ld.state_dict() for k, ld in getattr(e, "loaders", {}).items()}}


def restore_rank_state(e, state: dict, seed: int) -> None:
    """After the engine restored rank 0's state from a checkpoint: this rank's own
    random state and loader positions when the checkpoint was written by as many
    ranks (an exact continuation); otherwise fresh per-rank streams from the seed
    and the epoch, loaders at the start of a pass, and ``e.resume_note`` saying so."""
    rank, world = distributed.world()
    written = int(state.get("world_size", 1))
    ranks = state.get("ranks")
    if written == world and (world == 1 or (ranks is not None and len(ranks) == world)):
        if world > 1:
            mine = ranks[rank]
            set_torch_rng_states(mine)
            for k, ld in getattr(e, "loaders", {}).items():
                ld.load_state_dict(mine["loaders"][k])
        return
    e.resume_note = (f"the checkpoint was written by {written} rank(s) and this run has {world}: the "
                     f"batch of a step changes from {written} x to {world} x --batch_size and the random "
                     "streams of the ranks restart (not an exact continuation)")
    if rank > 0:
        torch.manual_seed(distributed.rank_seed(seed + 7919 * int(state["epoch"]), rank))
    for ld in getattr(e, "loaders", {}).values():
        ld_state = ld.state_dict()
        ld_state.update(position=0, order=None)
        if rank > 0:
            ld_state["generator"] = torch.Generator().manual_seed(
                distributed.rank_seed(seed + 7919 * int(state["epoch"]) + 1, rank)).get_state()
        ld.load_state_dict(ld_state)


def setup_distributed(device: torch.device) -> tuple[torch.device, int, int]:
    """Join torchrun's process group when launched by it (gloo for a CPU device, NCCL
    for CUDA); returns (this rank's device, rank, world_size).  Raises ValueError for
    what cannot run data-parallel."""
    backend = "gloo" if device.type == "cpu" else None
    rank, world = distributed.init(backend)
    if world == 1:
        return device, rank, world
    return rank_device(device, world, torch.distributed.get_backend(),
                       torch.cuda.current_device() if device.type == "cuda" else None), rank, world


def rank_device(device: torch.device, world: int, backend: str, current_gpu: int | None) -> torch.device:
    """The device of this rank in a world of ``world`` ranks (``current_gpu``: the GPU
    torchrun's LOCAL_RANK selected); ValueError for what cannot run data-parallel."""
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"data-parallel training runs on CPUs (gloo) or CUDA GPUs (NCCL), not {device}")
    if device.type == "cpu":
        if backend == "nccl":
            raise ValueError("the process group uses NCCL, which cannot average CPU tensors: train on "
                             "the GPUs, or initialise the group with gloo")
        return device
    if device.index is not None and device.index != current_gpu:
        raise ValueError(f"with {world} ranks each rank trains on its own GPU (torchrun's LOCAL_RANK; "
                         f"this rank's: cuda:{current_gpu}), not {device}: leave out --gpu / --device cuda:N")
    return torch.device("cuda", current_gpu)


class GradAverage(Callback):
    """Data parallel: after backward, before gradient clipping (GradClip has order 0),
    average the weight gradients over the ranks with one all_reduce
    (:class:`fastdarts.distributed.FlatGradAverager`).  ``agree(engine)`` gives small
    integers that must be the same on every rank at this step (checked in the same
    collective)."""

    order = -5

    def __init__(self, params, agree=None, group=None):
        self.averager = distributed.FlatGradAverager(params, group)
        self.agree = agree

    def after_backward(self, e):
        self.averager(self.agree(e) if self.agree is not None else ())


class RankSync(Callback):
    """Data parallel: at the start, check that every rank holds the same model (same
    seed, same checkpoint) and the same numpy state; at each epoch end, before
    evaluation (order 10) and the checkpoint (order 90), average the train metrics
    and the floating buffers (BatchNorm running statistics) over the ranks in one
    collective, then check parameters, buffers, the step count and numpy's state
    identical everywhere (a clear DistributedError if not)."""

    order = 5
    METRICS = ("train_loss", "train_acc")

    def __init__(self, group=None):
        self.group = group

    def _check(self, e, when: str):
        distributed.check_params_in_sync(
            e.model, self.group, what=f"the model ({when})",
            extra={"global_step": e.global_step, "numpy RNG state": distributed.numpy_fingerprint()})

    def search_begin(self, e):
        self._check(e, "at the start")

    def epoch_end(self, e):
        keys = [k for k in self.METRICS if k in e.metrics]
        buffers = [b for b in e.model.buffers() if b.is_floating_point()]
        values = distributed.all_reduce_mean_flat_(buffers, [e.metrics[k] for k in keys], self.group)
        e.metrics.update(zip(keys, values))
        if "train_ppl" in e.metrics:
            e.metrics["train_ppl"] = math.exp(min(e.metrics["train_loss"], 50))
        self._check(e, f"epoch {e.epoch + 1}")


def data_parallel_callbacks(model, agree=None) -> list:
    return [GradAverage(model.parameters(), agree), RankSync()]


class TrainCheckpoint(Callback):
    """<save>/checkpoint.pt after every ``every`` epochs and at the end (atomic:
    temporary file + rename)."""

    order = 90

    def __init__(self, save_dir: str, every: int = 1):
        self.path = os.path.join(save_dir, "checkpoint.pt")
        self.every = max(1, int(every))

    def epoch_end(self, e):
        if not ((e.epoch + 1) % self.every == 0 or e.epoch + 1 == e.epochs):
            return
        world = distributed.world()[1]
        ranks = distributed.gather_objects(rank_state(e)) if world > 1 else None  # every rank takes part
        if distributed.is_rank0():
            state = e.state_dict()
            if ranks is not None:
                state["ranks"] = ranks
            atomic_save(state, self.path)


class TrainLogger(Callback):
    """One line per epoch (metrics, lr, seconds); appends the row to ``engine.history``.
    On a terminal, a progress bar per epoch (training takes minutes per epoch on a CPU
    and the epoch line comes only at its end)."""

    order = 20

    def __init__(self, quiet: bool = False, stream=None):
        self.quiet = quiet
        self.stream = stream or sys.stdout
        self.bar = None

    def _active(self) -> bool:
        return not self.quiet and distributed.is_rank0()

    def _print(self, *a):
        if not self._active():
            return
        if self.bar is not None:
            self.bar.write(" ".join(map(str, a)), file=self.stream)
        else:
            print(*a, file=self.stream, flush=True)

    def _close(self):
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def search_begin(self, e):
        self.t0 = time.perf_counter()
        world = getattr(e, "world_size", 1)
        ranks = f" ({world} ranks, each its shard of the data)" if world > 1 else ""
        self._print(f"train {e.kind}: {e.epochs} epochs x {e.steps_per_epoch} steps, device {e.device}"
                    f"{ranks}, {e.params_M:.6f} M parameters")
        if getattr(e, "resume_note", None):
            self._print(f"note: {e.resume_note}")

    def epoch_begin(self, e):
        from ..loop.progress import progress_bar

        self.t_epoch = time.perf_counter()
        self._close()
        if self._active():
            self.bar = progress_bar(getattr(e, "steps_per_epoch", 0), f"epoch {e.epoch + 1}/{e.epochs}",
                                    self.stream)

    def batch_end(self, e):
        if self.bar is not None:
            self.bar.update(1)

    def epoch_end(self, e):
        self._close()
        row = {"epoch": e.epoch, "lr": e.lr, **e.metrics, "seconds": time.perf_counter() - self.t_epoch}
        e.history.append(row)
        m = " ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in e.metrics.items())
        self._print(f"epoch {e.epoch + 1}/{e.epochs} lr {e.lr:.5f} {m} ({row['seconds']:.1f} s)")

    def search_end(self, e):
        self._close()
        self._print(f"training done in {time.perf_counter() - self.t0:.1f} s")
