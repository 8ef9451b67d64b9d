"""SDARTS-RS (Chen and Hsieh, "Stabilizing Differentiable Architecture Search via
Perturbation-based Regularization", ICML 2020): random smoothing of the architecture.

After each architecture step, the weight step runs on a randomly perturbed
architecture, which is then put back exactly; the architecture step itself is
DARTS'.  What the published code (xiangning-chen/SmoothDARTS, sota/cnn/train_search.py,
attacker/perturb.py ``Random_alpha``, model_search.py) does, and the default here:

1. ``softmax_arch_parameters``: save alpha, overwrite it with softmax(alpha);
2. add uniform noise in [-eps, eps] to those probabilities;
3. ``clip``: per edge, clamp to [0, 1] (an edge left all zero gets 1 on the op that
   led before the clamp) and divide by the row sum;
4. the weight step's forward uses these rows as the op weights directly
   (``updateType='weight'``: no second softmax);
5. ``restore_arch_parameters``.

eps grows linearly over the search: eps(epoch) = 0.03 + (eps_max - 0.03) * epoch / epochs,
eps_max = ``--epsilon_alpha`` (0.3), so 0.03 at epoch 0 and 0.2946 at epoch 49 of 50.
``perturb="alpha"`` adds the noise to alpha itself (softmaxed as usual), the other
reading of the paper's "perturb the architecture parameters".
"""

from __future__ import annotations

import torch

from ..config import ConfigError
from ..loop.engine import Callback
from . import Method, register

EPSILON_START = 0.03  # the code's first-epoch eps (a constant in train_search.py)
EPSILON_MAX = 0.3     # its --epsilon_alpha default, the README's SDARTS-RS command
PERTURB_ON = ("softmax", "alpha")


def epsilon_at(epoch: int, epochs: int, eps_max: float = EPSILON_MAX,
               eps_start: float = EPSILON_START) -> float:
    """The code's schedule: eps_start + (eps_max - eps_start) * epoch / epochs."""
    return eps_start + (eps_max - eps_start) * epoch / epochs


def clip_rows_(p: torch.Tensor) -> torch.Tensor:
    """The code's ``clip`` on every row of ``p`` [E, K] at once, in place (no host sync):
    clamp to [0, 1]; a row left all zero gets 1 where its argmax was before the clamp;
    divide by the row sum."""
    lead = p.argmax(-1, keepdim=True)
    p.clamp_(0, 1)
    empty = p.sum(-1, keepdim=True) == 0
    p.scatter_add_(-1, lead, empty.to(p.dtype))
    return p.div_(p.sum(-1, keepdim=True))


class DirectWeights:
    """Mixin for a supernet: while ``direct_weights`` is set, ``arch_weights(alpha)`` is
    alpha itself (the rows already hold op weights; SDARTS' ``updateType='weight'``);
    otherwise the network's own map (softmax).  The DARTS path is unchanged."""

    direct_weights = False

    def arch_weights(self, alpha):
        return alpha if self.direct_weights else super().arch_weights(alpha)


_DIRECT: dict[type, type] = {}


def with_direct_weights(network_cls: type) -> type:
    """``network_cls`` with :class:`DirectWeights` mixed in (one class per base; same
    constructor, state_dict keys and construction order)."""
    if network_cls not in _DIRECT:
        _DIRECT[network_cls] = type(f"SDARTS{network_cls.__name__}", (DirectWeights, network_cls), {})
    return _DIRECT[network_cls]


