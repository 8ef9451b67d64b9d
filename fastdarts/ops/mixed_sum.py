"""``fastdarts::mixed_sum``: the weighted sum of a mixed op's candidate outputs.

    out = sum_m weights[m] * outputs[m]

The op is registered with ``torch.library.custom_op`` (fake impl + autograd),
so it runs under ``torch.compile(fullgraph=True)`` and CUDA graphs; the
backward is a second op, ``fastdarts::mixed_sum_backward``, that makes ONE
pass over ``grad`` and the outputs:

    grad_outputs[m] = weights[m] * grad
    grad_weights[m] = sum(grad * outputs[m])     (per-block partials + a small sum:
                                                   deterministic, no float atomics)

Backends (chosen by :func:`fastdarts.backends.resolve`, whose ``POLICY`` table says
which one ``auto`` picks and why): ``reference`` (fastdarts/ops/mixed_sum_ref.py),
``triton`` (kernels/mixed_sum.py), ``cuda`` (csrc/cuda/mixed_sum_cuda.cu) and ``cpu``
(csrc/cpu/mixed_sum_cpu.cpp).

Layout: when all outputs share one dense, non-overlapping stride order
(contiguous, channels_last, any permutation) the kernels treat memory as flat
and the result takes those strides; otherwise the outputs are made contiguous
first (one copy, correct, slower).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .. import backends
from . import mixed_sum_ref

OP_NAME = "mixed_sum"
_FLOATING = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


# -- validation and layout -------------------------------------------------------
def check_inputs(outputs: Sequence[Tensor], weights: Tensor) -> None:
    """Raise a ValueError/TypeError that says what to fix when the inputs do not fit."""
    if isinstance(outputs, Tensor):
        raise TypeError("mixed_sum op takes a list of tensors; use fastdarts.functional.mixed_sum "
                        "to pass one stacked [M, ...] tensor")
    if len(outputs) == 0:
        raise ValueError("mixed_sum needs at least one output tensor (got an empty list); a mixed "
                         "op with only the 'none' op should return zeros instead")
    if not isinstance(weights, Tensor):
        raise TypeError(f"mixed_sum weights must be a tensor, got {type(weights).__name__}")
    first = outputs[0]
    for m, x in enumerate(outputs):
        if not isinstance(x, Tensor):
            raise TypeError(f"mixed_sum outputs[{m}] is a {type(x).__name__}, not a tensor")
        if x.shape != first.shape:
            raise ValueError(f"mixed_sum outputs[{m}] has shape {tuple(x.shape)} but outputs[0] "
                             f"has {tuple(first.shape)}; every op output must have one shape")
        if x.dtype != first.dtype:
            raise ValueError(f"mixed_sum outputs[{m}] is {x.dtype} but outputs[0] is "
                             f"{first.dtype}; cast them to one dtype first")
        if x.device != first.device:
            raise ValueError(f"mixed_sum outputs[{m}] is on {x.device} but outputs[0] is on "
                             f"{first.device}; move them to one device")
    if first.dtype not in _FLOATING:
        raise ValueError(f"mixed_sum supports float16/bfloat16/float32/float64 outputs, "
                         f"not {first.dtype}")
    if not weights.is_floating_point():
        raise ValueError(f"mixed_sum weights must be floating point, not {weights.dtype}")
    if weights.device != first.device:
        raise ValueError(f"mixed_sum weights are on {weights.device} but the outputs are on "
                         f"{first.device}; move them to one device")
    if weights.dim() not in (1, 2) or weights.numel() != len(outputs):
        raise ValueError(f"mixed_sum got {len(outputs)} outputs but weights of shape "
                         f"{tuple(weights.shape)}; pass a [M] vector or an [E, K] matrix with "
                         f"E*K == M (outputs ordered edge-major)")


def _is_dense(t: Tensor) -> bool:
    """Whether ``t``'s elements fill exactly numel() consecutive slots, in any dim order."""
    expected = 1
    dims = sorted((st, sz) for sz, st in zip(t.shape, t.stride(), strict=True) if sz != 1)
    for stride, size in dims:
        if stride != expected:
            return False
        expected *= size
    return True


def _strides_key(t: Tensor) -> tuple:
    # Size-1 dims do not move through memory, so their strides do not matter.
    return tuple(st for sz, st in zip(t.shape, t.stride(), strict=True) if sz != 1)


def flat_layout(outputs: Sequence[Tensor]) -> list[Tensor]:
    """The outputs, made contiguous unless all share one dense stride order already.

    After this, element i of the flat memory of every tensor is the same logical
    element, which is all the kernels need.
    """
    key = _strides_key(outputs[0])
    if _is_dense(outputs[0]) and all(_strides_key(x) == key for x in outputs[1:]):
        return list(outputs)
    return [x.contiguous() for x in outputs]


