"""The NAS-Bench-201 search space (Dong and Yang, ICLR 2020; code: D-X-Y/AutoDL-Projects,
``models/cell_operations.py``, ``models/cell_searchs/search_cells.py``, ``genotypes.py``).

Cell: node 0 is the cell input, nodes 1..3 each sum one mixed op per earlier node
(edges ``"i<-j"``, j < i: 6 edges), the output is node 3.  Candidate ops, in alpha-column
order (NB201's ``NAS_BENCH_201`` list): none, skip_connect, nor_conv_1x1, nor_conv_3x3,
avg_pool_3x3.  Network: stem conv3x3(3 -> C) + BN, three stages of N search cells at
C, 2C, 4C with a ResNet basic block (stride 2) between stages, BN + ReLU, global
pool, linear; C = 16, N = 5 in NB201's DARTS runs (scripts-search/NAS-Bench-201-algos/
DARTS-V1.sh: channel=16, num_cells=5, max_nodes=4).

Search settings (exps/NAS-Bench-201-algos/DARTS-V*.py): the cells' batch norms have
affine=False and track_running_stats = the script's BN argument; the stem, the
ResNet blocks and the last BN keep PyTorch's defaults (affine, tracked).  We default
to BN=0 (track_running_stats=False: batch statistics in eval too), the value of the
script's example command; the maintainer calls it "much better than BN=1"
(AutoDL-Projects issue #70) and NATS-Bench searches that way (issue #115).

Architecture strings (``Structure.tostr``): nodes joined by ``+``, each
``|op~j|op~j|`` over its inputs j, e.g. ``|nor_conv_3x3~0|+|skip_connect~0|none~1|+|...|``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn as nn

from .op_sets import register_op_set
from .operations import Identity

# alpha-column order = NB201's NAS_BENCH_201 list; 'none' first
NB201_OPS = ["none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3"]
MAX_NODES = 4  # node 0 (input) + 3 computed nodes


class ReLUConvBN(nn.Module):
    """ReLU -> Conv(k, stride, padding, dilation, no bias) -> BN (NB201's, with
    ``track_running_stats``)."""

    def __init__(self, C_in, C_out, kernel_size, stride, padding, dilation, affine,
                 track_running_stats=True):
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(C_in, C_out, kernel_size, stride=stride, padding=padding,
                      dilation=dilation, bias=False),
            nn.BatchNorm2d(C_out, affine=affine, track_running_stats=track_running_stats),
        )

    def forward(self, x):
        return self.op(x)


class Pooling(nn.Module):
    """NB201's POOLING: an optional 1x1 ReLUConvBN when C_in != C_out, then a 3x3 pool
    (avg: count_include_pad=False).  No batch norm after the pool, unlike DARTS'."""

    def __init__(self, C_in, C_out, stride, mode, affine=True, track_running_stats=True):
        super().__init__()
        self.preprocess = (None if C_in == C_out else
                           ReLUConvBN(C_in, C_out, 1, 1, 0, 1, affine, track_running_stats))
        if mode == "avg":
            self.op = nn.AvgPool2d(3, stride=stride, padding=1, count_include_pad=False)
        elif mode == "max":
            self.op = nn.MaxPool2d(3, stride=stride, padding=1)
        else:
            raise ValueError(f"pooling mode must be 'avg' or 'max', got {mode!r}")

    def forward(self, x):
        return self.op(x if self.preprocess is None else self.preprocess(x))


class Zero(nn.Module):
    """The 'none' op: zeros of the (strided) output shape."""

    def __init__(self, C_in, C_out, stride):
        super().__init__()
        self.C_in, self.C_out, self.stride = C_in, C_out, stride
        self.is_zero = True

    def forward(self, x):
        if self.C_in == self.C_out:
            return (x if self.stride == 1 else x[:, :, ::self.stride, ::self.stride]).mul(0.0)
        shape = list(x.shape)
        shape[1] = self.C_out
        return x.new_zeros(shape)


