"""The drop-in fused MixedOp of the DARTS CNN search space."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import torch
import torch.nn as nn
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from ..ops.mixed_sum import mixed_sum as _mixed_sum_op
from ..space.genotypes import PRIMITIVES
from ..space.operations import OPS, DilConv, FactorizedReduce, ReLUConvBN, SepConv
from .memory import note_kept

__all__ = ["MixedOp", "MEMORY_MODES", "common_dtype", "make_op", "active_columns",
           "edge_outputs", "checkpointed"]

# What a MixedOp keeps for the backward (bench/NOTES.md, "memory", has the numbers):
#   "plain":      every op runs as its own module; each of the 4 sep/dil convs (and
#                 FactorizedReduce) stores its own copy of ReLU(x).
#   "shared":     ReLU(x) is computed once per edge and fed to those ops' remaining
#                 layers (the same modules and state_dict keys): same math, ~10% fewer
#                 saved bytes and 3 fewer ReLUs per edge.  The default.
#   "checkpoint": "shared", and each node (all ops of its incoming edges and their mixed
#                 sum; a lone MixedOp: its ops and sum) runs inside one non-reentrant
#                 torch.utils.checkpoint: only the node's inputs are kept, everything else
#                 is recomputed in the backward (~1 extra forward of the cells).  Per edge
#                 checkpoints (keeping the op outputs for mixed_sum) were measured first:
#                 0.23x of the reference's saved bytes against 0.043x per node, at the same
#                 recompute cost, since both recompute every op but identity.
MEMORY_MODES = ("plain", "shared", "checkpoint")


def make_op(primitive: str, C: int, stride: int) -> nn.Module:
    """One candidate op exactly as the original's MixedOp builds it (search: affine=False;
    pools followed by BatchNorm2d(C, affine=False)), so module trees and state_dict keys match."""
    op = OPS[primitive](C, stride, False)
    if "pool" in primitive:
        op = nn.Sequential(op, nn.BatchNorm2d(C, affine=False))
    return op


def active_columns(primitives: Sequence[str]) -> slice | list[int]:
    """The weight columns of the ops that are computed (all but ``none``); a slice when
    they are contiguous (``none`` first, as in PRIMITIVES), so indexing makes no index tensor."""
    idx = [k for k, p in enumerate(primitives) if p != "none"]
    if idx and idx == list(range(idx[0], idx[-1] + 1)):
        return slice(idx[0], idx[-1] + 1)
    return idx


def common_dtype(tensors: Sequence[Tensor]) -> torch.dtype:
    """The dtype the original's ``sum(w * op(x))`` ends in: the promotion of the op outputs'
    dtypes (a 0-dim weight does not promote them). Under autocast convs give bf16/fp16 while
    pools and identity keep the input's dtype, so the outputs can differ."""
    dtype = tensors[0].dtype
    for t in tensors[1:]:
        dtype = torch.promote_types(dtype, t.dtype)
    return dtype


def relu_head(op: nn.Module) -> nn.ReLU | None:
    """The leading ReLU of a SepConv/DilConv/ReLUConvBN/FactorizedReduce, when it is a
    plain (not in-place) nn.ReLU; None otherwise (then the op must run whole: e.g. a model
    whose ReLUs were swapped for another activation keeps its exact math)."""
    if isinstance(op, (SepConv, DilConv, ReLUConvBN)):
        head = op.op[0]
    elif isinstance(op, FactorizedReduce):
        head = op.relu
    else:
        return None
    return head if type(head) is nn.ReLU and not head.inplace else None


def after_relu(op: nn.Module, relu_x: Tensor) -> Tensor:
    """``op(x)`` given ``relu_x = ReLU(x)``: the op's layers after its ReLU, the same
    calls as the reference's forward (module hooks on ``op`` itself are bypassed)."""
    if isinstance(op, FactorizedReduce):
        out = torch.cat([op.conv_1(relu_x), op.conv_2(relu_x[:, :, 1:, 1:])], dim=1)
        return op.bn(out)
    y = relu_x
    for i, layer in enumerate(op.op):
        if i:
            y = layer(y)
    return y


def _shared_relu_outputs(ops: Sequence[nn.Module], x: Tensor) -> list[Tensor]:
    """[op(x) for op in ops], with ReLU(x) computed once for every op that starts with it."""
    relu_x = None
    outputs = []
    for op in ops:
        head = relu_head(op)
        if head is None:
            outputs.append(op(x))
            continue
        if relu_x is None:
            relu_x = head(x)
        outputs.append(after_relu(op, relu_x))
    return outputs


class _FrozenBatchNormStats:
    """Context manager: the BatchNorm running statistics of ``modules`` end as they were
    on entry (re-enterable: the checkpoint enters it once per recompute).

    The checkpoint recompute runs the BatchNorms in training mode again; without this
    their running_mean/var would take a second momentum step and num_batches_tracked
    would count the batch twice.  The buffers are C floats each: the copies are free."""

    def __init__(self, modules: Sequence[nn.Module]):
        self.bns = [m for op in modules for m in op.modules()
                    if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
                    and m.running_mean is not None]
        self.saved: list[tuple[Tensor, Tensor, Tensor]] = []

    def __enter__(self) -> None:
        self.saved = [(bn.running_mean.clone(), bn.running_var.clone(),
                       bn.num_batches_tracked.clone()) for bn in self.bns]

    def __exit__(self, *exc) -> None:
        with torch.no_grad():
            for bn, (mean, var, count) in zip(self.bns, self.saved, strict=True):
                bn.running_mean.copy_(mean)
                bn.running_var.copy_(var)
                bn.num_batches_tracked.copy_(count)
        self.saved = []


