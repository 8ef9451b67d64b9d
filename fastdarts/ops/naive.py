"""Plain-PyTorch mixed sum: the ``reference`` backend of ``fastdarts::mixed_sum``.

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


# -- fastdarts::state_mixed_sum (fastdarts/ops/state_sum.py has the semantics) ---------------
def _slot(x: Tensor, g: int, b: int, e: int, E: int, C: int) -> Tensor:
    """Edge e's part of column b of input x (all of x when it is shared, g == 0)."""
    return x if g == 0 else x.narrow(1, (b * E + e) * C, C)


def _columns(inputs: list[Tensor], blocks: list[int]):
    """(input index, block) per weight column, in column order."""
    return [(i, b) for i, g in enumerate(blocks) for b in range(max(1, g))]


def state_sum_forward(inputs: list[Tensor], blocks: list[int], weights: Tensor,
                      partials: list[Tensor], C: int, fmt: torch.memory_format) -> list[Tensor]:
    """out[e] = partials[e] + sum_k weights[e, k] * slot_e(column k), in float32 (float64),
    rounded once to the inputs' dtype; outputs in memory format ``fmt``."""
    E = weights.shape[0]
    dtype = inputs[0].dtype
    acc_t = acc_dtype(dtype)
    w = weights.to(acc_t)
    shape = (inputs[0].shape[0], C, *inputs[0].shape[2:])
    outs = []
    for e in range(E):
        if partials:
            acc = partials[e].to(acc_t).clone(memory_format=fmt)
        else:
            acc = torch.empty(shape, dtype=acc_t, device=inputs[0].device,
                              memory_format=fmt).zero_()
        for k, (i, b) in enumerate(_columns(inputs, blocks)):
            acc.addcmul_(_slot(inputs[i], blocks[i], b, e, E, C), w[e, k])
        outs.append(acc.to(dtype))
    return outs


def state_sum_backward(grads: list[Tensor], inputs: list[Tensor], blocks: list[int],
                       weights: Tensor, C: int, fmt: torch.memory_format
                       ) -> tuple[list[Tensor], Tensor]:
    """Gradients of :func:`state_sum_forward` w.r.t. the inputs (each whole, in its own
    layout) and the weights [E, K] (in the weights' dtype).  Differentiable (used for
    double backward)."""
    E = weights.shape[0]
    dtype = inputs[0].dtype
    acc_t = acc_dtype(dtype)
    g = [x.to(acc_t) for x in grads]
    w = weights.to(acc_t)
    cols = _columns(inputs, blocks)
    grad_inputs = []
    k = 0
    for x, nb in zip(inputs, blocks, strict=True):
        if nb == 0:
            gx = sum(w[e, k] * g[e] for e in range(E))
            k += 1
        else:
            parts = [w[e, k + b] * g[e] for b in range(nb) for e in range(E)]
            gx = torch.cat(parts, dim=1)
            k += nb
        grad_inputs.append(gx.to(dtype).contiguous(memory_format=fmt) if x.dim() == 4
                           else gx.to(dtype).contiguous())
    grad_weights = torch.stack([
        torch.stack([(g[e] * _slot(inputs[i], blocks[i], b, e, E, C).to(acc_t)).sum()
                     for (i, b) in cols])
        for e in range(E)])
    return grad_inputs, grad_weights.to(weights.dtype)
