"""The one place that chooses which implementation runs each fused op.

Backends:
  ``reference``  plain PyTorch (always there; the oracle: ``fastdarts/ops/<op>_ref.py``)
  ``triton``     kernels/ (CUDA GPUs; on the CPU only under TRITON_INTERPRET=1)
  ``cuda``       csrc/cuda, through fastdarts._C (built with nvcc)
  ``cpu``        csrc/cpu, through fastdarts._C (C++ CPU kernels)

The policy is data: :data:`POLICY` says, per op, which backends exist, the order in
which ``auto`` tries them on each device type, what a backend that cannot run falls
back to, and why (the measurement or the reason behind each choice).
:func:`resolve` reads only that table; the ops' modules hold no backend logic of their
own beyond a table from backend name to implementation.

Choice, strongest first: ``set_backend(name)`` (or ``with use(name):``), the
environment variable ``FASTDARTS_BACKEND``, then ``auto`` (the first backend of the
op's order for the device type that can run here).  A requested backend that cannot
run falls back to the op's ``fallback`` (``reference``) with one warning saying how to
get it; so does a compiled backend whose fastdarts._C predates the op (a stale build).
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch

from . import _ext

BACKENDS = ("reference", "triton", "cuda", "cpu")
#: What ``--backend`` / ``FASTDARTS_BACKEND`` / :func:`set_backend` accept.
BACKEND_CHOICES = ("auto", *BACKENDS)


@dataclass(frozen=True)
class OpPolicy:
    """How one registered op picks its backend.

    backends: the implementations that exist for the op.
    auto: device type -> the order ``auto`` tries (device types not listed: ``reference``).
    fallback: what a backend that cannot run (or is not implemented) falls back to.
    ext_op: the ``torch.ops.fastdarts_C`` op the compiled backends (cuda, cpu) need;
        a fastdarts._C built before it existed falls back, with a warning.
    why: the measurement or reason behind the auto order (bench/NOTES.md has the runs).
    """

    backends: tuple[str, ...]
    auto: dict[str, tuple[str, ...]] = field(default_factory=dict)
    fallback: str = "reference"
    ext_op: str | None = None
    why: str = ""

    def auto_order(self, device_type: str) -> tuple[str, ...]:
        return self.auto.get(device_type, ("reference",))


_GPU_PREDICTED = ("GPU order: a prediction, not a measurement (no GPU in the sessions that "
                  "wrote the kernels; bench/gpu_check.sh measures it): the hand-written CUDA "
                  "kernel first, then Triton.")


def _flat_update(name: str) -> OpPolicy:
    """The policy of one of the Architect's in-place updates (fastdarts/ops/flat_update.py)."""
    return OpPolicy(
        backends=("reference", "triton", "cuda"),
        auto={"cuda": ("cuda", "triton", "reference"), "cpu": ("reference",)},
        ext_op=name,
        why="one launch per update whatever the number of parameters (bench/NOTES.md, 'The "
            "Architect's flat-buffer updates').  " + _GPU_PREDICTED + "  CPU: no C++ kernel; "
            "the reference is a few in-place torch ops over the whole buffer.")


