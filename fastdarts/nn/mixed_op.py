"""The drop-in fused MixedOp of the DARTS CNN search space."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
from torch import Tensor

from ..genotypes import PRIMITIVES
from ..ops.mixed_sum import mixed_sum as _mixed_sum_op
from ..reference.cnn.operations import OPS

__all__ = ["MixedOp", "common_dtype", "make_op", "active_columns"]


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


class MixedOp(nn.Module):
    """sum_k weights[k] * op_k(x), fused; a drop-in for the original MixedOp.

    ``_ops`` (and so the state_dict keys) are those of
    ``fastdarts.reference.cnn.MixedOp(C, stride, primitives)``.  The ``none`` op is
    never run: it contributes exactly zero, its weight gets a zero gradient and still
    counts in the softmax denominator upstream.  The other ops' outputs go to one
    ``fastdarts::mixed_sum`` (one pass forward and backward).

    Args:
        C: channels. stride: 1, or 2 on a reduction cell's input edges.
        primitives: op names (keys of ``fastdarts.reference.cnn.OPS``).

    forward(x: [N, C, H, W], weights: [len(primitives)]) -> [N, C, H/stride, W/stride]
    in the ops' (promoted) dtype; float32/float16/bfloat16 (autocast) and
    channels_last inputs are supported.
    """

    def __init__(self, C: int, stride: int, primitives: Sequence[str] = PRIMITIVES):
        super().__init__()
        self._primitives = list(primitives)
        self._ops = nn.ModuleList(make_op(p, C, stride) for p in self._primitives)
        self._active = active_columns(self._primitives)

    def active_outputs(self, x: Tensor) -> list[Tensor]:
        """The outputs of every op but ``none``, in primitive order."""
        return [op(x) for p, op in zip(self._primitives, self._ops, strict=True)
                if p != "none"]

    def forward(self, x: Tensor, weights: Tensor) -> Tensor:
        if weights.dim() != 1 or weights.shape[0] != len(self._ops):
            raise ValueError(f"MixedOp has {len(self._ops)} ops but got weights of shape "
                             f"{tuple(weights.shape)}; pass one row of softmax(alpha)")
        outputs = self.active_outputs(x)
        if not outputs:  # only 'none': zeros of the strided shape, as the original computes
            k = self._primitives.index("none")
            return weights[k] * self._ops[k](x)
        dtype = common_dtype(outputs)
        outputs = [o if o.dtype == dtype else o.to(dtype) for o in outputs]
        return _mixed_sum_op(outputs, weights[self._active])

    def extra_repr(self) -> str:
        return f"fused, skips none: {'none' in self._primitives}"
