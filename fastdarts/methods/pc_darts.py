"""PC-DARTS (Xu et al., ICLR 2020): partial channel connections and edge normalisation.

The model is :class:`fastdarts.reference.cnn.pc_darts.Network` (``--impl reference``)
or its fused twin :class:`fastdarts.nn.pc_darts.Network`; the Architect, loop and
outputs are DARTS'.  Published defaults: yuhuixu1993/PC-DARTS ``train_search.py``
(CIFAR-10): batch 256, lr 0.1 (min 0.001), arch lr 6e-4, arch weight decay 1e-3, 50
epochs, architecture steps from epoch 15 (``if epoch >= 15``); k = 4 in
``model_search.py``.  The embedded demo uses C = 8 with K = 2 (K = 4 would leave the
first cells' ops 1 channel each; C = 4 is the DARTS demo's) and starts the architecture at epoch 2 of 6, about
PC-DARTS' share of weight-only warm-up (15 of 50).
"""

from __future__ import annotations

from ..config import ConfigError
from . import Method, register


def build_model(cfg, num_classes, criterion):
    if cfg.impl == "reference":
        from ..reference.cnn.pc_darts import Network
    else:
        from ..nn.pc_darts import Network
    return Network(cfg.init_channels, num_classes, cfg.layers, criterion, k=cfg.partial_channels)


def check(cfg) -> None:
    C, k = cfg.init_channels, cfg.partial_channels
    if C % k:
        raise ConfigError(f"--method pc-darts: --init_channels {C} is not divisible by "
                          f"--partial_channels {k} (1/K of the channels go through the ops); use "
                          f"--init_channels a multiple of {k}")


METHOD = register(Method(
    name="pc-darts",
    paper="Xu et al., ICLR 2020",
    summary="partial channel connections (1/K of the channels through the ops) and edge "
            "normalisation (betas per edge)",
    defaults=dict(batch_size=256, learning_rate=0.1, learning_rate_min=0.001, arch_learning_rate=6e-4,
                  arch_weight_decay=1e-3, epochs=50, arch_start_epoch=15, partial_channels=4),
    small_defaults=dict(init_channels=8, partial_channels=2, arch_start_epoch=2),
    build_model=build_model,
    check=check,
))
