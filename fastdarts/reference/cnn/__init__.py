"""Reference DARTS CNN search: the oracle every fused path is tested against.

The candidate ops live in ``fastdarts.space.operations``; they are re-exported here
under the original's names (``OPS``, ``SepConv``, ...) for code written like it.
"""

from ...space.genotypes import PRIMITIVES, Genotype
from ...space.operations import OPS, DilConv, FactorizedReduce, Identity, ReLUConvBN, SepConv, Zero
from . import nb201
from .architect import Architect
from .model_search import Cell, MixedOp, Network, num_edges, parse_cnn

__all__ = ["nb201", "PRIMITIVES", "Genotype", "Architect", "Cell", "MixedOp", "Network", "num_edges",
           "parse_cnn", "OPS", "DilConv", "FactorizedReduce", "Identity", "ReLUConvBN", "SepConv",
           "Zero"]
