"""Named sets of candidate operations: the columns of a search cell's alpha.

An op set maps op names to constructors ``constructor(C, stride, affine) -> nn.Module``
(the signature of ``fastdarts.space.OPS``); its order is the alpha-column order.
``'none'`` (the zero op) is optional: where present, fused paths never run it but
its softmax weight still counts.  Built in: ``"darts"`` (the 8 DARTS ops,
``PRIMITIVES`` order) and ``"nb201"`` (NAS-Bench-201's 5 ops, its ``NAS_BENCH_201``
order).  Your own::

    from fastdarts.space import register_op_set, OPS
    register_op_set("mine", {"none": OPS["none"], "skip_connect": OPS["skip_connect"],
                             "conv_3x3": lambda C, stride, affine: MyConv(C, stride, affine)})

then ``TinyNetworkDarts(..., search_space="mine")`` or ``fastdarts search cnn --space
nb201 --op_set mine`` (register it in code that runs before the search).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType

import torch.nn as nn

OpConstructor = Callable[[int, int, bool], nn.Module]

_OP_SETS: dict[str, Mapping[str, OpConstructor]] = {}


def register_op_set(name: str, ops: Mapping[str, OpConstructor], *,
                    replace: bool = False) -> Mapping[str, OpConstructor]:
    """Register ``ops`` (op name -> constructor(C, stride, affine)) as ``name``; returns
    the stored read-only copy.  ValueError for a taken name (unless ``replace``), an
    empty set, a non-string name or a constructor that is not callable, or a set whose
    only op is 'none'."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"an op set needs a non-empty string name, got {name!r}")
    if name in _OP_SETS and not replace:
        raise ValueError(f"an op set named {name!r} is already registered; pass replace=True "
                         "to replace it")
    if not isinstance(ops, Mapping) or not ops:
        raise ValueError(f"op set {name!r} must be a non-empty mapping of op name -> "
                         "constructor(C, stride, affine)")
    for op, ctor in ops.items():
        if not isinstance(op, str) or not op:
            raise ValueError(f"op set {name!r}: op names must be non-empty strings, got {op!r}")
        if not callable(ctor):
            raise ValueError(f"op set {name!r}: the constructor of {op!r} is not callable "
                             "(expected constructor(C, stride, affine) -> nn.Module)")
    if all(op == "none" for op in ops):
        raise ValueError(f"op set {name!r} has only 'none'; add at least one op that computes "
                         "something")
    stored = MappingProxyType(dict(ops))
    _OP_SETS[name] = stored
    return stored


def get_op_set(name: str) -> Mapping[str, OpConstructor]:
    """The op set registered as ``name`` (read-only, in alpha-column order); ValueError
    listing the known sets for an unknown name."""
    try:
        return _OP_SETS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown op set {name!r}; known: {', '.join(_OP_SETS)} "
                         "(register yours with fastdarts.space.register_op_set)") from None


def op_set_names() -> list[str]:
    """The registered op sets, in registration order."""
    return list(_OP_SETS)


def resolve_op_set(spec) -> tuple[list[str], Mapping[str, OpConstructor]]:
    """(op names, op set) of a registered name or of a mapping given directly."""
    ops = get_op_set(spec) if isinstance(spec, str) else spec
    if not isinstance(ops, Mapping) or not ops or not all(callable(c) for c in ops.values()):
        raise ValueError(f"expected an op-set name ({', '.join(_OP_SETS)}) or a mapping of op "
                         f"name -> constructor(C, stride, affine), got {spec!r}")
    if all(op == "none" for op in ops):
        raise ValueError("an op set needs at least one op besides 'none'")
    return list(ops), ops
