"""Triton kernels for the Architect's flat weight buffer (one launch each); the registered
ops, their checks and their reference are in fastdarts/ops/flat_update.py and flat_update_ref.py.

All tensors are 1-D, contiguous, of one dtype; scalars that change from step to
step (eta, R, the clip scale) are read from 0-d device tensors so that a step
never syncs with the host and can be captured in a CUDA graph.

  virtual_step_:  backup <- w;  w <- w - eta * (momentum * m + s * g + wd * w)
  perturb_:       w <- backup + sign * R * v
  sgd_step_:      d = s * g + wd * w;  m <- momentum * m + d;  w <- w - lr * m
                  (torch.optim.SGD with momentum, dampening 0, no nesterov)

Bytes per element (fp32): virtual_step_ reads w, g, m and writes w, backup:
20 B; perturb_ reads backup, v and writes w: 12 B.  Both are bandwidth bound
(2-4 flops per element).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._launch import on_device

BLOCK = 1024

# _SCALARS_NOTE: the Python-float arguments (momentum, wd, sign) are annotated
# tl.float64.  Unannotated, compiled Triton passes a Python float as an fp32
# argument, so a float64 buffer would be updated with momentum = float32(0.9)
# (the interpreter keeps the Python float, so CPU tests cannot see it).  For
# float32/16 buffers the kernels cast them to float32 first: the same values and
# arithmetic as an fp32 argument (and as torch, which rounds a Python scalar to
# the tensor's op-math type).


@triton.jit
def _virtual_step_kernel(w_ptr, backup_ptr, g_ptr, m_ptr, eta_ptr, gscale_ptr, n,
                         momentum: tl.float64, wd: tl.float64,
                         HAS_M: tl.constexpr, HAS_GSCALE: tl.constexpr, FP64: tl.constexpr,
                         BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    offs = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    w_raw = tl.load(w_ptr + offs, mask=mask)
    tl.store(backup_ptr + offs, w_raw, mask=mask)
    acc = tl.float64 if FP64 else tl.float32
    if not FP64:  # see _SCALARS_NOTE
        momentum = tl.cast(momentum, tl.float32)
        wd = tl.cast(wd, tl.float32)
    w = w_raw.to(acc)
    d = tl.load(g_ptr + offs, mask=mask).to(acc)
    if HAS_GSCALE:
        d = d * tl.load(gscale_ptr).to(acc)
    if HAS_M:
        d = tl.load(m_ptr + offs, mask=mask).to(acc) * momentum + d
    d = d + w * wd
    eta = tl.load(eta_ptr).to(acc)
    tl.store(w_ptr + offs, (w - eta * d).to(w_raw.dtype), mask=mask)


@triton.jit
def _perturb_kernel(w_ptr, backup_ptr, v_ptr, r_ptr, n, sign: tl.float64, FP64: tl.constexpr,
                    BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    offs = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    acc = tl.float64 if FP64 else tl.float32
    if not FP64:  # see _SCALARS_NOTE
        sign = tl.cast(sign, tl.float32)
    b_raw = tl.load(backup_ptr + offs, mask=mask)
    v = tl.load(v_ptr + offs, mask=mask).to(acc)
    r = tl.load(r_ptr).to(acc) * sign
    tl.store(w_ptr + offs, (b_raw.to(acc) + r * v).to(b_raw.dtype), mask=mask)


@triton.jit
def _sgd_step_kernel(w_ptr, m_ptr, g_ptr, lr_ptr, gscale_ptr, n, momentum: tl.float64,
                     wd: tl.float64, HAS_GSCALE: tl.constexpr, FP64: tl.constexpr,
                     BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    offs = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    acc = tl.float64 if FP64 else tl.float32
    if not FP64:  # see _SCALARS_NOTE
        momentum = tl.cast(momentum, tl.float32)
        wd = tl.cast(wd, tl.float32)
    w_raw = tl.load(w_ptr + offs, mask=mask)
    w = w_raw.to(acc)
    d = tl.load(g_ptr + offs, mask=mask).to(acc)
    if HAS_GSCALE:
        d = d * tl.load(gscale_ptr).to(acc)
    d = d + w * wd
    m = tl.load(m_ptr + offs, mask=mask).to(acc) * momentum + d
    tl.store(m_ptr + offs, m.to(w_raw.dtype), mask=mask)
    lr = tl.load(lr_ptr).to(acc)
    tl.store(w_ptr + offs, (w - lr * m).to(w_raw.dtype), mask=mask)



def virtual_step_(w: torch.Tensor, backup: torch.Tensor, g: torch.Tensor, m: torch.Tensor | None,
                  eta: torch.Tensor, momentum: float, wd: float,
                  g_scale: torch.Tensor | None) -> None:
    n = w.numel()
    grid = (triton.cdiv(n, BLOCK),)
    with on_device(w):
        _virtual_step_kernel[grid](w, backup, g, m if m is not None else g, eta,
                                   g_scale if g_scale is not None else eta, n, float(momentum),
                                   float(wd), HAS_M=m is not None, HAS_GSCALE=g_scale is not None,
                                   FP64=w.dtype == torch.float64, BLOCK=BLOCK)


def perturb_(w: torch.Tensor, backup: torch.Tensor, v: torch.Tensor, R: torch.Tensor,
             sign: float) -> None:
    n = w.numel()
    grid = (triton.cdiv(n, BLOCK),)
    with on_device(w):
        _perturb_kernel[grid](w, backup, v, R, n, float(sign), FP64=w.dtype == torch.float64,
                              BLOCK=BLOCK)


def sgd_step_(w: torch.Tensor, m: torch.Tensor, g: torch.Tensor, lr: torch.Tensor, momentum: float,
              wd: float, g_scale: torch.Tensor | None) -> None:
    n = w.numel()
    grid = (triton.cdiv(n, BLOCK),)
    with on_device(w):
        _sgd_step_kernel[grid](w, m, g, lr, g_scale if g_scale is not None else lr, n,
                               float(momentum), float(wd), HAS_GSCALE=g_scale is not None,
                               FP64=w.dtype == torch.float64, BLOCK=BLOCK)
