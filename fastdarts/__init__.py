"""fastdarts: fast, faithful Differentiable Architecture Search."""

from . import functional, reference, space
from .architect import Architect, CNNArchitect, RNNArchitect
from .backends import available_backends, set_backend
from .nn import MixedOp
from .space import Genotype, RNNGenotype, genotypes
from .step import CaptureError, SearchStep

__version__ = "0.1.0"


def __getattr__(name):
    # Lazy: the regressor needs scikit-learn, an optional dependency (fastdarts[regression]).
    if name == "DARTSRegressor":
        from .regression import DARTSRegressor

        return DARTSRegressor
    raise AttributeError(f"module 'fastdarts' has no attribute {name!r}")

__all__ = ["genotypes", "reference", "space", "Genotype", "RNNGenotype", "__version__",
           "available_backends", "set_backend", "functional", "MixedOp", "Architect",
           "CNNArchitect", "RNNArchitect", "SearchStep", "CaptureError", "DARTSRegressor"]
