"""The fused RNN search model against the reference model (the original's math).

Both models get one state_dict and one alpha; with one seed they draw the same
dropout masks.  Compared: log-probs, loss, next hidden, the gradient of every
weight and of alpha (``weights``), and the BatchNorm running statistics, in
train mode (dropout 0 and > 0) and eval mode, on every CPU backend of
``fastdarts::rnn_node``.  The fused model reorders a few sums (node 0's matmul
split in an x-part and an h-part, softmax(alpha) once per forward, the node's
four blends summed per state), so float32 agrees to ~1e-6 relative, not bit for
bit; float64 to ~1e-12.
"""

from __future__ import annotations

import pytest
import torch

from fastdarts.nn.search_rnn import RNNModelSearch
from fastdarts.reference import rnn as ref_rnn
from tests.helpers import one_thread_per_module, rnn_args  # noqa: F401  (fixture)

NTOKEN, NHID, T, B = 20, 8, 4, 3
TOL = {torch.float32: 2e-5, torch.float64: 1e-11}  # relative to each tensor's max |value|


# one intra-op thread for the whole module (tests.helpers.one_thread_per_module)
pytestmark = pytest.mark.usefixtures("one_thread_per_module")


def build_pair(dropout, dtype, seed=0):
    torch.manual_seed(seed)
    ref = ref_rnn.RNNModelSearch(NTOKEN, NHID, NHID, NHID, dropout, dropout, dropout, dropout,
                                 0.0).to(dtype)
    fused = RNNModelSearch(NTOKEN, NHID, NHID, NHID, dropout, dropout, dropout, dropout,
                           0.0).to(dtype)
    fused.load_state_dict(ref.state_dict())
    with torch.no_grad():  # alphas far from uniform, so every op's term matters
        ref.weights.normal_(0, 0.5)
        fused.weights.copy_(ref.weights)
    return ref, fused


def batch(dtype, seed=1, device="cpu", T=T):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, NTOKEN, (T, B), generator=g).to(device)
    y = torch.randint(0, NTOKEN, (T * B,), generator=g).to(device)
    h = [0.1 * torch.randn(1, B, NHID, generator=g).to(device, dtype)]
    return h, x, y


def assert_rel(actual, expected, tol, what):
    err = (actual.detach().double() - expected.detach().double()).abs().max().item()
    scale = expected.detach().double().abs().max().item()
    assert err <= tol * scale + 1e-30, f"{what}: max error {err:.3g}, scale {scale:.3g}"


def run(model, hidden, x, y, seed):
    model.zero_grad(set_to_none=True)
    model.weights.grad = None
    torch.manual_seed(seed)  # dropout masks: one seed, one draw order
    log_prob, new_hidden = model(x, hidden)
    loss = torch.nn.functional.nll_loss(log_prob.view(-1, NTOKEN), y)
    if model.training:
        loss.backward()
    return log_prob, loss, new_hidden


def compare(ref, fused, dtype, train, seed=7, device="cpu"):
    tol = TOL[dtype]
    hidden, x, y = batch(dtype, device=device)
    for m in (ref, fused):
        m.train(train)
    out_r = run(ref, hidden, x, y, seed)
    out_f = run(fused, hidden, x, y, seed)
    assert_rel(out_f[0], out_r[0], tol, "log_prob")
    assert_rel(out_f[1], out_r[1], tol, "loss")
    assert_rel(out_f[2][0], out_r[2][0], tol, "hidden")
    if train:
        for (name, p_r), (name_f, p_f) in zip(ref.named_parameters(), fused.named_parameters(),
                                              strict=True):
            assert name == name_f
            assert p_f.grad is not None, f"no gradient for {name}"
            assert_rel(p_f.grad, p_r.grad, tol, f"grad {name}")
        assert_rel(fused.weights.grad, ref.weights.grad, tol, "grad weights (alpha)")
    bn_r, bn_f = ref.rnns[0].bn, fused.rnns[0].bn
    assert_rel(bn_f.running_mean, bn_r.running_mean, tol, "bn.running_mean")
    assert_rel(bn_f.running_var, bn_r.running_var, tol, "bn.running_var")
    assert bn_f.num_batches_tracked.item() == bn_r.num_batches_tracked.item()


def test_same_structure_and_init():
    torch.manual_seed(3)
    ref = ref_rnn.RNNModelSearch(NTOKEN, NHID, NHID, NHID)
    torch.manual_seed(3)
    fused = RNNModelSearch(NTOKEN, NHID, NHID, NHID)
    sd_r, sd_f = ref.state_dict(), fused.state_dict()
    assert list(sd_r) == list(sd_f)
    for k in sd_r:
        assert torch.equal(sd_r[k], sd_f[k]), k
    assert fused.weights.shape == (36, 5) and torch.equal(fused.weights, ref.weights)
    assert fused.arch_parameters() == [fused.weights]
    assert fused.rnns[0].weights is fused.weights
    assert fused.genotype() == ref.genotype()
    assert [h.shape for h in fused.init_hidden(B)] == [(1, B, NHID)]


@pytest.mark.parametrize("backend", ["reference", "triton"])
@pytest.mark.parametrize("mode", ["train-dropout0", "train-dropout", "eval"])
def test_matches_reference_float32(use_backend, backend, mode):
    use_backend(backend, "cpu")
    ref, fused = build_pair(0.0 if mode == "train-dropout0" else 0.3, torch.float32)
    compare(ref, fused, torch.float32, train=mode != "eval")


