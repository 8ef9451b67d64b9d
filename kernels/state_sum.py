"""Triton kernels for the state mixed sum: every edge leaving one cell state at once.

Pure functions on tensors: no autograd, no fastdarts imports (the registered op
lives in fastdarts/ops/state_sum.py, which also defines the semantics).

Memory model.  Every tensor is read as ``rows x row_stride`` with one edge's
slot a run of ``L`` consecutive elements inside a row: for NCHW-contiguous
tensors a row is one sample (``L = C*H*W``), for channels_last a row is one
pixel (``L = C``).  An input block is then ``(tensor, offset, row_stride)``:
element ``i`` of edge ``e``'s slot is at ``offset + (i // L) * row_stride + i % L``,
so one kernel reads shared inputs (row_stride = L), the edge slots of a wide
``[N, G*E*C, H, W]`` tensor and channel slices of it without a copy.  Outputs,
partial sums and incoming gradients are dense ``[N, C, H, W]`` in the same
memory format, indexed by ``i`` directly.

One launch per (edge, chunk of up to ``MAX_INPUTS`` blocks), like
kernels/mixed_sum.py; the edges' slots of one wide gradient are disjoint, so
no atomics are needed and every result is deterministic.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import triton
import triton.language as tl

from ._launch import acc_dtype, on_device

MAX_INPUTS = 8  # input blocks per launch (separate pointer arguments)
BLOCK = 1024
NUM_WARPS = 4
# The backward states the architectural register limit (255) as its ceiling: without a
# stated one, ptxas for sm_80 (12.9) trades spills for occupancy (fp32 with accumulated
# inputs: 40 registers and 8-24 B of spills; bench/NOTES.md, "compiled for Hopper and
# Ampere"); with one, it allocates what the code needs (48 there).  A lower ceiling
# would force spills on unaligned specializations, which need up to 180 registers.
# Only register allocation changes.
BWD_MAX_REGISTERS = 255


@triton.jit
def _fma_block(acc, x_ptr, off, rs, w_ptr, k: tl.constexpr, row, col, mask, ACC: tl.constexpr):
    w = tl.load(w_ptr + k).to(ACC)
    x = tl.load(x_ptr + off + row * rs + col, mask=mask, other=0.0).to(ACC)
    return acc + w * x


@triton.jit
def state_sum_fwd_kernel(dst_ptr, acc_ptr, w_ptr,
                         x0, x1, x2, x3, x4, x5, x6, x7,
                         o0, o1, o2, o3, o4, o5, o6, o7,
                         r0, r1, r2, r3, r4, r5, r6, r7,
                         total, L, COUNT: tl.constexpr, HAS_ACC: tl.constexpr,
                         ACC: tl.constexpr, BLOCK: tl.constexpr):
    """dst[i] = (acc[i] if HAS_ACC else 0) + sum_{k<COUNT} w[k] * x_k[o_k + (i//L)*r_k + i%L]."""
    pid = tl.program_id(0).to(tl.int64)
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    mask = offs < total
    row = offs // L
    col = offs - row * L
    if HAS_ACC:
        acc = tl.load(acc_ptr + offs, mask=mask, other=0.0).to(ACC)
    else:
        acc = tl.zeros([BLOCK], dtype=ACC)
    acc = _fma_block(acc, x0, o0, r0, w_ptr, 0, row, col, mask, ACC)
    if COUNT > 1:
        acc = _fma_block(acc, x1, o1, r1, w_ptr, 1, row, col, mask, ACC)
    if COUNT > 2:
        acc = _fma_block(acc, x2, o2, r2, w_ptr, 2, row, col, mask, ACC)
    if COUNT > 3:
        acc = _fma_block(acc, x3, o3, r3, w_ptr, 3, row, col, mask, ACC)
    if COUNT > 4:
        acc = _fma_block(acc, x4, o4, r4, w_ptr, 4, row, col, mask, ACC)
    if COUNT > 5:
        acc = _fma_block(acc, x5, o5, r5, w_ptr, 5, row, col, mask, ACC)
    if COUNT > 6:
        acc = _fma_block(acc, x6, o6, r6, w_ptr, 6, row, col, mask, ACC)
    if COUNT > 7:
        acc = _fma_block(acc, x7, o7, r7, w_ptr, 7, row, col, mask, ACC)
    tl.store(dst_ptr + offs, acc.to(dst_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _grad_block(g, x_ptr, gx_ptr, off, rs, w_ptr, partial_ptr, k: tl.constexpr,
                ACCUM: tl.constexpr, pid, num_blocks, row, col, mask, ACC: tl.constexpr):
    w = tl.load(w_ptr + k).to(ACC)
    addr = off + row * rs + col
    if ACCUM:  # a shared input: the earlier edges' launches wrote their part already
        prev = tl.load(gx_ptr + addr, mask=mask, other=0.0).to(ACC)
        tl.store(gx_ptr + addr, (prev + w * g).to(gx_ptr.dtype.element_ty), mask=mask)
    else:
        tl.store(gx_ptr + addr, (w * g).to(gx_ptr.dtype.element_ty), mask=mask)
    x = tl.load(x_ptr + addr, mask=mask, other=0.0).to(ACC)
    tl.store(partial_ptr + k * num_blocks + pid, tl.sum(g * x, axis=0))


@triton.jit
def state_sum_bwd_kernel(g_ptr, w_ptr, partial_ptr, num_blocks,
                         x0, x1, x2, x3, x4, x5, x6, x7,
                         gx0, gx1, gx2, gx3, gx4, gx5, gx6, gx7,
                         o0, o1, o2, o3, o4, o5, o6, o7,
                         r0, r1, r2, r3, r4, r5, r6, r7,
                         total, L, COUNT: tl.constexpr, ACCUM_MASK: tl.constexpr,
                         ACC: tl.constexpr, BLOCK: tl.constexpr):
    """For each block k < COUNT at (o_k, r_k): gx_k[slot] (+)= w[k] * g; and
    partial[k, pid] = sum over this program's elements of g * x_k[slot]."""
    pid = tl.program_id(0).to(tl.int64)
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    mask = offs < total
    row = offs // L
    col = offs - row * L
    g = tl.load(g_ptr + offs, mask=mask, other=0.0).to(ACC)
    _grad_block(g, x0, gx0, o0, r0, w_ptr, partial_ptr, 0, (ACCUM_MASK >> 0) & 1, pid,
                num_blocks, row, col, mask, ACC)
    if COUNT > 1:
        _grad_block(g, x1, gx1, o1, r1, w_ptr, partial_ptr, 1, (ACCUM_MASK >> 1) & 1, pid,
                    num_blocks, row, col, mask, ACC)
    if COUNT > 2:
        _grad_block(g, x2, gx2, o2, r2, w_ptr, partial_ptr, 2, (ACCUM_MASK >> 2) & 1, pid,
                    num_blocks, row, col, mask, ACC)
    if COUNT > 3:
        _grad_block(g, x3, gx3, o3, r3, w_ptr, partial_ptr, 3, (ACCUM_MASK >> 3) & 1, pid,
                    num_blocks, row, col, mask, ACC)
    if COUNT > 4:
        _grad_block(g, x4, gx4, o4, r4, w_ptr, partial_ptr, 4, (ACCUM_MASK >> 4) & 1, pid,
                    num_blocks, row, col, mask, ACC)
    if COUNT > 5:
        _grad_block(g, x5, gx5, o5, r5, w_ptr, partial_ptr, 5, (ACCUM_MASK >> 5) & 1, pid,
                    num_blocks, row, col, mask, ACC)
    if COUNT > 6:
        _grad_block(g, x6, gx6, o6, r6, w_ptr, partial_ptr, 6, (ACCUM_MASK >> 6) & 1, pid,
                    num_blocks, row, col, mask, ACC)
    if COUNT > 7:
        _grad_block(g, x7, gx7, o7, r7, w_ptr, partial_ptr, 7, (ACCUM_MASK >> 7) & 1, pid,
                    num_blocks, row, col, mask, ACC)


# -- launchers ----------------------------------------------------------------------------
# A "block" is (tensor, offset, row_stride, per_edge_stride): edge e's slot starts at
# offset + e * per_edge_stride (0 for an input every edge shares).


def _pad(xs: Sequence, fill) -> list:
    return list(xs) + [fill] * (MAX_INPUTS - len(xs))


def state_sum_forward(blocks: Sequence[tuple[torch.Tensor, int, int, int]], weights: torch.Tensor,
                      partials: Sequence[torch.Tensor], out_like: torch.Tensor, L: int
                      ) -> list[torch.Tensor]:
    """out[e] = partials[e] + sum_k weights[e, k] * slot_e(block k), for each of E edges.

    blocks: K tuples (tensor, offset, row_stride, edge_stride) as above.
    weights: [E, K]. partials: E tensors like ``out_like`` or empty.
    out_like: a dense [N, C, H, W] tensor with the outputs' dtype, device and strides.
    Returns E new tensors like ``out_like``.
    """
    E, K = weights.shape
    acc_t, acc_tl = acc_dtype(out_like.dtype)
    w = weights.to(acc_t).contiguous()
    outs = [torch.empty_like(out_like) for _ in range(E)]
    total = out_like.numel()
    if total == 0:
        return outs
    grid = (triton.cdiv(total, BLOCK),)
    chunked = K > MAX_INPUTS and out_like.dtype != acc_t
    scratch = torch.empty_like(out_like, dtype=acc_t) if chunked else None
    for e in range(E):
        out = outs[e]
        for start in range(0, K, MAX_INPUTS):
            chunk = blocks[start:start + MAX_INPUTS]
            last = start + MAX_INPUTS >= K
            dst = out if last or scratch is None else scratch
            if start == 0:
                acc = partials[e] if partials else out
                has_acc = bool(partials)
            else:
                acc, has_acc = (out if scratch is None else scratch), True
            with on_device(out):
                state_sum_fwd_kernel[grid](
                    dst, acc, w[e, start:],
                    *_pad([b[0] for b in chunk], chunk[0][0]),
                    *_pad([b[1] + e * b[3] for b in chunk], 0),
                    *_pad([b[2] for b in chunk], 0),
                    total, L, COUNT=len(chunk), HAS_ACC=has_acc, ACC=acc_tl,
                    BLOCK=BLOCK, num_warps=NUM_WARPS)
    return outs


def state_sum_backward(grads: Sequence[torch.Tensor],
                       blocks: Sequence[tuple[torch.Tensor, int, int, int]],
                       grad_targets: Sequence[torch.Tensor], weights: torch.Tensor, L: int
                       ) -> torch.Tensor:
    """Writes every block's gradient into ``grad_targets`` and returns grad_weights [E, K].

    grads: E dense tensors (the outputs' layout). blocks: as in :func:`state_sum_forward`.
    grad_targets: K tensors addressed like the blocks' tensors (same offsets/strides);
    a block whose edge_stride is 0 (shared) is accumulated over the edges, so its
    target must hold zeros or be written first by edge 0 (done here: edge 0 stores).
    """
    E, K = weights.shape
    acc_t, acc_tl = acc_dtype(grads[0].dtype)
    w = weights.to(acc_t).contiguous()
    total = grads[0].numel()
    if total == 0:
        return torch.zeros(E, K, dtype=acc_t, device=weights.device)
    num_blocks = triton.cdiv(total, BLOCK)
    partial = torch.empty(E, K, num_blocks, dtype=acc_t, device=grads[0].device)
    for e in range(E):
        for start in range(0, K, MAX_INPUTS):
            chunk = blocks[start:start + MAX_INPUTS]
            targets = grad_targets[start:start + MAX_INPUTS]
            accum = 0
            for k, b in enumerate(chunk):
                if b[3] == 0 and e > 0:
                    accum |= 1 << k
            with on_device(grads[e]):
                state_sum_bwd_kernel[(num_blocks,)](
                    grads[e], w[e, start:], partial[e, start:], num_blocks,
                    *_pad([b[0] for b in chunk], chunk[0][0]),
                    *_pad(targets, targets[0]),
                    *_pad([b[1] + e * b[3] for b in chunk], 0),
                    *_pad([b[2] for b in chunk], 0),
                    total, L, COUNT=len(chunk), ACCUM_MASK=accum, ACC=acc_tl,
                    BLOCK=BLOCK, num_warps=NUM_WARPS, maxnreg=BWD_MAX_REGISTERS)
    return partial.sum(dim=2)
