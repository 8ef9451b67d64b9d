"""``fastdarts::rnn_node_bn``: a search-cell node, the cell's BatchNorm1d(affine=False) in
training mode and the dropout mask of the next nodes' input, in one op.

    y        = bn(rnn_node(ch, states, probs))      (batch statistics over B, per column)
    y_masked = y * h_mask
    running_mean, running_var, num_batches_tracked updated in place, as bn does

In the search cell every node's output goes through ``self.bn`` (training: statistics,
running-statistics update, apply, plus ``num_batches_tracked += 1``) and then, for the
later nodes' matmuls, ``* h_mask``; the backward adds the two uses' gradients and runs
the BN backward.  Here that is one launch forward (1 + 4 + 1 before) and one plus a
fixed-order partial sum backward (2 + 2 + 1 + 1 before).  The running statistics get
the same update, in the same order (once per call), with ATen's formula
(``momentum * batch + (1 - momentum) * running``, unbiased variance), so they end as
the module's do; only the rounding of the batch statistics differs (fp32 accumulation).

Backends (:func:`fastdarts.backends.resolve`, policy in its ``POLICY`` table):
``reference`` (fastdarts/ops/rnn_node_bn_ref.py: ``rnn_node``'s math and
``torch.native_batch_norm``) and ``triton`` (kernels/rnn_node_bn.py).  No CUDA C++
kernel yet: on a GPU auto dispatch picks Triton.
The backward op has an autograd formula (re-computing the forward in plain torch), so
exact Hessian-vector products (``create_graph=True``) work.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .. import backends
from . import load_triton_kernels, rnn_node_bn_ref
from .mixed_sum_ref import acc_dtype
from .rnn_node import _common, check_inputs, io_dtype
from .rnn_node_bn_ref import node_bn_forward_math

OP_NAME = "rnn_node_bn"


def _check(ch, states, probs, h_mask, running_mean, running_var):
    check_inputs(ch, states, probs)
    n, B, H = states.shape
    if tuple(h_mask.shape) != (B, H):
        raise ValueError(f"rnn_node_bn h_mask must be [B, H] = [{B}, {H}], "
                         f"got {tuple(h_mask.shape)}")
    for name, t in (("running_mean", running_mean), ("running_var", running_var)):
        if t is None:
            continue
        if tuple(t.shape) != (H,) or not t.is_contiguous():
            raise ValueError(f"rnn_node_bn {name} must be a contiguous [H] = [{H}] tensor, "
                             f"got shape {tuple(t.shape)}")
    if B < 2:
        # as F.batch_norm in training mode
        raise ValueError(f"rnn_node_bn: expected more than 1 value per channel when training, "
                         f"got a batch of {B}")


# -- backends ----------------------------------------------------------------------------------
def _triton_forward(*args):
    return load_triton_kernels("rnn_node_bn").rnn_node_bn_forward(*args)


def _triton_backward(*args):
    return load_triton_kernels("rnn_node_bn").rnn_node_bn_backward(*args)


_FORWARD = {"reference": rnn_node_bn_ref.rnn_node_bn_forward, "triton": _triton_forward}
_BACKWARD = {"reference": rnn_node_bn_ref.rnn_node_bn_backward, "triton": _triton_backward}


def current_backend(device: torch.device | str) -> str:
    """The backend ``rnn_node_bn`` runs on tensors of ``device`` right now."""
    return backends.resolve(OP_NAME, device)


# -- the registered ops ------------------------------------------------------------------------
@torch.library.custom_op("fastdarts::rnn_node_bn",
                         mutates_args=("running_mean", "running_var", "num_batches_tracked"))
def rnn_node_bn(ch: Tensor, states: Tensor, probs: Tensor, h_mask: Tensor, running_mean: Tensor,
                running_var: Tensor, num_batches_tracked: Tensor, momentum: float, eps: float
                ) -> tuple[Tensor, Tensor, Tensor]:
    """bn(rnn_node(ch, states, probs)) in training mode, and that times h_mask.

    ch [n, B, 2H], states [n, B, H], probs [n, 5]: as :func:`fastdarts.ops.rnn_node.rnn_node`.
    h_mask [B, H] (any floating dtype and strides).  running_mean, running_var [H]
    (contiguous, updated in place as BatchNorm1d with ``momentum`` does),
    num_batches_tracked [] (+1), eps: BN's.  Returns (y [B, H], y * h_mask [B, H]:
    contiguous, ch's and states' common dtype; invstd [H], float32 (float64 for float64),
    the batch's 1/sqrt(var + eps), for the backward: not differentiable).
    """
    _check(ch, states, probs, h_mask, running_mean, running_var)
    ch, states = _common(ch, states)
    backend = current_backend(ch.device)
    return _FORWARD[backend](ch, states, probs, h_mask, running_mean, running_var,
                             num_batches_tracked, float(momentum), float(eps))


@rnn_node_bn.register_fake
def _rnn_node_bn_fake(ch, states, probs, h_mask, running_mean, running_var,
                      num_batches_tracked, momentum, eps):
    _check(ch, states, probs, h_mask, running_mean, running_var)
    dtype = io_dtype(ch, states)
    y = states.new_empty(states.shape[1:], dtype=dtype)
    return y, torch.empty_like(y), states.new_empty(states.shape[2:], dtype=acc_dtype(dtype))


@torch.library.custom_op("fastdarts::rnn_node_bn_backward", mutates_args=())
def rnn_node_bn_backward(grad_y: Tensor | None, grad_y_masked: Tensor | None, ch: Tensor,
                         states: Tensor, probs: Tensor, h_mask: Tensor, y: Tensor,
                         invstd: Tensor, eps: float) -> tuple[Tensor, Tensor, Tensor]:
    """One pass: (d ch [n, B, 2H], d states [n, B, H], d probs [n, 5]) from the gradients of
    y and y * h_mask (either may be None: that output was not used).  y and invstd are the
    forward's outputs; eps is only needed by the double backward."""
    _check(ch, states, probs, h_mask, None, None)
    ch_dtype, states_dtype = ch.dtype, states.dtype
    ch, states = _common(ch, states)
    grad_y, grad_y_masked = (None if g is None else g.to(ch.dtype)
                             for g in (grad_y, grad_y_masked))
    d_ch, d_states, d_probs = _BACKWARD[current_backend(ch.device)](
        grad_y, grad_y_masked, ch, states, probs, h_mask, y.contiguous(), invstd)
    return d_ch.to(ch_dtype), d_states.to(states_dtype), d_probs.to(probs.dtype)


