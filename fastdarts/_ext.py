"""Loading the compiled extension ``fastdarts._C`` (C++ CPU ops, CUDA ops).

The extension registers its ops under ``torch.ops.fastdarts_C``.  It is built
by ``pip install --no-build-isolation .``; with ``FASTDARTS_JIT=1`` a missing
extension is compiled on first use with torch.utils.cpp_extension.load (ninja).
"""

from __future__ import annotations

import functools
import glob
import os

import torch

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@functools.cache
def load() -> tuple[object | None, str]:
    """Return ``(module_or_None, reason)``; never raises."""
    try:
        from . import _C  # noqa: F401

        return _C, "built"
    except ImportError as exc:
        reason = f"fastdarts._C is not built ({exc})"
    if os.environ.get("FASTDARTS_JIT", "0") == "1":
        try:
            return _jit_build(), "jit"
        except Exception as exc:  # a failed JIT build must not break the reference path
            reason += f"; JIT build failed: {exc}"
    return None, reason


def _jit_build():
    from torch.utils.cpp_extension import load as cpp_load

    csrc = os.path.join(_ROOT, "csrc")
    sources = sorted(glob.glob(os.path.join(csrc, "*.cpp")) + glob.glob(os.path.join(csrc, "cpu", "*.cpp")))
    with_cuda = torch.cuda.is_available() and os.environ.get("FASTDARTS_SKIP_CUDA_BUILD", "0") != "1"
    flags = []
    if with_cuda:
        sources += sorted(glob.glob(os.path.join(csrc, "cuda", "*.cu")))
        flags = ["-DFASTDARTS_WITH_CUDA"]
    return cpp_load(name="fastdarts_C_jit", sources=sources, extra_cflags=["-O3"] + flags,
                    extra_cuda_cflags=["-O3", "--use_fast_math"] + flags, with_cuda=with_cuda,
                    is_python_module=False, verbose=os.environ.get("FASTDARTS_JIT_VERBOSE") == "1")


def has_op(name: str) -> bool:
    """Whether ``torch.ops.fastdarts_C.<name>`` exists (after trying to load the extension)."""
    load()
    try:
        getattr(torch.ops.fastdarts_C, name)
        return True
    except (AttributeError, RuntimeError):
        return False


def built_with_cuda() -> bool:
    load()
    try:
        return bool(torch.ops.fastdarts_C.built_with_cuda())
    except (AttributeError, RuntimeError):
        return False