class RandomSmoothing(Callback):
    """SDARTS-RS around the weight step: perturb the architecture after the architecture
    step (``after_arch_step``), restore it bit-exactly after the weight step
    (``after_weight_step``).  ``on="softmax"`` (the code): the model's alphas hold
    clip(softmax(alpha) + U(-eps, eps)) during the weight step and the model must be a
    :class:`DirectWeights` network; ``on="alpha"``: they hold alpha + U(-eps, eps).

    The noise comes from the device's default generator, as the code's ``uniform_`` does,
    so a checkpoint's RNG states make a resume exact.  Buffers for the saved alphas and
    the noise are made once; per step: the copies, one uniform draw, one softmax and the
    clip's few row reductions per alpha tensor, no host sync."""

    order = 0

    def __init__(self, eps_max: float = EPSILON_MAX, eps_start: float = EPSILON_START,
                 on: str = "softmax"):
        if on not in PERTURB_ON:
            raise ValueError(f"on must be one of {PERTURB_ON}, got {on!r}")
        if eps_max < 0 or eps_start < 0:
            raise ValueError(f"epsilons must be >= 0, got eps_start={eps_start}, eps_max={eps_max}")
        self.eps_max, self.eps_start, self.on = eps_max, eps_start, on
        self.eps = eps_start
        self.saved: list[torch.Tensor] | None = None
        self.noise: list[torch.Tensor] | None = None
        self.perturbed = False

    def epoch_begin(self, e):
        self.eps = epsilon_at(e.epoch, e.epochs, self.eps_max, self.eps_start)
        e.metrics["sdarts_eps"] = self.eps

    def _buffers(self, alphas) -> None:
        if self.saved is None or any(s.shape != a.shape or s.dtype != a.dtype or s.device != a.device
                                     for s, a in zip(self.saved, alphas, strict=True)):
            self.saved = [torch.empty_like(a) for a in alphas]
            self.noise = [torch.empty_like(a) for a in alphas]

    def perturb(self, model) -> None:
        if self.on == "softmax" and not isinstance(model, DirectWeights):
            raise ValueError("SDARTS-RS (perturb='softmax') needs a network whose weights can be "
                             "taken directly: build it with fastdarts.methods.sdarts.with_direct_weights")
        alphas = model.arch_parameters()
        self._buffers(alphas)
        with torch.no_grad():
            for a, saved, noise in zip(alphas, self.saved, self.noise, strict=True):
                saved.copy_(a)
                noise.uniform_(-self.eps, self.eps)
                if self.on == "softmax":
                    a.copy_(torch.softmax(a, dim=-1)).add_(noise)
                    clip_rows_(a)
                else:
                    a.add_(noise)
        if self.on == "softmax":
            model.direct_weights = True
        self.perturbed = True

    def restore(self, model) -> None:
        with torch.no_grad():
            for a, saved in zip(model.arch_parameters(), self.saved, strict=True):
                a.copy_(saved)
        if isinstance(model, DirectWeights):
            model.direct_weights = False
        self.perturbed = False

    def after_arch_step(self, e):
        self.perturb(e.model)

    def after_weight_step(self, e):
        if self.perturbed:
            self.restore(e.model)

    # a batch cut short between the two events must not leave the alphas perturbed
    batch_end = epoch_end = search_end = after_weight_step


def _check(cfg) -> None:
    if cfg.cuda_graph:
        raise ConfigError("--method sdarts-rs perturbs the architecture between the architecture step and "
                          "the weight step, which a captured step has no room for; drop --cuda_graph")


def _model(cfg, num_classes, criterion):
    if cfg.impl == "fused":
        from ..nn import Network
    else:
        from ..reference.cnn import Network
    if cfg.sdarts_perturb == "softmax":
        Network = with_direct_weights(Network)
    return Network(cfg.init_channels, num_classes, cfg.layers, criterion)


register(Method(
    name="sdarts-rs",
    paper="Chen and Hsieh, ICML 2020",
    summary="random smoothing: the weight step sees clip(softmax(alpha) + U(-eps, eps)), eps 0.03 -> 0.3",
    defaults={"sdarts_epsilon": EPSILON_MAX, "sdarts_epsilon_start": EPSILON_START},
    build_model=_model,
    callbacks=lambda cfg: [RandomSmoothing(cfg.sdarts_epsilon, cfg.sdarts_epsilon_start,
                                           cfg.sdarts_perturb)],
    check=_check,
))
