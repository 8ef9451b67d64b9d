"""Small builders shared by the tests: tiny search models and their arguments."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch.nn as nn

from fastdarts.reference import cnn, rnn
from fastdarts.loop.engine import Callback, CancelSearch


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models: one thread is faster, and immune to a busy machine (measured on
    2 shared cores: a depthwise conv 0.3 ms on 1 thread, 35 ms on 2; a profiled step
    0.4 s vs 30 s).  Autouse in every module that imports it."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


class StopAfter(Callback):
    """Cancel the search/training after ``epochs`` epochs, after that epoch's checkpoint."""

    order = 100

    def __init__(self, epochs):
        self.epochs = epochs

    def epoch_end(self, e):
        if e.epoch + 1 == self.epochs:
            raise CancelSearch


def cnn_args(**kw):
    base = dict(momentum=0.9, weight_decay=3e-4, arch_learning_rate=3e-4, arch_weight_decay=1e-3)
    base.update(kw)
    return SimpleNamespace(**base)


def rnn_args(**kw):
    base = dict(wdecay=5e-7, clip=0.25, arch_lr=3e-3, arch_wdecay=1e-3)
    base.update(kw)
    return SimpleNamespace(**base)


def tiny_cnn(seed=0, C=2, layers=3, num_classes=3, dtype=torch.float64):
    torch.manual_seed(seed)
    model = cnn.Network(C, num_classes, layers, nn.CrossEntropyLoss()).to(dtype)
    with torch.no_grad():  # alphas away from uniform so every term of the gradient matters
        for a in model.arch_parameters():
            a.normal_(0, 0.5)
    return model


def cnn_batch(seed, n=4, hw=8, num_classes=3, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, hw, hw, generator=g, dtype=dtype)
    y = torch.randint(0, num_classes, (n,), generator=g)
    return x, y


def tiny_rnn(seed=0, ntoken=20, nhid=6, dropout=0.0, dtype=torch.float64):
    torch.manual_seed(seed)
    model = rnn.RNNModelSearch(ntoken, nhid, nhid, nhid, dropout, dropout, dropout, dropout,
                               dropout).to(dtype)
    with torch.no_grad():
        model.weights.normal_(0, 0.5)
    return model


def rnn_batch(seed, T=4, B=3, ntoken=20, nhid=6, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, ntoken, (T, B), generator=g)
    y = torch.randint(0, ntoken, (T * B,), generator=g)
    h = [0.1 * torch.randn(1, B, nhid, generator=g, dtype=dtype)]
    return h, x, y


def snapshot(model):
    """Every weight and buffer, cloned (to check bit-exact restores)."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def smooth_(model):
    """Swap ReLU for Softplus and max-pool for avg-pool, in place.

    The finite-difference Hessian-vector product of DARTS differentiates the
    gradient along R v; in a ReLU/max-pool net a step of R crosses kinks unless R
    is tiny, and then the O(R^2) shrinking cannot be seen before round-off.  The
    smooth twin keeps the Architect's arithmetic identical and makes the
    truncation error visible.
    """
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.ReLU):
                setattr(parent, name, nn.Softplus(beta=2.0))
            elif isinstance(child, nn.MaxPool2d):
                setattr(parent, name, nn.AvgPool2d(3, stride=child.stride, padding=1,
                                                   count_include_pad=False))
    return model
