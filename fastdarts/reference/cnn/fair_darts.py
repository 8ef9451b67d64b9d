"""FairDARTS (Chu et al., ECCV 2020) on the DARTS CNN supernet: reference.

What differs from DARTS, as in the published code (xiaomi-automl/FairDARTS,
fairdarts/model_search.py, separate_loss.py, utils.parse, train_search.py):

- op weights are sigmoid(alpha), each op on its own, not a softmax over the edge;
- alphas start at exactly 0 (sigmoid 0.5), not 1e-3 * randn;
- the architecture loss adds ``w * L01`` with the zero-one loss
  L01 = -mean((sigmoid(alpha) - 0.5)^2) over both cells' alphas (w = 10);
- the genotype keeps, per node, the two edges with the largest weight (as DARTS)
  and on each its best op only if that weight is >= the threshold (0.85;
  ``threshold_sparse``): a node keeps 2, 1 or 0 edges.
- its op set has no ``none``.  Here the ``none`` column stays (the alphas keep
  DARTS' [14, 8] shape and the fused kernels their layout) but is inert: its
  weight is 0, it is left out of the zero-one loss and the genotype, and its
  alpha never gets a gradient, so every value is the 7-op search's.
"""

from __future__ import annotations

import torch

from ...space.genotypes import PRIMITIVES, Genotype
from .model_search import Network, num_edges

ZERO_ONE_WEIGHT = 10.0  # train_search.py --aux_loss_weight
THRESHOLD = 0.85        # train_search.py --op_threshold


def zero_one_loss(alphas, primitives=PRIMITIVES):
    """-mean((sigmoid(alpha) - 0.5)^2) over every alpha of the non-``none`` ops."""
    ops = [k for k, p in enumerate(primitives) if p != "none"]
    s = torch.cat([torch.sigmoid(a[:, ops]).reshape(-1) for a in alphas])
    return -((s - 0.5) ** 2).mean()


def parse_fair(weights, steps=4, primitives=PRIMITIVES, threshold=THRESHOLD):
    """One cell's FairDARTS genotype from its sigmoid weights [n_edges, n_ops].

    Per node: the 2 edges whose best non-``none`` weight is largest (stable sort:
    ties to the lower input), in that order; an edge whose best op (strict ``>``:
    ties to the lower op) has weight < ``threshold`` is dropped (the original's
    ``>=``).  A dropped edge is written ``('none', j)``: the genotype keeps two
    entries per node, the original's DCOCell simply has no op there.
    Returns (gene, concat): ``concat`` lists the nodes with at least one edge kept
    (the original's DCOCell concatenates only those), every node if none is kept.
    An edge reading a node left with no edge is dropped too (the original's DCOCell
    skips it).
    """
    none = primitives.index("none") if "none" in primitives else -1
    if weights.shape != (num_edges(steps), len(primitives)):
        raise ValueError(f"weights of shape {tuple(weights.shape)} do not fit a cell with "
                         f"{steps} nodes and {len(primitives)} ops")
    ops = [c for c in range(len(primitives)) if c != none]
    gene, alive = [], [True, True]
    start = 0
    for i in range(steps):
        W = weights[start:start + i + 2]
        edges = sorted(range(i + 2), key=lambda j: -max(W[j][c] for c in ops))[:2]
        kept = 0
        for j in edges:
            best = ops[0]
            for c in ops:
                if W[j][c] > W[j][best]:
                    best = c
            if W[j][best] >= threshold and alive[j]:
                gene.append((primitives[best], j))
                kept += 1
            else:
                gene.append(("none", j))
        alive.append(kept > 0)
        start += i + 2
    concat = [n + 2 for n in range(steps) if alive[n + 2]] or list(range(2, steps + 2))
    return gene, concat


class FairDARTSMixin:
    """FairDARTS on a DARTS supernet class (the reference one here, the fused one in
    fastdarts.nn): sigmoid weights, zero-one loss, threshold genotype (see the module
    docstring).  ``zero_one_weight`` and ``threshold`` can be changed later."""

    arch_weights_name = "sigmoid(alpha)"

    def __init__(self, C, num_classes, layers, criterion, steps=4, multiplier=4, stem_multiplier=3,
                 *, zero_one_weight=ZERO_ONE_WEIGHT, threshold=THRESHOLD, **kw):
        super().__init__(C, num_classes, layers, criterion, steps, multiplier, stem_multiplier, **kw)
        self.zero_one_weight = float(zero_one_weight)
        self.threshold = float(threshold)
        mask = torch.tensor([0.0 if p == "none" else 1.0 for p in PRIMITIVES])
        self.register_buffer("_op_mask", mask.to(self.classifier.weight), persistent=False)

    def _initialize_alphas(self):
        super()._initialize_alphas()
        with torch.no_grad():  # model_search.py: torch.zeros(k, num_ops)
            for a in self._arch_parameters:
                a.zero_()

    def arch_weights(self, alpha):
        """sigmoid(alpha), 0 in the (inert) ``none`` column."""
        return torch.sigmoid(alpha) * self._op_mask.to(alpha.dtype)

    def zero_one_loss(self):
        return zero_one_loss(self.arch_parameters())

    def _loss(self, input, target):
        """The architecture loss: cross entropy + w * L01 (separate_loss.ConvSeparateLoss).
        The weight step uses the cross entropy alone: L01 has no weight gradient."""
        return self._criterion(self(input), target) + self.zero_one_weight * self.zero_one_loss()

    def _new_network(self):
        return type(self)(self._C, self._num_classes, self._layers, self._criterion, self._steps,
                          self._multiplier, self._stem_multiplier,
                          zero_one_weight=self.zero_one_weight, threshold=self.threshold,
                          **self._new_kwargs())

    def _new_kwargs(self):
        """Constructor options a copy must share (the fused network's memory mode)."""
        return {}

    def genotype(self):
        normal, nc = parse_fair(self.arch_weights(self.alphas_normal).detach().cpu().numpy(),
                                self._steps, threshold=self.threshold)
        reduce, rc = parse_fair(self.arch_weights(self.alphas_reduce).detach().cpu().numpy(),
                                self._steps, threshold=self.threshold)
        return Genotype(normal=normal, normal_concat=nc, reduce=reduce, reduce_concat=rc)


class FairNetwork(FairDARTSMixin, Network):
    """The reference DARTS supernet with FairDARTS' changes (:class:`FairDARTSMixin`)."""
