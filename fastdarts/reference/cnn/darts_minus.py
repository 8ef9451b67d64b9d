"""DARTS- (Chu et al., ICLR 2021) on the DARTS CNN supernet: reference.

As in the published code (Meituan-AutoML/DARTS-, src/search/model_search.py,
src/utils.py DecayScheduler, scripts/run_darts_minus.sh): every edge's mixed op
adds ``beta * aux(x)``, an auxiliary skip that is not searched, where ``aux`` is
the identity on a stride-1 edge and its own ``FactorizedReduce(C, C, affine=False)``
on a stride-2 edge (so reduction cells get it too, with weights the weight step
trains); ``beta`` is not learned: it decays per epoch from ``beta0`` (1.0) to 0,
linearly by default: beta(e) = beta0 * (T - e) / T for epoch e = 0, 1, ... (T: 50,
the original's --decay_max_epoch, equal to its epochs), so the last of 50 epochs
runs at 0.02.  Everything else (softmax weights, loss, genotype) is DARTS'.

``beta`` is a 0-dim buffer (not in the state_dict) so that a CUDA-graph capture
reads its current value; set it with :meth:`set_aux_skip_beta`.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from ...space.genotypes import PRIMITIVES
from ...space.operations import FactorizedReduce, Identity
from . import model_search as _ms

BETA0 = 1.0         # --skip_beta (run_darts_minus.sh: beta=1)
DECAY = "linear"    # --decay (run_darts_minus.sh: DECAY_TYPE='linear')
DECAYS = ("linear", "cosine", "none")


def aux_skip_beta(epoch: int, total: int, beta0: float = BETA0, decay: str = DECAY) -> float:
    """beta of epoch ``epoch`` (0-based) for a decay over ``total`` epochs (the original's
    DecayScheduler with T_start 0, T_stop = T_max = total): linear beta0 (T - e) / T,
    cosine beta0 (1 + cos(pi e / T)) / 2, none beta0; 0 from epoch T on."""
    if decay not in DECAYS:
        raise ValueError(f"decay must be one of {DECAYS}, got {decay!r}")
    if total < 1:
        raise ValueError(f"the decay needs at least 1 epoch, got {total}")
    if decay == "none":
        return float(beta0)
    if epoch >= total:
        return 0.0
    if decay == "linear":
        return beta0 * (total - epoch) / total
    return beta0 * (1 + math.cos(math.pi * epoch / total)) / 2


def make_aux_op(C: int, stride: int) -> nn.Module:
    """The auxiliary skip of an edge: identity (stride 1) or FactorizedReduce (stride 2)."""
    return FactorizedReduce(C, C, affine=False) if stride == 2 else Identity()


class MixedOp(_ms.MixedOp):
    """sum_k w[k] * op_k(x) + beta * aux(x); ``beta`` a 0-dim tensor."""

    def __init__(self, C, stride, primitives=PRIMITIVES):
        super().__init__(C, stride, primitives)
        self.auxiliary_op = make_aux_op(C, stride)

    def forward(self, x, weights, beta):
        return super().forward(x, weights) + self.auxiliary_op(x) * beta


class Cell(_ms.Cell):
    def _mixed_op(self, C, stride):
        return MixedOp(C, stride)

    def forward(self, s0, s1, weights, beta):
        s0 = self.preprocess0(s0)
        s1 = self.preprocess1(s1)
        states = [s0, s1]
        offset = 0
        for _ in range(self._steps):
            s = sum(self._ops[offset + j](h, weights[offset + j], beta) for j, h in enumerate(states))
            offset += len(states)
            states.append(s)
        return torch.cat(states[-self._multiplier:], dim=1)


class DartsMinusMixin:
    """DARTS- on a DARTS supernet class: the auxiliary-skip coefficient ``beta``."""

    def __init__(self, *args, aux_skip_beta: float = BETA0, **kw):
        super().__init__(*args, **kw)
        self.register_buffer("aux_beta", torch.tensor(float(aux_skip_beta)).to(self.classifier.weight),
                             persistent=False)

    def set_aux_skip_beta(self, beta: float) -> None:
        """Set beta in place (a captured CUDA graph sees the new value)."""
        with torch.no_grad():
            self.aux_beta.fill_(float(beta))

    def _new_network(self):
        net = type(self)(self._C, self._num_classes, self._layers, self._criterion, self._steps,
                         self._multiplier, self._stem_multiplier, **self._new_kwargs())
        net.set_aux_skip_beta(float(self.aux_beta))
        return net

    def _new_kwargs(self):
        return {}


class Network(DartsMinusMixin, _ms.Network):
    """The reference DARTS supernet with DARTS-' auxiliary skip on every edge."""

    def _cell(self, steps, multiplier, C_prev_prev, C_prev, C, reduction, reduction_prev):
        return Cell(steps, multiplier, C_prev_prev, C_prev, C, reduction, reduction_prev)

    def forward(self, input):
        self._check_input(input)
        s0 = s1 = self.stem(input)
        weights_normal = self.arch_weights(self.alphas_normal)
        weights_reduce = self.arch_weights(self.alphas_reduce)
        beta = self.aux_beta
        for cell in self.cells:
            weights = weights_reduce if cell.reduction else weights_normal
            s0, s1 = s1, cell(s0, s1, weights, beta)
        out = self.global_pooling(s1)
        return self.classifier(out.view(out.size(0), -1))
