"""Fused drop-in modules: MixedOp, the CNN search network, the RNN search model.

The ops come from ``fastdarts.space``.  The one import of ``fastdarts.reference`` here
is deliberate: the fused ``Network``/``Cell`` (search_cnn.py) and ``RNNModelSearch``/
``DARTSCellSearch`` (search_rnn.py) subclass the reference classes, so the constructor
is written once (the fused CNN classes override only its ``_cell``/``_mixed_op`` hooks)
and the module tree, state_dict keys and construction order cannot drift apart.
The reference never imports this package.
"""

from .mixed_op import MixedOp
from .search_cnn import Cell, Network
from .search_rnn import DARTSCellSearch, RNNModelSearch

__all__ = ["MixedOp", "Cell", "Network", "DARTSCellSearch", "RNNModelSearch"]