def edge_outputs(ops: Sequence[nn.Module], x: Tensor, memory: str) -> list[Tensor]:
    """The outputs [op(x) for op in ops] of one edge: each op on its own ("plain"), or with
    ReLU(x) shared ("shared", and "checkpoint", whose callers wrap whole nodes in
    :func:`checkpointed`).

    x: [N, C, H, W] (any float dtype/layout); ``ops`` exclude ``none``.  Returns one
    [N, C, H/s, W/s] tensor per op, in order.
    """
    if memory == "plain":
        return [op(x) for op in ops]
    if memory not in MEMORY_MODES:
        raise ValueError(f"memory must be one of {MEMORY_MODES}, got {memory!r}")
    return _shared_relu_outputs(ops, x)


def checkpointed(fn, modules: Sequence[nn.Module], *inputs):
    """``fn(*inputs)``, keeping only ``inputs`` for the backward, which re-runs ``fn``.

    Non-reentrant ``torch.utils.checkpoint`` (works with ``torch.autograd.grad`` and
    double backward).  The recompute leaves the BatchNorm running statistics of
    ``modules`` alone, so they move once per forward as in the reference.  No RNG state
    is stashed: the search ops have no dropout.  The recompute must reproduce the forward
    exactly: true on the CPU and for deterministic GPU kernels; with
    ``torch.backends.cudnn.benchmark`` or non-deterministic cuDNN algorithms the
    recomputed intermediates may differ in the last bits (the gradients then differ from
    "shared" by round-off; forward values and statistics cannot).  Weights must not be
    changed in place between the forward and the backward (the recompute would use the
    new values; fastdarts.Architect never does that).
    """
    note_kept([t for t in inputs if isinstance(t, Tensor)])  # held by the closure

    def context():
        return contextlib.nullcontext(), _FrozenBatchNormStats(modules)

    return checkpoint(fn, *inputs, use_reentrant=False, preserve_rng_state=False,
                      context_fn=context)


class MixedOp(nn.Module):
    """sum_k weights[k] * op_k(x), fused; a drop-in for the original MixedOp.

    ``_ops`` (and so the state_dict keys) are those of
    ``fastdarts.reference.cnn.MixedOp(C, stride, primitives)``.  The ``none`` op is
    never run: it contributes exactly zero, its weight gets a zero gradient and still
    counts in the softmax denominator upstream.  The other ops' outputs go to one
    ``fastdarts::mixed_sum`` (one pass forward and backward).

    Args:
        C: channels. stride: 1, or 2 on a reduction cell's input edges.
        primitives: op names (keys of ``fastdarts.space.OPS``).
        memory: "plain", "shared" (default) or "checkpoint": what the forward keeps
            for the backward (see ``MEMORY_MODES`` and :func:`edge_outputs`); the
            results are the reference's in every mode.

    forward(x: [N, C, H, W], weights: [len(primitives)]) -> [N, C, H/stride, W/stride]
    in the ops' (promoted) dtype; float32/float16/bfloat16 (autocast) and
    channels_last inputs are supported.
    """

    def __init__(self, C: int, stride: int, primitives: Sequence[str] = PRIMITIVES,
                 memory: str = "shared"):
        super().__init__()
        if memory not in MEMORY_MODES:
            raise ValueError(f"memory must be one of {MEMORY_MODES}, got {memory!r}")
        self._primitives = list(primitives)
        self._ops = nn.ModuleList(make_op(p, C, stride) for p in self._primitives)
        self._active = active_columns(self._primitives)
        self.memory = memory

    def active_outputs(self, x: Tensor) -> list[Tensor]:
        """The outputs of every op but ``none``, in primitive order."""
        ops = [op for p, op in zip(self._primitives, self._ops, strict=True) if p != "none"]
        return edge_outputs(ops, x, self.memory)

    def forward(self, x: Tensor, weights: Tensor) -> Tensor:
        if weights.dim() != 1 or weights.shape[0] != len(self._ops):
            raise ValueError(f"MixedOp has {len(self._ops)} ops but got weights of shape "
                             f"{tuple(weights.shape)}; pass one row of softmax(alpha)")
        if self.memory == "checkpoint" and torch.is_grad_enabled():
            return checkpointed(self._sum, self._ops, x, weights)
        return self._sum(x, weights)

    def _sum(self, x: Tensor, weights: Tensor) -> Tensor:
        outputs = self.active_outputs(x)
        if not outputs:  # only 'none': zeros of the strided shape, as the original computes
            k = self._primitives.index("none")
            return weights[k] * self._ops[k](x)
        dtype = common_dtype(outputs)
        outputs = [o if o.dtype == dtype else o.to(dtype) for o in outputs]
        return _mixed_sum_op(outputs, weights[self._active])

    def extra_repr(self) -> str:
        return f"fused, skips none: {'none' in self._primitives}, memory={self.memory!r}"
