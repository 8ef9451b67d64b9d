"""fastdarts: fast, faithful Differentiable Architecture Search."""

from . import genotypes, reference
from .genotypes import Genotype, RNNGenotype

__version__ = "0.1.0"

__all__ = ["genotypes", "reference", "Genotype", "RNNGenotype", "__version__"]
