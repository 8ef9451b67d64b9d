"""FairDARTS (Chu, Zhou, Zhang and Li, ECCV 2020): sigmoid op weights, a zero-one loss
on them, and a threshold genotype; first order.  The model is
``fastdarts.reference.cnn.fair_darts.FairNetwork`` (reference) or
``fastdarts.nn.variants.FairNetwork`` (fused)."""

from __future__ import annotations

from ..config import ConfigError
from . import Method, register


def build_model(cfg, num_classes, criterion):
    if cfg.impl == "fused":
        from ..nn.variants import FairNetwork
    else:
        from ..reference.cnn.fair_darts import FairNetwork
    return FairNetwork(cfg.init_channels, num_classes, cfg.layers, criterion,
                       zero_one_weight=cfg.zero_one_weight, threshold=cfg.fair_threshold)


def check(cfg):
    if cfg.aux_skip_beta != 1.0 or cfg.aux_skip_decay != "linear" or cfg.aux_skip_decay_epochs:
        raise ConfigError("--aux_skip_beta/--aux_skip_decay/--aux_skip_decay_epochs are DARTS- "
                          "settings; use --method darts- or drop them")


# fairdarts/train_search.py's defaults; the search space, layers, channels, grad clip
# and train portion are DARTS'.  Its arch Adam uses betas (--arch_lr_gamma 0.9, 0.999).
FAIR_DARTS = register(Method(
    name="fair-darts",
    paper="Chu, Zhou, Zhang and Li, ECCV 2020",
    summary="sigmoid op weights + zero-one loss (weight 10); genotype: best op >= 0.85 on the "
            "top-2 edges; first order",
    defaults={"batch_size": 128, "learning_rate": 0.005, "learning_rate_min": 0.001,
              "arch_learning_rate": 3e-3, "arch_weight_decay": 1e-3, "arch_beta1": 0.9,
              "weight_decay": 3e-4, "epochs": 50, "zero_one_weight": 10.0, "fair_threshold": 0.85},
    # the demo keeps DARTS' small sizes and rates (weight lr 0.05, arch lr 3e-2, 5 epochs);
    # measured with the 6-epoch demo of 2026-12-01 (loaded 2-core VM, 1 thread): 399 s,
    # final valid_acc 0.808 (chance 0.10), sigmoid(alpha) from 0.5 to 0.19..0.91, 4 of 16
    # edges kept at 0.85
    small_defaults={"arch_beta1": 0.9, "zero_one_weight": 10.0, "fair_threshold": 0.85},
    first_order_only=True,
    build_model=build_model,
    check=check,
))
