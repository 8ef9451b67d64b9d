"""Plain-PyTorch mixed sum: the ``reference`` backend of ``fastdarts::mixed_sum``
(fastdarts/ops/mixed_sum.py).

Readable and obviously right; the fused backends are tested against it (and it
against float64).  Inputs arrive already checked and laid out by
``fastdarts.ops.mixed_sum`` (M tensors of one shape, dtype, device and dense
strides; ``weights`` a flat [M] vector).
"""

from __future__ import annotations

import torch
from torch import Tensor


def acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """The accumulation dtype for outputs of ``dtype``: float64 stays, all else float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def mixed_sum_forward(outputs: list[Tensor], weights: Tensor) -> Tensor:
    """sum_m weights[m] * outputs[m].

    outputs: M tensors [*S] (float16/bfloat16/float32/float64), one layout.
    weights: [M], any floating dtype.
    Returns [*S] in the outputs' dtype and strides, accumulated in float32
    (float64 for float64 outputs).
    """
    acc_t = acc_dtype(outputs[0].dtype)
    w = weights.to(acc_t)
    # zeros_like keeps dense strides (channels_last in, channels_last out).
    acc = torch.zeros_like(outputs[0], dtype=acc_t)
    for m, x in enumerate(outputs):
        acc.addcmul_(x, w[m])  # a 0-dim tensor weight: no .item(), no host sync
    return acc.to(outputs[0].dtype)


def mixed_sum_backward(grad: Tensor, outputs: list[Tensor], weights: Tensor
                       ) -> tuple[list[Tensor], Tensor]:
    """Gradients of :func:`mixed_sum_forward`.

    grad: [*S].  Returns (grad_outputs: M tensors [*S] in the outputs' dtype,
    grad_weights: [M] in the weights' dtype) with grad_outputs[m] = weights[m] * grad
    and grad_weights[m] = sum(grad * outputs[m]) accumulated in float32 (float64).
    """
    dtype = outputs[0].dtype
    acc_t = acc_dtype(dtype)
    g = grad.to(acc_t)
    w = weights.to(acc_t)
    grad_outputs = [(g * w[m]).to(dtype) for m in range(len(outputs))]
    if len(outputs):
        grad_weights = torch.stack([(g * x.to(acc_t)).sum() for x in outputs])
    else:
        grad_weights = torch.zeros(0, dtype=acc_t, device=grad.device)
    return grad_outputs, grad_weights.to(weights.dtype)
