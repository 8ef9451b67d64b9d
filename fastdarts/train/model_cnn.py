"""The DARTS evaluation network for CIFAR-10 (the original cnn/model.py), built
from any CNN genotype.

Module structure and attribute names follow the original (``stem``, ``cells.i.
preprocess0``, ``cells.i._ops.k``, ``auxiliary_head.features``, ``classifier``), so
state_dict keys equal those of the original's ``weights.pt``.  The ops come from
:mod:`fastdarts.space.operations` (one source of truth), with affine
BatchNorm as in evaluation.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ..space.genotypes import Genotype, validate
from ..space.operations import OPS, FactorizedReduce, Identity, ReLUConvBN


def drop_path(x: torch.Tensor, drop_prob: float) -> torch.Tensor:
    """The original's drop_path: zero whole samples with probability ``drop_prob`` and
    scale the kept ones by 1 / (1 - drop_prob).

    x: [B, C, H, W] (any float dtype, any memory format); returns a new tensor of the
    same shape (the original worked in place; out of place keeps autograd simple).
    The mask [B, 1, 1, 1] is drawn from the default generator of x's device.
    """
    if drop_prob <= 0.0:
        return x
    keep_prob = 1.0 - drop_prob
    mask = torch.empty(x.size(0), 1, 1, 1, device=x.device, dtype=x.dtype).bernoulli_(keep_prob)
    return x / keep_prob * mask


class Cell(nn.Module):
    """One evaluation cell: two preprocessed inputs, ``len(gene) // 2`` nodes, each the
    sum of two ops on earlier states; output the channel concat of ``concat``.

    s0: [B, C_prev_prev, H0, W0], s1: [B, C_prev, H, W] -> [B, len(concat) * C, H', W']
    (H' = H / 2 in a reduction cell)."""

    def __init__(self, genotype: Genotype, C_prev_prev: int, C_prev: int, C: int, reduction: bool,
                 reduction_prev: bool):
        super().__init__()
        if reduction_prev:
            self.preprocess0 = FactorizedReduce(C_prev_prev, C)
        else:
            self.preprocess0 = ReLUConvBN(C_prev_prev, C, 1, 1, 0)
        self.preprocess1 = ReLUConvBN(C_prev, C, 1, 1, 0)
        gene, concat = ((genotype.reduce, genotype.reduce_concat) if reduction
                        else (genotype.normal, genotype.normal_concat))
        op_names, indices = zip(*gene)
        self._steps = len(op_names) // 2
        self._concat = list(concat)
        self.multiplier = len(concat)
        self.reduction = reduction
        self._ops = nn.ModuleList()
        for name, index in zip(op_names, indices):
            stride = 2 if reduction and index < 2 else 1
            self._ops.append(OPS[name](C, stride, True))
        self._indices = list(indices)

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, drop_prob: float) -> torch.Tensor:
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        for i in range(self._steps):
            op1, op2 = self._ops[2 * i], self._ops[2 * i + 1]
            h1 = op1(states[self._indices[2 * i]])
            h2 = op2(states[self._indices[2 * i + 1]])
            if self.training and drop_prob > 0.0:
                # as the original: identities (stride-1 skip_connect) are never dropped
                if not isinstance(op1, Identity):
                    h1 = drop_path(h1, drop_prob)
                if not isinstance(op2, Identity):
                    h2 = drop_path(h2, drop_prob)
            states.append(h1 + h2)
        return torch.cat([states[i] for i in self._concat], dim=1)


class AuxiliaryHeadCIFAR(nn.Module):
    """The auxiliary classifier at 2/3 depth; expects an 8x8 input (CIFAR-10 after two
    reductions).  x: [B, C, 8, 8] -> logits [B, num_classes]."""

    def __init__(self, C: int, num_classes: int):
        super().__init__()
        self.features = nn.Sequential(
            nn.ReLU(inplace=True),
            nn.AvgPool2d(5, stride=3, padding=0, count_include_pad=False),  # 8x8 -> 2x2
            nn.Conv2d(C, 128, 1, bias=False),
            nn.BatchNorm2d(128),
            nn.ReLU(inplace=True),
            nn.Conv2d(128, 768, 2, bias=False),
            nn.BatchNorm2d(768),
            nn.ReLU(inplace=True),
        )
        self.classifier = nn.Linear(768, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] < 5 or x.shape[-2] < 5:
            raise ValueError(f"the auxiliary head pools 5x5 windows; its input is {tuple(x.shape[-2:])} "
                             "(images of at least 20x20 are needed; use 32x32 or turn the head off)")
        x = self.features(x)
        return self.classifier(x.flatten(1))


class NetworkCIFAR(nn.Module):
    """The evaluation network: stem conv3x3 (3 -> 3C) + BN, ``layers`` cells with
    reductions at layers//3 and 2*layers//3, the auxiliary head after cell
    2*layers//3 (training only), global average pool, linear.

    x: [B, 3, H, W] float -> (logits [B, num_classes], logits_aux [B, num_classes] or None).
    Set ``drop_path_prob`` (an attribute, as in the original) before training epochs.
    """

    def __init__(self, C: int, num_classes: int, layers: int, auxiliary: bool, genotype: Genotype):
        super().__init__()
        validate(genotype)
        if not hasattr(genotype, "normal"):
            raise ValueError("NetworkCIFAR needs a CNN genotype (normal/reduce cells), "
                             f"got {type(genotype).__name__} with fields {genotype._fields}")
        self._layers = layers
        self._auxiliary = auxiliary
        self.drop_path_prob = 0.0
        stem_multiplier = 3
        C_curr = stem_multiplier * C
        self.stem = nn.Sequential(nn.Conv2d(3, C_curr, 3, padding=1, bias=False), nn.BatchNorm2d(C_curr))
        C_prev_prev, C_prev, C_curr = C_curr, C_curr, C
        self.cells = nn.ModuleList()
        reduction_prev = False
        C_to_auxiliary = None
        for i in range(layers):
            reduction = i in (layers // 3, 2 * layers // 3)
            if reduction:
                C_curr *= 2
            cell = Cell(genotype, C_prev_prev, C_prev, C_curr, reduction, reduction_prev)
            reduction_prev = reduction
            self.cells.append(cell)
            C_prev_prev, C_prev = C_prev, cell.multiplier * C_curr
            if i == 2 * layers // 3:
                C_to_auxiliary = C_prev
        if auxiliary:
            self.auxiliary_head = AuxiliaryHeadCIFAR(C_to_auxiliary, num_classes)
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(C_prev, num_classes)

    def forward(self, x: torch.Tensor):
        logits_aux = None
        s0 = s1 = self.stem(x)
        for i, cell in enumerate(self.cells):
            s0, s1 = s1, cell(s0, s1, self.drop_path_prob)
            if i == 2 * self._layers // 3 and self._auxiliary and self.training:
                logits_aux = self.auxiliary_head(s1)
        out = self.global_pooling(s1)
        logits = self.classifier(out.flatten(1))
        return logits, logits_aux


def count_parameters_in_MB(model: nn.Module) -> float:
    """The original utils.count_parameters_in_MB: millions of parameters, those of the
    auxiliary head excluded (it is dropped at test time)."""
    return sum(p.numel() for name, p in model.named_parameters() if "auxiliary" not in name) / 1e6
