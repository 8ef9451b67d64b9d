"""Callbacks any loop uses: the cosine learning rate, gradient clipping, train
metrics, validation on a loader, and TensorBoard scalars."""

from __future__ import annotations

import math
import os

import torch
import torch.nn as nn
import torch.nn.functional as F

from .. import distributed
from .engine import Callback


class CosineLR(Callback):
    """lr(e) = lr_min + (lr0 - lr_min) (1 + cos(pi e / epochs)) / 2 for epoch e.

    Modern semantics: epoch 0 uses lr0.  (The original, on PyTorch 0.3, called
    scheduler.step() at the start of each epoch, so its epoch e used lr(e + 1).)"""

    order = -20

    def __init__(self, lr0: float, lr_min: float, epochs: int):
        self.lr0, self.lr_min, self.epochs = lr0, lr_min, epochs

    def lr_at(self, epoch: int) -> float:
        return self.lr_min + (self.lr0 - self.lr_min) * (1 + math.cos(math.pi * epoch / self.epochs)) / 2

    def epoch_begin(self, e):
        e.lr = self.lr_at(e.epoch)
        for g in e.optimizer.param_groups:
            g["lr"] = e.lr


class GradClip(Callback):
    def __init__(self, max_norm: float):
        self.max_norm = max_norm

    def after_backward(self, e):
        nn.utils.clip_grad_norm_(e.model.parameters(), self.max_norm)


class TrainMetrics(Callback):
    """Loss and accuracy of the weight steps, accumulated on the device (one host
    read per epoch)."""

    def epoch_begin(self, e):
        dev = e.device
        self.loss_sum = torch.zeros((), device=dev)
        self.correct = torch.zeros((), device=dev, dtype=torch.long)
        self.count = 0

    def batch_end(self, e):
        n = e.batch[1].shape[0]
        self.loss_sum += e.loss * n
        self.correct += (e.logits.argmax(1) == e.batch[1]).sum()
        self.count += n

    def running(self) -> dict:
        """Averages so far this epoch (one host read; the Logger asks every report_freq steps)."""
        n = max(self.count, 1)
        return {"loss": self.loss_sum.item() / n, "acc": self.correct.item() / n}

    def epoch_end(self, e):
        if self.count:
            e.metrics["train_loss"] = self.loss_sum.item() / self.count
            e.metrics["train_acc"] = self.correct.item() / self.count


class Validation(Callback):
    """The original's infer(): loss and accuracy on the architecture half, model.eval()
    and no_grad.  ``loader`` is normally a non-augmented, unshuffled loader over that
    half (the original reused its augmented architecture queue, which made the number
    noisier without changing what it measures)."""

    order = 10

    def __init__(self, loader):
        self.loader = loader

    def epoch_end(self, e):
        model = e.model
        model.eval()
        loss_sum = torch.zeros((), device=e.device)
        correct = torch.zeros((), device=e.device, dtype=torch.long)
        n = 0
        with torch.no_grad():
            for x, y in self.loader:
                logits = model(x)
                loss_sum += F.cross_entropy(logits, y, reduction="sum")
                correct += (logits.argmax(1) == y).sum()
                n += y.shape[0]
        model.train()
        e.metrics["valid_loss"] = loss_sum.item() / max(n, 1)
        e.metrics["valid_acc"] = correct.item() / max(n, 1)
        e.metrics["valid_n"] = n


class TensorBoard(Callback):
    """Scalars per epoch when tensorboard is installed; silent otherwise."""

    order = 60

    def __init__(self, save_dir: str):
        self.save_dir = save_dir
        self.writer = None

    def search_begin(self, e):
        if not distributed.is_rank0():
            return
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(os.path.join(self.save_dir, "tb"))
        except Exception:
            self.writer = None

    def epoch_end(self, e):
        if self.writer is not None:
            for k, v in e.metrics.items():
                self.writer.add_scalar(k, v, e.epoch)
            self.writer.add_scalar("lr", e.lr, e.epoch)

    def search_end(self, e):
        if self.writer is not None:
            self.writer.close()
