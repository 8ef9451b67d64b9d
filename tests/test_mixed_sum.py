"""fastdarts::mixed_sum on every backend against a float64 oracle.

Errors are bounded relative to the sum of absolute terms (|w||x| summed over m
for the forward, |g||x| summed over elements for grad_weights), which is what
floating-point summation error scales with; the per-dtype table below is tight
enough that one wrong term, a dropped chunk or a missed rounding fails it.
"""

from __future__ import annotations

import warnings

import pytest
import torch

import fastdarts
from fastdarts import _ext, backends
from fastdarts.functional import mixed_sum
from fastdarts.ops import mixed_sum as mixed_sum_mod

CPU_BACKENDS = ("reference", "triton", "cpu")
GPU_BACKENDS = ("reference", "triton", "cuda")
EXT_OP = "mixed_sum_forward"

# rtol is relative to the sum of |terms| (see the module docstring).  Outputs and
# grad_outputs are rounded once to their dtype; grad_weights accumulate in float32.
TOL = {
    torch.float64: dict(rtol=1e-12, atol=1e-12, w_rtol=1e-12),
    torch.float32: dict(rtol=1e-5, atol=1e-6, w_rtol=1e-5),
    # 2**-7: one bfloat16 ulp; the Triton interpreter rounds toward zero.
    torch.bfloat16: dict(rtol=8e-3, atol=1e-3, w_rtol=1e-5),
    torch.float16: dict(rtol=1e-3, atol=1e-4, w_rtol=1e-5),
}


def assert_bounded(actual, expected, scale, rtol, atol, what):
    err = (actual.double() - expected).abs()
    bound = atol + rtol * scale
    bad = err > bound
    worst = err.argmax()
    assert not bad.any(), (f"{what}: {int(bad.sum())} of {bad.numel()} elements off; worst error "
                           f"{err.flatten()[worst].item():.3g} vs bound "
                           f"{bound.flatten()[worst].item():.3g}")


def make_outputs(M, shape, dtype, device, layout="contiguous", seed=0):
    g = torch.Generator().manual_seed(seed)
    xs = []
    for _ in range(M):
        if layout == "noncontiguous":  # every other element of the last dim, transposed
            x = torch.randn(*shape[:-1], 2 * shape[-1], generator=g)[..., ::2].transpose(0, -1)
        else:
            x = torch.randn(*shape, generator=g)
        x = x.to(device=device, dtype=dtype)
        if layout == "channels_last":
            x = x.contiguous(memory_format=torch.channels_last)
        xs.append(x.requires_grad_())
    return xs


def check_against_float64(xs, weights, stacked=False):
    """Forward, grad_outputs and grad_weights of mixed_sum vs float64; returns the result."""
    dtype = xs[0].dtype
    tol = TOL[dtype]
    weights = weights.detach().requires_grad_()
    y = mixed_sum(torch.stack(xs) if stacked else xs, weights)
    assert y.dtype == dtype and y.shape == xs[0].shape
    g = torch.randn(y.shape, generator=torch.Generator().manual_seed(1)).to(y.device, dtype)
    y.backward(g)

    x64 = [x.detach().double() for x in xs]
    w64 = weights.detach().double().reshape(-1)
    g64 = g.double()
    ref = sum(w * x for w, x in zip(w64, x64, strict=True))
    scale = sum(w.abs() * x.abs() for w, x in zip(w64, x64, strict=True))
    assert_bounded(y, ref, scale, tol["rtol"], tol["atol"], "forward")
    if not stacked:
        for m, (x, w) in enumerate(zip(xs, w64, strict=True)):
            assert x.grad.dtype == dtype and x.grad.shape == x.shape
            assert_bounded(x.grad, w * g64, (w * g64).abs(), tol["rtol"], tol["atol"],
                           f"grad_outputs[{m}]")
    assert weights.grad.shape == weights.shape and weights.grad.dtype == weights.dtype
    gw_ref = torch.stack([(g64 * x).sum() for x in x64])
    gw_scale = torch.stack([(g64 * x).abs().sum() for x in x64])
    assert_bounded(weights.grad.reshape(-1), gw_ref, gw_scale, tol["w_rtol"], 1e-6,
                   "grad_weights")
    return y


CASES = {
    # name: (M, shape, weights shape or None for [M], layout)
    "odd_1d": (3, (1037,), None, "contiguous"),
    "M1": (1, (2, 3, 5, 7), None, "contiguous"),
    "M8": (8, (2, 3, 5, 7), None, "contiguous"),
    "M11_chunked": (11, (3, 4, 9, 13), None, "contiguous"),
    "edges_5x7": (35, (2, 4, 6, 6), (5, 7), "contiguous"),
    "channels_last": (7, (2, 5, 7, 3), None, "channels_last"),
    "noncontiguous": (4, (3, 5, 6), None, "noncontiguous"),
}


