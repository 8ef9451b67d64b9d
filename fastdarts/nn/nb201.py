"""The fused NAS-Bench-201 DARTS supernet: every node is ONE mixed sum.

A drop-in for ``fastdarts.reference.cnn.nb201.TinyNetworkDarts`` (it subclasses it:
same constructor, module tree, state_dict keys, construction order, alphas,
``genotype()``).  Only the cell's forward differs: node i gathers the outputs of every
non-``none`` op on its i incoming edges and sums them with one ``fastdarts::mixed_sum``
whose weights are the [i, K'] block of softmax(alpha) without the ``none`` column,
where the reference does i * K multiply-adds.  ``none`` is never run (its weight still
counts in the softmax).  ReLU(node j) is computed once and shared by every
ReLU-Conv-BN op on the edges leaving node j (NB201's nor_conv_1x1 and nor_conv_3x3:
2 * (3 - j) ops), not once per op.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from torch import Tensor

from ..reference.cnn import nb201 as _ref
from ..space import nb201 as S
from .mixed_op import active_columns, common_dtype

__all__ = ["SearchCell", "TinyNetworkDarts"]


def _shares_relu(op: nn.Module) -> bool:
    """Whether ``op`` is NB201's ReLUConvBN with a plain (not in-place) leading ReLU, so
    that op(x) == op.op[1:](ReLU(x)) with ReLU(x) computed elsewhere."""
    if not isinstance(op, S.ReLUConvBN):
        return False
    head = op.op[0]
    return type(head) is nn.ReLU and not head.inplace


class SearchCell(_ref.SearchCell):
    """The NB201 search cell with one ``fastdarts::mixed_sum`` per node.

    forward(inputs: [N, C, H, W], weightss: [n_edges, n_ops]) -> [N, C, H, W].
    """

    def __init__(self, C_in, C_out, stride, max_nodes, search_space="nb201", affine=False,
                 track_running_stats=False):
        super().__init__(C_in, C_out, stride, max_nodes, search_space, affine, track_running_stats)
        self._active = active_columns(self.op_names)
        self._active_ops = [k for k, name in enumerate(self.op_names) if name != "none"]
        # per node i: the rows of its edges i<-0..i-1 in weightss (a slice when contiguous)
        self._rows = []
        for i in range(1, max_nodes):
            idx = [self.edge2index[S.edge_key(i, j)] for j in range(i)]
            contiguous = idx == list(range(idx[0], idx[0] + len(idx)))
            self._rows.append(slice(idx[0], idx[-1] + 1) if contiguous else idx)

    def forward(self, inputs: Tensor, weightss: Tensor) -> Tensor:
        nodes = [inputs]
        relus: list[Tensor | None] = [None] * self.max_nodes
        for i in range(1, self.max_nodes):
            outputs = []
            for j in range(i):
                edge = self.edges[S.edge_key(i, j)]
                for k in self._active_ops:
                    op = edge[k]
                    if _shares_relu(op):
                        if relus[j] is None:
                            relus[j] = op.op[0](nodes[j])
                        outputs.append(op.op[2](op.op[1](relus[j])))
                    else:
                        outputs.append(op(nodes[j]))
            rows = self._rows[i - 1]
            w = weightss[rows] if isinstance(rows, slice) else weightss[rows, :]
            w = w[:, self._active]
            dtype = common_dtype(outputs)
            outputs = [o if o.dtype == dtype else o.to(dtype) for o in outputs]
            nodes.append(torch.ops.fastdarts.mixed_sum(outputs, w))
        return nodes[-1]


class TinyNetworkDarts(_ref.TinyNetworkDarts):
    """The NB201 DARTS supernet with fused cells; see the module docstring and the
    reference class for the constructor and shapes."""

    def _cell(self, C_in, C_out, stride, max_nodes, search_space, affine, track_running_stats):
        return SearchCell(C_in, C_out, stride, max_nodes, search_space, affine, track_running_stats)

    def _new_network(self):
        return TinyNetworkDarts(self._C, self._layerN, self.max_nodes, self._num_classes,
                                self._criterion, self._search_space, self._affine,
                                self._track_running_stats)
