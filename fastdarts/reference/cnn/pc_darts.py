"""PC-DARTS' CNN supernet (reference port of yuhuixu1993/PC-DARTS ``model_search.py``).

Xu et al., "PC-DARTS: Partial Channel Connections for Memory-Efficient Architecture
Search", ICLR 2020.  Two changes to DARTS:

* partial channels: an edge sends the first 1/k of its input's channels through the
  candidate ops (each built for C // k channels) and lets the rest bypass them; on a
  stride-2 edge the bypass goes through MaxPool2d(2, 2).  The two parts are
  concatenated (ops first) and channel-shuffled with k groups.  The code fixes k = 4;
  here it is the constructor's ``k`` (default 4).
* edge normalisation: ``betas_normal``/``betas_reduce`` [n_edges], one per edge; node
  i weighs its incoming edges by the softmax of their betas over that node's edges.

As in the code: ``arch_parameters()`` = [alphas_normal, alphas_reduce, betas_normal,
betas_reduce], drawn in that order as 1e-3 * randn; the module tree and state_dict
keys are DARTS' (plus a parameter-free ``mp`` per MixedOp), with C // k channels per
op; the genotype multiplies each edge's softmax(alpha) row by its edge weight, then
parses as DARTS does.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ...space.genotypes import PRIMITIVES, Genotype
from . import model_search as _darts
from .model_search import num_edges, parse_cnn

__all__ = ["channel_shuffle", "edge_weights", "MixedOp", "Cell", "Network", "check_partial_channels"]


def channel_shuffle(x, groups):
    """[N, C, H, W] -> [N, C, H, W]: channel g * (C // groups) + i moves to i * groups + g."""
    n, c, h, w = x.shape
    return x.view(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


def edge_weights(betas, steps):
    """betas [n_edges] -> [n_edges]: node by node (node i owns the next 2 + i entries), the
    softmax of the node's betas, as PC-DARTS' forward and genotype compute ``weights2``."""
    parts, start = [], 0
    for i in range(steps):
        parts.append(F.softmax(betas[start:start + 2 + i], dim=-1))
        start += 2 + i
    return torch.cat(parts, dim=0)


def check_partial_channels(C, k):
    """ValueError unless a PC-DARTS network with ``C`` initial channels fits ``k``: the channel
    split and shuffle need k >= 2 (k = 1 leaves an empty bypass, which the code's max-pool
    rejects) and C divisible by k (the reduction cells' 2C/k are then even, as their
    FactorizedReduce needs)."""
    if k < 2 or C % k:
        raise ValueError(f"PC-DARTS needs k >= 2 and init channels divisible by k; got C={C}, k={k}"
                         + (f": use C a multiple of {k}" if k >= 2 else ""))


class MixedOp(_darts.MixedOp):
    """sum_k weights[k] * op_k(x[:, :C/k]) beside the bypass x[:, C/k:] (max-pooled 2x2 on a
    stride-2 edge), concatenated and channel-shuffled with k groups.

    forward(x [N, C, H, W], weights [len(primitives)]) -> [N, C, H/stride, W/stride]."""

    def __init__(self, C, stride, k=4, primitives=PRIMITIVES):
        super().__init__(C // k, stride, primitives)  # self._ops first, as in PC-DARTS
        self.mp = nn.MaxPool2d(2, 2)
        self.k = k

    def forward(self, x, weights):
        part = x.shape[1] // self.k
        through, bypass = x[:, :part], x[:, part:]
        out = super().forward(through, weights)
        if out.shape[2] != x.shape[2]:  # the code's test for a reduction edge
            bypass = self.mp(bypass)
        return channel_shuffle(torch.cat([out, bypass], dim=1), self.k)


class Cell(_darts.Cell):
    """DARTS' search cell whose node i is sum_j weights2[e] * MixedOp_e(state_j, weights[e])
    over its incoming edges e = (j -> i).

    forward(s0, s1, weights [n_edges, K], weights2 [n_edges]) -> [N, multiplier * C, H', W']."""

    def __init__(self, steps, multiplier, C_prev_prev, C_prev, C, reduction, reduction_prev, k=4):
        self.k = k  # read by _mixed_op during the DARTS constructor
        super().__init__(steps, multiplier, C_prev_prev, C_prev, C, reduction, reduction_prev)

    def _mixed_op(self, C, stride):
        return MixedOp(C, stride, self.k)

    def forward(self, s0, s1, weights, weights2):
        s0 = self.preprocess0(s0)
        s1 = self.preprocess1(s1)
        states = [s0, s1]
        offset = 0
        for _ in range(self._steps):
            s = sum(weights2[offset + j] * self._ops[offset + j](h, weights[offset + j])
                    for j, h in enumerate(states))
            offset += len(states)
            states.append(s)
        return torch.cat(states[-self._multiplier:], dim=1)


class Network(_darts.Network):
    """PC-DARTS' search network: DARTS' Network with PC cells and the edge betas.

    Network(C, num_classes, layers, criterion, steps=4, multiplier=4, stem_multiplier=3, k=4);
    forward(input [N, 3, H, W]) -> logits [N, num_classes]."""

    def __init__(self, C, num_classes, layers, criterion, steps=4, multiplier=4,
                 stem_multiplier=3, k=4):
        check_partial_channels(C, k)
        self.k = k  # read by _cell during the DARTS constructor
        super().__init__(C, num_classes, layers, criterion, steps, multiplier, stem_multiplier)

    def _cell(self, steps, multiplier, C_prev_prev, C_prev, C, reduction, reduction_prev):
        return Cell(steps, multiplier, C_prev_prev, C_prev, C, reduction, reduction_prev, self.k)

    def _initialize_alphas(self):
        super()._initialize_alphas()  # alphas_normal, alphas_reduce
        n = num_edges(self._steps)
        ref = self.classifier.weight
        self.betas_normal = (1e-3 * torch.randn(n)).to(ref).requires_grad_()
        self.betas_reduce = (1e-3 * torch.randn(n)).to(ref).requires_grad_()
        self._arch_parameters = [self.alphas_normal, self.alphas_reduce,
                                 self.betas_normal, self.betas_reduce]

    def _new_network(self):
        return Network(self._C, self._num_classes, self._layers, self._criterion,
                       self._steps, self._multiplier, self._stem_multiplier, self.k)

    def check_alphas(self):
        super().check_alphas()
        n = num_edges(self._steps)
        for name in ("betas_normal", "betas_reduce"):
            b = getattr(self, name)
            if tuple(b.shape) != (n,):
                raise ValueError(f"{name} has shape {tuple(b.shape)}; this network needs [{n}] "
                                 "(one per edge)")

    def edge_weights(self, betas):
        """The edge weights of a cell from its betas (the hook a variant overrides)."""
        return edge_weights(betas, self._steps)

    def forward(self, input):
        self._check_input(input)
        s0 = s1 = self.stem(input)
        weights = {False: self.arch_weights(self.alphas_normal),
                   True: self.arch_weights(self.alphas_reduce)}
        weights2 = {False: self.edge_weights(self.betas_normal),
                    True: self.edge_weights(self.betas_reduce)}
        for cell in self.cells:
            s0, s1 = s1, cell(s0, s1, weights[cell.reduction], weights2[cell.reduction])
        out = self.global_pooling(s1)
        return self.classifier(out.view(out.size(0), -1))

    def genotype(self):
        """PC-DARTS' parse: each edge's op weights times its edge weight, then DARTS'."""
        def cell(alphas, betas):
            w = self.arch_weights(alphas) * self.edge_weights(betas).unsqueeze(1)
            return parse_cnn(w.detach().cpu().numpy(), self._steps)

        concat = list(range(2 + self._steps - self._multiplier, self._steps + 2))
        return Genotype(normal=cell(self.alphas_normal, self.betas_normal), normal_concat=concat,
                        reduce=cell(self.alphas_reduce, self.betas_reduce), reduce_concat=concat)