class FactorizedReduce(nn.Module):
    """NB201's skip_connect when the shape changes: stride 2: ReLU, two 1x1 stride-2
    convs (the second on the input shifted by one pixel, zero-padded), concat, BN;
    stride 1: a 1x1 conv and BN."""

    def __init__(self, C_in, C_out, stride, affine, track_running_stats):
        super().__init__()
        self.stride, self.C_in, self.C_out = stride, C_in, C_out
        self.relu = nn.ReLU(inplace=False)
        if stride == 2:
            halves = [C_out // 2, C_out - C_out // 2]
            self.convs = nn.ModuleList(nn.Conv2d(C_in, c, 1, stride=2, padding=0, bias=False)
                                       for c in halves)
            self.pad = nn.ConstantPad2d((0, 1, 0, 1), 0)
        elif stride == 1:
            self.conv = nn.Conv2d(C_in, C_out, 1, stride=1, padding=0, bias=False)
        else:
            raise ValueError(f"FactorizedReduce stride must be 1 or 2, got {stride}")
        self.bn = nn.BatchNorm2d(C_out, affine=affine, track_running_stats=track_running_stats)

    def forward(self, x):
        if self.stride == 2:
            x = self.relu(x)
            y = self.pad(x)
            out = torch.cat([self.convs[0](x), self.convs[1](y[:, :, 1:, 1:])], dim=1)
        else:
            out = self.conv(x)  # NB201 applies no ReLU on this path
        return self.bn(out)


class ResNetBasicblock(nn.Module):
    """The block between stages: ReLUConvBN 3x3 (stride) -> ReLUConvBN 3x3, plus a
    residual (stride 2: AvgPool2d(2) + 1x1 conv).  Affine, tracked BNs (NB201's default)."""

    def __init__(self, inplanes, planes, stride, affine=True):
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"ResNetBasicblock stride must be 1 or 2, got {stride}")
        self.conv_a = ReLUConvBN(inplanes, planes, 3, stride, 1, 1, affine)
        self.conv_b = ReLUConvBN(planes, planes, 3, 1, 1, 1, affine)
        if stride == 2:
            self.downsample = nn.Sequential(
                nn.AvgPool2d(kernel_size=2, stride=2, padding=0),
                nn.Conv2d(inplanes, planes, kernel_size=1, stride=1, padding=0, bias=False))
        elif inplanes != planes:
            self.downsample = ReLUConvBN(inplanes, planes, 1, 1, 0, 1, affine)
        else:
            self.downsample = None
        self.in_dim, self.out_dim, self.stride = inplanes, planes, stride

    def forward(self, inputs):
        out = self.conv_b(self.conv_a(inputs))
        residual = inputs if self.downsample is None else self.downsample(inputs)
        return residual + out


# NB201's OPS: name -> constructor(C_in, C_out, stride, affine, track_running_stats)
OPS = {
    "none": lambda C_in, C_out, stride, affine, trs: Zero(C_in, C_out, stride),
    "avg_pool_3x3": lambda C_in, C_out, stride, affine, trs: Pooling(C_in, C_out, stride, "avg",
                                                                     affine, trs),
    "max_pool_3x3": lambda C_in, C_out, stride, affine, trs: Pooling(C_in, C_out, stride, "max",
                                                                     affine, trs),
    "nor_conv_3x3": lambda C_in, C_out, stride, affine, trs: ReLUConvBN(C_in, C_out, 3, stride, 1, 1,
                                                                        affine, trs),
    "nor_conv_1x1": lambda C_in, C_out, stride, affine, trs: ReLUConvBN(C_in, C_out, 1, stride, 0, 1,
                                                                        affine, trs),
    "skip_connect": lambda C_in, C_out, stride, affine, trs: (
        Identity() if stride == 1 and C_in == C_out
        else FactorizedReduce(C_in, C_out, stride, affine, trs)),
}


def _op_set_constructor(name: str):
    """OPS[name] in the op-set signature (C, stride, affine); tracked BNs (a network
    built with track_running_stats=False untracks them: :func:`untrack_running_stats_`)."""
    return lambda C, stride, affine: OPS[name](C, C, stride, affine, True)


register_op_set("nb201", {name: _op_set_constructor(name) for name in NB201_OPS})


def untrack_running_stats_(module: nn.Module) -> nn.Module:
    """Make every batch norm in ``module`` one built with track_running_stats=False (no
    running buffers; batch statistics in train and eval), in place.  This is how an op
    set's constructor(C, stride, affine) gets NB201's BN=0 setting."""
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.track_running_stats = False
            m.running_mean = None
            m.running_var = None
            m.num_batches_tracked = None
    return module


# -- the edges of a cell and the architecture string ------------------------------------
def edge_key(i: int, j: int) -> str:
    """NB201's name of the edge from node j to node i."""
    return f"{i}<-{j}"


def edge_keys(max_nodes: int = MAX_NODES) -> list[str]:
    """The edges in alpha-row order: NB201 sorts the key strings (``sorted(edges.keys())``),
    which is node-major (1<-0, 2<-0, 2<-1, 3<-0, ...) for up to 10 nodes."""
    return sorted(edge_key(i, j) for i in range(1, max_nodes) for j in range(i))


def arch_str(nodes: Sequence[Sequence[tuple[str, int]]]) -> str:
    """``Structure.tostr``: ``[[(op, j), ...] per node 1..]`` -> ``|op~j|...|+|...|``."""
    return "+".join("|" + "|".join(f"{op}~{j}" for op, j in node) + "|" for node in nodes)


