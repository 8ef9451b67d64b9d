"""A faster, equivalent ``_patch_builtin`` for Triton's CPU interpreter (TRITON_INTERPRET=1).

Before every kernel launch, and again at every call of a ``@triton.jit`` helper from
inside a kernel (once per program of the grid), the interpreter swaps each builtin of
``triton.language`` (and of ``tl.tensor``, ``tl.math``, ...) for a wrapper that runs it
with the interpreter's semantics.  It finds those builtins with ``inspect.getmembers``,
a sort over a few hundred attributes each time: measured on the RNN second-order
Architect test (tests/test_nn_search_rnn.py, triton-exact, 2026-12-01, triton 3.9.0, a
2-core VM), 85k such scans, 28 % of the test's time under cProfile.

This version does the scan once per namespace, while nothing is patched (``install()``
runs before any kernel), and afterwards patches exactly what the scan would find: a
member that still is the original builtin.  One that is already wrapped (a helper
called inside a kernel, whose launch wrapped it) is left alone, as the scan leaves it,
since a wrapper is not a builtin.  The kernels' results are unchanged; every Triton test
compares them with a reference either way.

Only for the test suite; left out (``install()`` returns False) where this Triton's
interpreter has another shape.
"""

from __future__ import annotations

import inspect


def install() -> bool:
    try:
        import triton.language as tl
        from triton.runtime import interpreter as interp
    except Exception:
        return False
    original = getattr(interp, "_patch_builtin", None)
    patch_attr = getattr(interp, "_patch_attr", None)
    is_builtin = getattr(getattr(tl, "core", None), "is_builtin", None)
    if original is None or patch_attr is None or is_builtin is None:
        return False
    if getattr(original, "_fastdarts_cached", False):
        return True
    try:
        params = list(inspect.signature(original).parameters)
    except (TypeError, ValueError):
        return False
    if params != ["pkg", "builder", "scope"]:
        return False

    builtins: dict[int, tuple[object, list[tuple[str, object]]]] = {}

    def scan(pkg) -> list[tuple[str, object]]:
        entry = builtins.get(id(pkg))
        if entry is None or entry[0] is not pkg:
            entry = (pkg, [(n, m) for n, m in inspect.getmembers(pkg) if is_builtin(m)])
            builtins[id(pkg)] = entry
        return entry[1]

    # scanned now, before any kernel has run and patched them
    for pkg in (tl, tl.core, tl.tensor, getattr(tl, "math", None),
                getattr(tl.core, "tensor_descriptor_base", None)):
        if pkg is not None:
            scan(pkg)

    def _patch_builtin(pkg, builder, scope):
        for name, member in scan(pkg):
            if getattr(pkg, name, None) is member:
                patch_attr(pkg, name, member, builder, scope)

    _patch_builtin._fastdarts_cached = True
    interp._patch_builtin = _patch_builtin
    return True
