"""Equation discovery with DARTS: ``DARTSRegressor`` (scikit-learn estimator).

Needs scikit-learn (``pip install fastdarts[data]`` or ``pip install scikit-learn``)
and sympy (a dependency of torch).
"""

from .estimator import DARTSRegressor
from .primitives import ALL_PRIMITIVE_NAMES, AUTORA_PRIMITIVES, DEFAULT_PRIMITIVES

__all__ = ["DARTSRegressor", "ALL_PRIMITIVE_NAMES", "AUTORA_PRIMITIVES", "DEFAULT_PRIMITIVES"]
