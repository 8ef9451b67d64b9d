"""``fastdarts::rnn_node``: one node of the DARTS recurrent search cell, fused.

For node i of the search cell, with n = i + 1 incoming states st_j [B, H] and the
matmul ch_j = (masked st_j) @ W_i [B, 2H] already done (on cuBLAS):

    c_j = sigmoid(ch_j[:, :H]),  h_j = ch_j[:, H:]
    s   = sum_j sum_{f in tanh, relu, sigmoid, identity} probs[j, f] * (st_j + c_j (f(h_j) - st_j))

The original (fastdarts/reference/rnn/model_search.py, ``DARTSCellSearch.cell``)
spends a sigmoid, four activations, four blends, four weighted sums and their
adds on this, one kernel each over [n, B, H]; the fused op is one pass forward
and one pass backward (``fastdarts::rnn_node_backward``), which re-computes the
activations from ch instead of saving them.  ``probs[:, 0]`` ('none') is never
computed on; its gradient is 0, as in the original.  The gradient of probs is a
deterministic reduction (per-block partials summed in a fixed order).

Backends (chosen by :func:`fastdarts.backends.resolve`, policy in its ``POLICY``
table): ``reference`` (fastdarts/ops/rnn_node_ref.py: a transcription of the
reference cell's math), ``triton`` (kernels/rnn_node.py) and ``cuda``
(csrc/cuda/rnn_node_cuda.cu, through fastdarts._C when it was built with it; a
fastdarts._C built before this op falls back to the reference with one warning).
The backward op also has an autograd formula (through the plain-torch backward),
so exact Hessian-vector products (``create_graph=True``) work on every backend.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .. import backends
from ..space.genotypes import RNN_PRIMITIVES
from . import load_triton_kernels, rnn_node_ref
from .rnn_node_ref import OPS, node_backward_math

OP_NAME = "rnn_node"
_FLOATING = (torch.float16, torch.bfloat16, torch.float32, torch.float64)

# The kernels hard-code the column order of probs; fail loudly if the space changes.
if list(RNN_PRIMITIVES) != ["none", *OPS]:
    raise ImportError(f"fastdarts::rnn_node expects RNN primitives ['none', {', '.join(OPS)}], "
                      f"got {RNN_PRIMITIVES}")


def check_inputs(ch: Tensor, states: Tensor, probs: Tensor) -> None:
    """Raise a ValueError that says what to fix when the inputs do not fit."""
    for name, t in (("ch", ch), ("states", states), ("probs", probs)):
        if not isinstance(t, Tensor):
            raise TypeError(f"rnn_node {name} must be a tensor, got {type(t).__name__}")
    if states.dim() != 3:
        raise ValueError(f"rnn_node states must be [n, B, H], got shape {tuple(states.shape)}")
    n, B, H = states.shape
    if n < 1:
        raise ValueError("rnn_node needs at least one incoming state (states.shape[0] >= 1)")
    if tuple(ch.shape) != (n, B, 2 * H):
        raise ValueError(f"rnn_node ch must be [n, B, 2H] = [{n}, {B}, {2 * H}] for states of "
                         f"shape {tuple(states.shape)}, got {tuple(ch.shape)}")
    if tuple(probs.shape) != (n, 1 + len(OPS)):
        raise ValueError(f"rnn_node probs must be [n, {1 + len(OPS)}] = [{n}, {1 + len(OPS)}] "
                         f"(columns: none, {', '.join(OPS)}), got {tuple(probs.shape)}")
    if ch.dtype not in _FLOATING or states.dtype not in _FLOATING:
        raise ValueError(f"rnn_node ch and states must be float16/bfloat16/float32/float64, "
                         f"got {ch.dtype} and {states.dtype}")
    if not probs.is_floating_point():
        raise ValueError(f"rnn_node probs must be floating point, not {probs.dtype}")
    if states.device != ch.device or probs.device != ch.device:
        raise ValueError(f"rnn_node inputs must be on one device; ch is on {ch.device}, states "
                         f"on {states.device}, probs on {probs.device}")
    if ch.numel() >= 2**31:
        raise ValueError("rnn_node ch has 2**31 elements or more; the kernels index with int32 "
                         "strides: split the batch")


def io_dtype(ch: Tensor, states: Tensor) -> torch.dtype:
    """The dtype the kernels run in and s is returned in: ch's and states' common dtype
    (under autocast the matmul gives bfloat16 ch while BatchNorm gives float32 states)."""
    return torch.promote_types(ch.dtype, states.dtype)


def _common(ch: Tensor, states: Tensor) -> tuple[Tensor, Tensor]:
    dtype = io_dtype(ch, states)
    return ch.to(dtype), states.to(dtype)  # a copy only when the dtypes differ


# -- compiled backends -----------------------------------------------------------------------
def _triton_forward(ch, states, probs):
    return load_triton_kernels("rnn_node").rnn_node_forward(ch, states, probs)


def _triton_backward(grad, ch, states, probs):
    return load_triton_kernels("rnn_node").rnn_node_backward(grad, ch, states, probs)


def _cuda_forward(ch, states, probs):
    return torch.ops.fastdarts_C.rnn_node_forward(ch, states, probs)


def _cuda_backward(grad, ch, states, probs):
    return torch.ops.fastdarts_C.rnn_node_backward(grad, ch, states, probs)


_FORWARD = {"reference": rnn_node_ref.rnn_node_forward, "triton": _triton_forward,
            "cuda": _cuda_forward}
_BACKWARD = {"reference": rnn_node_ref.rnn_node_backward, "triton": _triton_backward,
             "cuda": _cuda_backward}


def current_backend(device: torch.device | str) -> str:
    """The backend ``rnn_node`` runs on tensors of ``device`` right now."""
    return backends.resolve(OP_NAME, device)


# -- the registered ops ------------------------------------------------------------------------
@torch.library.custom_op("fastdarts::rnn_node", mutates_args=())
def rnn_node(ch: Tensor, states: Tensor, probs: Tensor) -> Tensor:
    """One search-cell node: sum_j sum_f probs[j, f] * (st_j + sigmoid(c_j) * (f(h_j) - st_j)).

    ch: [n, B, 2H] (float16/bfloat16/float32/float64, any strides), the matmul of
    the (masked) states with W_i: c = ch[..., :H], h = ch[..., H:].
    states: [n, B, H] (any floating dtype and strides), the unmasked states.
    probs: [n, 5] softmax weights, columns (none, tanh, relu, sigmoid, identity).
    Returns s [B, H], contiguous, in the common dtype of ch and states (mixed dtypes
    are promoted first: one copy); float32 accumulation, float64 for float64.
    """
    check_inputs(ch, states, probs)
    ch, states = _common(ch, states)
    return _FORWARD[current_backend(ch.device)](ch, states, probs)


@rnn_node.register_fake
def _rnn_node_fake(ch, states, probs):
    check_inputs(ch, states, probs)
    return states.new_empty(states.shape[1:], dtype=io_dtype(ch, states))


@torch.library.custom_op("fastdarts::rnn_node_backward", mutates_args=())
def rnn_node_backward(grad: Tensor, ch: Tensor, states: Tensor, probs: Tensor
                      ) -> tuple[Tensor, Tensor, Tensor]:
    """One pass: (d ch [n, B, 2H], d states [n, B, H], d probs [n, 5]).

    grad: [B, H], any strides.  ch, states, probs as in :func:`rnn_node`.  d ch
    and d states are contiguous, in ch's and states' dtypes; d probs has probs'
    dtype, column 0 ('none') zero.
    """
    check_inputs(ch, states, probs)
    if tuple(grad.shape) != tuple(states.shape[1:]):
        raise ValueError(f"rnn_node_backward grad must be [B, H] = {tuple(states.shape[1:])}, "
                         f"got {tuple(grad.shape)}")
    ch_dtype, states_dtype = ch.dtype, states.dtype
    ch, states = _common(ch, states)
    grad = grad.to(ch.dtype)
    d_ch, d_states, d_probs = _BACKWARD[current_backend(ch.device)](grad, ch, states, probs)
    return d_ch.to(ch_dtype), d_states.to(states_dtype), d_probs.to(probs.dtype)


@rnn_node_backward.register_fake
def _rnn_node_backward_fake(grad, ch, states, probs):
    check_inputs(ch, states, probs)
    return (ch.new_empty(ch.shape),
            states.new_empty(states.shape),
            probs.new_empty(probs.shape))


def _setup_context(ctx, inputs, output):
    ctx.save_for_backward(*inputs)  # ch, states, probs: the activations are re-computed


def _backward(ctx, grad):
    ch, states, probs = ctx.saved_tensors
    return torch.ops.fastdarts.rnn_node_backward(grad, ch, states, probs)


rnn_node.register_autograd(_backward, setup_context=_setup_context)


# Double backward (exact Hessian-vector products): differentiate the plain-torch
# backward.  Rarely on the hot path, so clarity over speed.
def _setup_backward_context(ctx, inputs, output):
    ctx.save_for_backward(*inputs)  # grad, ch, states, probs


def _backward_backward(ctx, gg_ch, gg_states, gg_probs):
    saved = ctx.saved_tensors
    with torch.enable_grad():
        leaves = [t.detach().requires_grad_() for t in saved]
        outs = node_backward_math(*leaves)
        pairs = [(o, g) for o, g in zip(outs, (gg_ch, gg_states, gg_probs), strict=True)
                 if g is not None]
        grads = torch.autograd.grad([o for o, _ in pairs], leaves, [g for _, g in pairs],
                                    allow_unused=True)
    return tuple(torch.zeros_like(t) if g is None else g for t, g in zip(saved, grads,
                                                                          strict=True))


rnn_node_backward.register_autograd(_backward_backward, setup_context=_setup_backward_context)
