"""The reference Architect against exact hypergradients (float64 double backward).

The second-order DARTS gradient is
    d/dalpha L_val(w - eta * (mom*m + dL_train/dw + wd*w), alpha)
which autograd computes exactly through the unrolled step (create_graph=True).
The Architect approximates the Hessian-vector product by central finite
differences with R = r/||v||, an O(R^2) error: the relative error must be small
and shrink as r shrinks.
"""

from __future__ import annotations

import pytest
import torch

from fastdarts.reference import cnn, rnn
from tests.helpers import (
    cnn_args,
    cnn_batch,
    rnn_args,
    rnn_batch,
    smooth_,
    snapshot,
    tiny_cnn,
    tiny_rnn,
)

ETA = 0.1


def _rel(a, b):
    a = torch.cat([t.reshape(-1) for t in a])
    b = torch.cat([t.reshape(-1) for t in b])
    return ((a - b).norm() / b.norm()).item()


def _arch_grads_of_step(architect, model, call):
    """Run architect.step with a zero-lr Adam and return the alpha gradients it set."""
    for g in architect.optimizer.param_groups:
        g["lr"] = 0.0
        g["weight_decay"] = 0.0
    call()
    return [a.grad.detach().clone() for a in model.arch_parameters()]


# --------------------------------------------------------------------------- CNN
def _exact_cnn(model, xt, yt, xv, yv, eta, momentum_bufs, mom, wd):
    params = list(model.parameters())
    alphas = model.arch_parameters()
    loss_t = model._loss(xt, yt)
    g = torch.autograd.grad(loss_t, params, create_graph=True)
    w_new = [p - eta * (mom * m + gi + wd * p) for p, gi, m in zip(params, g, momentum_bufs)]
    # evaluate L_val at w_new (a function of alpha) with a functional call
    names = [n for n, _ in model.named_parameters()]
    state = dict(model.named_buffers())
    state = {k: v.clone() for k, v in state.items()}  # the val pass must not touch running stats
    state.update(dict(zip(names, w_new)))
    logits = torch.func.functional_call(model, state, (xv,))
    loss_v = model._criterion(logits, yv)
    return torch.autograd.grad(loss_v, alphas)


def _cnn_setup(with_momentum, smooth=False):
    model = tiny_cnn(seed=1)
    if smooth:
        smooth_(model)
    xt, yt = cnn_batch(10)
    xv, yv = cnn_batch(11)
    opt = torch.optim.SGD(model.parameters(), lr=ETA, momentum=0.9, weight_decay=3e-4)
    if with_momentum:  # give every parameter a momentum buffer, as after a first weight step
        loss = model._loss(xt, yt)
        loss.backward()
        opt.step()
        opt.zero_grad()
    return model, opt, (xt, yt, xv, yv)


def _cnn_fd_errors(model, opt, data, with_momentum, rs):
    xt, yt, xv, yv = data
    args = cnn_args()
    bufs = [opt.state[p]["momentum_buffer"] if with_momentum else torch.zeros_like(p)
            for p in model.parameters()]
    exact = _exact_cnn(model, xt, yt, xv, yv, ETA, bufs, args.momentum, args.weight_decay)
    errors = []
    for r in rs:
        arch = cnn.Architect(model, args)
        arch.r = r
        got = _arch_grads_of_step(
            arch, model, lambda a=arch: a.step(xt, yt, xv, yv, ETA, opt, unrolled=True))
        errors.append(_rel(got, exact))
    return errors


@pytest.mark.parametrize("with_momentum", [False, True])
def test_cnn_second_order_matches_exact_hypergradient(with_momentum):
    """The real search network (ReLU, max-pool): with R below the nearest kink the
    finite difference equals the exact hypergradient to round-off."""
    model, opt, data = _cnn_setup(with_momentum)
    (err,) = _cnn_fd_errors(model, opt, data, with_momentum, [1e-5])
    assert err < 1e-7, err


@pytest.mark.parametrize("with_momentum", [False, True])
def test_cnn_second_order_error_shrinks_with_r(with_momentum):
    """Smooth twin (Softplus, avg-pool): relative error O(r^2).  Measured (torch
    2.13 CPU, float64): 5.3e-2 / 5.6e-4 / 5.6e-6 for r = 1e-1 / 1e-2 / 1e-3 without
    momentum, 1.3e-2 / 1.3e-4 / 1.3e-6 with it.  (On the ReLU net itself r = 1e-2
    crosses kinks: 2.8 relative error here, 3e-9 at r = 1e-5.)"""
    model, opt, data = _cnn_setup(with_momentum, smooth=True)
    errors = _cnn_fd_errors(model, opt, data, with_momentum, [1e-1, 1e-2, 1e-3])
    assert errors[0] < 1e-1 and errors[2] < 1e-5, errors
    assert errors[1] < errors[0] / 50 and errors[2] < errors[1] / 50, errors


