"""Plain-PyTorch state mixed sum: the ``reference`` backend of ``fastdarts::state_mixed_sum``
(fastdarts/ops/state_sum.py, whose docstring has the semantics and the input layout).

Readable and obviously right; the Triton backend is tested against it.  Inputs
arrive already checked and in one dense memory format ``fmt``.  The backward is
differentiable (the op's double backward uses it).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .mixed_sum_ref import acc_dtype


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
