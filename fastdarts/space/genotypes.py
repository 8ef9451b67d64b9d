"""Genotypes of the two DARTS search spaces, the published cells, and JSON I/O.

A CNN genotype lists, for each of the 4 intermediate nodes of a cell, two
``(op_name, input_index)`` pairs; inputs 0 and 1 are the cell's two inputs and
2.. the earlier intermediate nodes.  An RNN genotype lists one pair per node
(``input_index`` 0 is the node s0 computed from x and h_prev).
"""

from __future__ import annotations

import json
import os
from collections import namedtuple

Genotype = namedtuple("Genotype", "normal normal_concat reduce reduce_concat")
# Typename "Genotype" as in the original rnn/genotypes.py, so reprs read back there.
RNNGenotype = namedtuple("Genotype", "recurrent concat")

# The order matters: alpha columns follow it, and 'none' must stay first.
PRIMITIVES = [
    "none",
    "max_pool_3x3",
    "avg_pool_3x3",
    "skip_connect",
    "sep_conv_3x3",
    "sep_conv_5x5",
    "dil_conv_3x3",
    "dil_conv_5x5",
]
RNN_PRIMITIVES = ["none", "tanh", "relu", "sigmoid", "identity"]
RNN_STEPS = 8
RNN_CONCAT = 8

