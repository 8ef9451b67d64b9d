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


def shutdown(ok: bool = True) -> None:
    """End this process's part in the process group, if there is one: a barrier (only
    after success: every rank is done with its collectives) and destroy_process_group.
    Exiting with the group still alive can abort the interpreter at exit (gloo's
    threads: "terminate called without an active exception", SIGABRT, seen once in CI
    after a finished 2-rank `train cnn`)."""
    if not (dist.is_available() and dist.is_initialized()):
        return
    try:
        if ok:  # the backend's own barrier, not barrier() below: after a one-element all_reduce
            # a rank can close its sockets while a peer's last message is in flight, and
            # the peer aborted at exit in 2 of 12 2-rank `train rnn` runs (0 of 12 with this)
            dist.barrier()
    finally:
        dist.destroy_process_group()


def world() -> tuple[int, int]:
    """(rank, world_size) of this process: (0, 1) outside a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_rank0() -> bool:
    """True in rank 0 or a single process: the one that prints and writes files."""
    return world()[0] == 0


def _all_reduce_(t: torch.Tensor, op=None, group=None) -> torch.Tensor:
    """``dist.all_reduce`` (SUM by default) with a failed or timed-out peer turned into a
    DistributedError."""
    try:
        dist.all_reduce(t, op=dist.ReduceOp.SUM if op is None else op, group=group)
    except RuntimeError as exc:
        raise DistributedError(f"all_reduce failed on rank {dist.get_rank()}: {exc}; another rank "
                               "probably stopped (see its log)") from exc
    return t


def _all_reduce_mean_(t: torch.Tensor, group=None) -> torch.Tensor:
    _all_reduce_(t, group=group)
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


# ---------------------------------------------------------------- training (fastdarts train cnn|rnn)
#
# The evaluation networks have no alphas and no Architect: their gradients are
# averaged through a flat buffer of their own (:class:`FlatGradAverager`), and
# :func:`check_params_in_sync` compares parameters and buffers tensor by tensor.


def _collective_device(group=None) -> torch.device:
    """Where this group's collectives want their tensors (NCCL: this rank's GPU)."""
    if dist.get_backend(group) == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def rank_seed(seed: int, rank: int) -> int:
    """The seed of a rank's own random streams (data order and augmentation, drop-path,
    dropout): ``seed`` itself on rank 0 (a single process is unchanged), a seed mixed
    from (seed, rank) on the others, so the ranks do not repeat each other's draws."""
    if rank == 0:
        return int(seed)
    import numpy as np

    return int(np.random.SeedSequence([int(seed), int(rank)]).generate_state(1, np.uint64)[0] % (2 ** 63))


def numpy_fingerprint() -> int:
    """A number that differs when numpy's global RNG state differs (to check that the
    ranks draw the same RNN sequence lengths)."""
    import zlib

    import numpy as np

    _, keys, pos, has_gauss, cached = np.random.get_state()
    return zlib.crc32(keys.tobytes() + np.array([pos, has_gauss], np.int64).tobytes()
                      + np.float64(cached).tobytes())


def barrier(group=None) -> None:
    """Wait for every rank (a one-element all_reduce: no backend-specific barrier
    quirks); a no-op without a process group."""
    if dist.is_available() and dist.is_initialized():
        _all_reduce_(torch.zeros(1, device=_collective_device(group)), group=group)


def gather_objects(obj, group=None) -> list:
    """Every rank's picklable ``obj``, in rank order, on every rank (one collective);
    ``[obj]`` without a process group."""
    if not (dist.is_available() and dist.is_initialized()):
        return [obj]
    out = [None] * dist.get_world_size(group)
    try:
        dist.all_gather_object(out, obj, group=group)
    except RuntimeError as exc:
        raise DistributedError(f"all_gather_object failed on rank {dist.get_rank()}: {exc}; another "
                               "rank probably stopped (see its log)") from exc
    return out


def all_reduce_sum(values, group=None) -> list[float]:
    """The sums over the ranks of a few numbers (float64, one collective)."""
    t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=_collective_device(group))
    return _all_reduce_(t, group=group).tolist()


def all_reduce_mean_flat_(tensors, values=(), group=None) -> list[float]:
    """Average the floating tensors ``tensors`` (in place) and the numbers ``values``
    over the ranks through one flat float64 buffer (one collective); returns the
    averaged ``values``."""
    tensors = [t for t in tensors if t.is_floating_point()]
    dev = _collective_device(group)
    parts = [t.detach().reshape(-1).to(dev, torch.float64) for t in tensors]
    parts.append(torch.tensor([float(v) for v in values], dtype=torch.float64, device=dev))
    flat = _all_reduce_mean_(torch.cat(parts), group=group)
    i = 0
    with torch.no_grad():
        for t in tensors:
            t.copy_(flat[i:i + t.numel()].view_as(t))
            i += t.numel()
    return flat[i:].tolist()


