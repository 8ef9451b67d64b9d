"""The fused DARTS CNN supernet: every node is ONE mixed sum.

A drop-in for ``fastdarts.reference.cnn.Network``: same constructor, module tree,
state_dict keys, construction order (so the same seed gives the same weights),
``alphas_normal``/``alphas_reduce``, ``arch_parameters()``, ``_loss``,
``genotype()`` and ``new()``.  Only the cell's forward differs: node i gathers
the outputs of every non-``none`` op on each of its E = 2 + i incoming edges and
sums them with one ``fastdarts::mixed_sum`` whose weights are the [E, K-1]
block of softmax(alpha) without the ``none`` column, instead of E * K separate
multiply-adds (the ``none`` op is never run; its weight still counts in the
softmax and gets its zero gradient through the slicing).

``memory=`` ("plain", "shared" = default, "checkpoint") chooses what the forward
keeps for the backward without changing any result; see
``fastdarts.nn.mixed_op.MEMORY_MODES`` and bench/NOTES.md, "memory".
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch
import torch.nn as nn
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from ..reference.cnn import model_search as _ref
from . import batched
from .memory import note_kept
from .mixed_op import MEMORY_MODES, MixedOp, after_relu, checkpointed, common_dtype, relu_head

__all__ = ["Cell", "Network"]


class Cell(_ref.Cell):
    """A search cell with the reference's modules (``preprocess0/1``, ``_ops`` of
    MixedOps, empty ``_bns``) whose nodes are each computed by one fused mixed sum.

    forward(s0: [N, C_pp, H, W], s1: [N, C_p, H, W], weights: [14, K]) ->
    [N, multiplier * C, H', W'].
    """

    def __init__(self, steps, multiplier, C_prev_prev, C_prev, C, reduction, reduction_prev,
                 memory: str = "shared"):
        if memory not in MEMORY_MODES:
            raise ValueError(f"memory must be one of {MEMORY_MODES}, got {memory!r}")
        # the reference constructor, with fused MixedOps through its _mixed_op hook
        super().__init__(steps, multiplier, C_prev_prev, C_prev, C, reduction, reduction_prev)
        for op in self._ops:
            op.memory = memory
        self.batch_states = True  # evaluate the edges state by state where possible
        self._batch_check: tuple[str] | None = None

    def _mixed_op(self, C: int, stride: int) -> MixedOp:
        return MixedOp(C, stride)

    def forward(self, s0: Tensor, s1: Tensor, weights: Tensor) -> Tensor:
        return self.forward_with_relus(s0, s1, weights)[0]

    def why_not_batched(self) -> str | None:
        """None when this cell runs state by state (fastdarts/nn/batched.py); else the reason
        it falls back to per-edge evaluation."""
        if not self.batch_states:
            return "batch_states is False"
        if self._batch_check is None:  # the module structure, checked once
            self._batch_check = (batched.why_not_batched(self) or "",)
        if self._batch_check[0]:
            return self._batch_check[0]
        if not self.training:
            return "eval mode"
        # per-sample masks do not fold into the [E, K'] weights of a state's sum
        return "search drop path" if self.drop_prob > 0 else None

    def forward_with_relus(self, s0: Tensor, s1: Tensor, weights: Tensor,
                           relu_s0: Tensor | None = None, relu_s1: Tensor | None = None, *,
                           weights_b: Tensor | None = None,
                           stats: batched.BatchNormStats | None = None
                           ) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """The cell's output and ReLU(s0), ReLU(s1) as its preprocessors computed them.

        A cell output feeds the preprocessors of the next TWO cells (and the stem both
        of the first cell's), each starting with ReLU: the Network passes the ReLU one
        cell computed to the next, so it is computed and saved once ("shared" and
        "checkpoint"; in "checkpoint" it is a quarter of all saved bytes).  relu_s0/1:
        ReLU(s0)/ReLU(s1) if known, else None; returned values are None where a
        preprocessor does not start with a plain ReLU (or in "plain" mode).

        weights_b (:func:`batched.batched_weights` of ``weights``) and stats (the
        network's :class:`batched.BatchNormStats`, applied by the caller) are passed by
        the Network so that they are made once per forward; a lone call makes its own.
        """
        memory = self._ops[0].memory
        if memory == "plain":
            return self._nodes(self.preprocess0(s0), self.preprocess1(s1), weights, memory), None, None
        p0, relu_s0 = _preprocess(self.preprocess0, s0, relu_s0)
        if relu_s1 is None and s1 is s0:  # the stem feeds both preprocessors of cell 0
            relu_s1 = relu_s0
        p1, relu_s1 = _preprocess(self.preprocess1, s1, relu_s1)
        if self.why_not_batched() is not None:
            return self._nodes(p0, p1, weights, memory), relu_s0, relu_s1
        own = stats is None
        if own:
            stats = batched.BatchNormStats()
        if weights_b is None:
            weights_b = batched.batched_weights(weights, self._steps)
        if memory == "checkpoint" and torch.is_grad_enabled():
            out = _checkpointed_cell(self, p0, p1, weights_b, stats)
        else:
            out = batched.cell_nodes_batched(self, p0, p1, weights_b, stats)
        if own:
            stats.apply()
        return out, relu_s0, relu_s1

    def _nodes(self, s0: Tensor, s1: Tensor, weights: Tensor, memory: str) -> Tensor:
        states = [s0, s1]
        offset = 0
        checkpoint_nodes = memory == "checkpoint" and torch.is_grad_enabled()
        masks = self._drop_masks(s0) if self.training and self.drop_prob > 0 else None
        for i in range(self._steps):
            n_in = len(states)
            edges = self._ops[offset:offset + n_in]
            node_weights = weights[offset:offset + n_in, edges[0]._active]
            node_sum = functools.partial(_node_sum, edges, drop=None if masks is None else
                                         (masks[i], 1.0 - self.drop_prob, self.drop_on))
            if checkpoint_nodes:  # keep only the node's inputs; recompute the rest in backward
                node = checkpointed(node_sum, edges, node_weights, *states)
            else:
                node = node_sum(node_weights, *states)
            states.append(node)
            offset += n_in
        return torch.cat(states[-self._multiplier:], dim=1)

    def _drop_masks(self, like: Tensor) -> list[list]:
        """The search drop-path masks of every node, drawn up front in the reference
        Cell's order (node, edge, then op), so one seed gives both the same masks and a
        checkpointed node's recompute reuses them.  Per node: one [N, 1, 1, 1] mask per
        edge ("edge"), or per edge a list with a mask or None per active op ("op")."""
        keep = 1.0 - self.drop_prob
        out, offset = [], 0
        for i in range(self._steps):
            node = []
            for mixed in self._ops[offset:offset + 2 + i]:
                if self.drop_on == "edge":
                    node.append(_ref.drop_path_mask(like, keep))
                else:
                    node.append([_ref.drop_path_mask(like, keep) if _ref.droppable(op) else None
                                 for p, op in zip(mixed._primitives, mixed._ops) if p != "none"])
            out.append(node)
            offset += 2 + i
        return out


def _preprocess(pre: nn.Module, s: Tensor, relu_s: Tensor | None) -> tuple[Tensor, Tensor | None]:
    """pre(s) and ReLU(s), reusing ``relu_s`` = ReLU(s) when given."""
    head = relu_head(pre)
    if head is None:
        return pre(s), relu_s
    if relu_s is None:
        relu_s = head(s)
    return after_relu(pre, relu_s), relu_s


def _checkpointed_cell(cell: Cell, p0: Tensor, p1: Tensor, weights_b: Tensor,
                       stats: batched.BatchNormStats) -> Tensor:
    """The batched cell inside one non-reentrant checkpoint: only its two preprocessed
    inputs (and the weights) are kept; the backward recomputes the cell.  The recompute's
    statistics go to a throw-away collector (the batched batch norms touch no module
    buffer themselves, and the recompute must save what the forward saved)."""
    calls = []

    def run(a: Tensor, b: Tensor, w: Tensor) -> Tensor:
        first = not calls
        calls.append(1)
        return batched.cell_nodes_batched(cell, a, b, w,
                                          stats if first else batched.BatchNormStats())

    note_kept([p0, p1, weights_b])
    return checkpoint(run, p0, p1, weights_b, use_reentrant=False, preserve_rng_state=False)


def _node_sum(edges: Sequence[MixedOp], node_weights: Tensor, *states: Tensor, drop=None) -> Tensor:
    """One node: sum over its E edges and K' non-none ops of w[e, k] * op_ek(states[e]).

    node_weights: [E, K'] (softmax(alpha) rows of the edges, ``none`` column dropped);
    states: E tensors [N, C, H, W].  One ``fastdarts::mixed_sum`` over the E * K' op
    outputs, edge-major as the weight block is laid out.  ``drop``: (this node's masks
    from Cell._drop_masks, keep probability, "edge" or "op") under search drop path:
    "op" scales the masked op outputs before the one mixed sum; "edge" takes one mixed
    sum per edge and masks each, as the reference does.
    """
    per_edge = [mixed.active_outputs(h) for mixed, h in zip(edges, states, strict=True)]
    dtype = common_dtype([o for outs in per_edge for o in outs])
    per_edge = [[o if o.dtype == dtype else o.to(dtype) for o in outs] for outs in per_edge]
    if drop is not None:
        masks, keep, on = drop
        if on == "edge":
            return sum(_ref.apply_drop_path(torch.ops.fastdarts.mixed_sum(outs, node_weights[e:e + 1]),
                                            masks[e], keep)
                       for e, outs in enumerate(per_edge))
        per_edge = [[o if m is None else _ref.apply_drop_path(o, m, keep) for o, m in zip(outs, ms)]
                    for outs, ms in zip(per_edge, masks, strict=True)]
    return torch.ops.fastdarts.mixed_sum([o for outs in per_edge for o in outs], node_weights)


class Network(_ref.Network):
    """The DARTS CNN supernet with fused cells; see the module docstring.

    Network(C, num_classes, layers, criterion, steps=4, multiplier=4, stem_multiplier=3,
    memory="shared"); forward(input: [N, 3, H, W]) -> logits [N, num_classes].
    ``memory`` can be changed later through the ``memory`` property.
    """

    def __init__(self, C, num_classes, layers, criterion, steps=4, multiplier=4,
                 stem_multiplier=3, memory: str = "shared"):
        if memory not in MEMORY_MODES:
            raise ValueError(f"memory must be one of {MEMORY_MODES}, got {memory!r}")
        # the reference constructor, with fused cells through its _cell hook; then every
        # MixedOp gets the memory mode (the setter), which changes no weight
        super().__init__(C, num_classes, layers, criterion, steps, multiplier, stem_multiplier)
        self.memory = memory

    def _cell(self, steps, multiplier, C_prev_prev, C_prev, C, reduction, reduction_prev) -> Cell:
        return Cell(steps, multiplier, C_prev_prev, C_prev, C, reduction, reduction_prev)

    def forward(self, input: Tensor) -> Tensor:
        """input: [N, 3, H, W] -> logits [N, num_classes]; the reference's forward, with each
        cell output's ReLU shared by the two cells it feeds (unless memory="plain")."""
        if self._memory == "plain":
            return super().forward(input)
        self._check_input(input)
        s0 = s1 = self.stem(input)
        relu_s0 = relu_s1 = None
        weights_normal = self.arch_weights(self.alphas_normal)
        weights_reduce = self.arch_weights(self.alphas_reduce)
        batched_cells = [c.why_not_batched() is None for c in self.cells]
        stats = batched.BatchNormStats() if any(batched_cells) else None
        wb = {}  # each cell type's weights in state order, once per forward
        for cell, is_batched in zip(self.cells, batched_cells, strict=True):
            weights = weights_reduce if cell.reduction else weights_normal
            if is_batched and cell.reduction not in wb:
                wb[cell.reduction] = batched.batched_weights(weights, self._steps)
            out, _, relu_s1 = cell.forward_with_relus(s0, s1, weights, relu_s0, relu_s1,
                                                      weights_b=wb.get(cell.reduction),
                                                      stats=stats)
            s0, s1, relu_s0, relu_s1 = s1, out, relu_s1, None
        if stats is not None:
            stats.apply()
        out = self.global_pooling(s1)
        return self.classifier(out.view(out.size(0), -1))

    @property
    def memory(self) -> str:
        """What the forward keeps for the backward: "plain", "shared" or "checkpoint"."""
        return self._memory

    @memory.setter
    def memory(self, mode: str) -> None:
        if mode not in MEMORY_MODES:
            raise ValueError(f"memory must be one of {MEMORY_MODES}, got {mode!r}")
        self._memory = mode
        for m in self.modules():
            if isinstance(m, MixedOp):
                m.memory = mode

    def _new_network(self) -> Network:
        """For ``new()``: a fresh fused network with the same hyperparameters and memory mode."""
        return Network(self._C, self._num_classes, self._layers, self._criterion,
                       self._steps, self._multiplier, self._stem_multiplier, memory=self._memory)
