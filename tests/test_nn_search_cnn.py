"""fastdarts.nn.Network (one fused mixed sum per node) against the reference Network."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from fastdarts import nn as fnn
from fastdarts.reference import cnn

from .helpers import cnn_loss_and_grads

CPU_BACKENDS = ("reference", "triton", "cpu")
EXT_OP = "mixed_sum_forward"
TOL = {torch.float64: (1e-9, 1e-10), torch.float32: (2e-4, 2e-5)}


def make_pair(dtype, C=2, layers=3, num_classes=3, seed=0):
    torch.manual_seed(seed)
    ref = cnn.Network(C, num_classes, layers, nn.CrossEntropyLoss()).to(dtype)
    torch.manual_seed(seed)
    fused = fnn.Network(C, num_classes, layers, nn.CrossEntropyLoss()).to(dtype)
    # Same constructor order: the same seed gives the same weights (and alphas) already.
    assert list(fused.state_dict()) == list(ref.state_dict())
    for (name, a), b in zip(ref.state_dict().items(), fused.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    fused.load_state_dict(ref.state_dict())
    with torch.no_grad():  # alphas away from uniform, so every term of their gradient matters
        for a_ref, a_fused in zip(ref.arch_parameters(), fused.arch_parameters(), strict=True):
            a_ref.normal_(0, 0.5)
            a_fused.copy_(a_ref)
    return ref, fused


def batch(dtype, n=4, hw=8, num_classes=3, seed=1):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, 3, hw, hw, generator=g, dtype=dtype),
            torch.randint(0, num_classes, (n,), generator=g))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_matches_reference(backend, dtype, use_backend):
    use_backend(backend, "cpu", EXT_OP)
    rtol, atol = TOL[dtype]
    ref, fused = make_pair(dtype)
    x, y = batch(dtype)
    logits_r, loss_r, grads_r = cnn_loss_and_grads(ref, x, y)
    logits_f, loss_f, grads_f = cnn_loss_and_grads(fused, x, y)
    torch.testing.assert_close(logits_f, logits_r, rtol=rtol, atol=atol)
    torch.testing.assert_close(loss_f, loss_r, rtol=rtol, atol=atol)
    assert grads_f.keys() == grads_r.keys()
    for name in grads_r:
        torch.testing.assert_close(grads_f[name], grads_r[name], rtol=rtol, atol=atol, msg=name)
    # BN running statistics after the forward (the none op has none; every other op
    # ran exactly once on the same input).
    for (name, b_r), b_f in zip(ref.state_dict().items(), fused.state_dict().values(),
                                strict=True):
        torch.testing.assert_close(b_f, b_r, rtol=rtol, atol=atol, msg=name)
    assert fused.genotype() == ref.genotype()


def test_channels_last_input():
    """Both networks on channels_last tensors.  oneDNN is off: its CPU weight gradient of a
    1x1 stride-2 conv (FactorizedReduce) in channels_last corrupts the heap on one thread
    in torch 2.13 (why the search refuses --channels_last on a CPU:
    fastdarts.config.check_channels_last); the native kernels check the layout handling."""
    ref, fused = make_pair(torch.float32)
    x, y = batch(torch.float32)
    ref = ref.to(memory_format=torch.channels_last)
    fused = fused.to(memory_format=torch.channels_last)
    x = x.contiguous(memory_format=torch.channels_last)
    with torch.backends.mkldnn.flags(enabled=False):
        logits_r, _, grads_r = cnn_loss_and_grads(ref, x, y)
        logits_f, _, grads_f = cnn_loss_and_grads(fused, x, y)
    torch.testing.assert_close(logits_f, logits_r, rtol=2e-4, atol=2e-5)
    for name in ("alphas_normal", "alphas_reduce"):
        torch.testing.assert_close(grads_f[name], grads_r[name], rtol=2e-4, atol=2e-5)


def test_api_is_the_reference_api():
    _, fused = make_pair(torch.float64)
    assert fused.arch_parameters() == [fused.alphas_normal, fused.alphas_reduce]
    assert fused.alphas_normal.shape == (14, 8) and fused.alphas_normal.requires_grad
    assert not any(p is fused.alphas_normal for p in fused.parameters())
    assert all(isinstance(c, fnn.Cell) for c in fused.cells)
    assert all(isinstance(op, fnn.MixedOp) for c in fused.cells for op in c._ops)
    x, y = batch(torch.float64)
    torch.testing.assert_close(fused._loss(x, y), fused._criterion(fused(x), y))
    twin = fused.new()
    assert type(twin) is fnn.Network and twin.alphas_normal.dtype == torch.float64
    assert twin.alphas_normal is not fused.alphas_normal
    assert torch.equal(twin.alphas_normal, fused.alphas_normal)
    assert torch.equal(twin.alphas_reduce, fused.alphas_reduce)
    with pytest.raises(ValueError, match="14 edges x 8 ops"):
        fused.alphas_normal.data = torch.zeros(14, 7, dtype=torch.float64)
        fused(x)


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ("reference", "triton", "cuda"))
def test_gpu_matches_reference(backend, use_backend):
    use_backend(backend, "cuda", EXT_OP)
    ref, fused = make_pair(torch.float64)
    ref, fused = ref.cuda(), fused.cuda()
    x, y = batch(torch.float64)
    x, y = x.cuda(), y.cuda()
    logits_r, loss_r, grads_r = cnn_loss_and_grads(ref, x, y)
    logits_f, loss_f, grads_f = cnn_loss_and_grads(fused, x, y)
    torch.testing.assert_close(logits_f, logits_r, rtol=1e-9, atol=1e-10)
    for name in grads_r:
        torch.testing.assert_close(grads_f[name], grads_r[name], rtol=1e-9, atol=1e-10, msg=name)


class _CountOps:
    """Records (op, number of tensors, weight shape) of the fused sums dispatched."""

    def __init__(self):
        from torch.utils._python_dispatch import TorchDispatchMode

        calls = self.calls = []

        class Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                if func is torch.ops.fastdarts.mixed_sum.default:
                    calls.append(("mixed_sum", len(args[0]), tuple(args[1].shape)))
                if func is torch.ops.fastdarts.state_mixed_sum.default:
                    calls.append(("state", tuple(args[1]), tuple(args[2].shape)))
                return func(*args, **(kwargs or {}))

        self.mode = Mode()

    def __enter__(self):
        self.mode.__enter__()
        return self

    def __exit__(self, *exc):
        self.mode.__exit__(*exc)


def test_one_state_mixed_sum_per_state():
    _, fused = make_pair(torch.float32)
    x, _ = batch(torch.float32)
    with _CountOps() as count:
        fused(x)
    # 3 cells x 5 source states (s0, s1, nodes 0-2); state j feeds the E = 4, 4, 3, 2, 1
    # edges into nodes max(0, j-1)..3, with 7 non-none ops each: pools and the skip
    # shared, (sep 3x3 | sep 5x5) and (dil 3x3 | dil 5x5) one wide tensor each.  In a
    # reduction cell the stride-2 skip (FactorizedReduce) of s0/s1 is wide too.
    expected = []
    for cell in fused.cells:
        for j, E in enumerate((4, 4, 3, 2, 1)):
            skip = 1 if cell.reduction and j < 2 else 0
            expected.append(("state", (0, 0, skip, 2, 2), (E, 7)))
    assert count.calls == expected


def test_falls_back_to_one_mixed_sum_per_node():
    _, fused = make_pair(torch.float32)
    x, _ = batch(torch.float32)
    per_node = [("mixed_sum", 7 * (2 + i), (2 + i, 7)) for _ in range(3) for i in range(4)]
    fused.eval()  # eval mode: every edge's batch norms use their own running statistics
    assert fused.cells[0].why_not_batched() == "eval mode"
    with _CountOps() as count, torch.no_grad():
        fused(x)
    assert count.calls == per_node
    fused.train()
    for cell in fused.cells:
        cell.batch_states = False
    with _CountOps() as count:
        fused(x)
    assert count.calls == per_node


def test_unknown_primitive_set_falls_back():
    from fastdarts.space import genotypes

    _, fused = make_pair(torch.float32)
    fused.cells[1]._ops[3]._primitives = list(genotypes.PRIMITIVES[:-1]) + ["conv_7x1_1x7"]
    assert "not the DARTS space" in fused.cells[1].why_not_batched()
    assert fused.cells[0].why_not_batched() is None
