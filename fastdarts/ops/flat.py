"""Registered in-place ops on the Architect's flat weight buffer.

    torch.ops.fastdarts.virtual_step_(w, backup, g, m, eta, momentum, wd, g_scale)
        backup <- w;  w <- w - eta * (momentum * m + g_scale * g + wd * w)
    torch.ops.fastdarts.perturb_(w, backup, v, R, sign)
        w <- backup + sign * R * v
    torch.ops.fastdarts.sgd_step_(w, m, g, lr, momentum, wd, g_scale)
        d = g_scale * g + wd * w;  m <- momentum * m + d;  w <- w - lr * m
        (torch.optim.SGD's momentum step, dampening 0, no nesterov, with the
        gradient-clipping scale folded in: the captured search step's weight update)

``w, backup, g, m, v`` are 1-D contiguous tensors of one dtype and device;
``eta``, ``R`` and ``g_scale`` are one-element tensors on that device (never
read on the host, so a step that uses these ops can be captured in a CUDA
graph).  ``m`` and ``g_scale`` may be None.  Each op is one kernel launch on
the triton and cuda backends whatever the number of parameter tensors behind
the buffer; the reference backend uses a few torch ops.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .. import _ext, backends
from . import load_triton_kernels

OP_NAME = "flat"
SUPPORTED = ("reference", "triton", "cuda")


def _check(w: Tensor, backup: Tensor, others: dict, scalars: dict) -> None:
    if w.dim() != 1 or not w.is_contiguous() or not w.is_floating_point():
        raise ValueError(f"w must be a 1-D contiguous floating tensor, got {tuple(w.shape)} "
                         f"{w.dtype} contiguous={w.is_contiguous()}")
    for name, t in {"backup": backup, **others}.items():
        if t is None:
            continue
        if t.shape != w.shape or t.dtype != w.dtype or t.device != w.device or not t.is_contiguous():
            raise ValueError(f"{name} must match w ({tuple(w.shape)}, {w.dtype}, {w.device}, "
                             f"contiguous); got {tuple(t.shape)}, {t.dtype}, {t.device}")
    for name, t in scalars.items():
        if t is None:
            continue
        if t.numel() != 1 or t.device != w.device or t.dtype != w.dtype:
            raise ValueError(f"{name} must be a one-element {w.dtype} tensor on {w.device}; "
                             f"got {tuple(t.shape)} {t.dtype} on {t.device}")


# -- reference implementations (plain torch, a few launches each) -----------------
def virtual_step_reference(w, backup, g, m, eta, momentum, wd, g_scale):
    backup.copy_(w)
    d = g * g_scale if g_scale is not None else g
    if m is not None:
        d = m * momentum + d
    d = d + w * wd
    w.sub_(eta * d)


def perturb_reference(w, backup, v, R, sign):
    # backup +/- (R * v), rounded exactly as the reference Architect rounds it
    torch.mul(v, R, out=w)
    if sign == 1.0:
        torch.add(backup, w, out=w)
    elif sign == -1.0:
        torch.sub(backup, w, out=w)
    else:
        torch.add(backup, w, alpha=sign, out=w)


@torch.library.custom_op("fastdarts::virtual_step_", mutates_args=("w", "backup"))
def virtual_step_(w: Tensor, backup: Tensor, g: Tensor, m: Tensor | None, eta: Tensor,
                  momentum: float, wd: float, g_scale: Tensor | None) -> None:
    """backup <- w; w <- w - eta * (momentum * m + g_scale * g + wd * w), in one launch."""
    _check(w, backup, {"g": g, "m": m}, {"eta": eta, "g_scale": g_scale})
    backend = backends.resolve(OP_NAME, w.device, SUPPORTED)
    if backend == "triton":
        load_triton_kernels("flat").virtual_step_(w, backup, g, m, eta, momentum, wd, g_scale)
    elif backend == "cuda":
        torch.ops.fastdarts_C.virtual_step_(w, backup, g, m, eta, momentum, wd, g_scale)
    else:
        virtual_step_reference(w, backup, g, m, eta, momentum, wd, g_scale)


@virtual_step_.register_fake
def _(w, backup, g, m, eta, momentum, wd, g_scale):
    return None


@torch.library.custom_op("fastdarts::perturb_", mutates_args=("w",))
def perturb_(w: Tensor, backup: Tensor, v: Tensor, R: Tensor, sign: float) -> None:
    """w <- backup + sign * R * v, in one launch."""
    _check(w, backup, {"v": v}, {"R": R})
    backend = backends.resolve(OP_NAME, w.device, SUPPORTED)
    if backend == "triton":
        load_triton_kernels("flat").perturb_(w, backup, v, R, sign)
    elif backend == "cuda":
        torch.ops.fastdarts_C.perturb_(w, backup, v, R, sign)
    else:
        perturb_reference(w, backup, v, R, sign)


@perturb_.register_fake
def _(w, backup, v, R, sign):
    return None


def sgd_step_reference(w, m, g, lr, momentum, wd, g_scale):
    # the same operations, in the same order, as torch.optim.SGD's foreach path
    d = g * g_scale if g_scale is not None else g
    d = d.add(w, alpha=wd)
    m.mul_(momentum).add_(d)
    w.sub_(lr * m)


@torch.library.custom_op("fastdarts::sgd_step_", mutates_args=("w", "m"))
def sgd_step_(w: Tensor, m: Tensor, g: Tensor, lr: Tensor, momentum: float, wd: float,
              g_scale: Tensor | None) -> None:
    """SGD with momentum on the flat buffer, in one launch."""
    _check(w, m, {"g": g}, {"lr": lr, "g_scale": g_scale})
    backend = backends.resolve(OP_NAME, w.device, SUPPORTED)
    if backend == "triton":
        load_triton_kernels("flat").sgd_step_(w, m, g, lr, momentum, wd, g_scale)
    elif backend == "cuda":
        torch.ops.fastdarts_C.sgd_step_(w, m, g, lr, momentum, wd, g_scale)
    else:
        sgd_step_reference(w, m, g, lr, momentum, wd, g_scale)


@sgd_step_.register_fake
def _(w, m, g, lr, momentum, wd, g_scale):
    return None


def cuda_kernels_built() -> bool:
    return _ext.has_op("perturb_") and _ext.built_with_cuda()


__all__ = ["virtual_step_", "perturb_", "sgd_step_", "virtual_step_reference", "perturb_reference",
           "sgd_step_reference"]
