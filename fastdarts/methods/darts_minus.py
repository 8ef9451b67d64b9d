"""DARTS- (Chu, Wang, Zhang, Lu, Wei and Yan, ICLR 2021): an auxiliary skip beta * aux(x)
on every edge, beta decaying per epoch from 1 to 0.  The model is
``fastdarts.reference.cnn.darts_minus.Network`` (reference) or
``fastdarts.nn.variants.DartsMinusNetwork`` (fused); :class:`AuxSkipDecay` sets beta."""

from __future__ import annotations

from ..config import ConfigError
from ..loop.engine import Callback
from ..reference.cnn.darts_minus import aux_skip_beta
from . import Method, register


class AuxSkipDecay(Callback):
    """At each epoch start: model beta = aux_skip_beta(epoch, epochs, beta0, decay)
    (the original steps its DecayScheduler at the start of each epoch)."""

    order = -30

    def __init__(self, beta0: float, epochs: int, decay: str = "linear"):
        self.beta0, self.epochs, self.decay = beta0, epochs, decay

    def beta_at(self, epoch: int) -> float:
        return aux_skip_beta(epoch, self.epochs, self.beta0, self.decay)

    def epoch_begin(self, e):
        e.aux_skip_beta = self.beta_at(e.epoch)
        e.model.set_aux_skip_beta(e.aux_skip_beta)


def build_model(cfg, num_classes, criterion):
    if cfg.impl == "fused":
        from ..nn.variants import DartsMinusNetwork as Net
    else:
        from ..reference.cnn.darts_minus import Network as Net
    return Net(cfg.init_channels, num_classes, cfg.layers, criterion, aux_skip_beta=cfg.aux_skip_beta)


def callbacks(cfg):
    return [AuxSkipDecay(cfg.aux_skip_beta, cfg.aux_skip_decay_epochs or cfg.epochs, cfg.aux_skip_decay)]


def check(cfg):
    if cfg.zero_one_weight != 10.0 or cfg.fair_threshold != 0.85:
        raise ConfigError("--zero_one_weight/--fair_threshold are FairDARTS settings; use "
                          "--method fair-darts or drop them")


# src/search/args.py and scripts/run_darts_minus.sh (--auxiliary_skip --skip_beta 1
# --decay linear); every other setting is DARTS' (its args.py repeats them), first order
# by default (--unrolled is allowed, as in the original).
DARTS_MINUS = register(Method(
    name="darts-",
    paper="Chu, Wang, Zhang, Lu, Wei and Yan, ICLR 2021",
    summary="an auxiliary skip beta * x (FactorizedReduce on stride 2) on every edge, beta "
            "decaying linearly from 1 to 0 over the epochs",
    defaults={"aux_skip_beta": 1.0, "aux_skip_decay": "linear"},
    # the demo: DARTS' small settings, beta 1 -> 1/5 over its 5 epochs; measured with the
    # 6-epoch demo of 2026-12-01 (loaded 2-core VM, 1 thread): 313 s, final valid_acc
    # 0.673 (chance 0.10), softmax(alpha) from 0.125 to 0.036..0.435
    small_defaults={"aux_skip_beta": 1.0, "aux_skip_decay": "linear"},
    build_model=build_model,
    callbacks=callbacks,
    check=check,
))
