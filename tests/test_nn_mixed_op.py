"""fastdarts.MixedOp against the reference MixedOp: keys, outputs, every gradient, BN stats."""

from __future__ import annotations

import pytest
import torch

import fastdarts
from fastdarts.reference import cnn
from fastdarts.space.genotypes import PRIMITIVES

CPU_BACKENDS = ("reference", "triton", "cpu")
EXT_OP = "mixed_sum_forward"
# (rtol, atol) for outputs and gradients; only the summation order differs from the reference.
TOL = {torch.float64: (1e-10, 1e-10), torch.float32: (1e-5, 1e-5)}


def make_pair(C, stride, dtype, primitives=PRIMITIVES, seed=0):
    torch.manual_seed(seed)
    ref = cnn.MixedOp(C, stride, primitives).to(dtype)
    fused = fastdarts.MixedOp(C, stride, primitives).to(dtype)
    assert list(fused.state_dict()) == list(ref.state_dict())
    fused.load_state_dict(ref.state_dict())
    return ref, fused


def run(module, x, alpha, grad):
    x = x.detach().clone().requires_grad_()
    alpha = alpha.detach().clone().requires_grad_()
    weights = torch.softmax(alpha, dim=-1)
    weights.retain_grad()
    y = module(x, weights)
    y.backward(grad.to(y.dtype))
    grads = {n: p.grad for n, p in module.named_parameters()}
    return y, x.grad, weights.grad, alpha.grad, grads


def compare(ref, fused, x, alpha, rtol, atol):
    g = torch.Generator().manual_seed(11)
    out_shape = ref(x, torch.softmax(alpha, -1)).shape
    for m in ref.modules():  # that probe forward moved BN stats; start both from the same state
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
    for m in fused.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
    grad = torch.randn(out_shape, generator=g, dtype=torch.float64)
    y_r, gx_r, gw_r, ga_r, gp_r = run(ref, x, alpha, grad)
    y_f, gx_f, gw_f, ga_f, gp_f = run(fused, x, alpha, grad)
    assert y_f.dtype == y_r.dtype and y_f.shape == y_r.shape
    torch.testing.assert_close(y_f, y_r, rtol=rtol, atol=atol)
    torch.testing.assert_close(gx_f, gx_r, rtol=rtol, atol=atol)
    torch.testing.assert_close(gw_f, gw_r, rtol=rtol, atol=atol)
    torch.testing.assert_close(ga_f, ga_r, rtol=rtol, atol=atol)
    assert gp_f.keys() == gp_r.keys()
    for name in gp_r:
        # A weight gradient sums N*H*W products: its rounding error (bf16/fp16 under
        # autocast, where the reference rounds after every term) scales with the
        # gradient's magnitude, not each element's; a wrong gradient is off by O(max).
        scale = max(1.0, gp_r[name].abs().max().item())
        torch.testing.assert_close(gp_f[name], gp_r[name], rtol=rtol, atol=atol * scale, msg=name)
    for (name, b_r), b_f in zip(ref.state_dict().items(), fused.state_dict().values(),
                                strict=True):  # BN running stats after the forward
        torch.testing.assert_close(b_f, b_r, rtol=rtol, atol=atol, msg=name)
    if "none" in fused._primitives:  # never run, contributes zero: an exactly zero gradient
        assert gw_f[fused._primitives.index("none")].item() == 0.0
    return y_f


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("stride, hw", [(1, 7), (2, 8)])
@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_matches_reference(backend, stride, hw, dtype, use_backend):
    use_backend(backend, "cpu", EXT_OP)
    ref, fused = make_pair(4, stride, dtype)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 4, hw, hw, generator=g, dtype=dtype)
    alpha = torch.randn(len(PRIMITIVES), generator=g, dtype=dtype)
    compare(ref, fused, x, alpha, *TOL[dtype])


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_channels_last(backend, use_backend):
    use_backend(backend, "cpu", EXT_OP)
    ref, fused = make_pair(4, 1, torch.float32)
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 4, 6, 6, generator=g).contiguous(memory_format=torch.channels_last)
    alpha = torch.randn(len(PRIMITIVES), generator=g)
    compare(ref, fused, x, alpha, *TOL[torch.float32])


@pytest.mark.parametrize("primitives", [
    ["max_pool_3x3", "none", "skip_connect", "sep_conv_3x3"],  # none in the middle
    ["skip_connect"],
    ["none"],
], ids=["none_in_middle", "single", "only_none"])
@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_other_primitive_lists(backend, primitives, use_backend):
    use_backend(backend, "cpu", EXT_OP)
    ref, fused = make_pair(4, 1, torch.float64, primitives)
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 4, 5, 5, generator=g, dtype=torch.float64)
    alpha = torch.randn(len(primitives), generator=g, dtype=torch.float64)
    compare(ref, fused, x, alpha, *TOL[torch.float64])


def _autocast_supported(dtype) -> bool:
    try:
        with torch.autocast("cpu", dtype=dtype):
            torch.nn.functional.conv2d(torch.randn(1, 1, 3, 3), torch.randn(1, 1, 1, 1))
        return True
    except (RuntimeError, AssertionError):
        return False


@pytest.mark.parametrize("amp_dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_autocast(backend, amp_dtype, use_backend):
    use_backend(backend, "cpu", EXT_OP)
    if not _autocast_supported(amp_dtype):
        pytest.skip(f"CPU autocast to {amp_dtype} is not supported by this torch")
    ref, fused = make_pair(4, 1, torch.float32)
    g = torch.Generator().manual_seed(4)
    x = torch.randn(2, 4, 6, 6, generator=g)
    alpha = torch.randn(len(PRIMITIVES), generator=g)
    with torch.autocast("cpu", dtype=amp_dtype):
        # Both sum low-precision conv outputs with float32 weights; the reference rounds
        # after every term, the fused sum once, so they agree to a few ulps of amp_dtype.
        y = compare(ref, fused, x, alpha, rtol=3e-2, atol=3e-2)
    # The weights stay float32 (autocast softmax) while the conv outputs are amp_dtype.
    assert y.dtype in (amp_dtype, torch.float32)


def test_bad_weights_say_what_to_do():
    op = fastdarts.MixedOp(4, 1)
    with pytest.raises(ValueError, match="one row of softmax"):
        op(torch.randn(1, 4, 5, 5), torch.ones(len(PRIMITIVES) - 1))
    with pytest.raises(ValueError, match="one row of softmax"):
        op(torch.randn(1, 4, 5, 5), torch.ones(2, len(PRIMITIVES)))