def test_cnn_first_order_is_plain_validation_gradient():
    model, opt, (xt, yt, xv, yv) = _cnn_setup(False)
    exact = torch.autograd.grad(model._loss(xv, yv), model.arch_parameters())
    arch = cnn.Architect(model, cnn_args())
    got = _arch_grads_of_step(arch, model, lambda: arch.step(xt, yt, xv, yv, ETA, opt, unrolled=False))
    assert _rel(got, exact) < 1e-12


@pytest.mark.parametrize("unrolled", [False, True])
def test_cnn_step_restores_weights_bit_exactly(unrolled):
    model, opt, (xt, yt, xv, yv) = _cnn_setup(True)
    model.float()
    xt, xv = xt.float(), xv.float()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    arch = cnn.Architect(model, cnn_args())
    alphas_before = [a.detach().clone() for a in model.arch_parameters()]
    arch.step(xt, yt, xv, yv, ETA, opt, unrolled=unrolled)
    for n, p in model.named_parameters():
        assert torch.equal(p, before[n]), n
    # the alphas did move (the step is not a no-op)
    assert any(not torch.equal(a, b) for a, b in zip(model.arch_parameters(), alphas_before))


@pytest.mark.parametrize("unrolled,passes", [(False, 1), (True, 3)])
def test_cnn_batchnorm_statistics_follow_the_original(unrolled, passes):
    """Second order: the train pass and the w+/w- passes update running stats, the
    validation pass at w' (a throw-away copy in the original) does not."""
    model, opt, (xt, yt, xv, yv) = _cnn_setup(False)
    before = snapshot(model)
    cnn.Architect(model, cnn_args()).step(xt, yt, xv, yv, ETA, opt, unrolled=unrolled)
    after = model.state_dict()
    tracked = [k for k in after if k.endswith("num_batches_tracked")]
    assert tracked
    for k in tracked:
        assert after[k].item() - before[k].item() == passes, k
    # the running mean of the stem BN after exactly those passes, recomputed by hand
    def replayed(batches):
        r = tiny_cnn(seed=1)
        r.load_state_dict(before)
        for x in batches:
            r.stem(x)
        return r.stem[1].running_mean

    got = after["stem.1.running_mean"]
    if not unrolled:
        assert torch.allclose(replayed([xv]), got, rtol=0, atol=1e-12)
    else:
        # the w+/w- passes run at perturbed weights, so match to O(R), and far
        # closer than if the validation batch had been counted
        near = (replayed([xt, xt, xt]) - got).abs().max()
        with_val = (replayed([xt, xv, xt, xt]) - got).abs().max()
        assert near < 1e-4 and near < with_val / 100, (near, with_val)


# --------------------------------------------------------------------------- RNN
def _rnn_pieces(model, args, ht, xt, yt, hv, xv, yv, eta, tied="original"):
    """Exact ingredients of the original RNN second-order gradient.  ``tied``
    "original": w' keeps the tied embedding at w (what the original's state_dict
    reload builds); "consistent": it is stepped too."""
    params = list(model.parameters())
    alphas = model.arch_parameters()
    loss_t, _ = model._loss(ht, xt, yt)
    g = torch.autograd.grad(loss_t, params, create_graph=True)
    g_norm = torch.cat([t.reshape(-1) for t in g]).norm().detach()
    c_g = args.clip / (g_norm + 1e-6)  # raw coefficient (kept, as in the original)
    scale = torch.clamp(c_g, max=1.0)
    # w' is held fixed (detached) for dL_val/dalpha and v; the Hessian term is
    # assembled separately, so the raw clip coefficient can scale it
    names = [n for n, _ in model.named_parameters()]
    w_new = [(p if (n == "encoder.weight" and tied == "original")
              else p - eta * (scale * gi + args.wdecay * p)).detach().requires_grad_()
             for n, p, gi in zip(names, params, g)]
    state = {k: v.clone() for k, v in model.named_buffers()}
    state.update(dict(zip(names, w_new)))
    # tied decoder weight: functional_call needs both names bound to the same tensor
    state["decoder.weight"] = state["encoder.weight"]
    model_loss = _functional_rnn_loss(model, state, hv, xv, yv)
    return model_loss, w_new, c_g, alphas


def _functional_rnn_loss(model, state, hidden, x, y):
    out, _ = torch.func.functional_call(model, state, (x, hidden))
    return torch.nn.functional.nll_loss(out.view(-1, out.size(2)), y)


