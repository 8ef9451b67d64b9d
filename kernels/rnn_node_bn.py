"""Triton kernels for a search-cell node followed by the cell's BatchNorm1d(affine=False)
in training mode, forward and one-pass backward.

Forward, per column k of the [B, H] plane (one program per BLOCK_H columns, looping
over the batch in BLOCK_B rows; BN needs every row of a column in one program):

    s   = rnn_node(ch, states, probs)            (kernels/rnn_node.py, rounded to io dtype)
    mu  = mean_b s,  var = mean_b (s - mu)^2,  invstd = 1 / sqrt(var + eps)
    y   = (s - mu) invstd,   y_masked = y * h_mask
    running_mean = momentum mu + (1 - momentum) running_mean
    running_var  = momentum var B / (B - 1) + (1 - momentum) running_var
    num_batches_tracked += 1                      (program 0)

which is what ``bn(rnn_node(...))`` and ``bn_out * h_mask`` do (ATen's update formula,
unbiased variance in the running statistic), in one launch instead of 1 + 3 + 1 + 1.
s is written to y first and read back (two-pass variance, as ATen).

Backward, with g = g_y + g_ym * h_mask (either may be absent):

    d s = invstd (g - mean_b g - y mean_b(g y))   (BN backward, affine=False: x_hat = y)

then the rnn_node backward of d s (d ch, d states, per-program partial sums of d probs,
summed over programs by the launcher in a fixed order).  Pure functions on tensors: no
autograd, no fastdarts imports (the op lives in fastdarts/ops/rnn_node_bn.py).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._launch import on_device
from .rnn_node import NUM_OPS, _load_node_inputs, _sigmoid, _tanh, node_grad_buffers, node_shapes

BLOCK_B = 64  # rows per tile
BLOCK_H = 16  # columns per program: H = 300 -> 19 programs
NUM_WARPS = 4
# The float64 backward at 4 warps needs more than the 255 registers a thread can have
# (8 elements of each [BLOCK_B, BLOCK_H] tile per thread, 2 registers each) and spilled
# 276-392 B on sm_80 and sm_90; at 8 warps it holds 4 per thread in 189-222 registers,
# no spill (bench/NOTES.md, "compiled for Hopper and Ampere").  The same tiles, loops and
# arithmetic; only the threads that share a tile, and so the order of the additions
# inside each tile's sums, differ.
NUM_WARPS_BWD_FP64 = 8


def _bwd_warps(dtype: torch.dtype) -> int:
    return NUM_WARPS_BWD_FP64 if dtype == torch.float64 else NUM_WARPS


@triton.jit
def _tile(pid, b0, B, H, BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr):
    k = (pid * BLOCK_H + tl.arange(0, BLOCK_H)).to(tl.int64)
    b = (b0 + tl.arange(0, BLOCK_B)).to(tl.int64)
    mask = (b[:, None] < B) & (k[None, :] < H)
    return b[:, None], k[None, :], mask


@triton.jit
def rnn_node_bn_fwd_kernel(y_ptr, ym_ptr, invstd_ptr, ch_ptr, st_ptr, p_ptr, m_ptr,
                           rm_ptr, rv_ptr, nbt_ptr, n_states, B, H, momentum, eps,
                           s_chj, s_chb, s_chk, s_stj, s_stb, s_stk, s_pj, s_pf, s_mb, s_mk,
                           ACC: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr):
    """y, ym [B, H] contiguous; invstd [H] (ACC); running stats [H] updated in place."""
    pid = tl.program_id(0)
    col_sum = tl.zeros([BLOCK_H], dtype=ACC)
    for b0 in range(0, B, BLOCK_B):
        b, k, mask = _tile(pid, b0, B, H, BLOCK_B, BLOCK_H)
        acc = tl.zeros([BLOCK_B, BLOCK_H], dtype=ACC)
        for j in range(n_states):
            c, h, st, p_tanh, p_relu, p_sigm, p_iden = _load_node_inputs(
                ch_ptr, st_ptr, p_ptr, j, b, k, H, mask, s_chj, s_chb, s_chk, s_stj, s_stb,
                s_stk, s_pj, s_pf, ACC)
            acc += p_tanh * (st + c * (_tanh(h) - st))
            acc += p_relu * (st + c * (tl.maximum(h, 0.0) - st))
            acc += p_sigm * (st + c * (_sigmoid(h) - st))
            acc += p_iden * (st + c * (h - st))
        s = acc.to(y_ptr.dtype.element_ty)  # the node's output, rounded as rnn_node's
        tl.store(y_ptr + b * H + k, s, mask=mask)
        col_sum += tl.sum(tl.where(mask, s.to(ACC), 0.0), axis=0)
    mean = col_sum / B
    col_sq = tl.zeros([BLOCK_H], dtype=ACC)
    for b0 in range(0, B, BLOCK_B):
        b, k, mask = _tile(pid, b0, B, H, BLOCK_B, BLOCK_H)
        s = tl.load(y_ptr + b * H + k, mask=mask, other=0.0).to(ACC)
        d = tl.where(mask, s - mean[None, :], 0.0)
        col_sq += tl.sum(d * d, axis=0)
    invstd = 1.0 / tl.sqrt(col_sq / B + eps)
    for b0 in range(0, B, BLOCK_B):
        b, k, mask = _tile(pid, b0, B, H, BLOCK_B, BLOCK_H)
        s = tl.load(y_ptr + b * H + k, mask=mask, other=0.0).to(ACC)
        y = ((s - mean[None, :]) * invstd[None, :]).to(y_ptr.dtype.element_ty)
        tl.store(y_ptr + b * H + k, y, mask=mask)
        hm = tl.load(m_ptr + b * s_mb + k * s_mk, mask=mask, other=0.0).to(ACC)
        tl.store(ym_ptr + b * H + k, (y.to(ACC) * hm).to(ym_ptr.dtype.element_ty), mask=mask)
    kc = (pid * BLOCK_H + tl.arange(0, BLOCK_H)).to(tl.int64)
    kmask = kc < H
    tl.store(invstd_ptr + kc, invstd, mask=kmask)
    rm = tl.load(rm_ptr + kc, mask=kmask, other=0.0).to(ACC)
    rv = tl.load(rv_ptr + kc, mask=kmask, other=0.0).to(ACC)
    tl.store(rm_ptr + kc, (momentum * mean + (1.0 - momentum) * rm).to(rm_ptr.dtype.element_ty),
             mask=kmask)
    var_unbiased = col_sq / (B - 1)
    tl.store(rv_ptr + kc,
             (momentum * var_unbiased + (1.0 - momentum) * rv).to(rv_ptr.dtype.element_ty),
             mask=kmask)
    if pid == 0:
        tl.store(nbt_ptr, tl.load(nbt_ptr) + 1)


@triton.jit
def _grad_tile(gy_ptr, gym_ptr, m_ptr, b, k, mask, s_gyb, s_gyk, s_gmb, s_gmk, s_mb, s_mk,
               HAS_GY: tl.constexpr, HAS_GYM: tl.constexpr, ACC: tl.constexpr,
               BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr):
    g = tl.zeros([BLOCK_B, BLOCK_H], dtype=ACC)
    if HAS_GY:
        g += tl.load(gy_ptr + b * s_gyb + k * s_gyk, mask=mask, other=0.0).to(ACC)
    if HAS_GYM:
        hm = tl.load(m_ptr + b * s_mb + k * s_mk, mask=mask, other=0.0).to(ACC)
        g += tl.load(gym_ptr + b * s_gmb + k * s_gmk, mask=mask, other=0.0).to(ACC) * hm
    return g


@triton.jit
def rnn_node_bn_bwd_kernel(gy_ptr, gym_ptr, ch_ptr, st_ptr, p_ptr, m_ptr, y_ptr, invstd_ptr,
                           dch_ptr, dst_ptr, partial_ptr, n_states, B, H,
                           s_gyb, s_gyk, s_gmb, s_gmk,
                           s_chj, s_chb, s_chk, s_stj, s_stb, s_stk, s_pj, s_pf, s_mb, s_mk,
                           HAS_GY: tl.constexpr, HAS_GYM: tl.constexpr, ACC: tl.constexpr,
                           BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr):
    """d ch [n, B, 2H], d states [n, B, H] (contiguous), partial [programs, n, 5]; y [B, H]
    contiguous (the forward's output)."""
    pid = tl.program_id(0)
    sum_g = tl.zeros([BLOCK_H], dtype=ACC)
    sum_gy = tl.zeros([BLOCK_H], dtype=ACC)
    for b0 in range(0, B, BLOCK_B):
        b, k, mask = _tile(pid, b0, B, H, BLOCK_B, BLOCK_H)
        g = _grad_tile(gy_ptr, gym_ptr, m_ptr, b, k, mask, s_gyb, s_gyk, s_gmb, s_gmk, s_mb,
                       s_mk, HAS_GY, HAS_GYM, ACC, BLOCK_B, BLOCK_H)
        y = tl.load(y_ptr + b * H + k, mask=mask, other=0.0).to(ACC)
        sum_g += tl.sum(g, axis=0)
        sum_gy += tl.sum(g * y, axis=0)
    kc = (pid * BLOCK_H + tl.arange(0, BLOCK_H)).to(tl.int64)
    invstd = tl.load(invstd_ptr + kc, mask=kc < H, other=0.0).to(ACC)[None, :]
    mean_g = (sum_g / B)[None, :]
    mean_gy = (sum_gy / B)[None, :]
    N = B * H
    for j in range(n_states):
        a_tanh = tl.zeros([BLOCK_B, BLOCK_H], dtype=ACC)
        a_relu = tl.zeros([BLOCK_B, BLOCK_H], dtype=ACC)
        a_sigm = tl.zeros([BLOCK_B, BLOCK_H], dtype=ACC)
        a_iden = tl.zeros([BLOCK_B, BLOCK_H], dtype=ACC)
        for b0 in range(0, B, BLOCK_B):
            b, k, mask = _tile(pid, b0, B, H, BLOCK_B, BLOCK_H)
            g = _grad_tile(gy_ptr, gym_ptr, m_ptr, b, k, mask, s_gyb, s_gyk, s_gmb, s_gmk,
                           s_mb, s_mk, HAS_GY, HAS_GYM, ACC, BLOCK_B, BLOCK_H)
            y = tl.load(y_ptr + b * H + k, mask=mask, other=0.0).to(ACC)
            # BN backward; 0 outside the plane, so masked lanes add nothing below.
            ds = tl.where(mask, invstd * (g - mean_g - y * mean_gy), 0.0)
            c, h, st, p_tanh, p_relu, p_sigm, p_iden = _load_node_inputs(
                ch_ptr, st_ptr, p_ptr, j, b, k, H, mask, s_chj, s_chb, s_chk, s_stj, s_stb,
                s_stk, s_pj, s_pf, ACC)
            f_tanh = _tanh(h)
            f_relu = tl.maximum(h, 0.0)
            f_sigm = _sigmoid(h)
            p_sum = p_tanh + p_relu + p_sigm + p_iden
            act = p_tanh * f_tanh + p_relu * f_relu + p_sigm * f_sigm + p_iden * h
            dact = (p_tanh * (1.0 - f_tanh * f_tanh) + p_relu * tl.where(h > 0, 1.0, 0.0)
                    + p_sigm * f_sigm * (1.0 - f_sigm) + p_iden)
            dch_off = j * N * 2 + b * (2 * H) + k
            tl.store(dch_ptr + dch_off, (ds * (act - p_sum * st) * c * (1.0 - c)).to(
                dch_ptr.dtype.element_ty), mask=mask)
            tl.store(dch_ptr + dch_off + H, (ds * c * dact).to(dch_ptr.dtype.element_ty),
                     mask=mask)
            tl.store(dst_ptr + j * N + b * H + k,
                     (ds * p_sum * (1.0 - c)).to(dst_ptr.dtype.element_ty), mask=mask)
            a_tanh += ds * (st + c * (f_tanh - st))
            a_relu += ds * (st + c * (f_relu - st))
            a_sigm += ds * (st + c * (f_sigm - st))
            a_iden += ds * (st + c * (h - st))
        p_off = partial_ptr + (pid * n_states + j) * 5
        tl.store(p_off + 0, tl.sum(tl.sum(a_tanh * 0.0, axis=1), axis=0))
        tl.store(p_off + 1, tl.sum(tl.sum(a_tanh, axis=1), axis=0))
        tl.store(p_off + 2, tl.sum(tl.sum(a_relu, axis=1), axis=0))
        tl.store(p_off + 3, tl.sum(tl.sum(a_sigm, axis=1), axis=0))
        tl.store(p_off + 4, tl.sum(tl.sum(a_iden, axis=1), axis=0))


# -- launchers ----------------------------------------------------------------------------


def rnn_node_bn_forward(ch, states, probs, h_mask, running_mean, running_var,
                        num_batches_tracked, momentum: float, eps: float):
    """ch [n, B, 2H], states [n, B, H] (one dtype, any strides), probs [n, 5], h_mask
    [B, H] (any dtype and strides), running stats [H] (contiguous; updated in place),
    num_batches_tracked [] int64 (+1).  Returns (y, y * h_mask) [B, H] contiguous in ch's
    dtype and invstd [H] in the accumulation dtype (float32; float64 for float64)."""
    n, B, H, acc_t, acc_tl, p = node_shapes(ch, probs)
    y = torch.empty(B, H, dtype=ch.dtype, device=ch.device)
    y_masked = torch.empty_like(y)
    invstd = torch.empty(H, dtype=acc_t, device=ch.device)
    grid = (triton.cdiv(H, BLOCK_H),)
    with on_device(ch):
        rnn_node_bn_fwd_kernel[grid](y, y_masked, invstd, ch, states, p, h_mask, running_mean,
                                     running_var, num_batches_tracked, n, B, H, momentum, eps,
                                     *ch.stride(), *states.stride(), *p.stride(),
                                     *h_mask.stride(), ACC=acc_tl, BLOCK_B=BLOCK_B,
                                     BLOCK_H=BLOCK_H, num_warps=NUM_WARPS)
    return y, y_masked, invstd


def rnn_node_bn_backward(grad_y, grad_y_masked, ch, states, probs, h_mask, y, invstd):
    """grad_y, grad_y_masked [B, H] or None (any strides); the rest as in the forward, y
    its contiguous output.  Returns (d ch [n, B, 2H], d states [n, B, H]: contiguous, ch's
    dtype; d probs [n, 5] in the accumulation dtype, column 0 zero)."""
    n, B, H, acc_t, acc_tl, p = node_shapes(ch, probs)
    d_ch, d_states = node_grad_buffers(ch)
    programs = triton.cdiv(H, BLOCK_H)
    partial = torch.empty(programs, n, 1 + NUM_OPS, dtype=acc_t, device=ch.device)
    gy = grad_y if grad_y is not None else y  # any valid pointer; not read (HAS_GY False)
    gym = grad_y_masked if grad_y_masked is not None else y
    with on_device(ch):
        rnn_node_bn_bwd_kernel[(programs,)](gy, gym, ch, states, p, h_mask, y, invstd, d_ch,
                                            d_states, partial, n, B, H, *gy.stride(),
                                            *gym.stride(), *ch.stride(), *states.stride(),
                                            *p.stride(), *h_mask.stride(),
                                            HAS_GY=grad_y is not None,
                                            HAS_GYM=grad_y_masked is not None, ACC=acc_tl,
                                            BLOCK_B=BLOCK_B, BLOCK_H=BLOCK_H,
                                            num_warps=_bwd_warps(ch.dtype))
    return d_ch, d_states, partial.sum(dim=0)  # fixed-order reduction over programs
