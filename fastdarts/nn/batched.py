"""State-batched evaluation of a DARTS search cell: one wide chain per state, not per edge.

In a cell every state feeds several edges (s0 and s1 feed all four nodes; node k
every later node): 14 edges but 5 source states.  The reference evaluates the
8 candidate ops of each edge one by one (~50 kernels an edge forward).  Here all
edges that read one state x are evaluated together:

* the parameter-free ops depend on x alone in training mode, so they are computed
  once per state and shared by its E edges: max_pool + BN(affine=False),
  avg_pool + BN(affine=False), and the identity (skip_connect, stride 1);
* ReLU(x) is computed once and repeated E times along the channels; the
  depthwise convolutions of all E edges run as ONE grouped convolution per op
  family: sep_conv 3x3 and 5x5 together as one 5x5 (the 3x3 kernels zero-padded:
  exact, the extra taps add 0 * x), dil_conv 3x3 and 5x5 as one dilated 5x5 (the
  3x3 kernel sits on the dilated 5x5's inner ring); the pointwise convolutions as
  one grouped 1x1 per family, and each family's batch norms as ONE batch norm over
  the concatenated channels (per-channel statistics do not change under
  concatenation).  FactorizedReduce (skip_connect, stride 2) likewise: two wide
  1x1 convolutions and one batch norm.
* the E edges' weighted sums go into the E target nodes' running sums in one
  ``fastdarts::state_mixed_sum`` that reads the wide tensors' edge slots in place.

Running statistics.  Each batched batch norm writes its batch mean and unbiased
variance (momentum 1 into zeroed scratch buffers, so they are the kernel's own
values) and :class:`BatchNormStats` applies ``running = (1 - m) * running + m * batch``
and ``num_batches_tracked += 1`` to every module's own buffers with a few
``_foreach`` calls per network forward: the reference's update, per module, with
no kernel per module.

Parameters stay the reference modules' own (same module tree, state_dict keys and
construction order); each forward gathers an op family's weights of the E edges
with one ``torch.cat`` (its backward only slices).

Used in training mode for cells whose ops are exactly the DARTS space
(``fastdarts.space.genotypes.PRIMITIVES``) built as the original builds them; anything
else (another primitive set, affine or momentum-less batch norms, an in-place
ReLU, eval mode) falls back to per-edge evaluation (:func:`why_not_batched`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from ..ops import state_sum as _state_sum  # noqa: F401  (registers the op)
from ..space.genotypes import PRIMITIVES
from ..space.operations import DilConv, FactorizedReduce, Identity, SepConv, Zero

__all__ = ["BatchNormStats", "why_not_batched", "state_rows", "cell_nodes_batched"]

_IDX = {p: i for i, p in enumerate(PRIMITIVES)}
_ACTIVE = [i for i, p in enumerate(PRIMITIVES) if p != "none"]


# -- running statistics ----------------------------------------------------------------------
class BatchNormStats:
    """Collects the batched batch norms' batch statistics during a forward and applies the
    running-statistic updates of every module at once (:meth:`apply`).

    ``scratch(n, like)`` hands out zeroed stat buffers from one allocation (a zero fill
    per 65536 elements, not one per batch norm).  After :meth:`apply` (or when built with
    ``active=False``, e.g. for a checkpoint's recompute) nothing is recorded.
    """

    CHUNK = 1 << 16

    def __init__(self, active: bool = True):
        self.active = active
        self._pool: Tensor | None = None
        self._used = 0
        # momentum -> ([running buffers], [batch statistics]) for means and variances
        self._means: dict[float, tuple[list[Tensor], list[Tensor]]] = {}
        self._vars: dict[float, tuple[list[Tensor], list[Tensor]]] = {}
        self._counters: list[Tensor] = []

    def scratch(self, n: int, like: Tensor) -> Tensor:
        if (self._pool is None or self._used + n > self._pool.numel()
                or self._pool.dtype != like.dtype or self._pool.device != like.device):
            self._pool = torch.zeros(max(n, self.CHUNK), dtype=like.dtype, device=like.device)
            self._used = 0
        out = self._pool[self._used:self._used + n]
        self._used += n
        return out

    def record(self, bns: Sequence[nn.BatchNorm2d], mean: Tensor, var: Tensor, shared: bool
               ) -> None:
        """bns[i]'s batch statistics are ``mean``/``var`` (shared) or their i-th
        C-channel block (the modules' channels concatenated in order)."""
        m = float(bns[0].momentum)
        rm, bm = self._means.setdefault(m, ([], []))
        rv, bv = self._vars.setdefault(m, ([], []))
        for i, bn in enumerate(bns):
            C = bn.num_features
            rm.append(bn.running_mean)
            rv.append(bn.running_var)
            bm.append(mean if shared else mean[i * C:(i + 1) * C])
            bv.append(var if shared else var[i * C:(i + 1) * C])
            self._counters.append(bn.num_batches_tracked)

    @torch.no_grad()
    def apply(self) -> None:
        """running = (1 - m) * running + m * batch for every recorded module; counters += 1."""
        if not self.active:
            return
        for m, (running, batch) in list(self._means.items()) + list(self._vars.items()):
            if running:
                torch._foreach_mul_(running, 1.0 - m)
                torch._foreach_add_(running, batch, alpha=m)
        if self._counters:
            torch._foreach_add_(self._counters, 1)
        self.active = False
        self._means, self._vars, self._counters, self._pool = {}, {}, [], None


def batch_norm(y: Tensor, bns: Sequence[nn.BatchNorm2d], stats: BatchNormStats | None,
               shared: bool = False) -> Tensor:
    """Training-mode batch norm of ``y`` [N, ch, H, W] (no affine), the statistics going to
    ``bns`` through ``stats``: one module for all channels per block of C (``shared``:
    every module gets the statistics of all of ``y``'s channels)."""
    eps = bns[0].eps
    if stats is None or not stats.active:
        return F.batch_norm(y, None, None, None, None, True, 0.0, eps)
    ch = y.shape[1]
    like = bns[0].running_mean
    buf = stats.scratch(2 * ch, like)
    mean, var = buf[:ch], buf[ch:]
    # momentum 1: the scratch buffers end as the batch mean and unbiased variance
    out = F.batch_norm(y, mean, var, None, None, True, 1.0, eps)
    stats.record(bns, mean, var, shared)
    return out


# -- when the batched path applies ----------------------------------------------------------------
def _bn_ok(bn) -> bool:
    return (type(bn) is nn.BatchNorm2d and not bn.affine and bn.track_running_stats
            and bn.momentum is not None and bn.running_mean is not None)


def _relu_ok(m) -> bool:
    return type(m) is nn.ReLU and not m.inplace


def _sep_ok(op, k) -> bool:
    seq = getattr(op, "op", None)
    return (type(op) is SepConv and len(seq) == 8 and _relu_ok(seq[0]) and _relu_ok(seq[4])
            and seq[1].kernel_size == (k, k) and seq[5].kernel_size == (k, k)
            and seq[1].padding == (k // 2, k // 2) and seq[1].dilation == (1, 1)
            and seq[5].stride == (1, 1) and _bn_ok(seq[3]) and _bn_ok(seq[7])
            and seq[1].bias is None and seq[2].bias is None and seq[5].bias is None
            and seq[6].bias is None)


def _dil_ok(op, k) -> bool:
    seq = getattr(op, "op", None)
    return (type(op) is DilConv and len(seq) == 4 and _relu_ok(seq[0])
            and seq[1].kernel_size == (k, k) and seq[1].dilation == (2, 2)
            and seq[1].padding == (k - 1, k - 1) and _bn_ok(seq[3])
            and seq[1].bias is None and seq[2].bias is None)


def _pool_ok(op, kind) -> bool:
    return (type(op) is nn.Sequential and len(op) == 2 and type(op[0]) is kind
            and _bn_ok(op[1]))


def why_not_batched(cell) -> str | None:
    """None when the cell's modules allow state-by-state evaluation; else why not.  (Only
    in training mode: in eval mode each edge's batch norms use their own statistics.)"""
    momenta, eps = set(), set()
    for k, mixed in enumerate(cell._ops):
        prims = getattr(mixed, "_primitives", None)
        if prims != list(PRIMITIVES):
            return f"edge {k} has primitives {prims}, not the DARTS space"
        ops = mixed._ops
        stride = 2 if isinstance(ops[_IDX["skip_connect"]], FactorizedReduce) else 1
        checks = [type(ops[_IDX["none"]]) is Zero,
                  _pool_ok(ops[_IDX["max_pool_3x3"]], nn.MaxPool2d),
                  _pool_ok(ops[_IDX["avg_pool_3x3"]], nn.AvgPool2d),
                  _sep_ok(ops[_IDX["sep_conv_3x3"]], 3), _sep_ok(ops[_IDX["sep_conv_5x5"]], 5),
                  _dil_ok(ops[_IDX["dil_conv_3x3"]], 3), _dil_ok(ops[_IDX["dil_conv_5x5"]], 5)]
        skip = ops[_IDX["skip_connect"]]
        checks.append(type(skip) is Identity if stride == 1 else
                      (_relu_ok(skip.relu) and _bn_ok(skip.bn)))
        if not all(checks):
            return f"edge {k}'s ops are not built as the original builds them"
        for bn in mixed.modules():
            if isinstance(bn, nn.modules.batchnorm._BatchNorm):
                momenta.add(bn.momentum)
                eps.add(bn.eps)
    if len(momenta) > 1 or len(eps) > 1:
        return "the cell's batch norms differ in momentum or eps"
    return None


# -- the plan: which rows of the weights each state uses ------------------------------------------
def state_rows(steps: int) -> list[int]:
    """Edge indices (rows of a cell's [14, K] weights) grouped by source state: for state
    j (s0, s1, node 0, ...) the edges into nodes max(0, j-1) .. steps-1, in node order."""
    offsets = [sum(2 + t for t in range(i)) for i in range(steps)]
    rows = []
    for j in range(steps + 1):
        rows.extend(offsets[i] + j for i in range(max(0, j - 1), steps))
    return rows


_ROWS: dict[tuple[int, torch.device], Tensor] = {}


def batched_weights(weights: Tensor, steps: int) -> Tensor:
    """softmax(alpha) [n_edges, K] -> [n_edges, K-1]: rows in :func:`state_rows` order,
    without the ``none`` column (contiguous, so every state's block is a plain view)."""
    key = (steps, weights.device)
    rows = _ROWS.get(key)
    if rows is None:  # made once per device (an eager step before any CUDA-graph capture)
        rows = _ROWS[key] = torch.tensor(state_rows(steps), device=weights.device)
    return weights.index_select(0, rows)[:, _ACTIVE[0]:_ACTIVE[-1] + 1].contiguous()


# -- one state's edges ----------------------------------------------------------------------------
def _repeat_channels(x: Tensor, times: int) -> Tensor:
    """[N, C, H, W] -> [N, times*C, H, W] (x repeated along channels), in x's memory format."""
    if times == 1:
        return x
    N, C, H, W = x.shape
    if x.is_contiguous() or not x.is_contiguous(memory_format=torch.channels_last):
        return x.unsqueeze(1).expand(N, times, C, H, W).reshape(N, times * C, H, W)
    nhwc = x.permute(0, 2, 3, 1).unsqueeze(3).expand(N, H, W, times, C)
    return nhwc.reshape(N, H, W, times * C).permute(0, 3, 1, 2)


class _DepthwisePointwise(torch.autograd.Function):
    """Depthwise then grouped-pointwise convolutions of one (optionally ReLU'd) input
    repeated ``times`` along the channels, for several weight sets at once, saving only
    the input: the repeat, the ReLU and the depthwise outputs are recomputed in the
    backward (one copy and one cheap depthwise convolution per set), where autograd
    would keep ``times`` copies of the input and every depthwise output (bench/NOTES.md,
    "batched CNN supernet", has the bytes saved).

    forward(x [N, C, H, W], relu_first, times, geometry ((stride, padding, dilation,
    pointwise groups) per set), *weights (depthwise [times*C, 1, k, k], pointwise
    [times*C, C, 1, 1]) per set) -> one [N, times*C, H', W'] per set.
    """

    @staticmethod
    def forward(ctx, x, relu_first, times, geometry, *weights):
        r = F.relu(x) if relu_first else x
        xr = _repeat_channels(r, times)
        outs = []
        for i, (s, p, d, groups) in enumerate(geometry):
            dw, pw = weights[2 * i], weights[2 * i + 1]
            y = F.conv2d(xr, dw, None, s, p, d, groups=dw.shape[0])
            outs.append(F.conv2d(y, pw, None, 1, 0, 1, groups=groups))
        dev = x.device.type
        ctx.compute_dtype = (torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev)
                             else None)
        ctx.relu_first, ctx.times, ctx.geometry = relu_first, times, geometry
        ctx.save_for_backward(x, *weights)
        return tuple(outs)

    @staticmethod
    def backward(ctx, *grads):
        x, *weights = ctx.saved_tensors
        dtype = ctx.compute_dtype
        r = F.relu(x) if ctx.relu_first else x
        xr = _repeat_channels(r, ctx.times)
        if dtype is not None and xr.dtype != dtype:  # the forward ran under autocast
            xr = xr.to(dtype)
        grad_xr, grad_ws = None, []
        for i, (s, p, d, groups) in enumerate(ctx.geometry):
            dw, pw = weights[2 * i], weights[2 * i + 1]
            g = grads[i]
            if g is None:
                grad_ws += [None, None]
                continue
            dwc = dw if dtype is None or dw.dtype == dtype else dw.to(dtype)
            pwc = pw if dtype is None or pw.dtype == dtype else pw.to(dtype)
            y = F.conv2d(xr, dwc, None, s, p, d, groups=dwc.shape[0])  # recomputed
            gy, gpw, _ = torch.ops.aten.convolution_backward(
                g.to(y.dtype), y, pwc, None, [1, 1], [0, 0], [1, 1], False, [0, 0], groups,
                [True, True, False])
            gi, gdw, _ = torch.ops.aten.convolution_backward(
                gy, xr, dwc, None, [s, s], [p, p], [d, d], False, [0, 0], dwc.shape[0],
                [True, True, False])
            grad_xr = gi if grad_xr is None else grad_xr + gi
            grad_ws += [gdw.to(dw.dtype), gpw.to(pw.dtype)]
        grad_x = None
        if grad_xr is not None:
            grad_r = grad_xr if ctx.times == 1 else grad_xr.unflatten(1, (ctx.times, -1)).sum(1)
            grad_r = grad_r.to(x.dtype)
            grad_x = (torch.ops.aten.threshold_backward(grad_r, r, 0) if ctx.relu_first
                      else grad_r)
        return (grad_x, None, None, None, *grad_ws)


class _MaxPool(torch.autograd.Function):
    """``pool(x)`` for an nn.MaxPool2d ``pool``, saving only x (which the state keeps anyway)
    instead of the int64 argmax indices (twice the bytes of a float32 output): the
    backward recomputes them (one pooling kernel) and scatters the gradient as
    max_pool2d's own backward does, so ties go where the forward's indices point."""

    @staticmethod
    def forward(ctx, x, pool):
        cfg = [_pair(pool.kernel_size), _pair(pool.stride or pool.kernel_size),
               _pair(pool.padding), _pair(pool.dilation), bool(pool.ceil_mode)]
        ctx.cfg = cfg
        ctx.save_for_backward(x)
        return F.max_pool2d(x, *cfg[:4], ceil_mode=cfg[4])

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        _, idx = torch.ops.aten.max_pool2d_with_indices(x.detach(), *ctx.cfg)
        return torch.ops.aten.max_pool2d_with_indices_backward(grad, x, *ctx.cfg, idx), None


def _pair(v) -> list[int]:
    return list(v) if isinstance(v, (tuple, list)) else [v, v]


# -- the wide weights: gathered once per cell forward ---------------------------------------------
def _state_weight_lists(ops: Sequence[nn.ModuleList]) -> dict[str, list[tuple[Tensor, int]]]:
    """(parameter, zero padding) per row block of each wide weight of one state's edges, in
    the channel order of the wide chains (op family major, edge minor)."""
    seps = [[o[_IDX[p]].op for o in ops] for p in ("sep_conv_3x3", "sep_conv_5x5")]
    dils = [[o[_IDX[p]].op for o in ops] for p in ("dil_conv_3x3", "dil_conv_5x5")]
    lists = {
        "dw_sep": [(s[1].weight, 1) for s in seps[0]] + [(s[1].weight, 0) for s in seps[1]],
        "dw_dil": [(d[1].weight, 1) for d in dils[0]] + [(d[1].weight, 0) for d in dils[1]],
        "pw_sep": [(s[2].weight, 0) for fam in seps for s in fam],
        "pw_dil": [(d[2].weight, 0) for fam in dils for d in fam],
        "dw2": [(s[5].weight, 1) for s in seps[0]] + [(s[5].weight, 0) for s in seps[1]],
        "pw2": [(s[6].weight, 0) for fam in seps for s in fam],
    }
    skip = ops[0][_IDX["skip_connect"]]
    if isinstance(skip, FactorizedReduce):
        lists["fr1"] = [(o[_IDX["skip_connect"]].conv_1.weight, 0) for o in ops]
        lists["fr2"] = [(o[_IDX["skip_connect"]].conv_2.weight, 0) for o in ops]
    return lists


class _GatherPlan:
    """Where every element of a cell's wide weights comes from, from the parameters' shapes
    alone: an index into [0, *every parameter flattened] (slot 0 is the zero that pads a
    small kernel), the wide weights' places in the gathered buffer, and each parameter's
    rows (and padding) in its wide weight."""

    def __init__(self, per_state: list[dict[str, list[tuple[Tensor, int]]]]):
        index, self.outputs, self.rows, self.shapes = [], [], [], []
        base, offset = 1, 0
        for lists in per_state:
            for blocks in lists.values():
                rows = 0
                k_out = max(p.shape[-1] + 2 * pad for p, pad in blocks)
                for p, pad in blocks:
                    src = torch.arange(base, base + p.numel()).view(p.shape)
                    if pad:
                        src = F.pad(src, (pad, pad, pad, pad))  # 0: the zero slot
                    index.append(src.reshape(-1))
                    self.rows.append((len(self.outputs), rows, rows + p.shape[0], pad))
                    self.shapes.append(p.shape)
                    rows += p.shape[0]
                    base += p.numel()
                shape = (rows, *blocks[0][0].shape[1:-2], k_out, k_out)
                self.outputs.append((offset, math.prod(shape), shape))
                offset += math.prod(shape)
        self.index_cpu = torch.cat(index)
        self._index: dict[torch.device, Tensor] = {}
        self._zero: dict[tuple, Tensor] = {}

    def matches(self, params: Sequence[Tensor]) -> bool:
        return len(params) == len(self.shapes) and all(
            p.shape == s for p, s in zip(params, self.shapes, strict=True))

    def index(self, device: torch.device) -> Tensor:
        t = self._index.get(device)
        if t is None:  # made once per device (an eager step before any CUDA-graph capture)
            t = self._index[device] = self.index_cpu.to(device)
        return t

    def zero(self, like: Tensor) -> Tensor:
        key = (like.device, like.dtype)
        t = self._zero.get(key)
        if t is None:
            t = self._zero[key] = torch.zeros(1, dtype=like.dtype, device=like.device)
        return t


class _GatherWeights(torch.autograd.Function):
    """All wide weights of a cell in one gather: a cat of the parameters and one indexed copy
    that lays them out (zero-padding the small kernels), returned as views of one buffer.
    The backward hands each parameter its rows of the wide gradients as views, copying
    only the padded kernels' interiors (one cat per kernel shape).  Replaces ~9 cat/pad
    launches per state and forward with 2 per cell (bench/NOTES.md)."""

    @staticmethod
    def forward(ctx, plan, *params):
        flat = torch.cat([plan.zero(params[0])] + [p.reshape(-1) for p in params])
        wide = flat.index_select(0, plan.index(flat.device))
        ctx.plan = plan
        return tuple(wide[a:a + n].view(shape) for a, n, shape in plan.outputs)

    @staticmethod
    def backward(ctx, *grads):
        plan = ctx.plan
        out: list[Tensor | None] = [None] * len(plan.shapes)
        padded: dict[tuple, list[tuple[int, Tensor]]] = {}
        for pi, (o, r0, r1, pad) in enumerate(plan.rows):
            g = grads[o]
            if g is None:
                continue
            if pad:
                piece = g[r0:r1, ..., pad:-pad, pad:-pad]
                padded.setdefault(tuple(piece.shape[1:]), []).append((pi, piece))
            else:
                out[pi] = g[r0:r1].reshape(plan.shapes[pi])
        for group in padded.values():  # non-contiguous interiors: one copy per shape
            cat = torch.cat([piece for _, piece in group])
            for (pi, _), part in zip(group, cat.split([p.shape[0] for _, p in group]),
                                     strict=True):
                out[pi] = part
        return (None, *out)


def gather_cell_weights(cell, per_state_ops: list[list[nn.ModuleList]]) -> list[dict[str, Tensor]]:
    """Each state's wide weights (a dict per state: dw_sep, dw_dil, pw_sep, pw_dil, dw2, pw2,
    and fr1/fr2 on stride-2 states), gathered with one :class:`_GatherWeights`."""
    lists = [_state_weight_lists(ops) for ops in per_state_ops]
    params = [p for d in lists for blocks in d.values() for p, _ in blocks]
    plan = getattr(cell, "_gather_plan", None)
    if plan is None or not plan.matches(params):
        plan = cell._gather_plan = _GatherPlan(lists)
    wide = iter(_GatherWeights.apply(plan, *params))
    return [{k: next(wide) for k in d} for d in lists]


def state_outputs(edges: Sequence[nn.Module], x: Tensor, stats: BatchNormStats | None,
                  W: dict[str, Tensor]) -> tuple[list[Tensor], list[int]]:
    """The inputs and block counts of ``state_mixed_sum`` for the E MixedOps ``edges`` that
    read ``x`` [N, C, H, W]: [max_pool+BN, avg_pool+BN, skip, (sep3|sep5), (dil3|dil5)];
    W: the state's wide weights (:func:`gather_cell_weights`)."""
    E = len(edges)
    ops = [m._ops for m in edges]
    first = ops[0]
    # parameter-free ops: once per state
    max_pool, avg_pool = first[_IDX["max_pool_3x3"]], first[_IDX["avg_pool_3x3"]]
    p_max = batch_norm(_MaxPool.apply(x, max_pool[0]), [o[_IDX["max_pool_3x3"]][1] for o in ops],
                       stats, True)
    p_avg = batch_norm(avg_pool[0](x), [o[_IDX["avg_pool_3x3"]][1] for o in ops], stats, True)
    if "fr1" in W:  # stride 2: FactorizedReduce per edge, two wide 1x1 convolutions
        relu_x = F.relu(x)
        frs = [o[_IDX["skip_connect"]] for o in ops]
        y1 = F.conv2d(relu_x, W["fr1"], None, 2)
        y2 = F.conv2d(relu_x[:, :, 1:, 1:], W["fr2"], None, 2)
        half = frs[0].conv_1.out_channels
        y = torch.stack([y1.unflatten(1, (E, half)), y2.unflatten(1, (E, half))], dim=2)
        y = y.flatten(1, 3)
        if relu_x.is_contiguous(memory_format=torch.channels_last) and not relu_x.is_contiguous():
            y = y.contiguous(memory_format=torch.channels_last)
        skip, skip_blocks = batch_norm(y, [f.bn for f in frs], stats), 1
    else:
        skip, skip_blocks = x, 0
    # sep_conv 3x3 / 5x5 and dil_conv 3x3 / 5x5: one wide chain per family; the 3x3
    # kernels are zero-padded to 5x5 (sep: padding 2; dil: dilation 2, padding 4)
    seps = [[o[_IDX[p]].op for o in ops] for p in ("sep_conv_3x3", "sep_conv_5x5")]
    dils = [[o[_IDX[p]].op for o in ops] for p in ("dil_conv_3x3", "dil_conv_5x5")]
    stride = seps[0][0][1].stride[0]
    g = 2 * E
    y_sep, y_dil = _DepthwisePointwise.apply(  # ReLU inside: x is saved (the pools keep it)
        x, True, 2 * E, ((stride, 2, 1, g), (stride, 4, 2, g)),
        W["dw_sep"], W["pw_sep"], W["dw_dil"], W["pw_dil"])
    y = batch_norm(y_sep, [s[3] for fam in seps for s in fam], stats)
    (y,) = _DepthwisePointwise.apply(y, True, 1, ((1, 2, 1, g),), W["dw2"], W["pw2"])
    sep = batch_norm(y, [s[7] for fam in seps for s in fam], stats)
    dil = batch_norm(y_dil, [d[3] for fam in dils for d in fam], stats)
    return [p_max, p_avg, skip, sep, dil], [0, 0, skip_blocks, 2, 2]


def _common(inputs: list[Tensor]) -> list[Tensor]:
    dtype = inputs[0].dtype
    for t in inputs[1:]:
        dtype = torch.promote_types(dtype, t.dtype)
    return [t if t.dtype == dtype else t.to(dtype) for t in inputs]


def cell_nodes_batched(cell, s0: Tensor, s1: Tensor, weights_b: Tensor,
                       stats: BatchNormStats | None, *, op_input=None, node_output=None) -> Tensor:
    """The cell's output from its preprocessed inputs, state by state.

    weights_b: [n_edges, K-1] from :func:`batched_weights` (rows by source state).
    Returns cat(last ``multiplier`` states) [N, multiplier*C, H', W'].

    Hooks (PC-DARTS, fastdarts/nn/pc_darts.py): ``op_input(j, state)`` -> what the ops of
    state j's edges read (default: the state); ``node_output(i, op_sum, states)`` -> node
    i's state from the weighted sum of its incoming edges' op outputs (default: that sum).
    """
    steps = cell._steps
    offsets = [sum(2 + t for t in range(i)) for i in range(steps)]
    states = [s0, s1]
    partials: list[Tensor] = []
    row = 0
    per_state = [[cell._ops[offsets[i] + j] for i in range(max(0, j - 1), steps)]
                 for j in range(steps + 1)]
    wide_weights = gather_cell_weights(cell, [[m._ops for m in edges] for edges in per_state])
    for j, edges in enumerate(per_state):
        E = len(edges)
        x = states[j] if op_input is None else op_input(j, states[j])
        inputs, blocks = state_outputs(edges, x, stats, wide_weights[j])
        inputs = _common(inputs)
        partials = [p if p.dtype == inputs[0].dtype else p.to(inputs[0].dtype) for p in partials]
        outs = torch.ops.fastdarts.state_mixed_sum(inputs, blocks, weights_b[row:row + E],
                                                   partials)
        row += E
        if j == 0:
            partials = list(outs)
        else:
            node = outs[0] if node_output is None else node_output(j - 1, outs[0], states)
            states.append(node)
            partials = list(outs[1:])
    return torch.cat(states[-cell._multiplier:], dim=1)
