"""The one place that chooses which implementation runs each fused op.

Backends:
  ``reference``  plain PyTorch (always there; the oracle)
  ``triton``     kernels/ (CUDA GPUs; on the CPU only under TRITON_INTERPRET=1)
  ``cuda``       csrc/cuda, through fastdarts._C (built with nvcc)
  ``cpu``        csrc/cpu, through fastdarts._C (C++ CPU kernels)

Choice, strongest first: ``set_backend(name)``, the environment variable
``FASTDARTS_BACKEND``, then ``auto`` (the fastest available for the device:
cuda > triton > reference on GPUs, cpu > reference on CPUs).  A requested backend
that cannot run falls back to ``reference`` with one warning saying how to get it.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import warnings

import torch

from . import _ext

BACKENDS = ("reference", "triton", "cuda", "cpu")
_AUTO_ORDER = {"cuda": ("cuda", "triton", "reference"), "cpu": ("cpu", "reference")}

_override: str | None = None
_cache: dict = {}
_warned: set = set()


def set_backend(name: str | None) -> None:
    """Force a backend for every fused op (``None`` or ``"auto"`` restores the default)."""
    global _override
    if name is not None and name != "auto" and name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; choose one of auto, {', '.join(BACKENDS)}")
    _override = None if name == "auto" else name
    _cache.clear()


def get_requested() -> str:
    req = _override or os.environ.get("FASTDARTS_BACKEND", "auto") or "auto"
    if req != "auto" and req not in BACKENDS:
        raise ValueError(f"FASTDARTS_BACKEND={req!r} is not one of auto, {', '.join(BACKENDS)}")
    return req


@functools.cache
def _triton_importable() -> bool:
    return importlib.util.find_spec("triton") is not None


def triton_interpret() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def why_unavailable(backend: str, device_type: str) -> str | None:
    """None if ``backend`` can run on ``device_type``; otherwise the reason and the fix."""
    if backend == "reference":
        return None
    if backend == "triton":
        if not _triton_importable():
            return "triton is not installed (pip install triton)"
        if device_type == "cuda":
            return None
        if device_type == "cpu" and triton_interpret():
            return None
        return f"Triton kernels need a CUDA device (or TRITON_INTERPRET=1 on the CPU), not {device_type}"
    if backend in ("cuda", "cpu"):
        mod, reason = _ext.load()
        if mod is None and not _ext.has_op("built_with_cuda"):
            return (f"{reason}; build it with `pip install --no-build-isolation .` "
                    "(or set FASTDARTS_JIT=1 to compile on first use)")
        if backend == "cuda":
            if device_type != "cuda":
                return f"the cuda backend runs on CUDA tensors, not {device_type}"
            if not _ext.built_with_cuda():
                return ("fastdarts._C was built without CUDA; rebuild on a machine with nvcc "
                        "(FORCE_CUDA=1 pip install --no-build-isolation .)")
            return None
        if device_type != "cpu":
            return f"the cpu backend runs on CPU tensors, not {device_type}"
        return None
    return f"unknown backend {backend!r}"


def available_backends(device: str | torch.device | None = None) -> list[str]:
    """The backends that can run here: on ``device``'s type, or on any device if None."""
    types = [torch.device(device).type] if device is not None else (
        ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    return [b for b in BACKENDS if any(why_unavailable(b, t) is None for t in types)]


def resolve(op: str, device: torch.device, supported: tuple[str, ...] = BACKENDS) -> str:
    """The backend that runs ``op`` on ``device``; cached, so cheap on the hot path."""
    req = get_requested()
    key = (op, device.type, req, supported, triton_interpret())
    hit = _cache.get(key)
    if hit is not None:
        return hit
    if req == "auto":
        order = _AUTO_ORDER.get(device.type, ("reference",))
        choice = next(b for b in order + ("reference",)
                      if b in supported + ("reference",) and why_unavailable(b, device.type) is None)
    elif req not in supported:
        _warn_once(op, req, device.type, f"op {op} has no {req} implementation")
        choice = "reference"
    else:
        reason = why_unavailable(req, device.type)
        if reason is None:
            choice = req
        else:
            _warn_once(op, req, device.type, reason)
            choice = "reference"
    _cache[key] = choice
    return choice


def _warn_once(op, req, device_type, reason):
    key = (req, device_type, reason)
    if key in _warned:
        return
    _warned.add(key)
    warnings.warn(f"fastdarts: backend {req!r} cannot run {op} on {device_type}: {reason}. "
                  "Falling back to the 'reference' backend (plain PyTorch).", RuntimeWarning,
                  stacklevel=3)
