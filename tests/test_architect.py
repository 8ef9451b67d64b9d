"""fastdarts.Architect (in place, flat buffers) against the reference Architect."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest
import torch
import torch.nn as nn

import fastdarts.architect as A
from fastdarts import backends
from fastdarts.reference import cnn, rnn
from tests.helpers import cnn_args, cnn_batch, rnn_args, rnn_batch, tiny_cnn, tiny_rnn

F32 = torch.float32


def _rel(a, b):
    a = torch.cat([t.reshape(-1) for t in a])
    b = torch.cat([t.reshape(-1) for t in b])
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


def _grads(model):
    return [a.grad.detach().clone() for a in model.arch_parameters()]


def _weights(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def _assert_same_weights(model, before):
    for n, p in model.named_parameters():
        assert torch.equal(p, before[n]), n


# ------------------------------------------------------------------------ CNN
def _cnn_pair(seed=0, momentum_step=True):
    ref = tiny_cnn(seed=seed, C=4, layers=3, dtype=F32)
    xt, yt = cnn_batch(100 + seed, n=6, dtype=F32)
    xv, yv = cnn_batch(200 + seed, n=6, dtype=F32)
    fused = copy.deepcopy(ref)
    opts = []
    for m in (ref, fused):
        opt = torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9, weight_decay=3e-4)
        if momentum_step:
            m._loss(xt, yt).backward()
            opt.step()
            opt.zero_grad()
        opts.append(opt)
    return ref, fused, opts, (xt, yt, xv, yv)


@pytest.mark.parametrize("unrolled", [False, True])
@pytest.mark.parametrize("momentum_step", [False, True])
def test_cnn_alpha_grads_match_reference(unrolled, momentum_step):
    ref, fused, (o_ref, o_fused), (xt, yt, xv, yv) = _cnn_pair(momentum_step=momentum_step)
    a_ref = cnn.Architect(ref, cnn_args())
    a_fused = A.Architect(fused, cnn_args())
    assert isinstance(a_fused, A.CNNArchitect)
    before = _weights(fused)
    a_ref.step(xt, yt, xv, yv, 0.05, o_ref, unrolled)
    a_fused.step(xt, yt, xv, yv, 0.05, o_fused, unrolled)
    assert _rel(_grads(fused), _grads(ref)) < 1e-4
    _assert_same_weights(fused, before)  # bit-identical
    # alphas moved identically (Adam from the same gradients)
    for a, b in zip(fused.arch_parameters(), ref.arch_parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    # BatchNorm running statistics as the reference leaves them
    for (k, v1), v2 in zip(fused.state_dict().items(), ref.state_dict().values()):
        if "running" in k or "num_batches" in k:
            torch.testing.assert_close(v1, v2, rtol=1e-4, atol=1e-5, msg=k)


@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_cnn_alternating_steps_track_the_reference(backend):
    """Architect step then weight step (clip 5, SGD momentum), four times (ten took 30 s
    on the Triton interpreter; four carry the momentum and Adam state over three times).

    Stated tolerance: on the reference backend the fused Architect rounds exactly
    as the reference one, so alphas and weights are bit-identical after 4 steps.
    On kernel backends (FMA, other rounding) 1e-3 relative: a one-ulp difference
    can flip a ReLU kink inside the +-R v finite difference and change that step's
    alpha gradient by O(1) (seen: 13% at step 8 here), which Adam then carries.
    """
    if backend not in backends.available_backends():
        pytest.skip(f"{backend} backend not available here")
    ref, fused, (o_ref, o_fused), _ = _cnn_pair(seed=3)
    a_ref = cnn.Architect(ref, cnn_args())
    a_fused = A.Architect(fused, cnn_args())
    backends.set_backend(backend)
    try:
        for step in range(4):
            xt, yt = cnn_batch(1000 + step, n=6, dtype=F32)
            xv, yv = cnn_batch(2000 + step, n=6, dtype=F32)
            for model, arch, opt in ((ref, a_ref, o_ref), (fused, a_fused, o_fused)):
                arch.step(xt, yt, xv, yv, 0.05, opt, unrolled=True)
                opt.zero_grad()
                model._loss(xt, yt).backward()
                nn.utils.clip_grad_norm_(model.parameters(), 5.0)
                opt.step()
    finally:
        backends.set_backend(None)
    if backend == "reference":
        for a, b in zip(fused.arch_parameters(), ref.arch_parameters()):
            assert torch.equal(a, b)
        for a, b in zip(fused.parameters(), ref.parameters()):
            assert torch.equal(a, b)
    else:
        assert _rel(fused.arch_parameters(), ref.arch_parameters()) < 1e-3
        assert _rel(list(fused.parameters()), list(ref.parameters())) < 1e-3


# ------------------------------------------------------------------------ RNN
@pytest.mark.parametrize("unrolled", [False, True])
@pytest.mark.parametrize("clip", [0.05, 10.0])
def test_rnn_alpha_grads_match_reference(unrolled, clip):
    ref = tiny_rnn(seed=4, dropout=0.0, dtype=F32)
    fused = copy.deepcopy(ref)
    ht, xt, yt = rnn_batch(40, dtype=F32)
    hv, xv, yv = rnn_batch(41, dtype=F32)
    args = rnn_args(clip=clip)
    o_ref = torch.optim.SGD(ref.parameters(), lr=2.0)
    o_fused = torch.optim.SGD(fused.parameters(), lr=2.0)
    a_fused = A.Architect(fused, args)
    assert isinstance(a_fused, A.RNNArchitect)
    before = _weights(fused)
    h_ref, none = rnn.Architect(ref, args).step(ht, xt, yt, hv, xv, yv, o_ref, unrolled)
    h_fused, gnorm = a_fused.step(ht, xt, yt, hv, xv, yv, o_fused, unrolled)
    assert none is None and gnorm.dim() == 0
    assert _rel(_grads(fused), _grads(ref)) < 1e-4
    torch.testing.assert_close(gnorm, torch.linalg.vector_norm(fused.weights.grad))
    torch.testing.assert_close(h_fused[0], h_ref[0], rtol=1e-5, atol=1e-6)
    _assert_same_weights(fused, before)


def test_rnn_with_dropout_matches_reference_under_the_same_rng():
    """Same RNG stream -> same dropout masks in the same order of passes."""
    ref = tiny_rnn(seed=5, dropout=0.3, dtype=F32)
    fused = copy.deepcopy(ref)
    ht, xt, yt = rnn_batch(50, dtype=F32)
    hv, xv, yv = rnn_batch(51, dtype=F32)
    args = rnn_args()
    o_ref = torch.optim.SGD(ref.parameters(), lr=2.0)
    o_fused = torch.optim.SGD(fused.parameters(), lr=2.0)
    a_fused = A.Architect(fused, args)
    torch.manual_seed(9)
    rnn.Architect(ref, args).step(ht, xt, yt, hv, xv, yv, o_ref, True)
    torch.manual_seed(9)
    a_fused.step(ht, xt, yt, hv, xv, yv, o_fused, True)
    assert _rel(_grads(fused), _grads(ref)) < 1e-4


# ------------------------------------------------------------------ options
def test_exact_hvp_mode_agrees_with_small_r_finite_difference():
    model = tiny_cnn(seed=6, C=2, dtype=torch.float64)
    xt, yt = cnn_batch(60)
    xv, yv = cnn_batch(61)
    other = copy.deepcopy(model)
    opt1 = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    opt2 = torch.optim.SGD(other.parameters(), lr=0.1, momentum=0.9)
    A.Architect(model, cnn_args(), hvp="exact").step(xt, yt, xv, yv, 0.1, opt1, True)
    A.Architect(other, cnn_args(), r=1e-5).step(xt, yt, xv, yv, 0.1, opt2, True)
    assert _rel(_grads(model), _grads(other)) < 1e-6


class Toy(nn.Module):
    """A model without BatchNorm: y = softmax(alpha) . [x w1, tanh(x w2)]."""

    def __init__(self):
        super().__init__()
        self.w1 = nn.Parameter(torch.randn(5, 1))
        self.w2 = nn.Parameter(torch.randn(5, 1))
        self.unused = nn.Parameter(torch.randn(3))
        self.alpha = torch.zeros(2, requires_grad=True)
        self.zero_val = False

    def arch_parameters(self):
        return [self.alpha]

    def _loss(self, x, y):
        p = torch.softmax(self.alpha, 0)
        out = p[0] * (x @ self.w1) + p[1] * torch.tanh(x @ self.w2)
        if self.zero_val:  # a loss that does not depend on the weights: v = 0
            return (self.alpha ** 2).sum() + 0.0 * out.sum()
        return ((out.squeeze(1) - y) ** 2).mean()


def test_any_model_micro_batches_and_unused_parameters():
    torch.manual_seed(0)
    x, y = torch.randn(12, 5), torch.randn(12)
    xv, yv = torch.randn(12, 5), torch.randn(12)
    grads = []
    for k in (1, 3):
        torch.manual_seed(1)
        model = Toy()
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        A.Architect(model, cnn_args(), micro_batches=k).step(x, y, xv, yv, 0.1, opt, True)
        grads.append(model.alpha.grad.clone())
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-5, atol=1e-7)


def test_zero_norm_v_skips_the_finite_difference_and_keeps_weights():
    torch.manual_seed(2)
    model = Toy()
    model.zero_val = True
    model.alpha.data = torch.tensor([0.3, -0.7])
    alpha0 = model.alpha.detach().clone()
    x, y = torch.randn(8, 5), torch.randn(8)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    before = _weights(model)
    arch = A.Architect(model, cnn_args())
    arch.step(x, y, x, y, 0.1, opt, True)
    assert not arch.stats.fd_ok.item() and arch.stats.R.item() == 0.0
    # only the direct term d(sum alpha^2)/dalpha = 2 alpha is left, finite
    torch.testing.assert_close(model.alpha.grad, 2 * alpha0)
    _assert_same_weights(model, before)


def test_non_finite_loss_skips_the_finite_difference_and_keeps_weights():
    torch.manual_seed(3)
    model = Toy()
    x, y = torch.randn(8, 5), torch.randn(8)
    yv = y.clone()
    yv[0] = float("nan")
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    before = _weights(model)
    arch = A.Architect(model, cnn_args())
    arch.step(x, y, x, yv, 0.1, opt, True)
    assert not arch.stats.fd_ok.item()
    _assert_same_weights(model, before)


# ---------------------------------------------------------------- bad input
def test_bad_models_are_rejected_clearly():
    class NoArch(nn.Module):
        def _loss(self, x, y):
            return x.sum()

    with pytest.raises(TypeError, match="no arch_parameters"):
        A.Architect(NoArch(), cnn_args())
    model = Toy()
    model.alpha = model.alpha * 2  # not a leaf
    with pytest.raises(ValueError, match="leaf tensor with requires_grad"):
        A.Architect(model, cnn_args())
    model = Toy()
    model.w2.data = model.w2.data.double()
    with pytest.raises(ValueError, match="one device and dtype"):
        A.Architect(model, cnn_args())
    with pytest.raises(TypeError, match="args lacks"):
        A.Architect(Toy(), SimpleNamespace(momentum=0.9))


def test_model_moved_after_construction_is_regathered():
    model = tiny_cnn(seed=7, C=2, dtype=F32)
    arch = A.Architect(model, cnn_args())
    model.double()  # replaces the storage of every parameter
    xt, yt = cnn_batch(70)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    before = _weights(model)
    arch.step(xt, yt, xt, yt, 0.1, opt, True)
    assert arch.w.data.dtype == torch.float64 and arch.w.intact()
    _assert_same_weights(model, before)


def test_exact_hvp_through_the_fused_network_matches_the_reference_network():
    """Double backward runs through the fused mixed_sum (its backward is differentiable
    when create_graph=True)."""
    from fastdarts.nn import Network as FusedNetwork

    ref = tiny_cnn(seed=8, C=2, dtype=torch.float64)
    torch.manual_seed(8)
    fused = FusedNetwork(2, 3, 3, nn.CrossEntropyLoss()).double()
    fused.load_state_dict(ref.state_dict())
    for a, b in zip(fused.arch_parameters(), ref.arch_parameters()):
        a.data.copy_(b.data)
    xt, yt = cnn_batch(80)
    xv, yv = cnn_batch(81)
    for model in (ref, fused):
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        A.Architect(model, cnn_args(), hvp="exact").step(xt, yt, xv, yv, 0.1, opt, True)
    assert _rel(_grads(fused), _grads(ref)) < 1e-10
