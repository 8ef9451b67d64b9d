"""Which search model and Architect a search builds: the fused ones or the reference port."""

from __future__ import annotations

import warnings


def model_classes(space: str, impl: str):
    """(search model class, Architect class) for ``space`` cnn|rnn|nb201 and ``impl``
    fused (fastdarts.nn + fastdarts.Architect) or reference (the port of the original).

    If the fused classes cannot be imported (a partial install or checkout), says so
    once and falls back to the reference classes, which compute the same search."""
    if impl not in ("fused", "reference"):
        raise ValueError(f"impl must be 'fused' or 'reference', got {impl!r}")
    if impl == "fused":
        try:
            from .. import nn as fused
            from ..architect import Architect

            if space == "nb201":
                from ..nn import nb201

                return nb201.TinyNetworkDarts, Architect
            return (fused.Network if space == "cnn" else fused.RNNModelSearch), Architect
        except (ImportError, AttributeError) as exc:
            warnings.warn(f"the fused search classes are not importable ({type(exc).__name__}: {exc}); "
                          "using the reference implementation instead (pass --impl reference / "
                          "impl='reference' to choose it explicitly)", RuntimeWarning, stacklevel=2)
    from ..reference import cnn, rnn

    if space == "nb201":
        return cnn.nb201.TinyNetworkDarts, cnn.Architect
    return (cnn.Network, cnn.Architect) if space == "cnn" else (rnn.RNNModelSearch, rnn.Architect)
