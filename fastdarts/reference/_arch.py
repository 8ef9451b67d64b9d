"""A mixin for models whose architecture parameters are plain leaf tensors."""

from __future__ import annotations

import torch


class ArchTensorsFollowModel:
    """Move/cast the tensors of ``self._arch_parameters`` with the module.

    The original DARTS keeps alphas outside nn.Module's registry (so they stay out
    of ``parameters()`` and the state_dict) and calls ``.cuda()`` on them by hand.
    Here ``.to()``/``.double()``/``.cuda()`` carry them along; the same tensor
    objects are kept, so an optimizer built on them stays attached.
    """

    def _apply(self, fn, *args, **kwargs):
        super()._apply(fn, *args, **kwargs)
        with torch.no_grad():
            for a in getattr(self, "_arch_parameters", ()):
                a.data = fn(a.data)
                if a.grad is not None:
                    a.grad.data = fn(a.grad.data)
        return self
