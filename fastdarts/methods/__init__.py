"""DARTS and its descendants on one core: the registry of search methods.

A method says only how a search differs from DARTS (Liu et al., 2019):

- ``defaults``: its published settings (full size, with ``--data``), and
  ``small_defaults`` for the embedded demo; a flag the user gives always wins;
- ``build_model(cfg, num_classes, criterion)``: the search model (None: the DARTS
  supernet of ``cfg.impl``);
- ``callbacks(cfg)``: what it adds to the search loop (a decaying coefficient, an
  alpha perturbation around the weight step, a Hessian monitor...);
- ``check(cfg)``: a :class:`~fastdarts.config.ConfigError` (one line) for a
  combination it cannot run, e.g. ``--unrolled`` for a first-order-only method.

The Architect, the fused mixed sums, the loop, checkpoints and outputs are shared.
``fastdarts search cnn --method NAME`` picks one; in Python,
:func:`fastdarts.search.cnn.method_config` gives a config with a method's defaults::

    from fastdarts.search.cnn import method_config, search_cnn
    engine = search_cnn(method_config("pc-darts", data="/data/cifar"))

A new method is one :func:`register` call (see the existing ones for the shape).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..config import ConfigError


@dataclass(frozen=True)
class Method:
    name: str                  # the --method value
    paper: str                 # authors, venue, year
    summary: str               # one line: what it changes in DARTS
    defaults: dict = field(default_factory=dict)        # published settings (with --data)
    small_defaults: dict = field(default_factory=dict)  # on the embedded default
    first_order_only: bool = False
    build_model: Callable[..., Any] | None = None       # (cfg, num_classes, criterion) -> model
    callbacks: Callable[..., list] | None = None        # (cfg) -> [Callback, ...]
    check: Callable[..., None] | None = None             # (cfg) -> None, or raise ConfigError

    def validate(self, cfg) -> None:
        """ConfigError (one line) when ``cfg`` asks this method for what it cannot do."""
        if self.first_order_only and getattr(cfg, "unrolled", False):
            raise ConfigError(f"--method {self.name} is first order ({self.paper}); drop --unrolled")
        if self.check is not None:
            self.check(cfg)


METHODS: dict[str, Method] = {}


def register(method: Method) -> Method:
    if method.name in METHODS:
        raise ValueError(f"a search method named {method.name!r} is already registered")
    METHODS[method.name] = method
    return method


def get(name: str) -> Method:
    try:
        return METHODS[name]
    except KeyError:
        raise ConfigError(f"--method {name}: unknown search method; known: {', '.join(METHODS)}") from None


def method_defaults(name: str, small: bool) -> dict:
    """The settings ``--method name`` changes when the user does not give them."""
    m = get(name)
    return dict(m.small_defaults if small else m.defaults)


register(Method(
    name="darts",
    paper="Liu, Simonyan and Yang, ICLR 2019",
    summary="softmax-weighted mixed ops; first or second order (--unrolled)",
))


# -- the built-in descendants: each module registers its method when imported --
from . import darts_minus, fair_darts, pc_darts, rdarts, sdarts  # noqa: E402,F401