class FlatGradAverager:
    """Averages ``p.grad`` of ``params`` over the ranks with one all_reduce per step:
    the gradients are copied into one flat buffer (a multi-tensor copy), reduced,
    and copied back.

    The buffer also carries one presence flag per parameter: a parameter without a
    gradient on this rank but with one elsewhere gets the average (its zero counted),
    so every rank ends with the same set of gradients.  ``agree`` (small integers,
    e.g. the step and the RNN's sequence length) rides along as (x, x^2) pairs: if
    the ranks disagree, every rank raises the same DistributedError at that step
    instead of running out of step with the others (this reads two numbers per
    value on the host; without ``agree`` the step never waits for the device)."""

    AGREE_MOD = 251  # x mod 251 keeps N * sum(x^2) exact in float32 up to 256 ranks

    def __init__(self, params, group=None):
        self.params = [p for p in params if p.requires_grad]
        if not self.params:
            raise DistributedError("no parameters that require gradients to average")
        self.group = group
        self.n = sum(p.numel() for p in self.params)
        self._key = None

    def _buffer(self, k: int) -> torch.Tensor:
        """The flat buffer for ``k`` agreement values, in the parameters' dtype and on
        their device as they are now (a model moved or cast after construction)."""
        p0 = self.params[0]
        key = (k, p0.dtype, p0.device)
        if self._key != key:
            dtypes = {p.dtype for p in self.params}
            if len(dtypes) > 1:
                raise DistributedError(f"the parameters have several dtypes {sorted(map(str, dtypes))}; "
                                       "data-parallel training needs one")
            self.dtype = p0.dtype
            self.flat = torch.zeros(self.n + len(self.params) + 2 * k, dtype=p0.dtype, device=p0.device)
            self.views, i = [], 0
            for p in self.params:
                self.views.append(self.flat[i:i + p.numel()].view_as(p))
                i += p.numel()
            self._key = key
        return self.flat

    def __call__(self, agree=()) -> None:
        agree = [int(v) % self.AGREE_MOD for v in agree]
        flat = self._buffer(len(agree))
        n, P = self.n, len(self.params)
        grads = [p.grad for p in self.params]
        if any(g is not None and g.is_sparse for g in grads):
            raise DistributedError("sparse gradients cannot be averaged through the flat buffer")
        complete = all(g is not None for g in grads)
        if complete:
            torch._foreach_copy_(self.views, grads)
            flat[n:n + P].fill_(1)
        else:
            flat.zero_()
            pairs = [(v, g) for v, g in zip(self.views, grads) if g is not None]
            if pairs:
                torch._foreach_copy_([v for v, _ in pairs], [g for _, g in pairs])
            flat[n:n + P].copy_(torch.tensor([g is not None for g in grads], dtype=self.dtype))
        if agree:
            flat[n + P:].copy_(torch.tensor([w for x in agree for w in (x, x * x)], dtype=self.dtype))
        _all_reduce_(flat, group=self.group)
        world = dist.get_world_size(self.group)
        if agree:
            got = [int(round(v)) for v in flat[n + P:].tolist()]
            for j in range(len(agree)):
                s1, s2 = got[2 * j], got[2 * j + 1]
                if world * s2 != s1 * s1:  # equality iff every rank sent the same x
                    raise DistributedError(
                        f"the ranks are out of step: value {j} of the step's agreement check differs "
                        f"between ranks (this rank: {agree[j]}, mean {s1 / world:.2f}); every rank must "
                        "seed numpy identically and take the same number of steps")
        flat[:n].div_(world)
        if not complete:  # a gradient some other rank has: take the average
            present = flat[n:n + P].tolist()
            for i, p in enumerate(self.params):
                if p.grad is None and present[i] > 0:
                    p.grad = torch.zeros_like(p)
            grads = [p.grad for p in self.params]
        pairs = [(g, v) for g, v in zip(grads, self.views) if g is not None]
        torch._foreach_copy_([g for g, _ in pairs], [v for _, v in pairs])


def check_params_in_sync(model, group=None, what: str = "model", extra: dict | None = None) -> None:
    """Raise DistributedError naming what differs if the parameters or buffers of
    ``model`` (a plain nn.Module: no alphas needed), or the numbers in ``extra``
    (e.g. the step count), are not the same on every rank.  One collective of two
    float64 numbers (sum and sum of squares) per tensor, compared by max and min."""
    named = [(f"parameter {k}", t) for k, t in model.named_parameters()]
    named += [(f"buffer {k}", t) for k, t in model.named_buffers()]
    extra = dict(extra or {})
    dev = _collective_device(group)
    rows = [torch.stack([t.detach().double().sum(), t.detach().double().pow(2).sum()]).to(dev)
            for _, t in named]
    rows += [torch.tensor([float(v), 0.0], dtype=torch.float64, device=dev) for v in extra.values()]
    names = [k for k, _ in named] + list(extra)
    v = torch.stack(rows).reshape(-1) if rows else torch.zeros(0, dtype=torch.float64, device=dev)
    both = _all_reduce_(torch.cat([v, -v]), op=dist.ReduceOp.MAX, group=group)
    hi, lo = both[:v.numel()].view(-1, 2), (-both[v.numel():]).view(-1, 2)
    bad = (hi != lo).any(1).nonzero().flatten().tolist()
    if bad:
        shown = ", ".join(f"{names[i]} (sum in [{lo[i, 0].item():.17g}, {hi[i, 0].item():.17g}])"
                          for i in bad[:4])
        more = f" and {len(bad) - 4} more" if len(bad) > 4 else ""
        raise DistributedError(f"{what} diverged between ranks: {shown}{more}; every rank must start "
                               "from the same seed and the same --resume checkpoint and apply the same "
                               "averaged gradients")