@rnn_node_bn_backward.register_fake
def _rnn_node_bn_backward_fake(grad_y, grad_y_masked, ch, states, probs, h_mask, y, invstd,
                               eps):
    _check(ch, states, probs, h_mask, None, None)
    return ch.new_empty(ch.shape), states.new_empty(states.shape), probs.new_empty(probs.shape)


class _RNNNodeBN(torch.autograd.Function):
    """Autograd for the mutable ``fastdarts::rnn_node_bn``: torch.library refuses
    ``register_autograd`` on an op that mutates its inputs (the running statistics), and a
    functional op returning new statistics would need two copies back per call."""

    @staticmethod
    def forward(ctx, ch, states, probs, h_mask, running_mean, running_var, num_batches_tracked,
                momentum, eps):
        y, y_masked, invstd = torch.ops.fastdarts.rnn_node_bn(
            ch, states, probs, h_mask, running_mean, running_var, num_batches_tracked,
            momentum, eps)
        ctx.eps = eps
        ctx.mark_non_differentiable(invstd)
        # An unused y_masked (the cell's last node) gets None, not a zero tensor to add.
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(ch, states, probs, h_mask, y, invstd)
        return y, y_masked, invstd

    @staticmethod
    def backward(ctx, grad_y, grad_y_masked, _grad_invstd):
        ch, states, probs, h_mask, y, invstd = ctx.saved_tensors
        if grad_y is None and grad_y_masked is None:
            return (None,) * 9
        d_ch, d_states, d_probs = torch.ops.fastdarts.rnn_node_bn_backward(
            grad_y, grad_y_masked, ch, states, probs, h_mask, y, invstd, ctx.eps)
        return d_ch, d_states, d_probs, None, None, None, None, None, None


def node_bn(ch: Tensor, states: Tensor, probs: Tensor, h_mask: Tensor, bn: torch.nn.Module
            ) -> tuple[Tensor, Tensor]:
    """(bn(rnn_node(ch, states, probs)), that * h_mask) for a BatchNorm1d(affine=False) ``bn``
    in training mode with running statistics and a float momentum, differentiable (first
    and second order); ``bn``'s running statistics are updated as its forward would."""
    y, y_masked, _ = _RNNNodeBN.apply(ch, states, probs, h_mask, bn.running_mean,
                                      bn.running_var, bn.num_batches_tracked, bn.momentum,
                                      bn.eps)
    return y, y_masked


# Double backward: differentiate the plain-torch forward twice (y and invstd as inputs are
# functions of ch, states, probs; the re-computation covers that dependence, so they get 0).
def _setup_backward_context(ctx, inputs, output):
    ctx.eps = inputs[8]
    ctx.has = (inputs[0] is not None, inputs[1] is not None)
    ctx.save_for_backward(*(t for t in inputs[:8] if t is not None))


def _backward_backward(ctx, gg_ch, gg_states, gg_probs):
    saved = list(ctx.saved_tensors)
    grads_out = [saved.pop(0) if has else None for has in ctx.has]
    ch, states, probs, h_mask, y, invstd = saved
    with torch.enable_grad():
        leaves = [t.detach().requires_grad_() for t in (ch, states, probs)]
        g_leaves = [None if g is None else g.detach().requires_grad_() for g in grads_out]
        outs = node_bn_forward_math(*leaves, h_mask, ctx.eps)
        pairs = [(o, g) for o, g in zip(outs, g_leaves, strict=True) if g is not None]
        first = torch.autograd.grad([o for o, _ in pairs], leaves, [g for _, g in pairs],
                                    create_graph=True)
        wrt = leaves + [g for g in g_leaves if g is not None]
        terms = [(f, gg) for f, gg in zip(first, (gg_ch, gg_states, gg_probs), strict=True)
                 if gg is not None]
        second = torch.autograd.grad([f for f, _ in terms], wrt, [gg for _, gg in terms],
                                     allow_unused=True)
    d_ch, d_states, d_probs, *d_g = second
    d_g = iter(d_g)
    d_gy, d_gym = (next(d_g) if g is not None else None for g in g_leaves)

    def z(g, t):
        return torch.zeros_like(t) if g is None else g

    return (None if grads_out[0] is None else z(d_gy, grads_out[0]),
            None if grads_out[1] is None else z(d_gym, grads_out[1]),
            z(d_ch, ch), z(d_states, states), z(d_probs, probs), None,
            torch.zeros_like(y), torch.zeros_like(invstd), None)


rnn_node_bn_backward.register_autograd(_backward_backward, setup_context=_setup_backward_context)