# Published cells (Liu et al., 2019): V1 from the first-order search, V2 from
# the second-order search (the one reported as "DARTS").
DARTS_V1 = Genotype(
    normal=[("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("skip_connect", 0), ("sep_conv_3x3", 1),
            ("skip_connect", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("skip_connect", 2)],
    normal_concat=[2, 3, 4, 5],
    reduce=[("max_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2), ("max_pool_3x3", 0),
            ("max_pool_3x3", 0), ("skip_connect", 2), ("skip_connect", 2), ("avg_pool_3x3", 0)],
    reduce_concat=[2, 3, 4, 5],
)
DARTS_V2 = Genotype(
    normal=[("sep_conv_3x3", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("sep_conv_3x3", 1),
            ("sep_conv_3x3", 1), ("skip_connect", 0), ("skip_connect", 0), ("dil_conv_3x3", 2)],
    normal_concat=[2, 3, 4, 5],
    reduce=[("max_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2), ("max_pool_3x3", 1),
            ("max_pool_3x3", 0), ("skip_connect", 2), ("skip_connect", 2), ("max_pool_3x3", 1)],
    reduce_concat=[2, 3, 4, 5],
)
DARTS = DARTS_V2

RNN_DARTS_V1 = RNNGenotype(
    recurrent=[("relu", 0), ("relu", 1), ("tanh", 2), ("relu", 3), ("relu", 4), ("identity", 1),
               ("relu", 5), ("relu", 1)],
    concat=list(range(1, 9)),
)
RNN_DARTS_V2 = RNNGenotype(
    recurrent=[("sigmoid", 0), ("relu", 1), ("relu", 1), ("identity", 1), ("tanh", 2),
               ("sigmoid", 5), ("tanh", 3), ("relu", 5)],
    concat=list(range(1, 9)),
)
RNN_DARTS = RNN_DARTS_V2

PUBLISHED = {"DARTS_V1": DARTS_V1, "DARTS_V2": DARTS_V2, "DARTS": DARTS}
PUBLISHED_RNN = {"DARTS_V1": RNN_DARTS_V1, "DARTS_V2": RNN_DARTS_V2, "DARTS": RNN_DARTS}

AnyGenotype = Genotype | RNNGenotype


class GenotypeError(ValueError):
    """A genotype that does not describe a valid cell of its search space."""


def validate(genotype: AnyGenotype, primitives=None) -> AnyGenotype:
    """Check op names and input indices; return the genotype unchanged or raise GenotypeError.
    An NB201 architecture string (a ``str``) is checked by ``nb201.parse_arch``."""
    if isinstance(genotype, str):
        from . import nb201

        try:
            return nb201.validate_arch(genotype, list(primitives or nb201.NB201_OPS))
        except ValueError as exc:
            raise GenotypeError(str(exc)) from None
    if isinstance(genotype, RNNGenotype) or hasattr(genotype, "recurrent"):
        prims = list(primitives or RNN_PRIMITIVES)
        for i, (op, j) in enumerate(genotype.recurrent):
            _check_op(op, prims, f"recurrent node {i + 1}")
            if not isinstance(j, int) or not 0 <= j <= i:
                raise GenotypeError(f"recurrent node {i + 1} reads state {j!r}; it can read states 0..{i}")
        n_states = len(genotype.recurrent) + 1
        for c in genotype.concat:
            if not 0 <= int(c) < n_states:
                raise GenotypeError(f"concat index {c} is outside the {n_states} states of the cell")
        return genotype
    prims = list(primitives or PRIMITIVES)
    for kind in ("normal", "reduce"):
        gene = getattr(genotype, kind)
        if len(gene) % 2:
            raise GenotypeError(f"{kind} cell has {len(gene)} edges; a CNN cell has 2 per node")
        for e, (op, j) in enumerate(gene):
            node = e // 2
            _check_op(op, prims, f"{kind} node {node}")
            if not isinstance(j, int) or not 0 <= j < node + 2:
                raise GenotypeError(f"{kind} node {node} reads input {j!r}; it can read 0..{node + 1}")
        n_states = len(gene) // 2 + 2
        for c in getattr(genotype, kind + "_concat"):
            if not 0 <= int(c) < n_states:
                raise GenotypeError(f"{kind}_concat index {c} is outside the {n_states} states of the cell")
    return genotype


def _check_op(op, prims, where):
    if op not in prims:
        raise GenotypeError(f"{where} uses unknown op {op!r}; known ops: {', '.join(prims)}")


def to_dict(genotype: AnyGenotype, ops=None) -> dict:
    """A JSON-ready dict; ``range`` concat lists become plain lists.  An NB201
    architecture string gives {"space": "nb201", "nb201": string} (+ "ops" when given)."""
    if isinstance(genotype, str):
        from . import nb201

        return nb201.to_dict(genotype, ops)
    if hasattr(genotype, "recurrent"):
        return {"space": "rnn", "recurrent": [[op, int(j)] for op, j in genotype.recurrent],
                "concat": [int(c) for c in genotype.concat]}
    return {
        "space": "cnn",
        "normal": [[op, int(j)] for op, j in genotype.normal],
        "normal_concat": [int(c) for c in genotype.normal_concat],
        "reduce": [[op, int(j)] for op, j in genotype.reduce],
        "reduce_concat": [int(c) for c in genotype.reduce_concat],
    }


def from_dict(d: dict) -> AnyGenotype:
    """Inverse of :func:`to_dict`; also accepts dicts without the ``space`` key."""
    if isinstance(d, dict) and "nb201" in d:
        return validate(str(d["nb201"]), d.get("ops"))
    try:
        if "recurrent" in d:
            g = RNNGenotype(recurrent=[(str(op), int(j)) for op, j in d["recurrent"]],
                            concat=[int(c) for c in d["concat"]])
        else:
            g = Genotype(normal=[(str(op), int(j)) for op, j in d["normal"]],
                         normal_concat=[int(c) for c in d["normal_concat"]],
                         reduce=[(str(op), int(j)) for op, j in d["reduce"]],
                         reduce_concat=[int(c) for c in d["reduce_concat"]])
    except (KeyError, TypeError, ValueError) as exc:
        raise GenotypeError(
            f"not a genotype: {exc!r}; expected keys normal/normal_concat/reduce/reduce_concat "
            "(CNN) or recurrent/concat (RNN), each edge as [op_name, input_index]") from exc
    return validate(g)


def save_json(genotype: AnyGenotype, path: str | os.PathLike) -> None:
    """Write the genotype as JSON, atomically (temp file + rename)."""
    path = os.fspath(path)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(to_dict(genotype), f, indent=1)
        f.write("\n")
    os.replace(tmp, path)


def load_json(path: str | os.PathLike) -> AnyGenotype:
    with open(path) as f:
        try:
            d = json.load(f)
        except json.JSONDecodeError as exc:
            raise GenotypeError(f"{path} is not valid JSON ({exc}); write it with "
                                "fastdarts.genotypes.save_json") from exc
    return from_dict(d)


def resolve(spec: str, space: str = "cnn") -> AnyGenotype:
    """A published name (DARTS_V1, DARTS_V2, DARTS) or a path to a JSON genotype."""
    table = PUBLISHED if space == "cnn" else PUBLISHED_RNN
    if spec in table:
        return table[spec]
    if os.path.exists(spec):
        return load_json(spec)
    raise GenotypeError(f"{spec!r} is neither a published genotype ({', '.join(table)}) "
                        "nor an existing JSON file")
