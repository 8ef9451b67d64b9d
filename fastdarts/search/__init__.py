"""Search loops on a small event/callback engine."""

from .checkpoint import Checkpoint, CheckpointError
from .cnn import CNNSearch, CNNSearchConfig, search_cnn
from .engine import Callback, CancelBatch, CancelEpoch, CancelSearch, Engine

__all__ = ["Checkpoint", "CheckpointError", "CNNSearch", "CNNSearchConfig", "search_cnn", "Callback",
           "CancelBatch", "CancelEpoch", "CancelSearch", "Engine"]
