"""Fused drop-in modules: MixedOp, the CNN search network, the RNN search model."""

from .mixed_op import MixedOp
from .search_cnn import Cell, Network
from .search_rnn import DARTSCellSearch, RNNModelSearch

__all__ = ["MixedOp", "Cell", "Network", "DARTSCellSearch", "RNNModelSearch"]
