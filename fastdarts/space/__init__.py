"""fastdarts.space: the search spaces (DARTS' CNN and RNN, NAS-Bench-201), shared by every layer.

``genotypes``: the op names (``PRIMITIVES``, ``RNN_PRIMITIVES``, in alpha-column
order), ``Genotype``/``RNNGenotype``, the published cells, validation and JSON I/O.
``operations``: the CNN candidate ops (``OPS``: name -> constructor(C, stride,
affine)) and their modules, with the original's attribute names, so state_dict keys
match the original's.  ``op_sets``: named candidate-op sets (``register_op_set``,
``get_op_set``; "darts" and "nb201" built in).  ``nb201``: NAS-Bench-201's ops, cell
edges, architecture strings and macro skeleton.

The reference models (``fastdarts.reference``), the fused ones (``fastdarts.nn``),
the fused RNN node (``fastdarts.ops.rnn_node``) and the evaluation networks
(``fastdarts.train``) all build from here.  This package imports nothing else of
fastdarts.
"""

from . import genotypes, operations
from .genotypes import (
    PRIMITIVES,
    RNN_PRIMITIVES,
    Genotype,
    GenotypeError,
    RNNGenotype,
)
from .op_sets import get_op_set, op_set_names, register_op_set
from .operations import OPS

register_op_set("darts", {p: OPS[p] for p in PRIMITIVES})  # the 8 DARTS ops, alpha order

from . import nb201  # noqa: E402  (registers "nb201" after "darts")

__all__ = ["genotypes", "operations", "nb201", "PRIMITIVES", "RNN_PRIMITIVES", "Genotype",
           "GenotypeError", "RNNGenotype", "OPS", "register_op_set", "get_op_set", "op_set_names"]
