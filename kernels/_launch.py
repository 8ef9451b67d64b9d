"""What every launcher in ``kernels/`` shares."""

from __future__ import annotations

import contextlib

import torch
import triton.language as tl


def on_device(t: torch.Tensor):
    """Triton launches on the *current* CUDA device and stream: make that ``t``'s device
    (tensors on another GPU, e.g. ``--device cuda:1``, would fault otherwise)."""
    return torch.cuda.device(t.device) if t.device.type == "cuda" else contextlib.nullcontext()


def acc_dtype(dtype: torch.dtype) -> tuple[torch.dtype, tl.dtype]:
    """The accumulation dtype (torch, Triton) of ``dtype``: float64 stays, the rest use float32."""
    return (torch.float64, tl.float64) if dtype == torch.float64 else (torch.float32, tl.float32)
