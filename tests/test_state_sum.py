"""fastdarts::state_mixed_sum (every edge leaving one state at once) against a plain oracle.

The oracle slices each wide input per edge and sums ``w * slice`` in float64 with
autograd; the op must match it on every backend, in both memory formats, with and
without partial sums, shared and wide inputs, more than one kernel chunk (K > 8),
and for every gradient (inputs, weights, partial sums).
"""

from __future__ import annotations

import pytest
import torch

from fastdarts.ops import state_sum

CPU_BACKENDS = ("reference", "triton")
TOL = {torch.float64: dict(rtol=1e-12, atol=1e-12), torch.float32: dict(rtol=1e-5, atol=1e-5),
       torch.bfloat16: dict(rtol=2e-2, atol=2e-2)}


def oracle(inputs, blocks, w, partials, C):
    E = w.shape[0]
    outs = []
    for e in range(E):
        acc = partials[e].double() if partials else 0
        k = 0
        for x, g in zip(inputs, blocks):
            for b in range(max(1, g)):
                s = x if g == 0 else x[:, (b * E + e) * C:(b * E + e + 1) * C]
                acc = acc + w[e, k].double() * s.double()
                k += 1
        outs.append(acc)
    return outs


def make(blocks, E=3, C=4, N=2, H=5, dtype=torch.float64, fmt=torch.contiguous_format,
         partials=True, seed=0):
    g = torch.Generator().manual_seed(seed)

    def t(ch):
        return (torch.randn(N, ch, H, H + 1, generator=g).to(dtype)
                .contiguous(memory_format=fmt).requires_grad_())

    inputs = [t(C * (b * E if b else 1)) for b in blocks]
    K = sum(max(1, b) for b in blocks)
    w = torch.randn(E, K, generator=g).to(torch.float32 if dtype == torch.bfloat16 else dtype)
    w.requires_grad_()
    ps = [t(C) for _ in range(E)] if partials else []
    return inputs, w, ps


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("fmt", [torch.contiguous_format, torch.channels_last], ids=str)
@pytest.mark.parametrize("case", [
    dict(blocks=[0, 0, 2, 1, 0], partials=True),          # the DARTS layout, partial sums
    dict(blocks=[0, 3, 0, 4, 1], partials=False),          # K = 10 > 8: two chunks
    dict(blocks=[2], partials=True, E=1),                  # the last state: one edge
])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16], ids=str)
def test_matches_oracle(backend, fmt, case, dtype, use_backend):
    use_backend(backend)
    case = dict(case)
    blocks = case.pop("blocks")
    inputs, w, ps = make(blocks, dtype=dtype, fmt=fmt, **case)
    out = torch.ops.fastdarts.state_mixed_sum(inputs, blocks, w, ps)
    ref = oracle(inputs, blocks, w, ps, 4)
    tol = TOL[dtype]
    assert len(out) == w.shape[0]
    for a, b in zip(out, ref):
        assert a.dtype == dtype and a.is_contiguous(memory_format=fmt)
        torch.testing.assert_close(a.double(), b, **tol)
    grads = [torch.randn(o.shape, dtype=torch.float64).to(dtype) for o in out]
    got = torch.autograd.grad(out, inputs + [w] + ps, grads)
    want = torch.autograd.grad(ref, inputs + [w] + ps, [g.double() for g in grads])
    for i, (a, b) in enumerate(zip(got, want)):
        torch.testing.assert_close(a.double(), b.double(), **tol, msg=f"gradient {i}")


