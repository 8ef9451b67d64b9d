"""The fused PC-DARTS supernet: per node one mixed sum for the ops, one for the bypasses.

A drop-in for ``fastdarts.reference.cnn.pc_darts.Network`` (same constructor, module
tree, state_dict, construction order, arch parameters, genotype).  An edge e = (j -> i)
of PC-DARTS outputs shuffle(cat(sum_k w_ek op_ek(x_j[:P]), bypass_j)), P = C/k, and
node i weighs its edges by b_e (the per-node softmax of the betas).  Shuffle and concat
are linear and the same for every edge, so

    node_i = sum_e b_e shuffle(cat(m_e, bypass_j)) = shuffle(cat(sum_e,k b_e w_ek op_ek(x_j[:P]),
                                                                 sum_e b_e bypass_j))

which is computed as one ``fastdarts::mixed_sum`` over every (edge, op) output with
weights b_e * w_ek (``none`` dropped: it adds zero), one over the bypass sources with
weights b_e, and one concat-and-shuffle per node (instead of one per edge).  The
bypass sources are the full states (max-pooled 2x2 once per state on a reduction
cell's stride-2 edges), summed whole and sliced after: the slice x[:, P:] would cost a
copy per edge, the extra P channels one k-th more of a cheap sum.

In training mode the ops of all edges reading one state run as the batched DARTS
supernet runs them (fastdarts/nn/batched.py: one wide chain per op family, one
``state_mixed_sum`` per state); in eval mode, or for cells the batched path does not
cover, node by node as above.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from torch import Tensor

from ..ops.mixed_sum import mixed_sum as _mixed_sum_op
from ..reference.cnn import pc_darts as _pc
from ..space.genotypes import PRIMITIVES
from . import batched
from . import mixed_op as _fused

__all__ = ["MixedOp", "Cell", "Network", "shuffle_cat"]


def shuffle_cat(op_sum: Tensor, rest: Tensor, k: int) -> Tensor:
    """channel_shuffle(cat([op_sum, rest], 1), k) in one copy: op_sum [N, P, H, W], rest
    [N, (k-1)P, H, W] (any strides) -> [N, kP, H, W]; channel i*k + g is op_sum[i] for
    g = 0 and rest[(g-1)P + i] otherwise."""
    P = op_sum.shape[1]
    if rest.dtype != op_sum.dtype:
        dtype = torch.promote_types(op_sum.dtype, rest.dtype)
        op_sum, rest = op_sum.to(dtype), rest.to(dtype)
    grouped = rest.unflatten(1, (k - 1, P)).transpose(1, 2)       # [N, P, k-1, H, W], a view
    return torch.cat([op_sum.unsqueeze(2), grouped], dim=2).flatten(1, 2)


def combined_weights(weights: Tensor, weights2: Tensor) -> Tensor:
    """[n_edges, K] op weights times [n_edges] edge weights -> [n_edges, K]."""
    return weights * weights2.unsqueeze(1)


class MixedOp(_fused.MixedOp):
    """PC-DARTS' MixedOp with the fused DARTS MixedOp on the first C/k channels.

    forward(x [N, C, H, W], weights [len(primitives)]) -> [N, C, H/stride, W/stride]."""

    def __init__(self, C: int, stride: int, k: int = 4, primitives=PRIMITIVES,
                 memory: str = "shared"):
        super().__init__(C // k, stride, primitives, memory)  # _ops first, as in PC-DARTS
        self.mp = nn.MaxPool2d(2, 2)
        self.k = k

    def forward(self, x: Tensor, weights: Tensor) -> Tensor:
        part = x.shape[1] // self.k
        out = super().forward(x[:, :part], weights)
        rest = x[:, part:]
        if out.shape[2] != x.shape[2]:
            rest = self.mp(rest)
        return shuffle_cat(out, rest, self.k)


class Cell(_pc.Cell):
    """PC-DARTS' cell (same modules) computing each node with two mixed sums and one
    shuffle; see the module docstring.

    forward(s0, s1, weights [n_edges, K], weights2 [n_edges], *, combined=None,
    weights_b=None, stats=None) -> [N, multiplier * C, H', W']; ``combined``
    (:func:`combined_weights`), ``weights_b`` (its rows in state order) and ``stats``
    are passed by the Network so they are made once per forward."""

    def __init__(self, steps, multiplier, C_prev_prev, C_prev, C, reduction, reduction_prev, k=4):
        super().__init__(steps, multiplier, C_prev_prev, C_prev, C, reduction, reduction_prev, k)
        self.batch_states = True
        self._batch_check: tuple[str] | None = None

    def _mixed_op(self, C, stride):
        return MixedOp(C, stride, self.k)

    def why_not_batched(self) -> str | None:
        """None when the ops run state by state (fastdarts/nn/batched.py), else why not."""
        if not self.batch_states:
            return "batch_states is False"
        if self._batch_check is None:
            self._batch_check = (batched.why_not_batched(self) or "",)
        if self._batch_check[0]:
            return self._batch_check[0]
        return None if self.training else "eval mode"

    def forward(self, s0: Tensor, s1: Tensor, weights: Tensor, weights2: Tensor, *,
                combined: Tensor | None = None, weights_b: Tensor | None = None,
                stats: batched.BatchNormStats | None = None) -> Tensor:
        p0, p1 = self.preprocess0(s0), self.preprocess1(s1)
        P = p1.shape[1] // self.k
        sources = []  # bypass source of each state: the state, max-pooled on stride-2 edges

        def source(j: int, state: Tensor) -> Tensor:
            if len(sources) == j:
                sources.append(self._ops[j].mp(state) if self.reduction and j < 2 else state)
            return sources[j]

        def node_output(i: int, op_sum: Tensor, states: list[Tensor]) -> Tensor:
            start = sum(2 + t for t in range(i))
            srcs = [source(j, h) for j, h in enumerate(states)]
            bypass = _mixed_sum_op(_same_dtype(srcs), weights2[start:start + len(srcs)])
            return shuffle_cat(op_sum, bypass[:, P:], self.k)

        if combined is None:
            combined = combined_weights(weights, weights2)
        if self.why_not_batched() is None:
            own = stats is None
            if own:
                stats = batched.BatchNormStats()
            if weights_b is None:
                weights_b = batched.batched_weights(combined, self._steps)
            out = batched.cell_nodes_batched(self, p0, p1, weights_b, stats,
                                             op_input=lambda j, h: h[:, :P],
                                             node_output=node_output)
            if own:
                stats.apply()
            return out
        states = [p0, p1]
        offset = 0
        for i in range(self._steps):
            E = len(states)
            edges = self._ops[offset:offset + E]
            outputs = [o for m, h in zip(edges, states, strict=True) for o in m.active_outputs(h[:, :P])]
            op_sum = _mixed_sum_op(_same_dtype(outputs), combined[offset:offset + E, edges[0]._active])
            states.append(node_output(i, op_sum, states))
            offset += E
        return torch.cat(states[-self._multiplier:], dim=1)


def _same_dtype(tensors: list[Tensor]) -> list[Tensor]:
    dtype = _fused.common_dtype(tensors)
    return [t if t.dtype == dtype else t.to(dtype) for t in tensors]


class Network(_pc.Network):
    """The PC-DARTS supernet with fused cells.

    Network(C, num_classes, layers, criterion, steps=4, multiplier=4, stem_multiplier=3, k=4);
    forward(input [N, 3, H, W]) -> logits [N, num_classes]."""

    def _cell(self, steps, multiplier, C_prev_prev, C_prev, C, reduction, reduction_prev) -> Cell:
        return Cell(steps, multiplier, C_prev_prev, C_prev, C, reduction, reduction_prev, self.k)

    def _new_network(self) -> Network:
        return Network(self._C, self._num_classes, self._layers, self._criterion,
                       self._steps, self._multiplier, self._stem_multiplier, self.k)

    def forward(self, input: Tensor) -> Tensor:
        self._check_input(input)
        s0 = s1 = self.stem(input)
        alphas = {False: self.alphas_normal, True: self.alphas_reduce}
        betas = {False: self.betas_normal, True: self.betas_reduce}
        batched_cells = [c.why_not_batched() is None for c in self.cells]
        stats = batched.BatchNormStats() if any(batched_cells) else None
        per_kind: dict[bool, tuple] = {}  # each cell kind's weights, once per forward
        for cell, is_batched in zip(self.cells, batched_cells, strict=True):
            kind = cell.reduction
            if kind not in per_kind:
                w, w2 = self.arch_weights(alphas[kind]), self.edge_weights(betas[kind])
                combined = combined_weights(w, w2)
                per_kind[kind] = (w, w2, combined, None)
            w, w2, combined, wb = per_kind[kind]
            if is_batched and wb is None:
                wb = batched.batched_weights(combined, self._steps)
                per_kind[kind] = (w, w2, combined, wb)
            s0, s1 = s1, cell(s0, s1, w, w2, combined=combined, weights_b=wb if is_batched else None,
                              stats=stats if is_batched else None)
        if stats is not None:
            stats.apply()
        out = self.global_pooling(s1)
        return self.classifier(out.view(out.size(0), -1))
