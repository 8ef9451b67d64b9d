"""The CNN Architect (reference port of the original ``architect.py``).

First order: alpha.grad = dL_val(w, alpha)/dalpha.
Second order: w' = w - eta (momentum * m + dL_train/dw + wd * w); alpha.grad =
dL_val(w')/dalpha - eta * HVP, the HVP by central finite differences.  Adam on
alpha with betas (0.5, 0.999) (beta1 from ``args.arch_beta1`` when given: FairDARTS
uses 0.9).
"""

from __future__ import annotations

import torch

from .._bilevel import finite_difference_hvp, grads_or_zeros, set_arch_grads, unrolled_copy


class Architect:
    def __init__(self, model, args):
        self.network_momentum = args.momentum
        self.network_weight_decay = args.weight_decay
        self.model = model
        self.r = 1e-2  # finite-difference scale: R = r / ||v|| (the original's r=1e-2)
        self.optimizer = torch.optim.Adam(self.model.arch_parameters(), lr=args.arch_learning_rate,
                                          betas=(getattr(args, "arch_beta1", 0.5), 0.999),
                                          weight_decay=args.arch_weight_decay)

    def _momentum_buffers(self, network_optimizer, params):
        """The optimizer's momentum buffers times args.momentum; zeros unless every
        parameter has one (the original's all-or-nothing try/except)."""
        bufs = [network_optimizer.state.get(p, {}).get("momentum_buffer") for p in params]
        if any(b is None for b in bufs):
            return [torch.zeros_like(p) for p in params]
        return [b * self.network_momentum for b in bufs]

    def _compute_unrolled_model(self, input, target, eta, network_optimizer):
        params = list(self.model.parameters())
        loss = self.model._loss(input, target)
        grads = grads_or_zeros(loss, params)
        moment = self._momentum_buffers(network_optimizer, params)
        with torch.no_grad():
            new_w = [p - eta * (m + g + self.network_weight_decay * p)
                     for p, m, g in zip(params, moment, grads)]
        return unrolled_copy(self.model, new_w)

    def step(self, input_train, target_train, input_valid, target_valid, eta, network_optimizer,
             unrolled):
        self.optimizer.zero_grad()
        if unrolled:
            self._backward_step_unrolled(input_train, target_train, input_valid, target_valid, eta,
                                         network_optimizer)
        else:
            self._backward_step(input_valid, target_valid)
        self.optimizer.step()

    def _backward_step(self, input_valid, target_valid):
        loss = self.model._loss(input_valid, target_valid)
        loss.backward()

    def _backward_step_unrolled(self, input_train, target_train, input_valid, target_valid, eta,
                                network_optimizer):
        unrolled_model = self._compute_unrolled_model(input_train, target_train, eta,
                                                      network_optimizer)
        unrolled_loss = unrolled_model._loss(input_valid, target_valid)
        u_params = list(unrolled_model.parameters())
        grads = grads_or_zeros(unrolled_loss, unrolled_model.arch_parameters() + u_params)
        n_arch = len(unrolled_model.arch_parameters())
        dalpha, vector = grads[:n_arch], grads[n_arch:]
        implicit = finite_difference_hvp(self.model, vector,
                                         lambda: self.model._loss(input_train, target_train), r=self.r)
        set_arch_grads(self.model, [g - eta * ig for g, ig in zip(dalpha, implicit)])