def _match_layout(grad: Tensor, like: Tensor) -> Tensor:
    """``grad`` with ``like``'s (dense) strides, copying only when they differ."""
    if _strides_key(grad) == _strides_key(like):
        return grad
    return torch.empty_like(like).copy_(grad)


# -- backend implementations: (outputs: list[Tensor], weights: [M]) -------------------
def _triton_forward(outputs, weights):
    from . import load_triton_kernels

    return load_triton_kernels("mixed_sum").mixed_sum_forward(outputs, weights)


def _triton_backward(grad, outputs, weights):
    from . import load_triton_kernels

    return load_triton_kernels("mixed_sum").mixed_sum_backward(grad, outputs, weights)


def _ext_forward(outputs, weights):
    return torch.ops.fastdarts_C.mixed_sum_forward(outputs, weights)


def _ext_backward(grad, outputs, weights):
    grad_outputs, grad_weights = torch.ops.fastdarts_C.mixed_sum_backward(grad, outputs, weights)
    return list(grad_outputs), grad_weights


_FORWARD = {"reference": mixed_sum_ref.mixed_sum_forward, "triton": _triton_forward,
            "cuda": _ext_forward, "cpu": _ext_forward}
_BACKWARD = {"reference": mixed_sum_ref.mixed_sum_backward, "triton": _triton_backward,
             "cuda": _ext_backward, "cpu": _ext_backward}


def current_backend(device: torch.device | str) -> str:
    """The backend ``mixed_sum`` runs on tensors of ``device`` right now."""
    return backends.resolve(OP_NAME, device)


# -- the registered ops ------------------------------------------------------------------
@torch.library.custom_op("fastdarts::mixed_sum", mutates_args=())
def mixed_sum(outputs: list[Tensor], weights: Tensor) -> Tensor:
    """sum_m weights.flatten()[m] * outputs[m].

    outputs: M tensors [*S], one dtype (float16/bfloat16/float32/float64) and device.
    weights: [M] or [E, K] with E*K == M (edge-major), any floating dtype (e.g.
    float32 softmax weights with bfloat16 outputs under autocast).
    Returns [*S] in the outputs' dtype, accumulated in float32 (float64 for float64).
    """
    check_inputs(outputs, weights)
    outs = flat_layout(outputs)
    return _FORWARD[current_backend(outs[0].device)](outs, weights.reshape(-1))


@mixed_sum.register_fake
def _mixed_sum_fake(outputs, weights):
    check_inputs(outputs, weights)
    return torch.empty_like(flat_layout(outputs)[0])


@torch.library.custom_op("fastdarts::mixed_sum_backward", mutates_args=())
def mixed_sum_backward(grad: Tensor, outputs: list[Tensor], weights: Tensor
                       ) -> tuple[list[Tensor], Tensor]:
    """One pass: (grad_outputs[m] = weights[m] * grad, grad_weights[m] = sum(grad * outputs[m])).

    grad: [*S] in any layout; outputs, weights as in :func:`mixed_sum`.
    Returns M tensors [*S] in the outputs' dtype and a tensor of weights' shape
    and dtype.
    """
    check_inputs(outputs, weights)
    outs = flat_layout(outputs)
    grad = _match_layout(grad.to(outs[0].dtype), outs[0])
    grad_outputs, grad_weights = _BACKWARD[current_backend(outs[0].device)](grad, outs,
                                                                   weights.reshape(-1))
    return list(grad_outputs), grad_weights.to(weights.dtype).reshape(weights.shape)


@mixed_sum_backward.register_fake
def _mixed_sum_backward_fake(grad, outputs, weights):
    check_inputs(outputs, weights)
    like = flat_layout(outputs)[0]
    return ([torch.empty_like(like) for _ in outputs],
            torch.empty(weights.shape, dtype=weights.dtype, device=weights.device))


def _setup_context(ctx, inputs, output):
    outputs, weights = inputs
    ctx.save_for_backward(weights, *outputs)


def _backward(ctx, grad):
    weights, *outputs = ctx.saved_tensors
    if torch.is_grad_enabled():
        # create_graph=True (double backward, e.g. the Architect's exact Hessian-vector
        # product): the same math from differentiable torch ops
        grad_outputs, grad_weights = mixed_sum_ref.mixed_sum_backward(grad, outputs,
                                                                     weights.reshape(-1))
        return grad_outputs, grad_weights.reshape(weights.shape)
    grad_outputs, grad_weights = torch.ops.fastdarts.mixed_sum_backward(grad, outputs, weights)
    return list(grad_outputs), grad_weights


mixed_sum.register_autograd(_backward, setup_context=_setup_context)
