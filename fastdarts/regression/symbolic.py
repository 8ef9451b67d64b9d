"""Symbolic forms of a fitted equation graph (sympy ships with torch).

Printing goes through sympy so that signs, zero terms and nesting are handled
by one well-tested printer instead of string concatenation: ``+ -2.00`` or an
empty ``k1 = `` cannot appear, and every primitive (softplus and softminus
included) has a text and a LaTeX form.
"""

from __future__ import annotations

import sympy as sp


class logistic(sp.Function):  # noqa: N801  (printed name)
    """1 / (1 + exp(-z)), printed as logistic(z) / \\sigma(z)."""

    def _latex(self, printer):
        return r"\sigma\left(" + printer._print(self.args[0]) + r"\right)"

    def _eval_rewrite_as_exp(self, z, **kwargs):
        return 1 / (1 + sp.exp(-z))


class relu(sp.Function):  # noqa: N801
    """max(z, 0), printed as ReLU(z)."""

    def _sympystr(self, printer):
        return "ReLU(" + printer._print(self.args[0]) + ")"

    def _latex(self, printer):
        return r"\operatorname{ReLU}\left(" + printer._print(self.args[0]) + r"\right)"


class softplus(sp.Function):  # noqa: N801
    """log(1 + exp(beta z)) / beta, printed as softplus(z, beta)."""

    nargs = 2

    def _latex(self, printer):
        z, beta = self.args
        return (r"\operatorname{softplus}_{" + printer._print(beta) + r"}\left(" + printer._print(z)
                + r"\right)")


def round_constants(expr, decimals: int):
    """Every floating constant of ``expr`` rounded to ``decimals`` (terms whose
    coefficient rounds to zero vanish; a coefficient of exactly 1 or -1 is dropped)."""
    reps = {}
    for f in expr.atoms(sp.Float):
        v = round(float(f), decimals)
        if v == 0:
            reps[f] = sp.Integer(0)
        elif v == int(v) and abs(v) == 1:
            reps[f] = sp.Integer(int(v))
        else:
            reps[f] = sp.Float(v, 15)
    return expr.xreplace(reps)


def count_constants(expr, decimals: int | None = None) -> int:
    """How many numbers a reader of ``expr`` sees: its floating constants, each
    occurrence counted (``51.0*ReLU(z) + 51.0*sin(w)`` shows 51.0 twice).  With
    ``decimals``, as printed (after ``round_constants``); without, every constant
    that is not 0 or +-1 to 6 significant digits (a fitted 1.0000000001 is the
    1 that multiplies nothing).  Integers (the 2 of x**2, a sign) are structure,
    not constants."""
    if decimals is not None:
        expr = round_constants(expr, decimals)
    n = 0
    for node in sp.preorder_traversal(expr):
        if isinstance(node, sp.Float):
            v = float(node)
            n += decimals is not None or float(f"{abs(v):.6g}") not in (0.0, 1.0)
    return n


def render(expr, decimals: int, output_format: str) -> str:
    """``expr`` as console text or LaTeX with constants rounded to ``decimals``."""
    expr = round_constants(expr, decimals)
    if output_format == "latex":
        return sp.latex(expr, full_prec=False)
    return sp.sstr(expr, full_prec=False)


def simplify_equation(expr):
    """Expand products and sums (exp(a z + b) -> e^b exp(a z)), merge logs/powers
    of positive quantities; never raises (returns the input when sympy gives up)."""
    try:
        out = sp.expand(expr, power_exp=False, log=False, multinomial=False)
        out = sp.powsimp(out, combine="exp")
        return out
    except Exception:  # sympy can fail on exotic nestings; printing must not
        return expr
