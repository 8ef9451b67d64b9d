"""Reference DARTS CNN search: the oracle every fused path is tested against."""

from ...genotypes import PRIMITIVES, Genotype
from .architect import Architect
from .model_search import Cell, MixedOp, Network, num_edges, parse_cnn
from .operations import OPS, DilConv, FactorizedReduce, Identity, ReLUConvBN, SepConv, Zero

__all__ = ["PRIMITIVES", "Genotype", "Architect", "Cell", "MixedOp", "Network", "num_edges",
           "parse_cnn", "OPS", "DilConv", "FactorizedReduce", "Identity", "ReLUConvBN", "SepConv",
           "Zero"]
