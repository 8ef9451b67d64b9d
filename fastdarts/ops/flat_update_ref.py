"""Plain-PyTorch flat-buffer updates: the ``reference`` backend of ``fastdarts::virtual_step_``,
``fastdarts::perturb_`` and ``fastdarts::sgd_step_`` (fastdarts/ops/flat_update.py has the
semantics).  A few torch ops each, in place; arguments arrive checked.
"""

from __future__ import annotations

import torch
from torch import Tensor


def virtual_step_(w: Tensor, backup: Tensor, g: Tensor, m: Tensor | None, eta: Tensor,
                  momentum: float, wd: float, g_scale: Tensor | None) -> None:
    """backup <- w;  w <- w - eta * (momentum * m + g_scale * g + wd * w)."""
    backup.copy_(w)
    d = g * g_scale if g_scale is not None else g
    if m is not None:
        d = m * momentum + d
    d = d + w * wd
    w.sub_(eta * d)


def perturb_(w: Tensor, backup: Tensor, v: Tensor, R: Tensor, sign: float) -> None:
    """w <- backup + sign * R * v."""
    # backup +/- (R * v), rounded exactly as the reference Architect rounds it
    torch.mul(v, R, out=w)
    if sign == 1.0:
        torch.add(backup, w, out=w)
    elif sign == -1.0:
        torch.sub(backup, w, out=w)
    else:
        torch.add(backup, w, alpha=sign, out=w)


def sgd_step_(w: Tensor, m: Tensor, g: Tensor, lr: Tensor, momentum: float, wd: float,
              g_scale: Tensor | None) -> None:
    """d = g_scale * g + wd * w;  m <- momentum * m + d;  w <- w - lr * m."""
    # the same operations, in the same order, as torch.optim.SGD's foreach path
    d = g * g_scale if g_scale is not None else g
    d = d.add(w, alpha=wd)
    m.mul_(momentum).add_(d)
    w.sub_(lr * m)
