"""Fused drop-in modules: MixedOp and the CNN search network."""

from .mixed_op import MixedOp
from .search_cnn import Cell, Network

__all__ = ["MixedOp", "Cell", "Network"]
