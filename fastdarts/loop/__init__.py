"""The loop machinery that search, training and profiling share.

- :mod:`.engine`: the event/callback engine (``Engine``, ``Callback``, ``Cancel*``).
- :mod:`.state`: seeding, every RNG state, atomic checkpoint writes and reads.
- :mod:`.callbacks`: callbacks any loop uses (cosine lr, gradient clipping, train
  metrics, validation, TensorBoard scalars).
- :mod:`.progress`: the per-epoch progress bar on a terminal.
- :mod:`.rnn`: what the recurrent loops share (hidden-state detaching, the
  sequence-length learning-rate scaling, perplexity metrics).

Nothing here knows about architectures or genotypes: the search loops
(``fastdarts.search``), the training loops (``fastdarts.train``) and the profiler
(``fastdarts.profile``) build on it.
"""

from .engine import Callback, CancelBatch, CancelEpoch, CancelSearch, Engine
from .state import CheckpointError

__all__ = ["Callback", "CancelBatch", "CancelEpoch", "CancelSearch", "Engine", "CheckpointError"]
