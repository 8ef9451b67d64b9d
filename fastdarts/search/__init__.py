"""The DARTS searches (the original train_search.py, CNN and RNN) on the loop
engine of :mod:`fastdarts.loop`.

- :mod:`.cnn`, :mod:`.rnn`: config, build and run of each search.
- :mod:`.callbacks`: the architecture step, data-parallel averaging, the log.
- :mod:`.outputs`: the files a search writes (genotypes, DOT cells, alpha plot).
- :mod:`.checkpoint`: exact resume; :mod:`.seeds`: several seeds at once;
  :mod:`.models`: fused or reference classes.
"""

from .checkpoint import Checkpoint
from .cnn import CNNSearch, CNNSearchConfig, search_cnn
from .rnn import RNNSearch, RNNSearchConfig, search_rnn

__all__ = ["Checkpoint", "CNNSearch", "CNNSearchConfig", "search_cnn", "RNNSearch", "RNNSearchConfig",
           "search_rnn"]