#: op name (as passed to :func:`resolve`; backward ops share their forward's entry) -> policy
POLICY: dict[str, OpPolicy] = {
    "mixed_sum": OpPolicy(
        backends=("reference", "triton", "cuda", "cpu"),
        auto={"cuda": ("cuda", "triton", "reference"), "cpu": ("cpu", "reference")},
        ext_op="mixed_sum_forward",
        why="CPU: the C++ kernel (built with -fopenmp) beats the reference in every measured "
            "case, forward+backward at 64x16x32x32, M = 14/35: fp32 1 thread 21.8/70.9 ms vs "
            "38.1/100.4 ms, bf16 1 thread 17.8/62.5 ms vs 46.5/451 ms, and at 2 threads "
            "(bench/NOTES.md, 'mixed_sum', 'CPU, re-measured with -fopenmp').  " + _GPU_PREDICTED),
    "state_mixed_sum": OpPolicy(
        backends=("reference", "triton"),
        auto={"cuda": ("triton", "reference"), "cpu": ("reference",)},
        why="no C++/CUDA kernel yet; on the CPU Triton only runs in its interpreter (for "
            "tests, not speed)."),
    "rnn_node": OpPolicy(
        backends=("reference", "triton", "cuda"),
        auto={"cuda": ("cuda", "triton", "reference"), "cpu": ("reference",)},
        ext_op="rnn_node_forward",
        why=_GPU_PREDICTED + "  CPU: no C++ kernel; the reference runs the original's torch "
            "ops (0.86-1.05x the original per node, bench/NOTES.md, 'rnn_node')."),
    "rnn_node_bn": OpPolicy(
        backends=("reference", "triton"),
        auto={"cuda": ("triton", "reference"), "cpu": ("reference",)},
        why="no C++/CUDA kernel yet; on the CPU Triton only runs in its interpreter."),
    "virtual_step_": _flat_update("virtual_step_"),
    "perturb_": _flat_update("perturb_"),
    "sgd_step_": _flat_update("sgd_step_"),
}

_override: str | None = None
_cache: dict = {}
_warned: set = set()


def set_backend(name: str | None) -> None:
    """Force a backend for every fused op (``None`` or ``"auto"`` restores the default)."""
    global _override
    if name is not None and name not in BACKEND_CHOICES:
        raise ValueError(f"unknown backend {name!r}; choose one of {', '.join(BACKEND_CHOICES)}")
    _override = None if name == "auto" else name
    _cache.clear()


@contextlib.contextmanager
def use(name: str | None) -> Iterator[None]:
    """``with use("triton"): ...``: :func:`set_backend` for the block, then the previous
    choice again (``None``/``"auto"``: auto dispatch inside the block)."""
    previous = _override
    set_backend(name)
    try:
        yield
    finally:
        set_backend(previous)


def get_requested() -> str:
    """The backend asked for now: set_backend's, else FASTDARTS_BACKEND's, else ``auto``."""
    req = _override or os.environ.get("FASTDARTS_BACKEND", "auto") or "auto"
    if req not in BACKEND_CHOICES:
        raise ValueError(f"FASTDARTS_BACKEND={req!r} is not one of {', '.join(BACKEND_CHOICES)}")
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


def resolve(op: str, device: torch.device | str) -> str:
    """The backend that runs ``op`` (a key of :data:`POLICY`) on ``device``; cached, so
    cheap on the hot path."""
    device_type = device.type if isinstance(device, torch.device) else torch.device(device).type
    req = get_requested()
    key = (op, device_type, req, triton_interpret())
    hit = _cache.get(key)
    if hit is not None:
        return hit
    policy = POLICY[op]
    if req == "auto":
        choice = next((b for b in policy.auto_order(device_type)
                       if why_unavailable(b, device_type) is None), policy.fallback)
    elif req not in policy.backends:
        choice = _fall_back(op, policy, req, device_type, f"op {op} has no {req} implementation")
    else:
        reason = why_unavailable(req, device_type)
        choice = req if reason is None else _fall_back(op, policy, req, device_type, reason)
    if choice in ("cuda", "cpu") and policy.ext_op is not None and not _ext.has_op(policy.ext_op):
        choice = _fall_back(op, policy, choice, device_type,
                            f"fastdarts._C has no {op} kernels; rebuild it "
                            "(pip install --no-build-isolation .)")
    _cache[key] = choice
    return choice


def _fall_back(op: str, policy: OpPolicy, req: str, device_type: str, reason: str) -> str:
    _warn_once(op, req, device_type, reason, policy.fallback)
    return policy.fallback


def _warn_once(op, req, device_type, reason, fallback="reference"):
    key = (req, device_type, reason)
    if key in _warned:
        return
    _warned.add(key)
    warnings.warn(f"fastdarts: backend {req!r} cannot run {op} on {device_type}: {reason}. "
                  f"Falling back to the {fallback!r} backend (plain PyTorch).", RuntimeWarning,
                  stacklevel=4)
