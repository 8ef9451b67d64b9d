"""``fastdarts::state_mixed_sum``: the mixed sums of every edge that reads one state.

In a DARTS cell each state feeds E edges (s0 and s1 feed all four nodes; node k
every later node).  The batched supernet (fastdarts/nn/batched.py) evaluates all
candidate ops of those E edges together, so an op's outputs for the E edges sit
side by side in one wide tensor.  This op adds, for each edge e, the weighted sum
of its candidate outputs to the running sum of the node the edge enters:

    out[e] = partials[e] + sum_k weights[e, k] * slot_e(block k)

without copying the edge slots apart, and its backward writes the gradient of each
wide tensor whole (no per-slot zero-fill and copy, which is what autograd does for
a slice).

Inputs (``blocks[i]`` says how ``inputs[i]`` is read):
  * ``blocks[i] == 0``: a *shared* input [N, C, *S], the same for every edge (a pool
    followed by a parameter-free batch norm, or the identity);
  * ``blocks[i] == G >= 1``: a *wide* input [N, G*E*C, *S] holding G candidate ops,
    op-major then edge-major: op b of edge e is channels ``[(b*E + e)*C, (b*E + e + 1)*C)``.
The weight columns follow the inputs' blocks in order: K = sum(max(1, blocks[i])).

Backends: ``reference`` (fastdarts/ops/state_sum_ref.py) and ``triton``
(kernels/state_sum.py); which one ``auto`` picks is in ``fastdarts.backends.POLICY``
(Triton on CUDA tensors, the reference on CPU tensors).  No CUDA C++ kernel yet: a
request for ``cuda``/``cpu`` falls back with one warning.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from .. import backends
from . import state_sum_ref
from .mixed_sum_ref import acc_dtype

OP_NAME = "state_mixed_sum"
_FLOATING = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def edge_channels(inputs: Sequence[Tensor], blocks: Sequence[int], E: int) -> int:
    """C, the channels of one edge's output, implied by the inputs."""
    for x, g in zip(inputs, blocks, strict=True):
        return x.shape[1] if g == 0 else x.shape[1] // (g * E)
    raise ValueError("state_mixed_sum needs at least one input")


def check_inputs(inputs: Sequence[Tensor], blocks: Sequence[int], weights: Tensor,
                 partials: Sequence[Tensor]) -> int:
    """Raise a ValueError that says what to fix; return C."""
    if len(inputs) == 0:
        raise ValueError("state_mixed_sum needs at least one input tensor")
    if len(blocks) != len(inputs):
        raise ValueError(f"state_mixed_sum got {len(inputs)} inputs but {len(blocks)} block "
                         "counts; pass one per input (0 for an input shared by every edge)")
    if not isinstance(weights, Tensor) or weights.dim() != 2 or not weights.is_floating_point():
        raise ValueError("state_mixed_sum weights must be a floating [E, K] tensor, got "
                         f"{getattr(weights, 'shape', type(weights).__name__)}")
    E, K = weights.shape
    if any(g < 0 for g in blocks) or sum(max(1, g) for g in blocks) != K:
        raise ValueError(f"state_mixed_sum blocks {list(blocks)} give "
                         f"{sum(max(1, g) for g in blocks)} weight columns but weights are "
                         f"{tuple(weights.shape)}")
    first = inputs[0]
    if first.dtype not in _FLOATING:
        raise ValueError(f"state_mixed_sum supports floating inputs, not {first.dtype}")
    C = edge_channels(inputs, blocks, E)
    shape = (first.shape[0], C, *first.shape[2:])
    for i, (x, g) in enumerate(zip(inputs, blocks, strict=True)):
        want = (shape[0], C * (g * E if g else 1), *shape[2:])
        if tuple(x.shape) != want:
            raise ValueError(f"state_mixed_sum inputs[{i}] has shape {tuple(x.shape)}, expected "
                             f"{want} ({'shared' if g == 0 else f'{g} ops x {E} edges'} of "
                             f"{C} channels)")
        if x.dtype != first.dtype or x.device != first.device:
            raise ValueError(f"state_mixed_sum inputs[{i}] is {x.dtype} on {x.device} but "
                             f"inputs[0] is {first.dtype} on {first.device}")
    if partials and len(partials) != E:
        raise ValueError(f"state_mixed_sum got {len(partials)} partial sums for {E} edges")
    for e, p in enumerate(partials):
        if tuple(p.shape) != shape or p.dtype != first.dtype or p.device != first.device:
            raise ValueError(f"state_mixed_sum partials[{e}] is {tuple(p.shape)} {p.dtype} on "
                             f"{p.device}; expected {shape} {first.dtype} on {first.device}")
    if weights.device != first.device:
        raise ValueError(f"state_mixed_sum weights are on {weights.device}, inputs on "
                         f"{first.device}")
    return C