def _run_case(case, dtype, device, stacked=False):
    M, shape, wshape, layout = CASES[case]
    xs = make_outputs(M, shape, dtype, device, layout)
    weights = torch.randn(wshape or (M,), generator=torch.Generator().manual_seed(2))
    # float32 weights (autocast's softmax) for low-precision outputs; float64 with float64.
    w_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    y = check_against_float64(xs, weights.to(device, w_dtype), stacked=stacked)
    if layout == "channels_last":
        assert y.is_contiguous(memory_format=torch.channels_last)
    return y


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64],
                         ids=str)
@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_matches_float64(backend, case, dtype, use_backend):
    use_backend(backend, "cpu", EXT_OP)
    _run_case(case, dtype, "cpu")


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_stacked_input_and_mixed_weight_dtypes(backend, use_backend):
    use_backend(backend, "cpu", EXT_OP)
    _run_case("M11_chunked", torch.float32, "cpu", stacked=True)
    # float64 weights with float32 outputs: grad_weights comes back float64, [E, K].
    xs = make_outputs(6, (4, 5), torch.float32, "cpu")
    w = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    mixed_sum(xs, w).sum().backward()
    assert w.grad.dtype == torch.float64 and w.grad.shape == (2, 3)
    expected = torch.stack([x.detach().double().sum() for x in xs]).reshape(2, 3)
    torch.testing.assert_close(w.grad, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_empty_and_deterministic(backend, use_backend):
    use_backend(backend, "cpu", EXT_OP)
    xs = make_outputs(3, (0, 4), torch.float32, "cpu")
    w = torch.randn(3, requires_grad=True)
    y = mixed_sum(xs, w)
    y.sum().backward()
    assert y.shape == (0, 4) and torch.equal(w.grad, torch.zeros(3))
    # Per-block partials + a fixed-order sum: bitwise equal grad_weights run to run.
    xs = make_outputs(9, (64, 1000), torch.float32, "cpu")
    grads = []
    for _ in range(2):
        w = torch.randn(9, generator=torch.Generator().manual_seed(3)).requires_grad_()
        mixed_sum(xs, w).sum().backward()
        grads.append(w.grad)
    assert torch.equal(grads[0], grads[1])


def test_tolerance_check_can_fail():
    xs = make_outputs(3, (50,), torch.bfloat16, "cpu")
    w = torch.randn(3)
    ref = sum(a * x.detach().double() for a, x in zip(w.double(), xs, strict=True))
    scale = sum(a.abs() * x.detach().double().abs() for a, x in zip(w.double(), xs, strict=True))
    wrong = ref.clone()
    wrong[7] += 4 * 2**-7 * scale[7] + 1e-2  # four bfloat16 ulps off in one element
    with pytest.raises(AssertionError, match="1 of 50"):
        assert_bounded(wrong, ref, scale, **{k: TOL[torch.bfloat16][k] for k in ("rtol", "atol")},
                       what="forward")


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_gradcheck_float64(backend, use_backend):
    use_backend(backend, "cpu", EXT_OP)
    g = torch.Generator().manual_seed(4)
    xs = [torch.randn(3, 7, generator=g, dtype=torch.float64, requires_grad=True)
          for _ in range(10)]
    w = torch.randn(2, 5, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda w, *xs: torch.ops.fastdarts.mixed_sum(list(xs), w),
                                    (w, *xs), eps=1e-6, atol=1e-8)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_opcheck(backend, use_backend):
    use_backend(backend, "cpu", EXT_OP)
    g = torch.Generator().manual_seed(5)
    xs = [torch.randn(2, 3, 5, generator=g, requires_grad=True) for _ in range(9)]
    w = torch.randn(9, generator=g, requires_grad=True)
    torch.library.opcheck(torch.ops.fastdarts.mixed_sum.default, (xs, w))
    cl = [torch.randn(2, 3, 4, 5, generator=g).to(memory_format=torch.channels_last)
          for _ in range(3)]
    torch.library.opcheck(torch.ops.fastdarts.mixed_sum.default,
                          (cl, torch.randn(3, 1, generator=g)))
    grad = torch.randn(2, 3, 5, generator=g)
    torch.library.opcheck(torch.ops.fastdarts.mixed_sum_backward.default,
                          (grad, [x.detach() for x in xs], w.detach()))


@pytest.mark.parametrize("bad, message", [
    (lambda: ([], torch.ones(0)), "at least one output"),
    (lambda: ([torch.ones(2, 3), torch.ones(3, 2)], torch.ones(2)), "one shape"),
    (lambda: ([torch.ones(2), torch.ones(2, dtype=torch.float64)], torch.ones(2)), "one dtype"),
    (lambda: ([torch.ones(2), torch.ones(2, device="meta")], torch.ones(2)), "one device"),
    (lambda: ([torch.ones(2)] * 3, torch.ones(4)), r"E\*K == M"),
    (lambda: ([torch.ones(2)] * 4, torch.ones(2, 2, 1)), r"E\*K == M"),
    (lambda: ([torch.ones(2, dtype=torch.long)], torch.ones(1)), "float16/bfloat16"),
    (lambda: ([torch.ones(2)], torch.ones(1, dtype=torch.long)), "floating point"),
])
def test_bad_inputs_say_what_to_do(bad, message):
    outputs, weights = bad()
    with pytest.raises(ValueError, match=message):
        mixed_sum(outputs, weights)
    if outputs:  # the registered op checks too, for callers that bypass the functional
        with pytest.raises(ValueError, match=message):
            torch.ops.fastdarts.mixed_sum(outputs, weights)


def test_cuda_request_on_cpu_falls_back_with_one_warning(monkeypatch):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU; the fallback is for CPU-only machines")
    monkeypatch.setattr(backends, "_warned", set())
    fastdarts.set_backend("cuda")
    try:
        xs = make_outputs(3, (4, 5), torch.float32, "cpu")
        w = torch.randn(3, requires_grad=True)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for _ in range(3):
                y = mixed_sum(xs, w)
                y.sum().backward()
        assert mixed_sum_mod.current_backend("cpu") == "reference"
    finally:
        fastdarts.set_backend(None)
    ours = [w for w in caught if "fastdarts" in str(w.message)]
    assert len(ours) == 1, [str(w.message) for w in ours]
    assert "'cuda'" in str(ours[0].message) and "reference" in str(ours[0].message)
    expected = sum(a * x for a, x in zip(w, xs, strict=True))
    torch.testing.assert_close(y, expected, rtol=1e-6, atol=1e-6)


def _compile_works() -> str | None:
    try:
        torch.compile(lambda t: t * 2 + 1, fullgraph=True)(torch.ones(3))
        return None
    except Exception as exc:  # no C compiler, unsupported Python, ...
        return f"{type(exc).__name__}: {exc}"


def test_torch_compile_fullgraph_cpu():
    reason = _compile_works()
    if reason is not None:
        pytest.skip(f"torch.compile does not work here: {reason}")
    torch._dynamo.reset()

    def step(xs, w):
        y = torch.ops.fastdarts.mixed_sum(xs, torch.softmax(w, dim=-1))
        return (y.relu() * 2).sum()

    compiled = torch.compile(step, fullgraph=True)
    xs = make_outputs(5, (3, 8), torch.float32, "cpu")
    w = torch.randn(5, requires_grad=True)
    loss = compiled(xs, w)
    loss.backward()
    grads = [x.grad.clone() for x in xs] + [w.grad.clone()]
    for t in xs + [w]:
        t.grad = None
    eager = step(xs, w)
    eager.backward()
    torch.testing.assert_close(loss, eager)
    for got, want in zip(grads, [x.grad for x in xs] + [w.grad], strict=True):
        torch.testing.assert_close(got, want)


# -- GPU (skipped at run time without CUDA) ----------------------------------------------------
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64],
                         ids=str)
