"""Cutout on the device, vectorised over the batch, and a training loader that adds it
to :class:`fastdarts.data.DeviceLoader`'s crop and flip."""

from __future__ import annotations

import torch

from ..data import DeviceLoader


def cutout_mask(B: int, H: int, W: int, length: int, generator: torch.Generator | None = None,
                device=None) -> torch.Tensor:
    """The original Cutout's masks for a batch: float32 [B, 1, H, W], 1 everywhere
    except a square of zeros per image, rows [y - length//2, y + length//2) and columns
    [x - length//2, x + length//2) clipped at the borders, with the centre (y, x)
    uniform over the H x W pixels (numpy's randint(h), randint(w) in the original).

    The centres are drawn on the CPU from ``generator`` (same masks on any device),
    one [B] draw for y, then one for x."""
    ys = torch.randint(0, H, (B,), generator=generator).to(device)
    xs = torch.randint(0, W, (B,), generator=generator).to(device)
    half = length // 2
    rows = torch.arange(H, device=device).view(1, H)
    cols = torch.arange(W, device=device).view(1, W)
    # clipping y - half at 0 and y + half at H does not change which of 0..H-1 fall inside
    in_rows = (rows >= (ys - half).view(B, 1)) & (rows < (ys + half).view(B, 1))   # [B, H]
    in_cols = (cols >= (xs - half).view(B, 1)) & (cols < (xs + half).view(B, 1))   # [B, W]
    hole = in_rows.view(B, H, 1) & in_cols.view(B, 1, W)
    return (~hole).to(torch.float32).view(B, 1, H, W)


def cutout(x: torch.Tensor, length: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """x: [B, C, H, W] (normalised, as the original applies Cutout after Normalize)
    -> x with one clipped length x length square zeroed per image (all channels)."""
    B, _, H, W = x.shape
    return x * cutout_mask(B, H, W, length, generator, x.device).to(x.dtype)


class TrainLoader(DeviceLoader):
    """DeviceLoader (random crop with 4-pixel padding, horizontal flip, normalisation)
    followed, when ``cutout_length`` > 0, by Cutout on the normalised batch, as the
    original's train transform.  The cutout centres come from the loader's own
    generator, so ``state_dict()`` still captures everything for an exact resume."""

    def __init__(self, *args, cutout_length: int = 0, **kw):
        super().__init__(*args, **kw)
        self.cutout_length = int(cutout_length)

    def _batch(self, idx: torch.Tensor):
        x, y = super()._batch(idx)
        if self.cutout_length > 0:
            x = cutout(x, self.cutout_length, self.generator)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
        return x, y