def test_matches_reference_float64(use_backend):
    use_backend("reference", "cpu")
    ref, fused = build_pair(0.3, torch.float64)
    compare(ref, fused, torch.float64, train=True)
    compare(ref, fused, torch.float64, train=False)


def test_search_steps_track_reference(use_backend):
    """Three first-order search steps (weights by SGD, alpha by Adam) from one seed:
    loss, alpha and the BN statistics stay together at every step."""
    use_backend("reference", "cpu")
    ref, fused = build_pair(0.2, torch.float64)
    opts = []
    for m in (ref, fused):
        opts.append((torch.optim.SGD(m.parameters(), lr=0.5),
                     torch.optim.Adam(m.arch_parameters(), lr=3e-3)))
    for step in range(3):
        hidden, x, y = batch(torch.float64, seed=10 + step)
        losses = []
        for m, (w_opt, a_opt) in zip((ref, fused), opts, strict=True):
            m.train()
            w_opt.zero_grad()
            a_opt.zero_grad()
            torch.manual_seed(step)
            loss, _ = m._loss(hidden, x, y)
            loss.backward()
            w_opt.step()
            a_opt.step()
            losses.append(loss.detach())
        assert_rel(losses[1], losses[0], 1e-11, f"loss at step {step}")
        assert_rel(fused.weights, ref.weights, 1e-11, f"alpha after step {step}")
        assert_rel(fused.rnns[0].bn.running_var, ref.rnns[0].bn.running_var, 1e-11,
                   f"bn.running_var after step {step}")


def test_new_copies_alpha_and_stays_fused():
    _, fused = build_pair(0.0, torch.float64)
    twin = fused.new()
    assert type(twin) is RNNModelSearch and type(twin.rnns[0]) is type(fused.rnns[0])
    assert twin.weights.dtype == torch.float64
    assert torch.equal(twin.weights, fused.weights) and twin.weights is not fused.weights


def test_cell_step_api_matches_reference(use_backend):
    """``cell(x, h_prev, x_mask, h_mask)`` keeps the reference's one-step signature."""
    use_backend("reference", "cpu")
    ref, fused = build_pair(0.3, torch.float64)
    g = torch.Generator().manual_seed(5)
    x, h = torch.randn(B, NHID, generator=g, dtype=torch.float64), torch.randn(
        B, NHID, generator=g, dtype=torch.float64)
    x_mask = ref_rnn.mask2d(B, NHID, 0.7, x)
    h_mask = ref_rnn.mask2d(B, NHID, 0.7, x)
    for m in (ref, fused):
        m.train()
    out_r = ref.rnns[0].cell(x, h, x_mask, h_mask)
    out_f = fused.rnns[0].cell(x, h, x_mask, h_mask)
    assert_rel(out_f, out_r, 1e-12, "cell")


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["reference", "triton", "cuda"])
@pytest.mark.parametrize("mode", ["train-dropout", "eval"])
def test_matches_reference_gpu(use_backend, backend, mode):
    use_backend(backend, "cuda", "rnn_node_forward")
    ref, fused = build_pair(0.3, torch.float32)
    ref.cuda()
    fused.cuda()
    compare(ref, fused, torch.float32, train=mode != "eval", device="cuda")


def test_second_order_architect_step_matches(use_backend):
    """The reference Architect's unrolled (second-order) step drives the fused model as it
    drives the reference one: new(), the virtual step, the finite-difference Hessian and
    the BN statistics all line up (float64, dropout on, one seed)."""
    use_backend("reference", "cpu")
    alphas = []
    for model in build_pair(0.2, torch.float64):
        architect = ref_rnn.Architect(model, rnn_args())
        (h, x, y), (hv, xv, yv) = batch(torch.float64, seed=2), batch(torch.float64, seed=3)
        torch.manual_seed(4)
        architect.step(h, x, y, hv, xv, yv, torch.optim.SGD(model.parameters(), lr=0.1),
                       unrolled=True)
        alphas.append(model.weights.detach().clone())
    assert_rel(alphas[1], alphas[0], 1e-11, "alpha after a second-order step")


@pytest.mark.parametrize("backend, hvp", [("reference", "finite_difference"),
                                          ("reference", "exact"), ("triton", "exact")])
def test_fused_architect_step_matches(use_backend, backend, hvp):
    """fastdarts' in-place Architect on both models; ``hvp="exact"`` differentiates the
    gradient (double backward through rnn_node_backward).  Two time steps: each is a
    launch of every kernel, and on Triton's interpreter four took 40 s."""
    from fastdarts.architect import RNNArchitect

    use_backend(backend, "cpu")
    alphas = []
    for model in build_pair(0.2, torch.float64):
        architect = RNNArchitect(model, rnn_args(), hvp=hvp)
        (h, x, y), (hv, xv, yv) = batch(torch.float64, seed=2, T=2), batch(torch.float64, seed=3, T=2)
        torch.manual_seed(4)
        architect.step(h, x, y, hv, xv, yv, torch.optim.SGD(model.parameters(), lr=0.1),
                       unrolled=True)
        alphas.append(model.weights.detach().clone())
    assert_rel(alphas[1], alphas[0], 1e-11, f"alpha after a second-order step ({hvp})")
