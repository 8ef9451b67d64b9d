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
the triton (kernels/flat_update.py) and cuda (csrc/cuda/flat_update_cuda.cu)
backends whatever the number of parameter tensors behind the buffer; the reference
backend (fastdarts/ops/flat_update_ref.py) uses a few torch ops.  Each op has its
entry in ``fastdarts.backends.POLICY``; ``_IMPLEMENTATIONS`` below maps op and backend
to the function that runs it.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .. import backends
from . import flat_update_ref, load_triton_kernels


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


def _triton(op: str):
    return lambda *args: getattr(load_triton_kernels("flat_update"), op)(*args)


def _cuda(op: str):
    return lambda *args: getattr(torch.ops.fastdarts_C, op)(*args)


# op -> backend -> implementation (same arguments as the registered op)
_IMPLEMENTATIONS = {
    op: {"reference": getattr(flat_update_ref, op), "triton": _triton(op), "cuda": _cuda(op)}
    for op in ("virtual_step_", "perturb_", "sgd_step_")
}


def _run(op: str, w: Tensor, *args) -> None:
    _IMPLEMENTATIONS[op][backends.resolve(op, w.device)](w, *args)


@torch.library.custom_op("fastdarts::virtual_step_", mutates_args=("w", "backup"))
def virtual_step_(w: Tensor, backup: Tensor, g: Tensor, m: Tensor | None, eta: Tensor,
                  momentum: float, wd: float, g_scale: Tensor | None) -> None:
    """backup <- w; w <- w - eta * (momentum * m + g_scale * g + wd * w), in one launch."""
    _check(w, backup, {"g": g, "m": m}, {"eta": eta, "g_scale": g_scale})
    _run("virtual_step_", w, backup, g, m, eta, momentum, wd, g_scale)


@virtual_step_.register_fake
def _(w, backup, g, m, eta, momentum, wd, g_scale):
    return None


@torch.library.custom_op("fastdarts::perturb_", mutates_args=("w",))
def perturb_(w: Tensor, backup: Tensor, v: Tensor, R: Tensor, sign: float) -> None:
    """w <- backup + sign * R * v, in one launch."""
    _check(w, backup, {"v": v}, {"R": R})
    _run("perturb_", w, backup, v, R, sign)


@perturb_.register_fake
def _(w, backup, v, R, sign):
    return None


@torch.library.custom_op("fastdarts::sgd_step_", mutates_args=("w", "m"))
def sgd_step_(w: Tensor, m: Tensor, g: Tensor, lr: Tensor, momentum: float, wd: float,
              g_scale: Tensor | None) -> None:
    """SGD with momentum on the flat buffer, in one launch."""
    _check(w, m, {"g": g}, {"lr": lr, "g_scale": g_scale})
    _run("sgd_step_", w, m, g, lr, momentum, wd, g_scale)


@sgd_step_.register_fake
def _(w, m, g, lr, momentum, wd, g_scale):
    return None


__all__ = ["virtual_step_", "perturb_", "sgd_step_"]