def parse_arch(text: str, ops: Sequence[str] = NB201_OPS, max_nodes: int = MAX_NODES
               ) -> list[list[tuple[str, int]]]:
    """The nodes of an architecture string, validated: ``max_nodes - 1`` nodes, node i
    reading every earlier node 0..i-1 exactly once, ops from ``ops``.  ValueError that
    names the bad part otherwise.  Inputs come back sorted by j."""
    if not isinstance(text, str):
        raise ValueError(f"an NB201 architecture string must be a str, got {type(text).__name__}")
    parts = text.split("+")
    if len(parts) != max_nodes - 1:
        raise ValueError(f"{text!r} has {len(parts)} node(s); an NB201 cell has {max_nodes - 1} "
                         "(node strings joined by '+')")
    nodes = []
    for i, part in enumerate(parts, start=1):
        if len(part) < 2 or not part.startswith("|") or not part.endswith("|"):
            raise ValueError(f"node {i} of {text!r} is {part!r}; write it as |op~j|op~j|")
        inputs = []
        for item in part[1:-1].split("|"):
            op, sep, j = item.partition("~")
            if not sep or not j.isdigit():
                raise ValueError(f"node {i}: {item!r} is not op~input (e.g. nor_conv_3x3~0)")
            if op not in ops:
                raise ValueError(f"node {i}: unknown op {op!r} in {item!r}; known ops: "
                                 f"{', '.join(ops)}")
            inputs.append((op, int(j)))
        got = sorted(j for _, j in inputs)
        if got != list(range(i)):
            raise ValueError(f"node {i} reads inputs {got}; it must read each of 0..{i - 1} once")
        nodes.append(sorted(inputs, key=lambda e: e[1]))
    return nodes


def validate_arch(text: str, ops: Sequence[str] = NB201_OPS, max_nodes: int = MAX_NODES) -> str:
    """``text`` unchanged if it is a valid architecture string (:func:`parse_arch`)."""
    parse_arch(text, ops, max_nodes)
    return text


def derive_arch(weights, op_names: Sequence[str], max_nodes: int = MAX_NODES) -> str:
    """The architecture string of alphas or softmax weights [n_edges, n_ops]: on every
    edge the op with the largest weight, ``none`` included, as NB201's DARTS
    ``genotype()`` does (``weights.argmax()``; ties go to the first op)."""
    weights = torch.as_tensor(weights)
    keys = edge_keys(max_nodes)
    if tuple(weights.shape) != (len(keys), len(op_names)):
        raise ValueError(f"weights of shape {tuple(weights.shape)} do not fit a cell of "
                         f"{max_nodes} nodes ({len(keys)} edges) and {len(op_names)} ops")
    best = weights.detach().argmax(dim=-1).tolist()
    row = {k: r for r, k in enumerate(keys)}
    return arch_str([[(op_names[best[row[edge_key(i, j)]]], j) for j in range(i)]
                     for i in range(1, max_nodes)])


def to_dict(text: str, ops: Sequence[str] | None = None) -> dict:
    """The JSON form of an architecture string: {"space": "nb201", "nb201": text}
    (and the op names when given)."""
    d = {"space": "nb201", "nb201": text}
    if ops is not None:
        d["ops"] = list(ops)
    return d


def from_dict(d: dict) -> str:
    """Inverse of :func:`to_dict`: the validated architecture string."""
    ops = d.get("ops") or NB201_OPS
    return validate_arch(d["nb201"], ops)


# -- the macro skeleton ------------------------------------------------------------------
@dataclass(frozen=True)
class Macro:
    """NB201's network skeleton: C channels, N cells per stage, image size and classes."""

    C: int = 16
    N: int = 5
    max_nodes: int = MAX_NODES
    image_size: int = 32
    num_classes: int = 10


# the three datasets of NB201, searched and evaluated with the same skeleton
DATASETS = {"cifar10": Macro(image_size=32, num_classes=10),
            "cifar100": Macro(image_size=32, num_classes=100),
            "ImageNet16-120": Macro(image_size=16, num_classes=120)}


def layer_plan(C: int, N: int) -> list[tuple[int, bool]]:
    """(channels, is_reduction) per layer: N cells at C, a ResNet block to 2C, N cells,
    a block to 4C, N cells (NB201's layer_channels / layer_reductions)."""
    return ([(C, False)] * N + [(2 * C, True)] + [(2 * C, False)] * N + [(4 * C, True)]
            + [(4 * C, False)] * N)


def check_image_size(height: int, width: int) -> None:
    """ValueError unless both sides are multiples of 4: each of the two ResNet blocks
    halves the image, and its residual (AvgPool2d(2)) and conv branch (3x3, stride 2,
    padding 1) only agree on an even size."""
    for side, n in (("height", height), ("width", width)):
        if n < 4 or n % 4:
            raise ValueError(f"an NB201 network needs images whose sides are multiples of 4 "
                             f"(two stride-2 ResNet blocks); the {side} is {n}")
