"""fastdarts.space: the two DARTS search spaces, shared by every layer.

``genotypes``: the op names (``PRIMITIVES``, ``RNN_PRIMITIVES``, in alpha-column
order), ``Genotype``/``RNNGenotype``, the published cells, validation and JSON I/O.
``operations``: the CNN candidate ops (``OPS``: name -> constructor(C, stride,
affine)) and their modules, with the original's attribute names, so state_dict keys
match the original's.

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
from .operations import OPS

__all__ = ["genotypes", "operations", "PRIMITIVES", "RNN_PRIMITIVES", "Genotype",
           "GenotypeError", "RNNGenotype", "OPS"]
