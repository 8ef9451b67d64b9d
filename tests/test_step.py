"""SearchStep: eager, fused flat weight update, and (GPU) CUDA-graph capture."""

from __future__ import annotations

import copy

import pytest
import torch

import fastdarts.architect as A
from fastdarts import backends
from fastdarts.step import CaptureError, SearchStep
from tests.helpers import cnn_args, cnn_batch, tiny_cnn

F32 = torch.float32


def _pair(seed=0, device="cpu"):
    m1 = tiny_cnn(seed=seed, C=4, layers=3, dtype=F32).to(device)
    m2 = copy.deepcopy(m1)
    out = []
    for m in (m1, m2):
        opt = torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9, weight_decay=3e-4)
        arch = A.Architect(m, cnn_args(), capturable=device == "cuda")
        out.append((m, opt, arch))
    return out


def _batches(n, device="cpu"):
    for i in range(n):
        xt, yt = cnn_batch(300 + i, n=6, dtype=F32)
        xv, yv = cnn_batch(400 + i, n=6, dtype=F32)
        yield xt.to(device), yt.to(device), xv.to(device), yv.to(device)


@pytest.mark.parametrize("backend", ["reference", "triton"])
@pytest.mark.parametrize("unrolled", [False, True])
def test_fused_weight_step_matches_optimizer_step(backend, unrolled):
    """The flat SGD update (clip folded in) against clip_grad_norm_ + torch SGD,
    two steps (the momentum carried into the second).  Tolerance 1e-5 relative: the
    clip norm is summed in another order."""
    if backend not in backends.available_backends():
        pytest.skip(f"{backend} not available")
    (m1, o1, a1), (m2, o2, a2) = _pair()
    plain = SearchStep(m1, a1, o1, unrolled=unrolled, grad_clip=0.5)
    fused = SearchStep(m2, a2, o2, unrolled=unrolled, grad_clip=0.5, fused_weight_step=True)
    backends.set_backend(backend)
    try:
        for xt, yt, xv, yv in _batches(2):
            l1, _ = plain(xt, yt, xv, yv, 0.05)
            l2, _ = fused(xt, yt, xv, yv, 0.05)
            torch.testing.assert_close(l1, l2, rtol=1e-5, atol=1e-6)
    finally:
        backends.set_backend(None)
    for p, q in zip(m1.parameters(), m2.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
    for p, q in zip(m1.arch_parameters(), m2.arch_parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
    # the optimizer's own state follows the flat momentum (checkpoints stay right)
    for p, q in zip(m1.parameters(), m2.parameters()):
        torch.testing.assert_close(o1.state[p]["momentum_buffer"], o2.state[q]["momentum_buffer"],
                                   rtol=1e-5, atol=1e-6)


def test_capture_is_refused_clearly_on_cpu_and_for_other_optimizers():
    (m, o, a), _ = _pair()
    with pytest.raises(CaptureError, match="CUDA device"):
        SearchStep(m, a, o, unrolled=True, cuda_graph=True)
    adam = torch.optim.Adam(m.parameters())
    with pytest.raises(CaptureError, match="torch.optim.SGD"):
        SearchStep(m, a, adam, unrolled=True, fused_weight_step=True)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("unrolled", [False, True])
def test_captured_step_matches_eager(unrolled):
    (m1, o1, a1), (m2, o2, a2) = _pair(device="cuda")
    eager = SearchStep(m1, a1, o1, unrolled=unrolled, fused_weight_step=True)
    graph = SearchStep(m2, a2, o2, unrolled=unrolled, cuda_graph=True, warmup=2)
    for xt, yt, xv, yv in _batches(6, "cuda"):
        l1, _ = eager(xt, yt, xv, yv, 0.05)
        l2, _ = graph(xt, yt, xv, yv, 0.05)
        torch.testing.assert_close(l1, l2, rtol=1e-4, atol=1e-5)
    assert graph._graph is not None
    for p, q in zip(m1.parameters(), m2.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5)
    for p, q in zip(m1.arch_parameters(), m2.arch_parameters()):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5)
