"""Triton kernels for the mixed sum  out = sum_m w[m] * x_m  and its one-pass backward.

Pure functions on tensors: no autograd, no fastdarts imports (the registered op
lives in fastdarts/ops/mixed_sum.py).  Callers pass M tensors that share one
dense layout, so flat offset i is the same logical element in every tensor.

Up to ``MAX_INPUTS`` tensors go to one launch as separate pointer arguments
(a constexpr ``COUNT`` says how many are live); more are chunked over several
launches that accumulate in a float32 scratch buffer (the output itself when it
is float32), so a node's 35 op outputs (5 edges x 7 ops) need 5 launches, each
element rounded to the output dtype only once.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import triton
import triton.language as tl

from ._launch import acc_dtype, on_device

MAX_INPUTS = 8  # pointer arguments per launch
BLOCK = 1024  # elements per program: 8 per thread at 4 warps (two 16-byte fp32 loads)
NUM_WARPS = 4


@triton.jit
def _fma_input(acc, x_ptr, w_ptr, k: tl.constexpr, offs, mask, ACC: tl.constexpr):
    w = tl.load(w_ptr + k).to(ACC)
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(ACC)
    return acc + w * x


@triton.jit
def mixed_sum_fwd_kernel(dst_ptr, acc_ptr, w_ptr,
                         x0, x1, x2, x3, x4, x5, x6, x7,
                         N, COUNT: tl.constexpr, HAS_ACC: tl.constexpr,
                         ACC: tl.constexpr, BLOCK: tl.constexpr):
    """dst[i] = (acc[i] if HAS_ACC else 0) + sum_{k<COUNT} w[k] * x_k[i], for i < N."""
    pid = tl.program_id(0).to(tl.int64)  # int64 offsets: a supernet tensor can pass 2**31
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    mask = offs < N
    if HAS_ACC:
        acc = tl.load(acc_ptr + offs, mask=mask, other=0.0).to(ACC)
    else:
        acc = tl.zeros([BLOCK], dtype=ACC)
    acc = _fma_input(acc, x0, w_ptr, 0, offs, mask, ACC)
    if COUNT > 1:
        acc = _fma_input(acc, x1, w_ptr, 1, offs, mask, ACC)
    if COUNT > 2:
        acc = _fma_input(acc, x2, w_ptr, 2, offs, mask, ACC)
    if COUNT > 3:
        acc = _fma_input(acc, x3, w_ptr, 3, offs, mask, ACC)
    if COUNT > 4:
        acc = _fma_input(acc, x4, w_ptr, 4, offs, mask, ACC)
    if COUNT > 5:
        acc = _fma_input(acc, x5, w_ptr, 5, offs, mask, ACC)
    if COUNT > 6:
        acc = _fma_input(acc, x6, w_ptr, 6, offs, mask, ACC)
    if COUNT > 7:
        acc = _fma_input(acc, x7, w_ptr, 7, offs, mask, ACC)
    tl.store(dst_ptr + offs, acc.to(dst_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _grad_input(g, x_ptr, gx_ptr, w_ptr, partial_ptr, k: tl.constexpr, pid, num_blocks,
                offs, mask, ACC: tl.constexpr):
    w = tl.load(w_ptr + k).to(ACC)
    tl.store(gx_ptr + offs, (w * g).to(gx_ptr.dtype.element_ty), mask=mask)
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(ACC)
    # One partial per (input, program); the host sums each row: deterministic.
    tl.store(partial_ptr + k * num_blocks + pid, tl.sum(g * x, axis=0))


@triton.jit
def mixed_sum_bwd_kernel(g_ptr, w_ptr, partial_ptr, num_blocks,
                         x0, x1, x2, x3, x4, x5, x6, x7,
                         gx0, gx1, gx2, gx3, gx4, gx5, gx6, gx7,
                         N, COUNT: tl.constexpr, ACC: tl.constexpr, BLOCK: tl.constexpr):
    """gx_k[i] = w[k] * g[i];  partial[k, pid] = sum_{i in block pid} g[i] * x_k[i]."""
    pid = tl.program_id(0).to(tl.int64)
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    mask = offs < N
    g = tl.load(g_ptr + offs, mask=mask, other=0.0).to(ACC)  # read once for all COUNT inputs
    _grad_input(g, x0, gx0, w_ptr, partial_ptr, 0, pid, num_blocks, offs, mask, ACC)
    if COUNT > 1:
        _grad_input(g, x1, gx1, w_ptr, partial_ptr, 1, pid, num_blocks, offs, mask, ACC)
    if COUNT > 2:
        _grad_input(g, x2, gx2, w_ptr, partial_ptr, 2, pid, num_blocks, offs, mask, ACC)
    if COUNT > 3:
        _grad_input(g, x3, gx3, w_ptr, partial_ptr, 3, pid, num_blocks, offs, mask, ACC)
    if COUNT > 4:
        _grad_input(g, x4, gx4, w_ptr, partial_ptr, 4, pid, num_blocks, offs, mask, ACC)
    if COUNT > 5:
        _grad_input(g, x5, gx5, w_ptr, partial_ptr, 5, pid, num_blocks, offs, mask, ACC)
    if COUNT > 6:
        _grad_input(g, x6, gx6, w_ptr, partial_ptr, 6, pid, num_blocks, offs, mask, ACC)
    if COUNT > 7:
        _grad_input(g, x7, gx7, w_ptr, partial_ptr, 7, pid, num_blocks, offs, mask, ACC)


# -- launchers ----------------------------------------------------------------------------


def _padded(tensors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    # Unused pointer slots get a live tensor; COUNT keeps the kernel from touching them.
    return list(tensors) + [tensors[0]] * (MAX_INPUTS - len(tensors))


def mixed_sum_forward(outputs: Sequence[torch.Tensor], weights: torch.Tensor) -> torch.Tensor:
    """sum_m weights[m] * outputs[m].

    outputs: M >= 1 tensors [*S] of one dtype/device and one dense stride order.
    weights: [M] (any floating dtype; read as float32, float64 for float64 outputs).
    Returns [*S] with outputs[0]'s dtype and strides.
    """
    out = torch.empty_like(outputs[0])
    n = out.numel()
    acc_t, acc_tl = acc_dtype(out.dtype)
    w = weights.reshape(-1).to(acc_t).contiguous()
    if n == 0:
        return out
    grid = (triton.cdiv(n, BLOCK),)
    m_total = len(outputs)
    # Partial sums of a chunked launch live in float32 (float64): the output itself
    # when it has that dtype, else a scratch buffer, so rounding happens once.
    scratch = out if out.dtype == acc_t or m_total <= MAX_INPUTS else torch.empty_like(
        out, dtype=acc_t)
    for start in range(0, m_total, MAX_INPUTS):
        chunk = outputs[start:start + MAX_INPUTS]
        last = start + MAX_INPUTS >= m_total
        dst = out if last else scratch
        with on_device(out):
            mixed_sum_fwd_kernel[grid](dst, scratch, w[start:], *_padded(chunk), n,
                                       COUNT=len(chunk), HAS_ACC=start > 0, ACC=acc_tl,
                                       BLOCK=BLOCK, num_warps=NUM_WARPS)
    return out


def mixed_sum_backward(grad: torch.Tensor, outputs: Sequence[torch.Tensor],
                       weights: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
    """One pass over grad and the outputs.

    grad: [*S] with the outputs' dtype and strides.  outputs, weights as in
    :func:`mixed_sum_forward`.  Returns (grad_outputs: M tensors [*S] =
    weights[m] * grad in the outputs' dtype, grad_weights: [M] float32 (float64)
    = sum(grad * outputs[m])).
    """
    n = grad.numel()
    m_total = len(outputs)
    acc_t, acc_tl = acc_dtype(outputs[0].dtype)
    w = weights.reshape(-1).to(acc_t).contiguous()
    grad_outputs = [torch.empty_like(outputs[0]) for _ in range(m_total)]
    if n == 0:
        return grad_outputs, torch.zeros(m_total, dtype=acc_t, device=grad.device)
    num_blocks = triton.cdiv(n, BLOCK)
    partial = torch.empty(m_total, num_blocks, dtype=acc_t, device=grad.device)
    for start in range(0, m_total, MAX_INPUTS):
        chunk = outputs[start:start + MAX_INPUTS]
        with on_device(grad):
            mixed_sum_bwd_kernel[(num_blocks,)](
                grad, w[start:], partial[start:], num_blocks,
                *_padded(chunk), *_padded(grad_outputs[start:start + MAX_INPUTS]), n,
                COUNT=len(chunk), ACC=acc_tl, BLOCK=BLOCK, num_warps=NUM_WARPS)
    return grad_outputs, partial.sum(dim=1)
