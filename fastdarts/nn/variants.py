"""The fused supernet for two DARTS variants that change only how ops are mixed.

* :class:`FairNetwork` (FairDARTS): the fused Network with sigmoid op weights
  (``fastdarts.reference.cnn.fair_darts``).  The mixed sums take any weights; the
  batched path drops the ``none`` column, whose sigmoid weight is masked to 0 anyway.
* :class:`DartsMinusNetwork` (DARTS-): every edge adds ``beta * aux(x)``
  (``fastdarts.reference.cnn.darts_minus``).  The auxiliary skip is one more op
  output of its edge with the fixed weight beta, in the node's single mixed sum:
  per edge the weight block gets one more column, beta (the cell's weights are
  [14, K + 1]).  In the state-batched path (normal cells, where every aux op is the
  identity, as ``skip_connect`` is) beta is added to the skip column instead:
  (w + beta) x = w x + beta x, no extra output and no extra launch per node.
  Reduction cells (a FactorizedReduce aux op with its own weights on each
  stride-2 edge) run per edge, still one ``mixed_sum`` per node.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..reference.cnn.darts_minus import DartsMinusMixin, make_aux_op
from ..reference.cnn.fair_darts import FairDARTSMixin
from ..space.genotypes import PRIMITIVES
from . import batched
from .mixed_op import MixedOp, edge_outputs
from .search_cnn import Cell, Network

__all__ = ["FairNetwork", "DartsMinusMixedOp", "DartsMinusCell", "DartsMinusNetwork"]


class FairNetwork(FairDARTSMixin, Network):
    """The fused DARTS supernet with FairDARTS' sigmoid weights, zero-one loss and
    threshold genotype; same constructor as :class:`fastdarts.nn.Network` plus
    ``zero_one_weight`` and ``threshold``."""

    def _new_kwargs(self):
        return {"memory": self.memory}


class DartsMinusMixedOp(MixedOp):
    """The fused MixedOp with DARTS-' ``auxiliary_op`` (same module tree as the reference's).
    Its weights are [K + 1]: the ops' then beta; ``active_outputs`` ends with aux(x)."""

    def __init__(self, C: int, stride: int, primitives=PRIMITIVES, memory: str = "shared"):
        super().__init__(C, stride, primitives, memory)
        self.auxiliary_op = make_aux_op(C, stride)
        K = len(self._primitives)
        a = self._active
        self._active = slice(a.start, K + 1) if isinstance(a, slice) and a.stop == K else [*a, K]

    def active_outputs(self, x: Tensor) -> list[Tensor]:
        ops = [op for p, op in zip(self._primitives, self._ops, strict=True) if p != "none"]
        return edge_outputs([*ops, self.auxiliary_op], x, self.memory)  # ReLU(x) shared with FR

    def forward(self, x: Tensor, weights: Tensor) -> Tensor:
        if weights.dim() != 1 or weights.shape[0] != len(self._ops) + 1:
            raise ValueError(f"this DARTS- MixedOp needs {len(self._ops) + 1} weights (its "
                             f"{len(self._ops)} ops' and beta), got shape {tuple(weights.shape)}")
        return super()._sum(x, weights)


class DartsMinusCell(Cell):
    """A fused search cell of DARTS- MixedOps; forward(s0, s1, weights [14, K + 1])."""

    def _mixed_op(self, C: int, stride: int) -> DartsMinusMixedOp:
        return DartsMinusMixedOp(C, stride)

    def why_not_batched(self) -> str | None:
        if self.reduction:
            return "DARTS-: the stride-2 edges' auxiliary FactorizedReduce is evaluated per edge"
        return super().why_not_batched()

    def forward_with_relus(self, s0, s1, weights, relu_s0=None, relu_s1=None, *, weights_b=None,
                           stats=None):
        if weights_b is None and self._ops[0].memory != "plain" and self.why_not_batched() is None:
            weights_b = batched.batched_weights(fold_beta(weights[:, :-1], weights[0, -1]),
                                                self._steps)
        return super().forward_with_relus(s0, s1, weights, relu_s0, relu_s1, weights_b=weights_b,
                                          stats=stats)


_SKIP = PRIMITIVES.index("skip_connect")


def fold_beta(weights: Tensor, beta: Tensor) -> Tensor:
    """weights [n, K] with beta added to the ``skip_connect`` column (stride-1 edges, where
    the auxiliary skip and skip_connect are both the identity); one launch."""
    onehot = torch.zeros(weights.shape[-1], dtype=weights.dtype, device=weights.device)
    onehot[_SKIP] = 1
    return torch.addcmul(weights, onehot, beta)


class DartsMinusNetwork(DartsMinusMixin, Network):
    """The fused DARTS supernet with DARTS-' auxiliary skip; same constructor as
    :class:`fastdarts.nn.Network` plus ``aux_skip_beta``."""

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        onehot = torch.zeros(len(PRIMITIVES))
        onehot[_SKIP] = 1
        self.register_buffer("_skip_onehot", onehot.to(self.classifier.weight), persistent=False)

    def _cell(self, steps, multiplier, C_prev_prev, C_prev, C, reduction, reduction_prev):
        return DartsMinusCell(steps, multiplier, C_prev_prev, C_prev, C, reduction, reduction_prev)

    def _new_kwargs(self):
        return {"memory": self.memory}

    def forward(self, input: Tensor) -> Tensor:
        self._check_input(input)
        s0 = s1 = self.stem(input)
        relu_s0 = relu_s1 = None
        beta = self.aux_beta
        alphas = {False: self.alphas_normal, True: self.alphas_reduce}
        batched_cells = [self._memory != "plain" and c.why_not_batched() is None for c in self.cells]
        stats = batched.BatchNormStats() if any(batched_cells) else None
        ext, wb = {}, {}  # per cell kind, once per forward: [14, K+1] weights / batched blocks
        for cell, is_batched in zip(self.cells, batched_cells, strict=True):
            kind = cell.reduction
            if is_batched and kind not in wb:
                w = self.arch_weights(alphas[kind])
                wb[kind] = batched.batched_weights(torch.addcmul(w, self._skip_onehot.to(w.dtype), beta),
                                                   self._steps)
            if not is_batched and kind not in ext:
                w = self.arch_weights(alphas[kind])
                ext[kind] = torch.cat([w, beta.to(w.dtype).expand(w.shape[0], 1)], dim=1)
            weights = ext.get(kind)
            if weights is None:  # batched: only weights_b is read
                weights = wb[kind]
            out, _, relu_s1 = cell.forward_with_relus(s0, s1, weights, relu_s0, relu_s1,
                                                      weights_b=wb.get(kind) if is_batched else None,
                                                      stats=stats)
            s0, s1, relu_s0, relu_s1 = s1, out, relu_s1, None
        if stats is not None:
            stats.apply()
        out = self.global_pooling(s1)
        return self.classifier(out.view(out.size(0), -1))
