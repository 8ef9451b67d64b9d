"""Functional forms of fastdarts' fused ops."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .ops import mixed_sum as _mixed_sum_op

__all__ = ["mixed_sum"]


def mixed_sum(outputs: Sequence[Tensor] | Tensor, weights: Tensor) -> Tensor:
    """sum_m weights[m] * outputs[m], fused (one pass forward, one pass backward).

    Args:
        outputs: M tensors [*S] of one shape, dtype (float16/bfloat16/float32/
            float64) and device, or one stacked tensor [M, *S].
        weights: M weights: a [M] vector, or an [E, K] matrix when the outputs
            of E edges with K ops each are summed at once (outputs ordered
            edge-major: outputs[e * K + k] goes with weights[e, k]).  May be
            float32 while the outputs are bfloat16/float16 (autocast).

    Returns:
        [*S] in the outputs' dtype (and their strides when they share a dense
        layout such as channels_last), accumulated in float32.  Differentiable
        in both arguments; the backward is one fused pass.
    """
    if isinstance(outputs, Tensor):
        if outputs.dim() < 1:
            raise ValueError("mixed_sum got a 0-dim tensor; pass a list of M tensors or one "
                             "stacked [M, ...] tensor")
        outputs = outputs.unbind(0)
    outputs = list(outputs)
    _mixed_sum_op.check_inputs(outputs, weights)
    return torch.ops.fastdarts.mixed_sum(outputs, weights)