def test_wrong_op_fails_the_oracle():
    """The comparison can fail: a transposed weight (edge and op swapped) is caught."""
    inputs, w, ps = make([0, 1, 0], E=2)
    w = w.detach()[:, [1, 0, 2]]
    out = torch.ops.fastdarts.state_mixed_sum(inputs, [0, 1, 0], w, ps)
    ref = oracle(inputs, [0, 1, 0], w[:, [1, 0, 2]], ps, 4)
    assert not torch.allclose(out[0], ref[0])


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_gradcheck(backend, use_backend):
    use_backend(backend)
    blocks = [0, 2, 1]
    inputs, w, ps = make(blocks, E=2, C=1, N=1, H=2)

    def f(*a):
        return tuple(torch.ops.fastdarts.state_mixed_sum(list(a[:3]), blocks, a[3], list(a[4:])))

    assert torch.autograd.gradcheck(f, (*inputs, w, *ps))
    if backend != "reference":  # the interpreter is slow; the double backward below
        return                  # never runs a kernel anyway
    # double backward (the Architect's exact Hessian-vector product) goes through the
    # differentiable reference formula
    assert torch.autograd.gradgradcheck(f, (*inputs, w, *ps))


def test_opcheck():
    inputs, w, ps = make([0, 0, 2, 1, 0], E=3)
    torch.library.opcheck(torch.ops.fastdarts.state_mixed_sum.default, (inputs, [0, 0, 2, 1, 0], w, ps))
    torch.library.opcheck(torch.ops.fastdarts.state_mixed_sum.default, (inputs, [0, 0, 2, 1, 0], w, []))


def test_mixed_formats_are_made_contiguous(use_backend):
    use_backend("triton")
    inputs, w, ps = make([0, 2], E=2)
    inputs[1] = inputs[1].detach().contiguous(memory_format=torch.channels_last)
    out = torch.ops.fastdarts.state_mixed_sum(inputs, [0, 2], w, ps)
    ref = oracle(inputs, [0, 2], w, ps, 4)
    for a, b in zip(out, ref):
        torch.testing.assert_close(a, b)


def test_bad_input_says_what_to_fix():
    inputs, w, ps = make([0, 2], E=2)
    with pytest.raises(ValueError, match="weight columns"):
        torch.ops.fastdarts.state_mixed_sum(inputs, [0, 1], w, ps)
    with pytest.raises(ValueError, match=r"inputs\[1\] has shape"):
        torch.ops.fastdarts.state_mixed_sum([inputs[0], inputs[1][:, :12]], [0, 2], w, ps)
    with pytest.raises(ValueError, match="partial sums for 2 edges"):
        torch.ops.fastdarts.state_mixed_sum(inputs, [0, 2], w, ps[:1])
    with pytest.raises(ValueError, match="block counts"):
        torch.ops.fastdarts.state_mixed_sum(inputs, [0], w, ps)
    assert state_sum.current_backend("cpu") in ("reference", "triton")


@pytest.mark.gpu
@pytest.mark.parametrize("fmt", [torch.contiguous_format, torch.channels_last], ids=str)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16], ids=str)
def test_gpu_triton_matches_oracle(fmt, dtype, use_backend):
    """The compiled Triton kernels (the CPU tests run them in the interpreter)."""
    use_backend("triton", "cuda")
    blocks = [0, 0, 1, 2, 2]
    inputs, w, ps = make(blocks, E=4, C=16, N=3, H=9, dtype=dtype, fmt=fmt)
    inputs = [x.detach().cuda().requires_grad_() for x in inputs]
    w = w.detach().cuda().requires_grad_()
    ps = [p.detach().cuda().requires_grad_() for p in ps]
    out = torch.ops.fastdarts.state_mixed_sum(inputs, blocks, w, ps)
    ref = oracle(inputs, blocks, w, ps, 16)
    for a, b in zip(out, ref):
        torch.testing.assert_close(a.double(), b, **TOL[dtype])
    grads = [torch.randn(o.shape, dtype=torch.float64, device="cuda").to(dtype) for o in out]
    got = torch.autograd.grad(out, inputs + [w] + ps, grads)
    want = torch.autograd.grad(ref, inputs + [w] + ps, [g.double() for g in grads])
    for i, (a, b) in enumerate(zip(got, want)):
        torch.testing.assert_close(a.double(), b.double(), **TOL[dtype], msg=f"gradient {i}")