def _rnn_expected_and_errors(model, args, rs, tied="original"):
    ht, xt, yt = rnn_batch(20)
    hv, xv, yv = rnn_batch(21)
    loss_v, w_new, c_g, alphas = _rnn_pieces(model, args, ht, xt, yt, hv, xv, yv, ETA, tied)
    dalpha = torch.autograd.grad(loss_v, alphas, retain_graph=True)
    v = torch.autograd.grad(loss_v, w_new)
    v_norm = torch.cat([t.reshape(-1) for t in v]).norm()
    v = [t * torch.clamp(args.clip / (v_norm + 1e-6), max=1.0) for t in v]
    loss_t, _ = model._loss(ht, xt, yt)
    g = torch.autograd.grad(loss_t, list(model.parameters()), create_graph=True)
    hvp = torch.autograd.grad(sum((gi * vi).sum() for gi, vi in zip(g, v)), alphas)
    expected = [d - ETA * c_g * h for d, h in zip(dalpha, hvp)]
    opt = torch.optim.SGD(model.parameters(), lr=ETA)
    errors = []
    for r in rs:
        arch = rnn.Architect(model, args, tied_embedding_step=tied)
        arch.r = r
        got = _arch_grads_of_step(arch, model,
                                  lambda a=arch: a.step(ht, xt, yt, hv, xv, yv, opt, unrolled=True))
        errors.append(_rel(got, expected))
    return errors, c_g


@pytest.mark.parametrize("tied", ["original", "consistent"])
@pytest.mark.parametrize("clip", [0.05, 1e3])
def test_rnn_second_order_matches_exact_formula(clip, tied):
    """alpha.grad = dL_val(w')/dalpha - eta * c_g * d/dalpha <dL_train/dw, clip(v)>,
    c_g the raw clip coefficient of the training gradient (the original's formula).
    With clip=0.05 the training gradient is clipped (c_g < 1) and this is the true
    hypergradient with the clip scale held constant; with clip=1e3 c_g >> 1 scales
    the Hessian term, a quirk of the original that the reference keeps.  w' keeps the
    tied embedding un-stepped by default ("original"), steps it with "consistent"."""
    model = tiny_rnn(seed=2)
    (err,), c_g = _rnn_expected_and_errors(model, rnn_args(clip=clip), [1e-5], tied)
    assert (c_g < 1) == (clip < 1)
    assert err < 1e-7, err


def test_rnn_second_order_error_shrinks_with_r(monkeypatch):
    """Smooth twin (softplus in place of relu): the error is O(r^2).  Measured
    (torch 2.13 CPU, float64): 2.9e-6 / 2.9e-8 / 2.9e-10 for r = 1e-1 / 1e-2 / 1e-3."""
    from fastdarts.reference.rnn import model_search

    monkeypatch.setitem(model_search.ACTIVATIONS, "relu",
                        lambda x: torch.nn.functional.softplus(x, beta=2.0))
    model = tiny_rnn(seed=2)
    errors, _ = _rnn_expected_and_errors(model, rnn_args(clip=0.05), [1e-1, 1e-2, 1e-3])
    assert errors[0] < 1e-1 and errors[2] < 1e-5, errors
    assert errors[1] < errors[0] / 50 and errors[2] < errors[1] / 50, errors


@pytest.mark.parametrize("unrolled", [False, True])
def test_rnn_step_restores_weights_and_returns_hidden(unrolled):
    model = tiny_rnn(seed=3, dropout=0.3).float()
    ht, xt, yt = rnn_batch(30, dtype=torch.float32)
    hv, xv, yv = rnn_batch(31, dtype=torch.float32)
    opt = torch.optim.SGD(model.parameters(), lr=20.0)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    hidden, second = rnn.Architect(model, rnn_args()).step(ht, xt, yt, hv, xv, yv, opt, unrolled)
    for n, p in model.named_parameters():
        assert torch.equal(p, before[n]), n
    assert second is None
    assert isinstance(hidden, list) and hidden[0].shape == hv[0].shape
    assert not torch.equal(hidden[0], hv[0])


def test_the_unrolled_copy_is_a_deep_copy():
    """reference._bilevel._deepcopy_model hands deepcopy fresh empty containers for the
    modules' empty hook tables: the copy must still equal copy.deepcopy's, share nothing
    mutable with the original, and keep its own alphas."""
    import copy

    from fastdarts.reference._bilevel import _deepcopy_model

    from .helpers import tiny_cnn

    model = tiny_cnn(C=2)
    model.cells[0]._ops[0].register_forward_hook(lambda *a: None)  # one non-empty table too
    ours, theirs = _deepcopy_model(model), copy.deepcopy(model)
    a, b = ours.state_dict(), theirs.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    for m_ours, m_theirs, m in zip(ours.modules(), theirs.modules(), model.modules(), strict=True):
        assert type(m_ours) is type(m_theirs) and m_ours.__dict__.keys() == m_theirs.__dict__.keys()
        for k, v in m_ours.__dict__.items():
            assert type(v) is type(m_theirs.__dict__[k]), k
            if isinstance(v, (dict, set, list)):
                assert v is not m.__dict__[k] and len(v) == len(m.__dict__[k]), k
    assert len(ours.cells[0]._ops[0]._forward_hooks) == 1
    for x, y in zip(ours.arch_parameters(), model.arch_parameters(), strict=True):
        assert x is not y and torch.equal(x, y)
    with torch.no_grad():
        ours.arch_parameters()[0].add_(1.0)  # the copy's own tensors
    assert not torch.equal(ours.arch_parameters()[0], model.arch_parameters()[0])