# -- layout -------------------------------------------------------------------------------
def _format(tensors: Sequence[Tensor]) -> torch.memory_format | None:
    """The one dense memory format all ``tensors`` share (contiguous or channels_last),
    or None when they do not share one."""
    if all(t.is_contiguous() for t in tensors):
        return torch.contiguous_format
    if all(t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last) for t in tensors):
        return torch.channels_last
    return None


def normalized(tensors: Sequence[Tensor]) -> tuple[list[Tensor], torch.memory_format]:
    """The tensors in one shared dense format, copying only when they do not share one."""
    fmt = _format(tensors)
    if fmt is None:
        return [t.contiguous() for t in tensors], torch.contiguous_format
    return list(tensors), fmt


def kernel_blocks(inputs: Sequence[Tensor], blocks: Sequence[int], E: int, C: int,
                  fmt: torch.memory_format) -> tuple[list[tuple[Tensor, int, int, int]], int]:
    """(tensor, offset, row_stride, edge_stride) per weight column, and L (see
    kernels/state_sum.py): rows are samples (contiguous) or pixels (channels_last)."""
    spatial = math.prod(inputs[0].shape[2:])
    L = C * spatial if fmt == torch.contiguous_format else C
    out = []
    for x, g in zip(inputs, blocks, strict=True):
        row = x.shape[1] * (spatial if fmt == torch.contiguous_format else 1)
        if g == 0:
            out.append((x, 0, row, 0))
        else:
            out.extend((x, b * E * L, row, L) for b in range(g))
    return out, L


def _out_like(x: Tensor, C: int, fmt: torch.memory_format, dtype=None) -> Tensor:
    return torch.empty((x.shape[0], C, *x.shape[2:]), dtype=dtype or x.dtype, device=x.device,
                       memory_format=fmt)


# -- backends -------------------------------------------------------------------------------
def _triton():
    from . import load_triton_kernels

    return load_triton_kernels("state_sum")


def current_backend(device: torch.device | str) -> str:
    """The backend ``state_mixed_sum`` runs on tensors of ``device`` right now."""
    return backends.resolve(OP_NAME, device)


def _forward(inputs, blocks, weights, partials):
    C = check_inputs(inputs, blocks, weights, partials)
    E = weights.shape[0]
    tensors, fmt = normalized(list(inputs) + list(partials))
    inputs, partials = tensors[:len(inputs)], tensors[len(inputs):]
    if current_backend(inputs[0].device) == "triton":
        kb, L = kernel_blocks(inputs, blocks, E, C, fmt)
        return _triton().state_sum_forward(kb, weights, partials,
                                           _out_like(inputs[0], C, fmt), L)
    return state_sum_ref.state_sum_forward(inputs, blocks, weights, partials, C, fmt)


