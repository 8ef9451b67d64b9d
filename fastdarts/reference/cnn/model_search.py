"""The DARTS CNN supernet (reference port of the original ``model_search.py``).

State-dict keys and shapes equal the original's, so its checkpoints load here.
As in the original, the architecture parameters ``alphas_normal`` and
``alphas_reduce`` are plain leaf tensors (not registered parameters): they are
not in ``parameters()`` (the weight optimizer must not see them) nor in the
state_dict.  Unlike the original they follow the model through ``.to()``,
``.double()`` etc., and nothing is moved with ``.cuda()``.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ...space.genotypes import PRIMITIVES, Genotype
from ...space.operations import OPS, FactorizedReduce, Identity, ReLUConvBN, Zero
from .._arch import ArchTensorsFollowModel

DROP_PATH_ON = ("edge", "op")


def drop_path_mask(like, keep_prob):
    """One Bernoulli(keep_prob) draw per sample, [N, 1, 1, 1] in ``like``'s dtype and device,
    from the device's default generator (R-DARTS' utils.drop_path draws the same shape)."""
    return torch.empty((like.shape[0], 1, 1, 1), dtype=like.dtype, device=like.device).bernoulli_(keep_prob)


def apply_drop_path(x, mask, keep_prob):
    """x / keep_prob * mask: the surviving samples rescaled, the dropped ones zero (the
    original divides then multiplies, in place; here out of place, same order)."""
    return x.div(keep_prob).mul(mask)


def droppable(op) -> bool:
    """Whether search drop path in "op" mode drops this candidate op: all but the
    identity (skip_connect at stride 1) and ``none``."""
    return not isinstance(op, (Identity, Zero))


class MixedOp(nn.Module):
    """sum_k weights[k] * op_k(x) over all candidate ops (``none`` included)."""

    def __init__(self, C, stride, primitives=PRIMITIVES):
        super().__init__()
        self._ops = nn.ModuleList()
        for primitive in primitives:
            op = OPS[primitive](C, stride, False)
            if "pool" in primitive:
                op = nn.Sequential(op, nn.BatchNorm2d(C, affine=False))
            self._ops.append(op)

    def forward(self, x, weights):
        if weights.dim() != 1 or weights.shape[0] != len(self._ops):
            raise ValueError(f"MixedOp has {len(self._ops)} ops but got weights of shape "
                             f"{tuple(weights.shape)}; pass one row of softmax(alpha)")
        return sum(w * op(x) for w, op in zip(weights, self._ops))


class Cell(nn.Module):
    # R-DARTS(DP), search drop path (Zela et al., 2020): the probability now (0: off) and
    # where it acts, "edge" (each edge's mixed-op output, R-DARTS' code) or "op" (each
    # candidate op's output but identity and none); set through Network.set_search_drop_path
    drop_prob = 0.0
    drop_on = "edge"

    def __init__(self, steps, multiplier, C_prev_prev, C_prev, C, reduction, reduction_prev):
        super().__init__()
        self.reduction = reduction
        if reduction_prev:
            self.preprocess0 = FactorizedReduce(C_prev_prev, C, affine=False)
        else:
            self.preprocess0 = ReLUConvBN(C_prev_prev, C, 1, 1, 0, affine=False)
        self.preprocess1 = ReLUConvBN(C_prev, C, 1, 1, 0, affine=False)
        self._steps = steps
        self._multiplier = multiplier
        self._ops = nn.ModuleList()
        self._bns = nn.ModuleList()  # empty; kept so the module tree matches the original
        for i in range(self._steps):
            for j in range(2 + i):
                stride = 2 if reduction and j < 2 else 1
                self._ops.append(self._mixed_op(C, stride))

    def _mixed_op(self, C, stride):
        """The MixedOp of one edge (construction hook: ``fastdarts.nn.Cell`` builds its
        fused one here).  ``MixedOp`` is looked up when called, so the README's swap of
        ``model_search.MixedOp`` still takes effect."""
        return MixedOp(C, stride)

    def forward(self, s0, s1, weights):
        s0 = self.preprocess0(s0)
        s1 = self.preprocess1(s1)
        states = [s0, s1]
        offset = 0
        drop = self.training and self.drop_prob > 0
        for _ in range(self._steps):
            if drop:
                s = sum(self._dropped_edge(self._ops[offset + j], h, weights[offset + j])
                        for j, h in enumerate(states))
            else:
                s = sum(self._ops[offset + j](h, weights[offset + j]) for j, h in enumerate(states))
            offset += len(states)
            states.append(s)
        return torch.cat(states[-self._multiplier:], dim=1)

    def _dropped_edge(self, mixed, h, w):
        """One edge under search drop path: R-DARTS' rule (the mixed output of the edge,
        one mask per sample) or, with drop_on="op", each droppable op's output."""
        keep = 1.0 - self.drop_prob
        if self.drop_on == "edge":
            out = mixed(h, w)
            return apply_drop_path(out, drop_path_mask(h, keep), keep)
        terms = []
        for wk, op in zip(w, mixed._ops):
            y = op(h)
            if droppable(op):
                y = apply_drop_path(y, drop_path_mask(h, keep), keep)
            terms.append(wk * y)
        return sum(terms)


