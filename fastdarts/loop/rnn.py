"""What the recurrent loops (search and training) share: detaching the hidden
states between batches, the learning rate scaled by each batch's sequence length,
and loss/perplexity metrics."""

from __future__ import annotations

import math

import torch

from .engine import Callback


def repackage_hidden(h):
    """The hidden state(s) cut from the graph of earlier batches (truncated BPTT)."""
    if isinstance(h, torch.Tensor):
        return h.detach()
    return [repackage_hidden(v) for v in h]


class SequenceLengthLR(Callback):
    """lr x seq_len / bptt for this batch (the architect's eta included), restored after."""

    order = -30

    def batch_begin(self, e):
        seq_len = e.batch[0]
        for g in e.optimizer.param_groups:
            g["lr"] = e.lr * seq_len / e.cfg.bptt

    def batch_end(self, e):
        for g in e.optimizer.param_groups:
            g["lr"] = e.lr


class RNNTrainMetrics(Callback):
    """Mean training loss per batch and its perplexity, accumulated on the device."""

    def epoch_begin(self, e):
        self.total = torch.zeros((), device=e.device)
        self.n = 0

    def batch_end(self, e):
        self.total += e.loss
        self.n += 1

    def epoch_end(self, e):
        if self.n:
            loss = self.total.item() / self.n
            e.metrics["train_loss"] = loss
            e.metrics["train_ppl"] = math.exp(min(loss, 50))
