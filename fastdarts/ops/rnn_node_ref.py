"""Plain-PyTorch RNN search-cell node: the ``reference`` backend of ``fastdarts::rnn_node``
(fastdarts/ops/rnn_node.py, whose docstring has the math).

A transcription of the reference cell's math (``DARTSCellSearch.cell`` in
fastdarts/reference/rnn/model_search.py, after its matmul), and the closed-form
gradients the fused backward computes; both differentiable, so the op's double
backward (exact Hessian-vector products) goes through them.  Inputs arrive checked
and in one dtype.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .mixed_sum_ref import acc_dtype

# The column order of probs after 'none' (the kernels hard-code it too).
OPS = ("tanh", "relu", "sigmoid", "identity")
_ACTIVATIONS = {"tanh": torch.tanh, "relu": torch.relu, "sigmoid": torch.sigmoid,
                "identity": lambda x: x}


def node_forward_math(ch: Tensor, states: Tensor, probs: Tensor) -> Tensor:
    """The reference cell's node (differentiable plain torch, in the inputs' dtype).

    ch [n, B, 2H], states [n, B, H], probs [n, 5] -> s [B, H].  Same operations, in
    the same order, as ``DARTSCellSearch.cell`` after its matmul.
    """
    H = states.shape[-1]
    c, h = torch.split(ch, H, dim=-1)
    c = c.sigmoid()
    s = torch.zeros_like(states[0])
    for k, name in enumerate(OPS, start=1):
        unweighted = states + c * (_ACTIVATIONS[name](h) - states)
        s = s + torch.sum(probs[:, k].unsqueeze(-1).unsqueeze(-1) * unweighted, dim=0)
    return s


def node_backward_math(grad: Tensor, ch: Tensor, states: Tensor, probs: Tensor
                       ) -> tuple[Tensor, Tensor, Tensor]:
    """Closed-form gradients of :func:`node_forward_math` (differentiable plain torch).

    grad [B, H] -> (d ch [n, B, 2H], d states [n, B, H], d probs [n, 5]) with
    P = sum_f p_f, A = sum_f p_f f(h):  d st = g P (1 - c),
    d ch[:H] = g (A - P st) c (1 - c),  d ch[H:] = g c sum_f p_f f'(h),
    d p_f = sum_{B, H} g (st + c (f(h) - st)),  d p_none = 0.
    """
    H = states.shape[-1]
    c_pre, h = torch.split(ch, H, dim=-1)
    c = c_pre.sigmoid()
    p = probs[:, 1:].unsqueeze(-1).unsqueeze(-1)  # [n, 4, 1, 1]
    f_tanh, f_relu, f_sigm = torch.tanh(h), torch.relu(h), torch.sigmoid(h)
    f_all = torch.stack([f_tanh, f_relu, f_sigm, h], dim=1)  # [n, 4, B, H]
    df_all = torch.stack([1 - f_tanh * f_tanh, (h > 0).to(h.dtype), f_sigm * (1 - f_sigm),
                          torch.ones_like(h)], dim=1)
    g = grad.unsqueeze(0)
    p_sum = p.sum(dim=1)  # [n, 1, 1]
    act = (p * f_all).sum(dim=1)  # [n, B, H]
    d_states = g * p_sum * (1 - c)
    d_c = g * (act - p_sum * states) * c * (1 - c)
    d_h = g * c * (p * df_all).sum(dim=1)
    unweighted = states.unsqueeze(1) + c.unsqueeze(1) * (f_all - states.unsqueeze(1))
    d_ops = (g.unsqueeze(1) * unweighted).sum(dim=(2, 3))  # [n, 4]
    d_probs = torch.cat([torch.zeros_like(d_ops[:, :1]), d_ops], dim=1)
    return torch.cat([d_c, d_h], dim=-1), d_states, d_probs


def rnn_node_forward(ch: Tensor, states: Tensor, probs: Tensor) -> Tensor:
    """The ``reference`` backend's forward: :func:`node_forward_math` accumulated in
    float32 (float64), s [B, H] returned contiguous in ch's dtype."""
    acc = acc_dtype(ch.dtype)
    # contiguous: elementwise ops would hand a strided states' layout on to s.
    s = node_forward_math(ch.to(acc), states.to(acc), probs.to(acc))
    return s.to(ch.dtype).contiguous()


def rnn_node_backward(grad: Tensor, ch: Tensor, states: Tensor, probs: Tensor
                      ) -> tuple[Tensor, Tensor, Tensor]:
    """The ``reference`` backend's backward: :func:`node_backward_math` accumulated in
    float32 (float64); d ch, d states contiguous in ch's dtype, d probs in the
    accumulation dtype."""
    acc = acc_dtype(ch.dtype)
    d_ch, d_states, d_probs = node_backward_math(grad.to(acc), ch.to(acc), states.to(acc),
                                                 probs.to(acc))
    return (d_ch.to(ch.dtype).contiguous(),
            d_states.to(ch.dtype).contiguous(), d_probs)