def num_edges(steps: int) -> int:
    """Edges of a cell with ``steps`` intermediate nodes: 2 + 3 + ... = 14 for 4."""
    return sum(2 + i for i in range(steps))


class Network(ArchTensorsFollowModel, nn.Module):
    def __init__(self, C, num_classes, layers, criterion, steps=4, multiplier=4,
                 stem_multiplier=3):
        super().__init__()
        self._C = C
        self._num_classes = num_classes
        self._layers = layers
        self._criterion = criterion
        self._steps = steps
        self._multiplier = multiplier
        self._stem_multiplier = stem_multiplier

        C_curr = stem_multiplier * C
        self.stem = nn.Sequential(
            nn.Conv2d(3, C_curr, 3, padding=1, bias=False),
            nn.BatchNorm2d(C_curr),
        )
        C_prev_prev, C_prev, C_curr = C_curr, C_curr, C
        self.cells = nn.ModuleList()
        reduction_prev = False
        for i in range(layers):
            if i in [layers // 3, 2 * layers // 3]:
                C_curr *= 2
                reduction = True
            else:
                reduction = False
            cell = self._cell(steps, multiplier, C_prev_prev, C_prev, C_curr, reduction,
                              reduction_prev)
            reduction_prev = reduction
            self.cells.append(cell)
            C_prev_prev, C_prev = C_prev, multiplier * C_curr

        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(C_prev, num_classes)
        self._initialize_alphas()

    def _cell(self, steps, multiplier, C_prev_prev, C_prev, C, reduction, reduction_prev):
        """One search cell (construction hook: ``fastdarts.nn.Network`` builds its fused
        Cell here, in the same order, so one seed gives both networks the same weights)."""
        return Cell(steps, multiplier, C_prev_prev, C_prev, C, reduction, reduction_prev)

    # -- architecture parameters ------------------------------------------------
    def _initialize_alphas(self):
        k = num_edges(self._steps)
        num_ops = len(PRIMITIVES)
        ref = self.classifier.weight
        self.alphas_normal = (1e-3 * torch.randn(k, num_ops)).to(ref).requires_grad_()
        self.alphas_reduce = (1e-3 * torch.randn(k, num_ops)).to(ref).requires_grad_()
        self._arch_parameters = [self.alphas_normal, self.alphas_reduce]

    def arch_parameters(self):
        return self._arch_parameters

    def set_search_drop_path(self, prob: float, on: str = "edge") -> None:
        """R-DARTS(DP): drop path during the search with probability ``prob`` (training mode
        only) on each edge's mixed output ("edge", R-DARTS' code) or on each candidate op
        but identity and none ("op").  ``prob`` 0 turns it off."""
        if not 0.0 <= prob < 1.0:
            raise ValueError(f"search drop path probability must be in [0, 1), got {prob}")
        if on not in DROP_PATH_ON:
            raise ValueError(f"search drop path acts on one of {DROP_PATH_ON}, got {on!r}")
        for cell in self.cells:
            cell.drop_prob, cell.drop_on = float(prob), on

    def new(self):
        """A fresh network with the same hyperparameters and a copy of the alphas
        (kept for compatibility; fastdarts' Architect never calls it)."""
        model_new = self._new_network()
        model_new.to(device=self.alphas_normal.device, dtype=self.alphas_normal.dtype)
        for x, y in zip(model_new.arch_parameters(), self.arch_parameters()):
            x.data.copy_(y.data)
        return model_new

    def _new_network(self):
        """A fresh network with this one's hyperparameters (hook: ``fastdarts.nn.Network``
        adds its memory mode)."""
        return Network(self._C, self._num_classes, self._layers, self._criterion,
                       self._steps, self._multiplier, self._stem_multiplier)

    def check_alphas(self):
        k, n = num_edges(self._steps), len(PRIMITIVES)
        for name in ("alphas_normal", "alphas_reduce"):
            a = getattr(self, name)
            if tuple(a.shape) != (k, n):
                raise ValueError(f"{name} has shape {tuple(a.shape)}; this network needs "
                                 f"[{k}, {n}] ({k} edges x {n} ops)")

    # -- forward ----------------------------------------------------------------
    def _check_input(self, input):
        """Raise ValueError unless ``input`` is [N, 3, H, W] on the model's device and the
        alphas have this network's shape."""
        if input.dim() != 4 or input.shape[1] != 3:
            raise ValueError(f"expected images of shape [N, 3, H, W], got {tuple(input.shape)}")
        if input.device != self.alphas_normal.device:
            raise ValueError(f"input is on {input.device} but the model is on "
                             f"{self.alphas_normal.device}; move one of them (model.to(device))")
        self.check_alphas()

    def forward(self, input):
        self._check_input(input)
        s0 = s1 = self.stem(input)
        weights_normal = self.arch_weights(self.alphas_normal)
        weights_reduce = self.arch_weights(self.alphas_reduce)
        for cell in self.cells:
            weights = weights_reduce if cell.reduction else weights_normal
            s0, s1 = s1, cell(s0, s1, weights)
        out = self.global_pooling(s1)
        return self.classifier(out.view(out.size(0), -1))

    def arch_weights(self, alpha):
        """The op weights of each edge from its alpha row: softmax, as in DARTS (the
        hook a search method overrides, e.g. FairDARTS' sigmoid; fastdarts.methods)."""
        return F.softmax(alpha, dim=-1)

    def _loss(self, input, target):
        logits = self(input)
        return self._criterion(logits, target)

    # -- discretisation -----------------------------------------------------------
    def genotype(self):
        concat = list(range(2 + self._steps - self._multiplier, self._steps + 2))
        return Genotype(
            normal=parse_cnn(self.arch_weights(self.alphas_normal).detach().cpu().numpy(), self._steps),
            normal_concat=concat,
            reduce=parse_cnn(self.arch_weights(self.alphas_reduce).detach().cpu().numpy(), self._steps),
            reduce_concat=concat,
        )


def parse_cnn(weights, steps=4, primitives=PRIMITIVES, k=2):
    """Discretise one cell's softmax weights [n_edges, n_ops] as the original does.

    For node i (inputs 0..i+1) keep the ``k`` incoming edges whose strongest
    non-none weight is largest, and on each the strongest non-none op.  Ties go
    to the lower index (stable sort; strict ``>`` for ops), as in the original.
    """
    none = primitives.index("none") if "none" in primitives else -1
    if weights.shape != (num_edges(steps), len(primitives)):
        raise ValueError(f"weights of shape {tuple(weights.shape)} do not fit a cell with "
                         f"{steps} nodes and {len(primitives)} ops")
    gene = []
    start, n = 0, 2
    for _ in range(steps):
        W = weights[start:start + n]
        edges = sorted(range(n), key=lambda x: -max(W[x][c] for c in range(len(W[x])) if c != none))[:k]
        for j in edges:
            k_best = None
            for c in range(len(W[j])):
                if c != none and (k_best is None or W[j][c] > W[j][k_best]):
                    k_best = c
            gene.append((primitives[k_best], j))
        start += n
        n += 1
    return gene
