"""The RNN Architect (reference port of the original rnn/``architect.py``).

Second order: the training gradient is clipped to ``args.clip`` (clip
coefficient kept), w' = w - eta (g + wdecay * w) (no momentum); the validation
gradient v at w' is clipped too; alpha.grad = dL_val/dalpha - eta * clip_coef *
HVP, with clip_coef the raw (unclamped) coefficient of the training gradient,
as in the original.  Adam on alpha with default betas.

The tied embedding (``decoder.weight`` is ``encoder.weight``): the original builds
the unrolled model w' by loading a state_dict in which only the names listed by
``named_parameters()`` were replaced by stepped tensors; the tied weight is listed
once, as ``encoder.weight``, so its second name ``decoder.weight`` still holds the
un-stepped tensor and, loaded last, wins.  The original's w' therefore steps every
weight *except* the embedding.  Everything after that is unchanged: v = dL_val/dw at
that w' (the embedding's entry included, at its un-stepped value) is clipped as a
whole, and the finite difference perturbs every weight, the embedding included, by
+-R v around w.  ``tied_embedding_step``:

* ``"original"`` (default): exactly that (:func:`unrolled_copy_via_state_dict`).
* ``"consistent"``: the embedding is stepped like every other weight (w' = w - eta
  (g + wdecay w) for all of w), the plain DARTS formula.
"""

from __future__ import annotations

import torch

from .._bilevel import (
    clip_,
    finite_difference_hvp,
    grads_or_zeros,
    set_arch_grads,
    unrolled_copy,
    unrolled_copy_via_state_dict,
)

TIED_EMBEDDING_STEPS = ("original", "consistent")


class Architect:
    def __init__(self, model, args, *, tied_embedding_step: str = "original"):
        if tied_embedding_step not in TIED_EMBEDDING_STEPS:
            raise ValueError(f"tied_embedding_step must be 'original' (the original's unrolled model "
                             f"keeps the tied embedding un-stepped) or 'consistent' (it is stepped), "
                             f"got {tied_embedding_step!r}")
        self.tied_embedding_step = tied_embedding_step
        self.network_weight_decay = args.wdecay
        self.network_clip = args.clip
        self.model = model
        self.r = 1e-2  # finite-difference scale: R = r / ||v|| (the original's r=1e-2)
        self.optimizer = torch.optim.Adam(self.model.arch_parameters(), lr=args.arch_lr,
                                          weight_decay=args.arch_wdecay)

    def _compute_unrolled_model(self, hidden, input, target, eta):
        params = list(self.model.parameters())
        loss, _ = self.model._loss(hidden, input, target)
        grads = grads_or_zeros(loss, params)
        clip_coef = clip_(grads, self.network_clip)
        with torch.no_grad():
            new_w = [p - eta * (g + self.network_weight_decay * p) for p, g in zip(params, grads)]
        if self.tied_embedding_step == "original":
            return unrolled_copy_via_state_dict(self.model, new_w), clip_coef
        return unrolled_copy(self.model, new_w), clip_coef

    def step(self, hidden_train, input_train, target_train, hidden_valid, input_valid,
             target_valid, network_optimizer, unrolled):
        """One architecture update; returns ``(hidden_next, None)`` as the original does."""
        eta = network_optimizer.param_groups[0]["lr"]
        self.optimizer.zero_grad()
        if unrolled:
            hidden = self._backward_step_unrolled(hidden_train, input_train, target_train,
                                                  hidden_valid, input_valid, target_valid, eta)
        else:
            hidden = self._backward_step(hidden_valid, input_valid, target_valid)
        self.optimizer.step()
        return hidden, None

    def _backward_step(self, hidden, input, target):
        loss, hidden_next = self.model._loss(hidden, input, target)
        loss.backward()
        return hidden_next

    def _backward_step_unrolled(self, hidden_train, input_train, target_train, hidden_valid,
                                input_valid, target_valid, eta):
        unrolled_model, clip_coef = self._compute_unrolled_model(hidden_train, input_train,
                                                                 target_train, eta)
        unrolled_loss, hidden_next = unrolled_model._loss(hidden_valid, input_valid, target_valid)
        n_arch = len(unrolled_model.arch_parameters())
        grads = grads_or_zeros(unrolled_loss,
                               unrolled_model.arch_parameters() + list(unrolled_model.parameters()))
        dalpha, vector = grads[:n_arch], grads[n_arch:]
        clip_(vector, self.network_clip)
        implicit = finite_difference_hvp(
            self.model, vector, lambda: self.model._loss(hidden_train, input_train, target_train)[0],
            r=self.r)
        set_arch_grads(self.model, [g - eta * clip_coef * ig for g, ig in zip(dalpha, implicit)])
        return hidden_next
