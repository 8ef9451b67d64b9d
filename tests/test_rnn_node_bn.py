"""fastdarts::rnn_node_bn (node + training BatchNorm1d(affine=False) + the h_mask product)
on every CPU backend against a float64 oracle that runs the reference cell's own
modules: the node math of tests/test_rnn_node.py's oracle, then nn.BatchNorm1d, then
``* h_mask``; gradients by autograd; running statistics compared after the call."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from fastdarts.ops import rnn_node_bn as op_mod

from .helpers import assert_close, make_inputs, oracle

CPU_BACKENDS = ("reference", "triton")
TOL = {torch.float64: dict(rtol=1e-12, atol=1e-13, p_rtol=1e-11),
       torch.float32: dict(rtol=2e-5, atol=1e-6, p_rtol=2e-5)}


@pytest.fixture(autouse=True, scope="module")
def _one_cpu_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _bn(H, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    bn = nn.BatchNorm1d(H, affine=False).to(dtype)
    bn.running_mean.copy_(torch.rand(H, generator=g))
    bn.running_var.copy_(1 + torch.rand(H, generator=g))
    bn.num_batches_tracked.fill_(3)
    return bn


def _mask(B, H, dtype, seed, layout="contiguous"):
    g = torch.Generator().manual_seed(seed + 1)
    m = (torch.rand(H, B, generator=g) > 0.3).to(dtype) / 0.7
    return m.t() if layout == "noncontiguous" else m.t().contiguous()


def check(n, B, H, dtype, layout="contiguous", used=(True, True), seed=0):
    tol = TOL[dtype]
    ch, states, probs, grad = make_inputs(n, B, H, dtype, seed=seed, layout=layout)
    h_mask = _mask(B, H, dtype, seed, layout)
    grad_m = torch.randn(B, H, generator=torch.Generator().manual_seed(seed + 2)).to(dtype)
    bn, bn64 = _bn(H, dtype, seed), _bn(H, torch.float64, seed)
    ch, states, probs = (t.detach().requires_grad_() for t in (ch, states, probs))
    y, ym = op_mod.node_bn(ch, states, probs, h_mask, bn)
    assert y.dtype == dtype and y.shape == (B, H) and y.is_contiguous() and ym.is_contiguous()
    outs, grads = zip(*[(o, g) for o, g, u in zip((y, ym), (grad, grad_m), used) if u])
    torch.autograd.backward(outs, grads)

    leaves = [t.detach().double().requires_grad_() for t in (ch, states, probs)]
    y64 = bn64(oracle(*leaves))
    ym64 = y64 * h_mask.double()
    outs64 = [o for o, u in zip((y64, ym64), used) if u]
    torch.autograd.backward(outs64, [g.double() for g in grads])
    assert_close(y, y64, tol["rtol"], tol["atol"], "y")
    assert_close(ym, ym64, tol["rtol"], tol["atol"], "y * h_mask")
    for name in ("running_mean", "running_var"):
        assert_close(getattr(bn, name), getattr(bn64, name), tol["rtol"], tol["atol"], name)
    assert int(bn.num_batches_tracked) == int(bn64.num_batches_tracked) == 4
    for name, t, ref in (("d ch", ch, leaves[0]), ("d states", states, leaves[1])):
        assert t.grad.dtype == dtype and t.grad.shape == t.shape, name
        assert_close(t.grad, ref.grad, tol["rtol"], tol["atol"], name)
    assert_close(probs.grad, leaves[2].grad, tol["p_rtol"], tol["atol"], "d probs")
    assert torch.all(probs.grad[:, 0] == 0)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("n, B, H", [(1, 3, 5), (4, 70, 21), (9, 6, 17)])
def test_matches_module_oracle(use_backend, backend, dtype, n, B, H):
    use_backend(backend, "cpu")
    check(n, B, H, dtype, seed=n + B)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("used", [(True, False), (False, True)], ids=["y", "masked"])
def test_one_output_used_and_noncontiguous(use_backend, backend, used):
    use_backend(backend, "cpu")
    check(3, 5, 7, torch.float64, layout="noncontiguous", used=used)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_gradcheck_float64(use_backend, backend):
    use_backend(backend, "cpu")
    n, B, H = (2, 4, 3) if backend == "reference" else (2, 3, 2)
    ch, states, probs, _ = make_inputs(n, B, H, torch.float64, seed=5)
    h_mask = _mask(B, H, torch.float64, 5)
    bn = _bn(H, torch.float64, 5)

    def f(ch, states, probs):
        return op_mod.node_bn(ch, states, probs, h_mask, bn)

    inputs = (ch.requires_grad_(), states.requires_grad_(), probs.requires_grad_())
    fast = backend != "reference"
    assert torch.autograd.gradcheck(f, inputs, fast_mode=fast)
    assert torch.autograd.gradgradcheck(f, inputs, fast_mode=fast)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_opcheck(use_backend, backend):
    use_backend(backend, "cpu")
    n, B, H = 2, 3, 5
    ch, states, probs, grad = make_inputs(n, B, H, torch.float32, seed=7)
    h_mask = _mask(B, H, torch.float32, 7)
    bn = _bn(H, torch.float32, 7)
    torch.library.opcheck(torch.ops.fastdarts.rnn_node_bn,
                          (ch, states, probs, h_mask, bn.running_mean, bn.running_var,
                           bn.num_batches_tracked, 0.1, 1e-5))
    y, _, invstd = torch.ops.fastdarts.rnn_node_bn(ch, states, probs, h_mask, bn.running_mean,
                                                   bn.running_var, bn.num_batches_tracked,
                                                   0.1, 1e-5)
    for gy, gym in ((grad, grad * 2), (None, grad), (grad, None)):
        torch.library.opcheck(torch.ops.fastdarts.rnn_node_bn_backward,
                              (gy, gym, ch, states, probs, h_mask, y, invstd, 1e-5))


def test_batch_of_one_is_refused_as_batch_norm_does():
    ch, states, probs, _ = make_inputs(2, 1, 4, torch.float32)
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        op_mod.node_bn(ch, states, probs, torch.ones(1, 4), _bn(4, torch.float32, 0))
    with pytest.raises(ValueError, match=r"h_mask must be \[B, H\]"):
        ch, states, probs, _ = make_inputs(2, 3, 4, torch.float32)
        op_mod.node_bn(ch, states, probs, torch.ones(3, 5), _bn(4, torch.float32, 0))
