"""Plain-PyTorch node + BatchNorm1d + mask: the ``reference`` backend of
``fastdarts::rnn_node_bn`` (fastdarts/ops/rnn_node_bn.py, whose docstring has the math).

``rnn_node``'s reference math (fastdarts/ops/rnn_node_ref.py) and
``torch.native_batch_norm``; the ``*_math`` functions are differentiable plain torch
(the op's double backward goes through them).  Inputs arrive checked and in one dtype.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .mixed_sum_ref import acc_dtype
from .rnn_node_ref import node_backward_math, node_forward_math


def node_bn_forward_math(ch: Tensor, states: Tensor, probs: Tensor, h_mask: Tensor,
                         eps: float) -> tuple[Tensor, Tensor]:
    """(bn(node(ch, states, probs)), that * h_mask), differentiable plain torch, batch
    statistics only (no running-statistics update): for double backward."""
    s = node_forward_math(ch, states, probs)
    mean = s.mean(0)
    var = (s - mean).pow(2).mean(0)
    y = (s - mean) * torch.rsqrt(var + eps)
    return y, y * h_mask


def node_bn_backward_math(grad_y: Tensor | None, grad_y_masked: Tensor | None, ch: Tensor,
                          states: Tensor, probs: Tensor, h_mask: Tensor, y: Tensor,
                          invstd: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """g = grad_y + grad_y_masked * h_mask; d s = invstd (g - mean_b g - y mean_b(g y))
    (BN backward, affine=False), then :func:`node_backward_math` of d s."""
    g = torch.zeros_like(y) if grad_y is None else grad_y
    if grad_y_masked is not None:
        g = g + grad_y_masked * h_mask
    ds = invstd * (g - g.mean(0) - y * (g * y).mean(0))
    return node_backward_math(ds, ch, states, probs)


def rnn_node_bn_forward(ch: Tensor, states: Tensor, probs: Tensor, h_mask: Tensor,
                        running_mean: Tensor, running_var: Tensor, num_batches_tracked: Tensor,
                        momentum: float, eps: float) -> tuple[Tensor, Tensor, Tensor]:
    """The ``reference`` backend's forward: the node accumulated in float32 (float64),
    rounded to ch's dtype, then ``torch.native_batch_norm`` in training mode (running
    statistics updated in place, ``num_batches_tracked`` + 1).  Returns (y, y * h_mask,
    invstd in the accumulation dtype)."""
    acc = acc_dtype(ch.dtype)
    s = node_forward_math(ch.to(acc), states.to(acc), probs.to(acc)).to(ch.dtype)
    y, _, invstd = torch.native_batch_norm(s, None, None, running_mean, running_var, True,
                                           momentum, eps)
    num_batches_tracked.add_(1)
    y = y.contiguous()
    return y, (y * h_mask.to(y.dtype)).contiguous(), invstd.to(acc)


def rnn_node_bn_backward(grad_y: Tensor | None, grad_y_masked: Tensor | None, ch: Tensor,
                         states: Tensor, probs: Tensor, h_mask: Tensor, y: Tensor, invstd: Tensor
                         ) -> tuple[Tensor, Tensor, Tensor]:
    """The ``reference`` backend's backward: :func:`node_bn_backward_math` accumulated in
    float32 (float64); d ch, d states contiguous in ch's dtype."""
    acc = acc_dtype(ch.dtype)

    def up(t):
        return None if t is None else t.to(acc)

    d_ch, d_states, d_probs = node_bn_backward_math(up(grad_y), up(grad_y_masked), ch.to(acc),
                                                    states.to(acc), probs.to(acc),
                                                    h_mask.to(acc), y.to(acc), invstd.to(acc))
    return d_ch.to(ch.dtype).contiguous(), d_states.to(ch.dtype).contiguous(), d_probs
