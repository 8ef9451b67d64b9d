"""Flat storage for a model's parameters and buffers.

``FlatTensors`` re-points a list of tensors (parameters or buffers) at views of
one contiguous buffer, once.  Afterwards an update of every weight (the
Architect's virtual step, a perturbation, a backup or a restore) is a single
kernel over ``.data``, and the model, its optimizer (which holds the same
Parameter objects) and autograd keep working unchanged.

Views are contiguous: a parameter stored channels_last becomes contiguous.
If something later swaps the storage of a tensor (``model.to(...)``, an
assignment to ``p.data``), :meth:`intact` turns False and the owner rebuilds.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


class FlatTensors:
    def __init__(self, tensors: Sequence[Tensor], what: str = "parameters"):
        tensors = list(tensors)
        if not tensors:
            raise ValueError(f"no {what} to flatten")
        first = tensors[0]
        for i, t in enumerate(tensors):
            if t.device != first.device or t.dtype != first.dtype:
                raise ValueError(
                    f"all {what} must share one device and dtype for the flat buffer: {what}[0] is "
                    f"{first.dtype} on {first.device} but {what}[{i}] is {t.dtype} on {t.device}; "
                    "move the model with model.to(device, dtype) first")
        self.tensors = tensors
        self.numels = [t.numel() for t in tensors]
        self.offsets = [0]
        for n in self.numels:
            self.offsets.append(self.offsets[-1] + n)
        self.data = torch.empty(self.offsets[-1], dtype=first.dtype, device=first.device)
        with torch.no_grad():
            for t, view in zip(tensors, self.views(self.data)):
                view.copy_(t)
                t.data = view
        self._ptrs = (tensors[0].data_ptr(), tensors[-1].data_ptr())

    def views(self, flat: Tensor) -> list[Tensor]:
        """Views of ``flat`` (same numel as :attr:`data`) shaped like each tensor."""
        return [flat[a:b].view(t.shape) for t, a, b in zip(self.tensors, self.offsets, self.offsets[1:])]

    def intact(self) -> bool:
        """Whether every tensor still lives in :attr:`data` (two pointer checks: the
        first and last tensors; a whole-model move changes both)."""
        return (self.tensors[0].data_ptr(), self.tensors[-1].data_ptr()) == self._ptrs and \
            self._ptrs[0] == self.data.data_ptr()

    def __len__(self) -> int:
        return len(self.tensors)


class FlatBufferGroups:
    """All buffers of a module, flattened per dtype, with save/restore in one
    copy per dtype (used to keep BatchNorm running statistics untouched by a
    forward pass, as the original's throw-away model copy did)."""

    def __init__(self, module: torch.nn.Module):
        by_key: dict = {}
        for b in module.buffers():
            by_key.setdefault((b.device, b.dtype), []).append(b)
        self.groups = [FlatTensors(bs, "buffers") for bs in by_key.values()]
        self.saved = [torch.empty_like(g.data) for g in self.groups]

    def intact(self) -> bool:
        return all(g.intact() for g in self.groups)

    def save(self) -> None:
        for g, s in zip(self.groups, self.saved):
            s.copy_(g.data)

    def restore(self) -> None:
        for g, s in zip(self.groups, self.saved):
            g.data.copy_(s)
