"""The Architect's in-place flat-buffer ops (fastdarts/ops/flat_update.py): every backend
against the reference (fastdarts/ops/flat_update_ref.py), opcheck, input checks."""

from __future__ import annotations

import pytest
import torch

from fastdarts import backends
from fastdarts.ops import flat_update_ref

FLAT_BACKENDS = [b for b in ("reference", "triton", "cuda") if b in backends.available_backends()]


@pytest.mark.parametrize("backend", FLAT_BACKENDS)
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-6), (torch.float64, 1e-12)])
@pytest.mark.parametrize("n", [1, 1000, 4099])
def test_flat_ops_match_reference(backend, dtype, tol, n):
    _flat_ops_match_reference(backend, dtype, tol, n, "cuda" if backend == "cuda" else "cpu")


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["triton", "cuda"])
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-6), (torch.float64, 1e-12)])
@pytest.mark.parametrize("n", [1, 1000, 4099])
def test_flat_ops_match_reference_gpu(backend, dtype, tol, n, use_backend):
    """Compiled Triton on CUDA tensors (the CPU test runs it only in the interpreter, which
    keeps Python-float arguments such as momentum exact where compiled Triton may not)."""
    use_backend(backend, "cuda", "perturb_")
    _flat_ops_match_reference(backend, dtype, tol, n, "cuda")


def _flat_ops_match_reference(backend, dtype, tol, n, dev):
    g = torch.Generator().manual_seed(n)
    mk = lambda: torch.randn(n, generator=g, dtype=dtype).to(dev)  # noqa: E731
    w, gr, m, v = mk(), mk(), mk(), mk()
    eta = torch.tensor(0.07, dtype=dtype, device=dev)
    scale = torch.tensor(0.3, dtype=dtype, device=dev)
    R = torch.tensor(1e-3, dtype=dtype, device=dev)
    backends.set_backend(backend)
    try:
        for mm, ss in ((m, scale), (None, None), (m, None), (None, scale)):
            w1, b1 = w.clone(), torch.empty_like(w)
            w2, b2 = w.clone(), torch.empty_like(w)
            torch.ops.fastdarts.virtual_step_(w1, b1, gr, mm, eta, 0.9, 3e-4, ss)
            flat_update_ref.virtual_step_(w2, b2, gr, mm, eta, 0.9, 3e-4, ss)
            assert torch.equal(b1, w)
            torch.testing.assert_close(w1, w2, rtol=tol, atol=tol)
        for sign in (1.0, -1.0):
            w1 = torch.empty_like(w)
            torch.ops.fastdarts.perturb_(w1, w, v, R, sign)
            torch.testing.assert_close(w1, w + sign * R * v, rtol=tol, atol=tol)
    finally:
        backends.set_backend(None)


def test_flat_ops_opcheck():
    w, b, g, m = (torch.randn(37) for _ in range(4))
    eta = torch.tensor(0.1)
    torch.library.opcheck(torch.ops.fastdarts.virtual_step_.default,
                          (w, b, g, m, eta, 0.9, 1e-3, None))
    torch.library.opcheck(torch.ops.fastdarts.perturb_.default, (w, b, g, eta, -1.0))
    torch.library.opcheck(torch.ops.fastdarts.sgd_step_.default, (w, m, g, eta, 0.9, 3e-4, None))
    torch.library.opcheck(torch.ops.fastdarts.sgd_step_.default, (w, m, g, eta, 0.9, 3e-4, torch.tensor(0.5)))


def test_flat_ops_reject_mismatched_buffers():
    w = torch.randn(10)
    with pytest.raises(ValueError, match="must match w"):
        torch.ops.fastdarts.perturb_(w, torch.randn(11), torch.randn(10), torch.tensor(0.1), 1.0)
    with pytest.raises(ValueError, match="one-element"):
        torch.ops.fastdarts.perturb_(w, torch.randn(10), torch.randn(10), torch.ones(2), 1.0)
