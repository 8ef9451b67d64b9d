"""fastdarts::rnn_node on every available backend against a float64 oracle.

The oracle transcribes the reference search cell's node (DARTSCellSearch.cell in
fastdarts/reference/rnn/model_search.py, after its matmul) in float64 and takes
its gradients with autograd; it shares no code with the op.  Errors are bounded
per element by ``rtol * (|expected| + max|expected|) + atol``: the max term covers
cancellation in a sum of terms of mixed sign, and the table is tight enough that
one wrong op, a dropped state or a missed gate fails it (a wrong term is O(0.1)).
"""

from __future__ import annotations

import pytest
import torch

from fastdarts import backends
from fastdarts.ops import rnn_node as rnn_node_mod  # noqa: F401  (registers the op)

from .helpers import assert_close, make_inputs, one_thread_per_module, oracle  # noqa: F401  (fixture)

CPU_BACKENDS = ("reference", "triton")
GPU_BACKENDS = ("reference", "triton", "cuda")
EXT_OP = "rnn_node_forward"


# one intra-op thread for the whole module (tests.helpers.one_thread_per_module)
pytestmark = pytest.mark.usefixtures("one_thread_per_module")


# Outputs and d ch / d states are rounded once to the input dtype (bfloat16: one ulp
# is 2**-8 relative, and the Triton interpreter rounds toward zero: 2**-7); d probs
# is accumulated in float32 and returned in probs' dtype (float32 here), hence its
# own tolerance.
TOL = {
    torch.float64: dict(rtol=1e-12, atol=1e-14, p_rtol=1e-12),
    torch.float32: dict(rtol=1e-5, atol=1e-7, p_rtol=1e-5),
    torch.bfloat16: dict(rtol=8e-3, atol=1e-5, p_rtol=1e-5),
}


def check_against_oracle(ch, states, probs, grad):
    dtype = ch.dtype
    tol = TOL[dtype]
    ch, states, probs = (t.detach().requires_grad_() for t in (ch, states, probs))
    s = torch.ops.fastdarts.rnn_node(ch, states, probs)
    assert s.dtype == dtype and s.shape == states.shape[1:] and s.is_contiguous()
    s.backward(grad)

    leaves64 = [t.detach().double().requires_grad_() for t in (ch, states, probs)]
    s64 = oracle(*leaves64)
    s64.backward(grad.double())
    assert_close(s, s64, tol["rtol"], tol["atol"], "forward")
    for name, t, ref in (("d ch", ch, leaves64[0]), ("d states", states, leaves64[1])):
        assert t.grad.dtype == dtype and t.grad.shape == t.shape, name
        assert_close(t.grad, ref.grad, tol["rtol"], tol["atol"], name)
    assert probs.grad.dtype == probs.dtype and probs.grad.shape == probs.shape
    assert_close(probs.grad, leaves64[2].grad, tol["p_rtol"], tol["atol"], "d probs")
    assert torch.all(probs.grad[:, 0] == 0), "'none' is never computed: its gradient is 0"


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16],
                         ids=["f64", "f32", "bf16"])
@pytest.mark.parametrize("n", range(1, 9))
def test_matches_oracle(use_backend, backend, dtype, n):
    use_backend(backend, "cpu", EXT_OP)
    check_against_oracle(*make_inputs(n, 3, 5, dtype, seed=n))


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_noncontiguous_inputs_and_grad(use_backend, backend):
    use_backend(backend, "cpu", EXT_OP)
    ch, states, probs, grad = make_inputs(4, 5, 7, torch.float32, layout="noncontiguous")
    assert not ch.is_contiguous() and not states.is_contiguous()
    grad = torch.randn(7, 5).t()  # a transposed [B, H] gradient
    check_against_oracle(ch, states, probs, grad)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_mixed_dtypes_promote(use_backend, backend):
    """Under autocast the matmul gives bfloat16 ch and BatchNorm float32 states: the op
    runs in float32 and hands each input its gradient in its own dtype."""
    use_backend(backend, "cpu", EXT_OP)
    ch, states, probs, grad = make_inputs(3, 3, 5, torch.float32, seed=11)
    ch_bf16 = ch.to(torch.bfloat16).requires_grad_()
    states = states.requires_grad_()
    s = torch.ops.fastdarts.rnn_node(ch_bf16, states, probs)
    assert s.dtype == torch.float32
    s.backward(grad)
    assert ch_bf16.grad.dtype == torch.bfloat16 and states.grad.dtype == torch.float32
    ch32 = ch_bf16.detach().float().requires_grad_()
    states32 = states.detach().requires_grad_()
    torch.ops.fastdarts.rnn_node(ch32, states32, probs).backward(grad)
    torch.testing.assert_close(states.grad, states32.grad, rtol=0, atol=0)
    torch.testing.assert_close(ch_bf16.grad, ch32.grad.to(torch.bfloat16), rtol=0, atol=0)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_probs_grad_deterministic(use_backend, backend):
    use_backend(backend, "cpu", EXT_OP)
    ch, states, probs, grad = make_inputs(8, 33, 31, torch.float32)  # > 1 Triton program
    runs = [torch.ops.fastdarts.rnn_node_backward(grad, ch, states, probs) for _ in range(2)]
    for a, b in zip(*runs, strict=True):
        assert torch.equal(a, b)


