"""The primitive functions an edge of the equation graph can take.

Every primitive is evaluated in one parameterised form, ``f(a * x + b; beta)``:

- ``a`` is a multiplicative coefficient (learned for ``mult``, the ``linear_*``
  family and, with ``inner_coefficients=True``, the shape-changing functions
  logistic/exp/sin/cos/tanh, where ``f(a x)`` is a different curve from
  ``c f(x)``; fixed at 1 otherwise),
- ``b`` an additive bias (learned for ``linear`` and the ``linear_*`` forms that
  have one in AutoRA: relu, logistic, exp, sin, cos, tanh),
- ``beta`` the sharpness of softplus/softminus, ``log(1 + e^(beta z)) / beta``,
  and the learned exponent ``k`` of ``power`` and ``shifted_power``, ``z^k``.

So that no search step can produce inf/NaN, three functions are evaluated in a
guarded form, used identically by ``fit`` and ``predict``: ``exp(min(z, 30))``,
``1 / z`` regularised as ``z / (z^2 + 1e-8)`` (exact to 1e-8 relative for
``|z| > 1e-2``) and ``ln z`` taken as 0 for ``z <= 0`` (as AutoRA does);
the powers take the same convention, ``z^k`` for ``z > 0`` and 0 elsewhere
(``exp(min(k ln z, 30))``, so that ``k < 0`` near 0 stays finite).

Three primitives are ours, not AutoRA's: ``square`` (``x^2``, exact on any
domain, no constant), ``power`` (``x^k``, learned exponent: ``x^0.5``, ``x^3``,
``x^-1.5`` on positive x) and ``shifted_power`` (``(x + b)^k``: ``1/(x + 0.5)``,
``(x + 1)^2``).  ``power`` is not ``shifted_power`` with b = 0: where the data
reach x = 0, the fit of b sits on the kink of ``(x + b)^0.5`` at b = 0 and
L-BFGS stops 1e-8 short of exact (2 sqrt(x1) + x2 on the [0, 1] grid).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

EXP_MAX = 30.0
RECIPROCAL_EPS = 1e-8
BETA_MIN = 1e-2


def _reciprocal(z: Tensor) -> Tensor:
    return z / (z * z + RECIPROCAL_EPS)


def _ln(z: Tensor) -> Tensor:
    # where() alone would leak NaN gradients from log of negatives; clamp first
    return torch.where(z > 0, torch.log(z.clamp_min(1e-30)), torch.zeros_like(z))


def _power(z: Tensor, k: Tensor) -> Tensor:
    # where() alone would leak NaN gradients from log of z <= 0; clamp first
    pos = z > 0
    logz = torch.log(torch.where(pos, z, torch.ones_like(z)))
    return torch.where(pos, torch.exp((k * logz).clamp(max=EXP_MAX)), torch.zeros_like(z))


def _softplus(z: Tensor, beta: Tensor) -> Tensor:
    beta = beta.abs().clamp_min(BETA_MIN)
    return F.softplus(beta * z) / beta


@dataclass(frozen=True)
class Primitive:
    """One edge function.  ``fn(z, beta)`` with ``z = a x + b``; flags say which of
    a/b/beta are learned (``inner`` marks functions that learn ``a`` only when
    ``inner_coefficients`` is on); ``sign`` is the fixed ``a`` when it is not learned."""

    name: str
    fn: object
    learn_a: bool = False
    learn_b: bool = False
    learn_beta: bool = False
    inner: bool = False
    sign: float = 1.0
    zero: bool = False

    def n_params(self, inner_coefficients: bool) -> int:
        """Degrees of freedom of this primitive (the simplicity penalty counts them)."""
        a = self.learn_a or (self.inner and inner_coefficients)
        return int(a) + int(self.learn_b) + int(self.learn_beta)


def _ident(z, beta):
    return z


_TABLE = [
    Primitive("none", lambda z, beta: torch.zeros_like(z), zero=True),
    Primitive("add", _ident),
    Primitive("subtract", _ident, sign=-1.0),
    Primitive("mult", _ident, learn_a=True),
    Primitive("linear", _ident, learn_a=True, learn_b=True),
    Primitive("relu", lambda z, beta: torch.relu(z)),
    Primitive("linear_relu", lambda z, beta: torch.relu(z), learn_a=True, learn_b=True),
    Primitive("logistic", lambda z, beta: torch.sigmoid(z), inner=True),
    Primitive("linear_logistic", lambda z, beta: torch.sigmoid(z), learn_a=True, learn_b=True),
    Primitive("exp", lambda z, beta: torch.exp(z.clamp(max=EXP_MAX)), inner=True),
    Primitive("linear_exp", lambda z, beta: torch.exp(z.clamp(max=EXP_MAX)), learn_a=True, learn_b=True),
    Primitive("sin", lambda z, beta: torch.sin(z), inner=True),
    Primitive("linear_sin", lambda z, beta: torch.sin(z), learn_a=True, learn_b=True),
    Primitive("cos", lambda z, beta: torch.cos(z), inner=True),
    Primitive("linear_cos", lambda z, beta: torch.cos(z), learn_a=True, learn_b=True),
    Primitive("tanh", lambda z, beta: torch.tanh(z), inner=True),
    Primitive("linear_tanh", lambda z, beta: torch.tanh(z), learn_a=True, learn_b=True),
    Primitive("reciprocal", lambda z, beta: _reciprocal(z)),
    Primitive("linear_reciprocal", lambda z, beta: _reciprocal(z), learn_a=True),
    Primitive("ln", lambda z, beta: _ln(z)),
    Primitive("linear_ln", lambda z, beta: _ln(z), learn_a=True),
    Primitive("softplus", _softplus, learn_beta=True),
    Primitive("linear_softplus", _softplus, learn_a=True, learn_beta=True),
    Primitive("softminus", lambda z, beta: z - _softplus(z, beta), learn_beta=True),
    Primitive("linear_softminus", lambda z, beta: z - _softplus(z, beta), learn_a=True, learn_beta=True),
    # ours (not AutoRA's): the power laws scientists write
    Primitive("square", lambda z, beta: z * z),
    Primitive("power", _power, learn_beta=True),
    Primitive("shifted_power", _power, learn_b=True, learn_beta=True),
]

PRIMITIVES: dict[str, Primitive] = {p.name: p for p in _TABLE}
ALL_PRIMITIVE_NAMES: tuple[str, ...] = tuple(PRIMITIVES)

# AutoRA's default set, for reference and for users who want its behaviour.
AUTORA_PRIMITIVES = ("none", "add", "subtract", "linear", "linear_logistic", "mult", "linear_relu")

# Our default: AutoRA's set plus the shape functions scientists' laws are made of
# (the power laws among them: x^2, x^k, and (x + b)^k for 1/(x + b)).
DEFAULT_PRIMITIVES = ("none", "add", "subtract", "mult", "linear", "linear_logistic", "linear_exp",
                      "linear_sin", "linear_relu", "ln", "reciprocal", "square", "power", "shifted_power")


def check_primitives(primitives) -> tuple[str, ...]:
    """The primitive names as a tuple, or a ValueError naming the valid choices."""
    if isinstance(primitives, str):
        raise ValueError(f"primitives must be a sequence of names, not the string {primitives!r}")
    names = tuple(primitives)
    if not names:
        raise ValueError("primitives is empty; choose from " + ", ".join(ALL_PRIMITIVE_NAMES))
    unknown = [p for p in names if p not in PRIMITIVES]
    if unknown:
        raise ValueError(f"unknown primitive(s) {unknown}; valid primitives are: "
                         + ", ".join(ALL_PRIMITIVE_NAMES))
    if len(set(names)) != len(names):
        raise ValueError(f"primitives has duplicates: {list(names)}")
    return names


def sympy_primitive(name: str, arg, a: float, b: float, beta: float, inner_coefficients: bool):
    """The sympy expression of primitive ``name`` applied to sympy ``arg`` with its
    learned coefficients (unused ones are ignored)."""
    import sympy as sp

    from .symbolic import logistic, relu, softplus

    p = PRIMITIVES[name]
    if p.zero:
        return sp.Integer(0)
    use_a = p.learn_a or (p.inner and inner_coefficients)
    # the fixed sign as an integer: a float 1.0 would print as "1.0*x1" in the unrounded sympy()
    z = (sp.Float(a) * arg if use_a else int(p.sign) * arg) + (sp.Float(b) if p.learn_b else 0)
    base = name.removeprefix("linear_")
    if base in ("add", "subtract", "mult", "linear"):
        return z
    if base == "softplus":
        return softplus(z, sp.Float(abs(beta)))
    if base == "softminus":
        return z - softplus(z, sp.Float(abs(beta)))
    if base in ("power", "shifted_power"):
        return z ** sp.Float(beta)
    funcs = {"relu": relu, "logistic": logistic, "exp": sp.exp, "sin": sp.sin, "cos": sp.cos,
             "tanh": sp.tanh, "reciprocal": lambda u: 1 / u, "ln": sp.log, "square": lambda u: u ** 2}
    return funcs[base](z)
