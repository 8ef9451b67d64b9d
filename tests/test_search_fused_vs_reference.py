"""The fused search (fastdarts.nn + fastdarts.Architect) against the reference port,
step by step: the same seed, the same batches, float64 on the CPU, the alphas
compared after every architecture step, first and second order.

Stated tolerance, CNN: max |alpha_fused - alpha_ref| <= 1e-9 at every step (float64;
the two differ only in summation order, ~1e-16 per op, grown over the steps; the
alphas are ~1e-3).  A wrong sign, factor or skipped term in either path moves the
alphas by ~lr = 3e-4 (CNN) / 3e-3 (RNN) in one step: many orders above it.

RNN: the search itself amplifies rounding (lr 20; measured on this test's second-
order run: the reference against itself with every weight scaled by 1 + 1e-15
drifts 2e-13 after 12 steps but 1.5e-7 after 24, about x4 per step in the second
epoch; fused vs reference drifts 3e-8 there).  So the RNN bound is 1e-9 over the
first epoch (6 steps here) and, at every step, at most 10x the reference's own drift
under that 1e-15 perturbation (plus 1e-12).
"""

from __future__ import annotations

import pytest
import torch

from fastdarts.loop import Callback
from fastdarts.search.rnn import RNNSearchConfig, RNNValidation
from fastdarts.search.rnn import build as build_rnn

from .helpers import one_thread, tiny_engine  # noqa: F401  (autouse fixture)

TOL = 1e-9


@pytest.fixture
def float64():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


class AlphaTrace(Callback):
    """softmax-free alphas after every architecture step."""

    order = 1000

    def __init__(self):
        self.steps = []

    def after_arch_step(self, e):
        self.steps.append(torch.cat([a.detach().flatten().clone() for a in e.model.arch_parameters()]))


class BufferTrace(Callback):
    """Every BatchNorm's running mean, variance and batch counter after every weight step
    (the state_dict's buffers: the two networks share their keys)."""

    order = 1000

    def __init__(self):
        self.steps = []

    def after_weight_step(self, e):
        self.steps.append({k: v.detach().clone() for k, v in e.model.state_dict().items()
                           if "running" in k or "num_batches" in k})


class _Float64Loader:
    """The image loader's batches as float64 (it normalises to float32)."""

    def __init__(self, loader):
        self.loader = loader

    def __iter__(self):
        return ((x.double(), y) for x, y in self.loader)

    def infinite(self):
        return ((x.double(), y) for x, y in self.loader.infinite())

    def __len__(self):
        return len(self.loader)

    def __getattr__(self, name):  # state_dict, load_state_dict, labels, ...
        return getattr(self.loader, name)


def _drift(a, b):
    return [(x - y).abs().max().item() for x, y in zip(a, b)]


def _compare(traces, steps, tol=None):
    ref, fused = traces["reference"].steps, traces["fused"].steps
    assert len(ref) == len(fused) == steps
    errs = _drift(fused, ref)
    tol = tol or [TOL] * steps
    assert all(e <= t for e, t in zip(errs, tol)), f"step-by-step max |delta alpha|: {errs}, bound {tol}"
    assert (ref[-1] - ref[0]).abs().max() > 1e-3  # the alphas did move over the steps
    return errs


@pytest.mark.parametrize("unrolled", [False, True], ids=["first_order", "second_order"])
def test_cnn_fused_search_follows_the_reference_step_by_step(float64, unrolled):
    """6 steps: 2 epochs of 3 batches (24 training images, batch 8), cosine lr: an epoch
    boundary (the lr and the loaders' new pass) inside the compared run.  (It was 10
    steps, 45 s of the suite's time; the bound is per step.)"""
    traces, buffers = {}, {}
    for impl in ("reference", "fused"):
        trace, buffers[impl] = AlphaTrace(), BufferTrace()
        e = tiny_engine(epochs=2, unrolled=unrolled, impl=impl, standard=False,
                        callbacks=[trace, buffers[impl]], n=48)
        assert all(p.dtype == torch.float64 for p in e.model.parameters())
        e.train_loader, e.valid_loader = _Float64Loader(e.train_loader), _Float64Loader(e.valid_loader)
        e.loaders = {"train": e.train_loader, "valid": e.valid_loader}
        e.run()
        traces[impl] = trace
    _compare(traces, 6)
    # the batched supernet's statistics land in every module's own buffers, as the
    # reference's (the validation passes of the architect step leave them alone in both)
    assert len(buffers["fused"].steps) == len(buffers["reference"].steps) == 6
    for step, (ref, fused) in enumerate(zip(buffers["reference"].steps, buffers["fused"].steps)):
        assert ref.keys() == fused.keys() and len(ref) > 100
        for k in ref:
            if "num_batches" in k:
                assert torch.equal(fused[k], ref[k]), (step, k)
            else:
                torch.testing.assert_close(fused[k], ref[k], rtol=1e-9, atol=1e-9,
                                           msg=f"step {step}: {k}")


@pytest.mark.parametrize("unrolled,tied", [(False, "original"), (True, "original"), (True, "consistent")],
                         ids=["first_order", "second_order", "second_order_consistent"])
def test_rnn_fused_search_follows_the_reference_step_by_step(tmp_path, float64, unrolled, tied):
    """12 steps (2 epochs of 6) on the embedded corpus, dropout off, the variable
    sequence length and the lr scaling included; second order with the original's
    un-stepped tied embedding (the default) and, over the first epoch only (6 steps,
    bound 1e-9, to keep the test short), with the consistent virtual step.  First
    order has no virtual step: the option changes nothing there."""
    epochs = 1 if tied == "consistent" else 2
    per_epoch = 6

    def run(impl, scale=1.0):
        trace = AlphaTrace()
        cfg = RNNSearchConfig(emsize=8, nhid=8, nhidlast=8, batch_size=4, bptt=6, epochs=epochs,
                              max_steps_per_epoch=per_epoch, save=str(tmp_path / f"{impl}{scale}"), quiet=True,
                              impl=impl, eval_batch_size=256, dropout=0.0, dropouth=0.0, dropoutx=0.0,
                              dropouti=0.0, dropoute=0.0, beta=1e-3, alpha=1e-3, unrolled=unrolled,
                              tied_embedding_step=tied)
        e = build_rnn(cfg, callbacks=[trace])
        # the per-epoch validation (eval mode, no RNG, no statistics updated) cannot change
        # the alphas compared here, and was over half of each run's time
        e.remove_callback(e.get_callback(RNNValidation))
        assert all(p.dtype == torch.float64 for p in e.model.parameters())
        with torch.no_grad():
            for p in e.model.parameters():
                p.mul_(scale)
        e.run()
        return trace

    traces = {"reference": run("reference"), "fused": run("fused")}
    if epochs == 1:
        _compare(traces, per_epoch)
        return
    own = _drift(run("reference", 1 + 1e-15).steps, traces["reference"].steps)
    bound = [TOL if k < per_epoch else max(TOL, 10 * d + 1e-12) for k, d in enumerate(own)]
    _compare(traces, 2 * per_epoch, bound)
