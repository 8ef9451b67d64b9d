"""Triton kernels for one node of the DARTS recurrent search cell and its one-pass backward.

For node i with n = i + 1 incoming states (j = 0..n-1) and the four non-``none``
ops f_1..f_4 = tanh, relu, sigmoid, identity:

    c_j = sigmoid(ch[j, :, :H]),  h_j = ch[j, :, H:]
    s   = sum_j sum_f p[j, f] * (st_j + c_j * (f(h_j) - st_j))

Forward reads ch and the states once and writes s once (the original launches
~25 kernels per node for this, each a full pass over [n, B, H]).  The backward
re-computes the activations from ch (nothing else is saved) and writes, in one
pass over g, ch and the states,

    d st_j     = g * P_j * (1 - c_j)                       P_j = sum_f p[j, f]
    d ch_j[:H] = g * (A_j - P_j * st_j) * c_j * (1 - c_j)  A_j = sum_f p[j, f] f(h_j)
    d ch_j[H:] = g * c_j * sum_f p[j, f] f'(h_j)
    partial[pid, j, f] = sum over this program's elements of g * (st_j + c_j (f(h_j) - st_j))
    partial[pid, j, 0] = 0  ('none')

and the launcher sums ``partial`` over programs (fixed order: deterministic, no
float atomics).  Column 0 of probs ('none') is never read; its gradient is 0.

Pure functions on tensors: no autograd, no fastdarts imports (the registered op
lives in fastdarts/ops/rnn_node.py).  Inputs may have any strides; the elements
of the [B, H] plane are walked as one flat index e = b * H + k, so a program's
loads are contiguous along H whatever B and H are (no padding waste at H = 300).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._launch import acc_dtype, on_device

BLOCK = 512  # elements of the [B, H] plane per program: 4 per thread at 4 warps
NUM_WARPS = 4
NUM_OPS = 4  # tanh, relu, sigmoid, identity (probs columns 1..4)


@triton.jit
def _sigmoid(x):
    return 1.0 / (1.0 + tl.exp(-x))


@triton.jit
def _tanh(x):
    # exp of a non-positive argument never overflows; tl has no portable tanh that also
    # runs under TRITON_INTERPRET=1.  Absolute error ~1 ulp of 1 (float32: 6e-8).
    t = tl.exp(-2.0 * tl.abs(x))
    y = (1.0 - t) / (1.0 + t)
    return tl.where(x < 0, -y, y)


@triton.jit
def _load_node_inputs(ch_ptr, st_ptr, p_ptr, j, b, k, H, mask,
                      s_chj, s_chb, s_chk, s_stj, s_stb, s_stk, s_pj, s_pf, ACC: tl.constexpr):
    ch_off = j * s_chj + b * s_chb + k * s_chk
    c = _sigmoid(tl.load(ch_ptr + ch_off, mask=mask, other=0.0).to(ACC))
    h = tl.load(ch_ptr + ch_off + H * s_chk, mask=mask, other=0.0).to(ACC)
    st = tl.load(st_ptr + j * s_stj + b * s_stb + k * s_stk, mask=mask, other=0.0).to(ACC)
    p_tanh = tl.load(p_ptr + j * s_pj + 1 * s_pf).to(ACC)
    p_relu = tl.load(p_ptr + j * s_pj + 2 * s_pf).to(ACC)
    p_sigm = tl.load(p_ptr + j * s_pj + 3 * s_pf).to(ACC)
    p_iden = tl.load(p_ptr + j * s_pj + 4 * s_pf).to(ACC)
    return c, h, st, p_tanh, p_relu, p_sigm, p_iden


@triton.jit
def rnn_node_fwd_kernel(out_ptr, ch_ptr, st_ptr, p_ptr, n_states, H, N,
                        s_chj, s_chb, s_chk, s_stj, s_stb, s_stk, s_pj, s_pf,
                        ACC: tl.constexpr, BLOCK: tl.constexpr):
    """out[e] = sum_{j < n_states} sum_f p[j, f] * (st + c * (f(h) - st)), for e < N = B * H."""
    pid = tl.program_id(0).to(tl.int64)  # int64 offsets: n * B * 2H may pass 2**31
    e = pid * BLOCK + tl.arange(0, BLOCK)
    mask = e < N
    b = e // H
    k = e - b * H
    acc = tl.zeros([BLOCK], dtype=ACC)
    for j in range(n_states):
        c, h, st, p_tanh, p_relu, p_sigm, p_iden = _load_node_inputs(
            ch_ptr, st_ptr, p_ptr, j, b, k, H, mask, s_chj, s_chb, s_chk, s_stj, s_stb, s_stk,
            s_pj, s_pf, ACC)
        # The reference's blend, st + c * (f(h) - st), once per op (compute is free here;
        # keeping its form keeps its rounding behaviour).
        acc += p_tanh * (st + c * (_tanh(h) - st))
        acc += p_relu * (st + c * (tl.maximum(h, 0.0) - st))
        acc += p_sigm * (st + c * (_sigmoid(h) - st))
        acc += p_iden * (st + c * (h - st))
    tl.store(out_ptr + e, acc.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def rnn_node_bwd_kernel(g_ptr, ch_ptr, st_ptr, p_ptr, dch_ptr, dst_ptr, partial_ptr,
                        n_states, H, N, s_gb, s_gk,
                        s_chj, s_chb, s_chk, s_stj, s_stb, s_stk, s_pj, s_pf,
                        ACC: tl.constexpr, BLOCK: tl.constexpr):
    """d ch [n, B, 2H] and d states [n, B, H] (contiguous), partial [programs, n, 5]."""
    pid = tl.program_id(0).to(tl.int64)
    e = pid * BLOCK + tl.arange(0, BLOCK)
    mask = e < N
    b = e // H
    k = e - b * H
    # g = 0 outside the plane, so masked lanes add nothing to the partial sums.
    g = tl.load(g_ptr + b * s_gb + k * s_gk, mask=mask, other=0.0).to(ACC)
    for j in range(n_states):
        c, h, st, p_tanh, p_relu, p_sigm, p_iden = _load_node_inputs(
            ch_ptr, st_ptr, p_ptr, j, b, k, H, mask, s_chj, s_chb, s_chk, s_stj, s_stb, s_stk,
            s_pj, s_pf, ACC)
        f_tanh = _tanh(h)
        f_relu = tl.maximum(h, 0.0)
        f_sigm = _sigmoid(h)
        u_tanh = st + c * (f_tanh - st)
        u_relu = st + c * (f_relu - st)
        u_sigm = st + c * (f_sigm - st)
        u_iden = st + c * (h - st)
        p_sum = p_tanh + p_relu + p_sigm + p_iden
        act = p_tanh * f_tanh + p_relu * f_relu + p_sigm * f_sigm + p_iden * h
        # relu'(0) = 0, as torch's threshold_backward.
        dact = (p_tanh * (1.0 - f_tanh * f_tanh) + p_relu * tl.where(h > 0, 1.0, 0.0)
                + p_sigm * f_sigm * (1.0 - f_sigm) + p_iden)
        d_c = g * (act - p_sum * st) * c * (1.0 - c)
        d_h = g * c * dact
        d_st = g * p_sum * (1.0 - c)
        # Outputs are contiguous: d ch [n, B, 2H], d states [n, B, H].
        dch_off = j * N * 2 + b * (2 * H) + k
        tl.store(dch_ptr + dch_off, d_c.to(dch_ptr.dtype.element_ty), mask=mask)
        tl.store(dch_ptr + dch_off + H, d_h.to(dch_ptr.dtype.element_ty), mask=mask)
        tl.store(dst_ptr + j * N + e, d_st.to(dst_ptr.dtype.element_ty), mask=mask)
        # Column 0 ('none') is stored as 0 so that d probs is ONE sum over programs.
        p_off = partial_ptr + (pid * n_states + j) * 5
        tl.store(p_off + 0, tl.sum(g * 0.0, axis=0))
        tl.store(p_off + 1, tl.sum(g * u_tanh, axis=0))
        tl.store(p_off + 2, tl.sum(g * u_relu, axis=0))
        tl.store(p_off + 3, tl.sum(g * u_sigm, axis=0))
        tl.store(p_off + 4, tl.sum(g * u_iden, axis=0))


# -- launchers ----------------------------------------------------------------------------


def node_shapes(ch: torch.Tensor, probs: torch.Tensor):
    """(n, B, H, acc_t, acc_tl, probs in acc_t) for ch [n, B, 2H]: what every launcher of
    this file and kernels/rnn_node_bn.py starts from."""
    n, B, H2 = ch.shape
    acc_t, acc_tl = acc_dtype(ch.dtype)
    return n, B, H2 // 2, acc_t, acc_tl, probs.to(acc_t)


def node_grad_buffers(ch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Uninitialised d ch [n, B, 2H] and d states [n, B, H], contiguous, in ch's dtype."""
    n, B, H2 = ch.shape
    return (torch.empty(n, B, H2, dtype=ch.dtype, device=ch.device),
            torch.empty(n, B, H2 // 2, dtype=ch.dtype, device=ch.device))


def rnn_node_forward(ch: torch.Tensor, states: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
    """One node of the search cell in one pass.

    ch: [n, B, 2H] (float16/bfloat16/float32/float64, any strides): states @ W_i,
    c = ch[..., :H], h = ch[..., H:].  states: [n, B, H], ch's dtype, any strides.
    probs: [n, 5] softmax weights (any floating dtype; column 0 'none' is not read).
    Returns s [B, H], contiguous, ch's dtype; accumulated in float32 (float64).
    """
    n, B, H, acc_t, acc_tl, p = node_shapes(ch, probs)
    out = torch.empty(B, H, dtype=ch.dtype, device=ch.device)
    N = B * H
    if N == 0:
        return out
    grid = (triton.cdiv(N, BLOCK),)
    with on_device(ch):
        rnn_node_fwd_kernel[grid](out, ch, states, p, n, H, N, *ch.stride(), *states.stride(),
                                  *p.stride(), ACC=acc_tl, BLOCK=BLOCK, num_warps=NUM_WARPS)
    return out


def rnn_node_backward(grad: torch.Tensor, ch: torch.Tensor, states: torch.Tensor,
                      probs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients of :func:`rnn_node_forward` in one pass.

    grad: [B, H] (ch's dtype, any strides); ch, states, probs as in the forward.
    Returns (d ch [n, B, 2H] and d states [n, B, H], contiguous, ch's dtype;
    d probs [n, 5] float32 (float64 for float64 inputs), column 0 zero).
    """
    n, B, H, acc_t, acc_tl, p = node_shapes(ch, probs)
    d_ch, d_states = node_grad_buffers(ch)
    N = B * H
    if N == 0 or n == 0:
        return d_ch, d_states, torch.zeros(n, 1 + NUM_OPS, dtype=acc_t, device=ch.device)
    programs = triton.cdiv(N, BLOCK)
    partial = torch.empty(programs, n, 1 + NUM_OPS, dtype=acc_t, device=ch.device)
    with on_device(ch):
        rnn_node_bwd_kernel[(programs,)](grad, ch, states, p, d_ch, d_states, partial, n, H, N,
                                         *grad.stride(), *ch.stride(), *states.stride(),
                                         *p.stride(), ACC=acc_tl, BLOCK=BLOCK,
                                         num_warps=NUM_WARPS)
    return d_ch, d_states, partial.sum(dim=0)  # fixed-order reduction over programs
