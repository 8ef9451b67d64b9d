"""The RNN Architect (reference port of the original rnn/``architect.py``).

Second order: the training gradient is clipped to ``args.clip`` (clip
coefficient kept), w' = w - eta (g + wdecay * w) (no momentum); the validation
gradient v at w' is clipped too; alpha.grad = dL_val/dalpha - eta * clip_coef *
HVP, with clip_coef the raw (unclamped) coefficient of the training gradient,
as in the original.  Adam on alpha with default betas.
"""

from __future__ import annotations

import torch

from .._bilevel import clip_, finite_difference_hvp, grads_or_zeros, set_arch_grads, unrolled_copy


class Architect:
    def __init__(self, model, args):
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
