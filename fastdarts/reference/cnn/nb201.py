"""NAS-Bench-201's DARTS search model (reference port of AutoDL-Projects'
``cell_searchs/search_model_darts.py`` ``TinyNetworkDarts`` and ``search_cells.py``
``NAS201SearchCell``): the oracle the fused ``fastdarts.nn.nb201`` is tested against.

Module tree and names follow NB201 (``stem``, ``cells.k.edges["i<-j"][op]``, ``lastact``,
``global_pooling``, ``classifier``), built in its order, so one seed gives the same
weights.  Differences, all on purpose: the alphas are a plain leaf tensor ``alphas``
[6, n_ops] (NB201: an ``nn.Parameter`` named ``arch_parameters``) so that
``parameters()`` is the weights alone (NB201's ``get_weights()``) and
``arch_parameters()`` is the DARTS port's method; ``forward`` returns the logits
(NB201: ``(features, logits)``); a criterion is held for ``_loss``; the candidate ops
come from an op set (``fastdarts.space.op_sets``), NB201's 5 by default.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F

from ...space import nb201 as S
from ...space.op_sets import resolve_op_set
from .._arch import ArchTensorsFollowModel


class SearchCell(nn.Module):
    """NB201's search cell: node i = sum over j < i of the mixed op on edge "i<-j",
    each mixed op sum_k weights[k] * op_k(node j) over every op, none included.

    forward(inputs: [N, C, H, W], weightss: [n_edges, n_ops]) -> node ``max_nodes - 1``.
    """

    def __init__(self, C_in, C_out, stride, max_nodes, search_space="nb201", affine=False,
                 track_running_stats=False):
        super().__init__()
        if C_in != C_out:
            raise ValueError(f"an NB201 search cell keeps its channels (C_in {C_in} != C_out "
                             f"{C_out}); op-set constructors take one C")
        self.op_names, ops = resolve_op_set(search_space)
        self.edges = nn.ModuleDict()
        self.max_nodes = max_nodes
        self.in_dim, self.out_dim = C_in, C_out
        for i in range(1, max_nodes):
            for j in range(i):
                edge = nn.ModuleList(ops[name](C_in, stride if j == 0 else 1, affine)
                                     for name in self.op_names)
                if not track_running_stats:
                    S.untrack_running_stats_(edge)
                self.edges[S.edge_key(i, j)] = edge
        self.edge_keys = sorted(self.edges.keys())
        self.edge2index = {key: i for i, key in enumerate(self.edge_keys)}
        self.num_edges = len(self.edges)

    def extra_repr(self):
        return f"{self.max_nodes} nodes, inC={self.in_dim}, outC={self.out_dim}"

    def forward(self, inputs, weightss):
        nodes = [inputs]
        for i in range(1, self.max_nodes):
            inter_nodes = []
            for j in range(i):
                key = S.edge_key(i, j)
                weights = weightss[self.edge2index[key]]
                inter_nodes.append(sum(layer(nodes[j]) * w for layer, w in zip(self.edges[key], weights)))
            nodes.append(sum(inter_nodes))
        return nodes[-1]


class TinyNetworkDarts(ArchTensorsFollowModel, nn.Module):
    """NB201's DARTS supernet (see the module docstring).

    TinyNetworkDarts(C, N, max_nodes, num_classes, criterion, search_space="nb201",
    affine=False, track_running_stats=False): ``search_space`` an op-set name or a
    mapping op name -> constructor(C, stride, affine); NB201's search: C=16, N=5,
    max_nodes=4, affine=False.  forward(input: [B, 3, H, W], H and W multiples of 4)
    -> logits [B, num_classes].
    """

    alpha_kinds = ("nb201",)  # the search log's name for the one alpha tensor

    def __init__(self, C, N, max_nodes, num_classes, criterion, search_space="nb201",
                 affine=False, track_running_stats=False):
        super().__init__()
        if isinstance(search_space, Mapping) or isinstance(search_space, str):
            self.op_names, _ = resolve_op_set(search_space)
        else:
            raise ValueError(f"search_space must be an op-set name or a mapping, got {search_space!r}")
        self._C, self._layerN, self.max_nodes = C, N, max_nodes
        self._num_classes, self._criterion = num_classes, criterion
        self._search_space, self._affine = search_space, affine
        self._track_running_stats = track_running_stats
        self.stem = nn.Sequential(nn.Conv2d(3, C, kernel_size=3, padding=1, bias=False),
                                  nn.BatchNorm2d(C))
        C_prev, num_edge, edge2index = C, None, None
        self.cells = nn.ModuleList()
        for C_curr, reduction in S.layer_plan(C, N):
            if reduction:
                cell = S.ResNetBasicblock(C_prev, C_curr, 2)
            else:
                cell = self._cell(C_prev, C_curr, 1, max_nodes, search_space, affine,
                                  track_running_stats)
                if num_edge is None:
                    num_edge, edge2index = cell.num_edges, cell.edge2index
            self.cells.append(cell)
            C_prev = cell.out_dim
        self._Layer = len(self.cells)
        self.edge2index = edge2index
        self.lastact = nn.Sequential(nn.BatchNorm2d(C_prev), nn.ReLU(inplace=True))
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(C_prev, num_classes)
        # NB201 draws its arch parameter last, after every weight: same RNG order here
        ref = self.classifier.weight
        self.alphas = (1e-3 * torch.randn(num_edge, len(self.op_names))).to(ref).requires_grad_()
        self._arch_parameters = [self.alphas]

    def _cell(self, C_in, C_out, stride, max_nodes, search_space, affine, track_running_stats):
        """One search cell (construction hook: ``fastdarts.nn.nb201`` builds its fused cell here)."""
        return SearchCell(C_in, C_out, stride, max_nodes, search_space, affine, track_running_stats)

    # -- parameters ----------------------------------------------------------------------
    def arch_parameters(self):
        return self._arch_parameters

    def get_weights(self):
        """NB201's name for the weights (everything but the alphas)."""
        return list(self.parameters())

    def get_alphas(self):
        return self._arch_parameters

    def new(self):
        """A fresh network with the same settings and a copy of the alphas."""
        model_new = self._new_network()
        model_new.to(device=self.alphas.device, dtype=self.alphas.dtype)
        with torch.no_grad():
            model_new.alphas.copy_(self.alphas)
        return model_new

    def _new_network(self):
        return TinyNetworkDarts(self._C, self._layerN, self.max_nodes, self._num_classes,
                                self._criterion, self._search_space, self._affine,
                                self._track_running_stats)

    def check_alphas(self):
        want = (len(self.edge2index), len(self.op_names))
        if tuple(self.alphas.shape) != want:
            raise ValueError(f"alphas has shape {tuple(self.alphas.shape)}; this network needs "
                             f"[{want[0]}, {want[1]}] ({want[0]} edges x {want[1]} ops)")

    # -- forward -------------------------------------------------------------------------
    def _check_input(self, input):
        if input.dim() != 4 or input.shape[1] != 3:
            raise ValueError(f"expected images of shape [N, 3, H, W], got {tuple(input.shape)}")
        if input.device != self.alphas.device:
            raise ValueError(f"input is on {input.device} but the model is on {self.alphas.device}; "
                             "move one of them (model.to(device))")
        S.check_image_size(input.shape[2], input.shape[3])
        self.check_alphas()

    def arch_weights(self, alpha):
        """The op weights of each edge: softmax over its row, as NB201's DARTS."""
        return F.softmax(alpha, dim=-1)

    def forward(self, input):
        self._check_input(input)
        weights = self.arch_weights(self.alphas)
        feature = self.stem(input)
        for cell in self.cells:
            feature = cell(feature, weights) if isinstance(cell, SearchCell) else cell(feature)
        out = self.lastact(feature)
        out = self.global_pooling(out)
        return self.classifier(out.view(out.size(0), -1))

    def _loss(self, input, target):
        return self._criterion(self(input), target)

    # -- discretisation ------------------------------------------------------------------
    def genotype(self) -> str:
        """The architecture string: the largest alpha of every edge, none included."""
        return S.derive_arch(self.alphas.detach().cpu(), self.op_names, self.max_nodes)
