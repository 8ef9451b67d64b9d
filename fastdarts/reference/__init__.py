"""fastdarts.reference: a readable, modern port of the original DARTS search.

``fastdarts.reference.cnn`` and ``fastdarts.reference.rnn`` keep the original's
class names, constructor and step signatures, attribute names and state_dict
keys.  This is the oracle the fused paths are tested against and the CPU
fallback; it is plain PyTorch and follows the device of its inputs.
"""

from . import cnn, rnn

__all__ = ["cnn", "rnn"]