def _backward(grads, inputs, blocks, weights):
    C = check_inputs(inputs, blocks, weights, [])
    E = weights.shape[0]
    tensors, fmt = normalized(list(inputs) + [g.to(inputs[0].dtype) for g in grads])
    inputs, grads = tensors[:len(inputs)], tensors[len(inputs):]
    if current_backend(inputs[0].device) == "triton":
        kb, L = kernel_blocks(inputs, blocks, E, C, fmt)
        acc_t = acc_dtype(inputs[0].dtype)
        # shared inputs sum E edges' terms: accumulate them in float32 for low precision
        targets = [torch.empty_like(x, dtype=acc_t if g == 0 else x.dtype)
                   for x, g in zip(inputs, blocks, strict=True)]
        per_column = [t for t, g in zip(targets, blocks, strict=True) for _ in range(max(1, g))]
        grad_weights = _triton().state_sum_backward(grads, kb, per_column, weights, L)
        grad_inputs = [t.to(x.dtype) for t, x in zip(targets, inputs, strict=True)]
    else:
        grad_inputs, grad_weights = state_sum_ref.state_sum_backward(grads, inputs, blocks, weights, C,
                                                             fmt)
    return grad_inputs, grad_weights.to(weights.dtype)


# -- the registered ops ------------------------------------------------------------------------
@torch.library.custom_op("fastdarts::state_mixed_sum", mutates_args=())
def state_mixed_sum(inputs: list[Tensor], blocks: list[int], weights: Tensor,
                    partials: list[Tensor]) -> list[Tensor]:
    """out[e] = partials[e] + sum_k weights[e, k] * slot_e(column k); see the module docstring.

    Returns E tensors [N, C, *S] in the inputs' dtype and (shared dense) memory format,
    accumulated in float32 (float64 for float64).
    """
    return _forward(inputs, blocks, weights, partials)


@state_mixed_sum.register_fake
def _state_mixed_sum_fake(inputs, blocks, weights, partials):
    C = check_inputs(inputs, blocks, weights, partials)
    tensors, fmt = normalized(list(inputs) + list(partials))
    return [_out_like(tensors[0], C, fmt) for _ in range(weights.shape[0])]


@torch.library.custom_op("fastdarts::state_mixed_sum_backward", mutates_args=())
def state_mixed_sum_backward(grads: list[Tensor], inputs: list[Tensor], blocks: list[int],
                             weights: Tensor) -> tuple[list[Tensor], Tensor]:
    """(grad of each input, grad_weights [E, K]) given the E output gradients."""
    return _backward(grads, inputs, blocks, weights)


@state_mixed_sum_backward.register_fake
def _state_mixed_sum_backward_fake(grads, inputs, blocks, weights):
    check_inputs(inputs, blocks, weights, [])
    tensors, _ = normalized(list(inputs) + list(grads))
    return ([torch.empty_like(x) for x in tensors[:len(inputs)]],
            torch.empty(weights.shape, dtype=weights.dtype, device=weights.device))


def _setup_context(ctx, inputs, output):
    xs, blocks, weights, partials = inputs
    ctx.blocks = list(blocks)
    ctx.n_inputs = len(xs)
    ctx.has_partials = bool(partials)
    ctx.save_for_backward(weights, *xs)


def _autograd_backward(ctx, grads):
    weights, *xs = ctx.saved_tensors
    grads = list(grads)
    if torch.is_grad_enabled():  # double backward (exact HVP): differentiable torch ops
        C = check_inputs(xs, ctx.blocks, weights, [])
        fmt = _format(xs) or torch.contiguous_format
        grad_inputs, grad_weights = state_sum_ref.state_sum_backward(grads, xs, ctx.blocks, weights, C, fmt)
    else:
        grad_inputs, grad_weights = torch.ops.fastdarts.state_mixed_sum_backward(
            grads, xs, ctx.blocks, weights)
    # d out[e] / d partials[e] is the identity: the incoming gradients pass through
    return list(grad_inputs), None, grad_weights, (grads if ctx.has_partials else [])


state_mixed_sum.register_autograd(_autograd_backward, setup_context=_setup_context)
