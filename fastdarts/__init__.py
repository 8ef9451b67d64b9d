"""fastdarts: fast, faithful Differentiable Architecture Search."""

from . import functional, genotypes, reference
from .architect import Architect, CNNArchitect, RNNArchitect
from .backends import available_backends, set_backend
from .genotypes import Genotype, RNNGenotype
from .nn import MixedOp
from .step import CaptureError, SearchStep

__version__ = "0.1.0"

__all__ = ["genotypes", "reference", "Genotype", "RNNGenotype", "__version__",
           "available_backends", "set_backend", "functional", "MixedOp", "Architect",
           "CNNArchitect", "RNNArchitect", "SearchStep", "CaptureError"]