@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("backend", GPU_BACKENDS)
def test_gpu_matches_float64(backend, case, dtype, use_backend):
    use_backend(backend, "cuda", EXT_OP)
    _run_case(case, dtype, "cuda")


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ("triton", "cuda"))
def test_gpu_gradcheck_opcheck_determinism(backend, use_backend):
    use_backend(backend, "cuda", EXT_OP)
    g = torch.Generator().manual_seed(6)
    xs = [torch.randn(3, 7, generator=g, dtype=torch.float64).cuda().requires_grad_()
          for _ in range(10)]
    w = torch.randn(10, generator=g, dtype=torch.float64).cuda().requires_grad_()
    assert torch.autograd.gradcheck(lambda w, *xs: torch.ops.fastdarts.mixed_sum(list(xs), w),
                                    (w, *xs), eps=1e-6, atol=1e-8)
    torch.library.opcheck(torch.ops.fastdarts.mixed_sum.default,
                          ([x.float() for x in xs], w.float()))
    big = make_outputs(13, (64, 16, 32, 32), torch.bfloat16, "cuda")
    grads = []
    for _ in range(2):
        wb = torch.randn(13, generator=torch.Generator().manual_seed(7)).cuda().requires_grad_()
        mixed_sum(big, wb).float().sum().backward()
        grads.append(wb.grad)
    assert torch.equal(grads[0], grads[1])


def test_auto_dispatch_on_cpu_prefers_the_cpu_kernel(use_backend, monkeypatch):
    # The C++ CPU kernel beats the reference (backends.POLICY, bench/NOTES.md "mixed_sum"):
    # auto picks it where fastdarts._C is built, the reference where it is not.
    monkeypatch.delenv("FASTDARTS_BACKEND", raising=False)
    backends.set_backend(None)
    built = backends.why_unavailable("cpu", "cpu") is None and _ext.has_op(EXT_OP)
    assert mixed_sum_mod.current_backend("cpu") == ("cpu" if built else "reference")
    use_backend("reference")
    assert mixed_sum_mod.current_backend("cpu") == "reference"
