"""fastdarts.nn.Network's memory modes against the reference Network, and the saved-bytes
counter (fastdarts.nn.memory) that measures them."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

import fastdarts.architect as A
from fastdarts import nn as fnn
from fastdarts.nn.memory import SavedBytes, saved_bytes_of
from fastdarts.nn.mixed_op import MEMORY_MODES
from fastdarts.reference import cnn
from tests.helpers import cnn_args, cnn_batch, cnn_loss_and_grads, tiny_cnn

from .helpers import one_thread  # noqa: F401  (autouse fixture)

TOL = {torch.float64: (1e-9, 1e-10), torch.float32: (2e-4, 2e-5)}




def make_pair(memory, dtype, C=2, layers=3, seed=0):
    ref = tiny_cnn(seed=seed, C=C, layers=layers, dtype=dtype)
    torch.manual_seed(seed)
    fused = fnn.Network(C, 3, layers, nn.CrossEntropyLoss(), memory=memory).to(dtype)
    fused.load_state_dict(ref.state_dict())
    with torch.no_grad():
        for a, b in zip(fused.arch_parameters(), ref.arch_parameters(), strict=True):
            a.copy_(b)
    return ref, fused


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("memory", MEMORY_MODES)
def test_mode_matches_reference(memory, dtype, use_backend):
    use_backend("reference")
    rtol, atol = TOL[dtype]
    ref, fused = make_pair(memory, dtype)
    x, y = cnn_batch(1, dtype=dtype)
    for step in range(2):  # the second pass starts from the statistics the first one left
        logits_r, loss_r, grads_r = cnn_loss_and_grads(ref, x, y)
        logits_f, loss_f, grads_f = cnn_loss_and_grads(fused, x, y)
        torch.testing.assert_close(logits_f, logits_r, rtol=rtol, atol=atol)
        torch.testing.assert_close(loss_f, loss_r, rtol=rtol, atol=atol)
        assert grads_f.keys() == grads_r.keys()
        for name in grads_r:
            torch.testing.assert_close(grads_f[name], grads_r[name], rtol=rtol, atol=atol,
                                       msg=f"{name} (pass {step})")
        # Running statistics after forward + backward: a recompute in the backward must not
        # have moved them again (num_batches_tracked compared exactly).
        for (name, b_r), b_f in zip(ref.state_dict().items(), fused.state_dict().values(),
                                    strict=True):
            if name.endswith("num_batches_tracked"):
                assert torch.equal(b_f, b_r), name
            else:
                torch.testing.assert_close(b_f, b_r, rtol=rtol, atol=atol, msg=name)


def test_checkpoint_recompute_leaves_bn_stats_once_per_forward():
    _, fused = make_pair("checkpoint", torch.float64)
    x, y = cnn_batch(2)
    before = {k: v.clone() for k, v in fused.state_dict().items()}
    loss = fused._loss(x, y)
    after_forward = {k: v.clone() for k, v in fused.state_dict().items()}
    moved = [k for k in before if "running_mean" in k and not torch.equal(before[k], after_forward[k])]
    assert moved  # the forward did update them...
    loss.backward(retain_graph=True)
    loss.backward()  # ...and two backwards (two recomputes) leave them where the forward put them
    for k, v in fused.state_dict().items():
        assert torch.equal(v, after_forward[k]), k
    assert all(int(v) == 1 for k, v in after_forward.items() if k.endswith("num_batches_tracked")
               and "_ops" in k)


def test_checkpoint_without_grad_and_eval():
    ref, fused = make_pair("checkpoint", torch.float64)
    x, _ = cnn_batch(3)
    with torch.no_grad():
        torch.testing.assert_close(fused(x), ref(x), rtol=1e-9, atol=1e-10)
    ref.eval()
    fused.eval()
    x.requires_grad_()
    out_r, out_f = ref(x), fused(x)
    torch.testing.assert_close(out_f, out_r, rtol=1e-9, atol=1e-10)
    (g_r,) = torch.autograd.grad(out_r.sum(), x)
    (g_f,) = torch.autograd.grad(out_f.sum(), x)
    torch.testing.assert_close(g_f, g_r, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("memory", MEMORY_MODES)
@pytest.mark.parametrize("stride", [1, 2])
def test_mixed_op_modes_match_reference(memory, stride, use_backend):
    """A lone fastdarts.MixedOp (its ops and its sum checkpointed together)."""
    use_backend("reference")
    torch.manual_seed(0)
    ref = cnn.MixedOp(4, stride).double()
    fused = fnn.MixedOp(4, stride, memory=memory).double()
    fused.load_state_dict(ref.state_dict())
    g = torch.Generator().manual_seed(3)
    x = torch.randn(3, 4, 6, 6, generator=g, dtype=torch.float64)
    alpha = torch.randn(8, generator=g, dtype=torch.float64)
    results = []
    for module in (ref, fused):
        xi = x.clone().requires_grad_()
        ai = alpha.clone().requires_grad_()
        out = module(xi, torch.softmax(ai, -1))
        out.pow(2).sum().backward()
        results.append([out, xi.grad, ai.grad, *(p.grad for p in module.parameters()),
                        *module.state_dict().values()])
    for r, f in zip(*results, strict=True):
        torch.testing.assert_close(f, r, rtol=1e-9, atol=1e-10)


def test_memory_mode_api():
    _, fused = make_pair("shared", torch.float64)
    assert fused.memory == "shared"
    fused.memory = "checkpoint"
    assert {op.memory for c in fused.cells for op in c._ops} == {"checkpoint"}
    assert fused.new().memory == "checkpoint"
    with pytest.raises(ValueError, match="memory must be one of"):
        fused.memory = "offload"
    with pytest.raises(ValueError, match="memory must be one of"):
        fnn.Network(2, 3, 3, nn.CrossEntropyLoss(), memory="none")
    assert list(fnn.Network(2, 3, 3, nn.CrossEntropyLoss(), memory="checkpoint").state_dict()) \
        == list(cnn.Network(2, 3, 3, nn.CrossEntropyLoss()).state_dict())


def test_swapped_relu_runs_the_op_whole():
    """An edge whose ReLUs were replaced (e.g. by Softplus) must not get a shared ReLU."""
    ref, fused = make_pair("shared", torch.float64)
    for model in (ref, fused):
        for parent in list(model.modules()):
            for name, child in list(parent.named_children()):
                if isinstance(child, nn.ReLU):
                    setattr(parent, name, nn.Softplus())
    x, y = cnn_batch(4)
    _, loss_r, grads_r = cnn_loss_and_grads(ref, x, y)
    _, loss_f, grads_f = cnn_loss_and_grads(fused, x, y)
    torch.testing.assert_close(loss_f, loss_r, rtol=1e-9, atol=1e-10)
    for name in grads_r:
        torch.testing.assert_close(grads_f[name], grads_r[name], rtol=1e-9, atol=1e-10, msg=name)


# -------------------------------------------------------------------- the counter
def test_saved_bytes_counts_each_storage_once():
    x = torch.randn(2, 4, 8, 8, requires_grad=True)
    conv = nn.Conv2d(4, 4, 1, bias=False)
    with SavedBytes(conv) as mem:
        r = torch.relu(x)                 # saves r (2 KiB)
        a = conv(r)                       # saves r again (no new bytes) and the weight
        b = conv(r[:, :, 1:, 1:])         # a view of r: still r's storage
        (a.sum() + b.sum()).backward()
    assert mem.saved_bytes == r.numel() * 4
    assert mem.param_bytes == conv.weight.numel() * 4
    assert mem.total_bytes == mem.saved_bytes + mem.param_bytes
    assert mem.by_dtype == {torch.float32: r.numel() * 4}


def test_saved_bytes_ratios_small_config():
    """The ratios bench/NOTES.md states for the paper's shapes hold on a small config."""
    x, y = cnn_batch(5, n=2, hw=16, num_classes=10, dtype=torch.float32)
    torch.manual_seed(0)
    ref = cnn.Network(4, 10, 5, nn.CrossEntropyLoss())
    reference = saved_bytes_of(ref, x, y).saved_bytes
    saved = {}
    for memory in MEMORY_MODES:
        torch.manual_seed(0)
        fused = fnn.Network(4, 10, 5, nn.CrossEntropyLoss(), memory=memory)
        saved[memory] = saved_bytes_of(fused, x, y).saved_bytes
    ratio = {k: v / reference for k, v in saved.items()}
    assert ratio["plain"] < 1.0
    assert ratio["shared"] < 0.9 * ratio["plain"]
    assert ratio["checkpoint"] < 0.6
    assert ratio["checkpoint"] < 0.1  # measured 0.043 at the paper's shapes


# -------------------------------------------------------------------- the Architect
@pytest.mark.parametrize("hvp", ["finite_difference", "exact"])
def test_second_order_architect_step_with_checkpoint(hvp, use_backend):
    use_backend("reference")
    ref, fused = make_pair("checkpoint", torch.float64, seed=8)
    xt, yt = cnn_batch(80)
    xv, yv = cnn_batch(81)
    grads, states = [], []
    for model in (ref, fused):
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=3e-4)
        model._loss(xt, yt).backward()  # one weight step first, so momentum buffers exist
        opt.step()
        opt.zero_grad()
        arch = A.CNNArchitect(model, cnn_args(), hvp=hvp)
        arch.step(xt, yt, xv, yv, 0.1, opt, True)
        grads.append(torch.cat([a.grad.reshape(-1) for a in model.arch_parameters()]))
        states.append(model.state_dict())
    g_ref, g_fused = grads
    assert ((g_fused - g_ref).norm() / g_ref.norm()).item() < 1e-6
    for name, b_r in states[0].items():
        torch.testing.assert_close(states[1][name], b_r, rtol=1e-9, atol=1e-10, msg=name)
