"""Reference DARTS recurrent search: the oracle for the fused RNN paths."""

from ...space.genotypes import RNNGenotype as Genotype
from .architect import Architect
from .model_search import (
    CONCAT,
    PRIMITIVES,
    STEPS,
    DARTSCell,
    DARTSCellSearch,
    LockedDropout,
    RNNModel,
    RNNModelSearch,
    embedded_dropout,
    mask2d,
    parse_rnn,
)

__all__ = ["Genotype", "Architect", "CONCAT", "PRIMITIVES", "STEPS", "DARTSCell",
           "DARTSCellSearch", "LockedDropout", "RNNModel", "RNNModelSearch", "embedded_dropout",
           "mask2d", "parse_rnn"]
