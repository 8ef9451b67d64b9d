"""Data-parallel DARTS search on torch.distributed (NCCL on GPUs, gloo on CPUs).

Each rank takes its shard of both halves of the data.  What the bilevel math
needs is averaged over the ranks, one collective per quantity, never one per
tensor: the Architect's flat gradient buffers (the training gradient for the
virtual step, v at w'), the alpha gradients of each pass packed with the loss
into one small buffer, and the weight step's gradient through the same flat
buffer.  Alphas and weights then stay identical on every rank (``check_in_sync``
verifies it and raises a clear error if they ever diverge).  BatchNorm keeps the
original's per-device statistics: a world of N ranks with local batch b equals
one process with batch N*b split into N micro-batches
(``fastdarts.Architect(..., micro_batches=N)``), which is how the tests check it.

    torchrun --nproc_per_node=N -m fastdarts search cnn ...   (launch)
    fastdarts.distributed.init()                              (in your own script)
"""

from __future__ import annotations

import datetime
import os

import torch
import torch.distributed as dist


class DistributedError(RuntimeError):
    """Ranks disagree, or a collective failed or timed out."""


def init(backend: str | None = None, timeout_s: float = 300.0) -> tuple[int, int]:
    """Initialise the default process group from torchrun's environment (no-op when
    already initialised or when WORLD_SIZE is unset).  A rank that dies makes the
    others fail at their next collective, within ``timeout_s`` at worst, instead of
    hanging.  Returns (rank, world_size)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0, 1
    backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s))
    return dist.get_rank(), dist.get_world_size()


def world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _all_reduce_mean_(t: torch.Tensor, group=None) -> torch.Tensor:
    try:
        dist.all_reduce(t, op=dist.ReduceOp.SUM, group=group)
    except RuntimeError as exc:  # a peer died or timed out
        raise DistributedError(f"all_reduce failed on rank {dist.get_rank()}: {exc}; another rank "
                               "probably stopped (see its log)") from exc
    t.div_(dist.get_world_size(group))
    return t


class GradientAverager:
    """The Architect's ``reducer``: averages its flat weight-gradient buffer (one
    collective) and the alpha gradients + the loss packed together (one more)."""

    def __init__(self, group=None):
        self.group = group

    def __call__(self, alpha_grads, flat, loss):
        if flat is not None:
            _all_reduce_mean_(flat, self.group)
        small = [loss.reshape(1).to(torch.float64)]
        if alpha_grads is not None:
            small += [g.reshape(-1).to(torch.float64) for g in alpha_grads]
        packed = _all_reduce_mean_(torch.cat(small), self.group)
        loss = packed[0].to(loss.dtype)
        if alpha_grads is not None:
            out, i = [], 1
            for g in alpha_grads:
                out.append(packed[i:i + g.numel()].view_as(g).to(g.dtype))
                i += g.numel()
            alpha_grads = out
        return alpha_grads, loss


def make_data_parallel(architect, group=None):
    """Make ``architect`` (a fastdarts.Architect) average its gradients over ``group``."""
    if not (dist.is_available() and dist.is_initialized()):
        raise DistributedError("torch.distributed is not initialised: call fastdarts.distributed.init() "
                               "(or launch with torchrun) first")
    architect.reducer = GradientAverager(group)
    return architect


def all_reduce_weight_grads_(architect, group=None) -> None:
    """Average the model's ``p.grad`` over the ranks through the Architect's flat
    gradient buffer: gather (one multi-tensor copy), one all_reduce, scatter back."""
    arch = architect
    grads = [p.grad for p in arch.params]
    if any(g is None for g in grads):
        arch.g.zero_()
        pairs = [(v, g) for v, g in zip(arch.g_views, grads) if g is not None]
        torch._foreach_copy_([a for a, _ in pairs], [b for _, b in pairs])
    else:
        torch._foreach_copy_(arch.g_views, grads)
    _all_reduce_mean_(arch.g, group)
    for p, v in zip(arch.params, arch.g_views):
        if p.grad is None:
            p.grad = v.clone()
    torch._foreach_copy_([p.grad for p in arch.params], arch.g_views)


def check_in_sync(model, group=None, what: str = "model") -> None:
    """Raise DistributedError if the alphas or weights differ between ranks (one
    collective of a few numbers: per-tensor-group sums compared by min and max)."""
    sums = torch.stack([torch.stack([a.detach().double().sum() for a in model.arch_parameters()]).sum(),
                        torch.stack([p.detach().double().sum() for p in model.parameters()]).sum()])
    lo, hi = sums.clone(), sums.clone()
    dist.all_reduce(lo, op=dist.ReduceOp.MIN, group=group)
    dist.all_reduce(hi, op=dist.ReduceOp.MAX, group=group)
    if not torch.equal(lo, hi):
        raise DistributedError(f"{what} diverged between ranks: alpha sums span [{lo[0]}, {hi[0]}], "
                               f"weight sums [{lo[1]}, {hi[1]}]; every rank must start from the same "
                               "seed and apply the same averaged gradients")