def test_backends_agree_on_the_model_shape(use_backend):
    """Triton against the reference backend at several programs' worth of elements."""
    use_backend("triton", "cpu", EXT_OP)
    ch, states, probs, grad = make_inputs(3, 17, 40, torch.float32, seed=3)
    out = torch.ops.fastdarts.rnn_node(ch, states, probs)
    d = torch.ops.fastdarts.rnn_node_backward(grad, ch, states, probs)
    backends.set_backend("reference")
    ref_out = torch.ops.fastdarts.rnn_node(ch, states, probs)
    ref_d = torch.ops.fastdarts.rnn_node_backward(grad, ch, states, probs)
    torch.testing.assert_close(out, ref_out, rtol=1e-5, atol=1e-6)
    for a, b in zip(d, ref_d, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_gradcheck_float64(use_backend, backend):
    use_backend(backend, "cpu", EXT_OP)
    # The interpreter runs one Triton launch in ~30 ms: smaller inputs and fast mode there.
    n, B, H = (3, 3, 5) if backend == "reference" else (2, 1, 3)
    ch, states, probs, _ = make_inputs(n, B, H, torch.float64)
    inputs = (ch.requires_grad_(), states.requires_grad_(), probs.double().requires_grad_())
    fast = backend != "reference"
    assert torch.autograd.gradcheck(torch.ops.fastdarts.rnn_node, inputs, fast_mode=fast)
    # Double backward (exact Hessian-vector products in the Architect).
    assert torch.autograd.gradgradcheck(torch.ops.fastdarts.rnn_node, inputs, fast_mode=fast)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_opcheck(use_backend, backend):
    use_backend(backend, "cpu", EXT_OP)
    ch, states, probs, grad = make_inputs(2, 3, 5, torch.float32)
    torch.library.opcheck(torch.ops.fastdarts.rnn_node,
                          (ch.requires_grad_(), states.requires_grad_(), probs.requires_grad_()))
    torch.library.opcheck(torch.ops.fastdarts.rnn_node_backward,
                          (grad, ch.detach(), states.detach(), probs.detach()))
    # Mixed dtypes (autocast): the fake impls must promote as the real ones do.
    ch_bf16 = ch.detach().to(torch.bfloat16).requires_grad_()
    torch.library.opcheck(torch.ops.fastdarts.rnn_node, (ch_bf16, states, probs))
    torch.library.opcheck(torch.ops.fastdarts.rnn_node_backward,
                          (grad, ch_bf16.detach(), states.detach(), probs.detach()))


@pytest.mark.parametrize("bad, match", [
    (dict(states=torch.zeros(2, 3)), r"states must be \[n, B, H\]"),
    (dict(ch=torch.zeros(2, 3, 9)), r"ch must be \[n, B, 2H\]"),
    (dict(probs=torch.zeros(2, 4)), r"probs must be \[n, 5\]"),
    (dict(states=torch.zeros(2, 3, 5, dtype=torch.int64)), "must be float16/bfloat16"),
    (dict(states=torch.zeros(0, 3, 5), ch=torch.zeros(0, 3, 10), probs=torch.zeros(0, 5)),
     "at least one incoming state"),
])
def test_bad_inputs_say_what_to_fix(bad, match):
    args = dict(ch=torch.zeros(2, 3, 10), states=torch.zeros(2, 3, 5), probs=torch.zeros(2, 5))
    args.update(bad)
    with pytest.raises(ValueError, match=match):
        torch.ops.fastdarts.rnn_node(args["ch"], args["states"], args["probs"])


@pytest.mark.gpu
@pytest.mark.parametrize("backend", GPU_BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16],
                         ids=["f64", "f32", "bf16"])
@pytest.mark.parametrize("n", [1, 4, 8])
def test_matches_oracle_gpu(use_backend, backend, dtype, n):
    use_backend(backend, "cuda", EXT_OP)
    check_against_oracle(*make_inputs(n, 37, 301, dtype, device="cuda", seed=n))


@pytest.mark.gpu
@pytest.mark.parametrize("backend", GPU_BACKENDS)
def test_noncontiguous_and_deterministic_gpu(use_backend, backend):
    use_backend(backend, "cuda", EXT_OP)
    ch, states, probs, _ = make_inputs(5, 64, 300, torch.float32, device="cuda",
                                       layout="noncontiguous")
    grad = torch.randn(300, 64, device="cuda").t()
    check_against_oracle(ch, states, probs, grad)
    runs = [torch.ops.fastdarts.rnn_node_backward(grad, ch, states, probs) for _ in range(2)]
    for a, b in zip(*runs, strict=True):
        assert torch.equal(a, b)
