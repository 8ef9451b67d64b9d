"""Device-independent activation-memory accounting for a forward pass.

A DARTS supernet's peak memory in a search step is dominated by what autograd keeps
for the backward: every op output and intermediate saved by a node of the graph.
:class:`SavedBytes` counts those bytes on any device (no CUDA allocator needed):

    with SavedBytes(model) as mem:
        loss = model._loss(x, y)
    mem.saved_bytes, mem.param_bytes, mem.total_bytes

Every tensor autograd saves passes through ``torch.autograd.graph.saved_tensors_hooks``;
the counter records its storage (keyed by device and ``untyped_storage().data_ptr()``),
counting each storage's ``nbytes`` once: ``relu(x)`` saved by four convs, or a view
``x[:, :, 1:, 1:]`` of a saved ``x``, cost the bytes once, as in real memory.  Storages
of the parameters are left out of ``saved_bytes`` and reported as ``param_bytes``.

:class:`PeakLiveBytes` measures the other half, the peak: the most bytes of storages
created inside its block that were alive at once (forward transients, saved tensors,
the backward's gradients and a checkpoint's recomputed intermediates), tracked per op
with a dispatch mode and freed through weak-reference finalizers on the storages.

Activation checkpointing (``torch.utils.checkpoint``, non-reentrant) keeps its region's
inputs in a closure, not through the hooks; code that checkpoints calls
:func:`note_kept` on those inputs so that the counter sees them too.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable

import torch
import torch.nn as nn
from torch import Tensor
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

__all__ = ["SavedBytes", "PeakLiveBytes", "note_kept", "saved_bytes_of", "peak_step_bytes"]

# Counters now inside their ``with`` block (a stack, so nested counters all count).
_ACTIVE: list[SavedBytes] = []


def note_kept(tensors: Iterable[Tensor]) -> None:
    """Tell the active counters (if any) that ``tensors`` are kept alive for the backward
    by something other than autograd's saved tensors (e.g. a checkpoint's inputs)."""
    if _ACTIVE:
        for counter in _ACTIVE:
            for t in tensors:
                counter._record(t)


class SavedBytes:
    """Context manager: bytes of the distinct storages autograd saves in its block.

    Args:
        model: its parameters' storages are excluded from ``saved_bytes`` and summed
            in ``param_bytes`` (optional).

    Attributes (after the block):
        saved_bytes: int, distinct storages saved for backward, parameters excluded.
        param_bytes: int, the model's parameters (0 without a model).
        total_bytes: saved_bytes + param_bytes.
        by_dtype: {torch.dtype: bytes} of the saved storages (max-pool indices are int64).
    """

    def __init__(self, model: nn.Module | None = None):
        self._params = {} if model is None else {
            self._key(p): p.untyped_storage().nbytes() for p in model.parameters()}
        self.param_bytes = sum(self._params.values())
        self._storages: dict[tuple, tuple[int, torch.dtype, object]] = {}
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, self._unpack)

    @staticmethod
    def _key(t: Tensor) -> tuple:
        return (t.device, t.untyped_storage().data_ptr())

    def _record(self, t: Tensor) -> None:
        if not isinstance(t, Tensor) or t.device.type == "meta":
            return
        key = self._key(t)
        if key in self._params or key in self._storages:
            return
        storage = t.untyped_storage()
        # The storage object is held until the counter dies: a freed storage's address
        # could otherwise be reused by a later tensor and be miscounted as a duplicate.
        self._storages[key] = (storage.nbytes(), t.dtype, storage)

    def _pack(self, t: Tensor) -> Tensor:
        self._record(t)
        return t

    @staticmethod
    def _unpack(t: Tensor) -> Tensor:
        return t

    def __enter__(self) -> SavedBytes:
        self._hooks.__enter__()
        _ACTIVE.append(self)
        return self

    def __exit__(self, *exc) -> None:
        _ACTIVE.remove(self)
        self._hooks.__exit__(*exc)

    @property
    def saved_bytes(self) -> int:
        return sum(n for n, _, _ in self._storages.values())

    @property
    def total_bytes(self) -> int:
        return self.saved_bytes + self.param_bytes

    @property
    def by_dtype(self) -> dict[torch.dtype, int]:
        out: dict[torch.dtype, int] = {}
        for n, dtype, _ in self._storages.values():
            out[dtype] = out.get(dtype, 0) + n
        return out

    def release(self) -> None:
        """Drop the held storage references (the counts stay readable)."""
        self._storages = {k: (n, d, None) for k, (n, d, _) in self._storages.items()}


def saved_bytes_of(model: nn.Module, x: Tensor, y: Tensor) -> SavedBytes:
    """Run ``model._loss(x, y)`` under a :class:`SavedBytes` counter and return it (the
    graph is dropped; call ``backward`` yourself when you want the gradients)."""
    with SavedBytes(model) as mem:
        loss = model._loss(x, y)
    del loss
    mem.release()
    return mem



class PeakLiveBytes(TorchDispatchMode):
    """Context manager: the peak bytes of storages created in its block and alive at once.

    Every aten op's output storage is counted from the op that creates it until it is
    freed (a ``weakref.finalize`` on the storage object, which PyTorch keeps alive as
    long as the storage), so the number is what a caching-free allocator would hold on
    top of what existed before the block (weights, inputs).  Views and in-place results
    reuse a counted storage.  Runs on any device; costs a Python call per op.

    Attributes: peak_bytes (int), live_bytes (int, now).
    """

    def __init__(self):
        super().__init__()
        self.live_bytes = 0
        self.peak_bytes = 0
        self._live: set[tuple] = set()

    def _free(self, key: tuple, nbytes: int) -> None:
        self._live.discard(key)
        self.live_bytes -= nbytes

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, Tensor) and t.device.type != "meta":
                storage = t.untyped_storage()
                key = (t.device, storage.data_ptr())
                if key in self._live or storage.nbytes() == 0:
                    continue
                self._live.add(key)
                self.live_bytes += storage.nbytes()
                weakref.finalize(storage, self._free, key, storage.nbytes())
        self.peak_bytes = max(self.peak_bytes, self.live_bytes)
        return out


def peak_step_bytes(model: nn.Module, x: Tensor, y: Tensor) -> int:
    """Peak bytes allocated during ``model._loss(x, y).backward()`` (parameter gradients
    included; set them to None first so that every mode allocates them alike)."""
    model.zero_grad(set_to_none=True)
    for a in getattr(model, "arch_parameters", list)():
        a.grad = None
    with PeakLiveBytes() as peak:
        model._loss(x, y).backward()
    return peak.peak_bytes
