"""DARTS- (--method darts-): the reference against a float64 transcription of the
published mixed op (with the auxiliary skip), the beta decay, the fused supernet and
Architect against the reference, and the search end to end."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import fastdarts.architect as A
from fastdarts import cli
from fastdarts.config import ConfigError
from fastdarts.methods.darts_minus import AuxSkipDecay
from fastdarts.nn.variants import DartsMinusMixedOp, DartsMinusNetwork
from fastdarts.reference.cnn import Architect as RefArchitect
from fastdarts.reference.cnn import darts_minus as dm
from fastdarts.search.cnn import method_config
from fastdarts.space.genotypes import PRIMITIVES
from fastdarts.space.operations import FactorizedReduce, Identity

from .helpers import cnn_args, cnn_batch, one_thread  # noqa: F401  (autouse fixture)

D = torch.float64


def _close(a, b, rtol=1e-10):
    scale = max(b.abs().max().item(), 1e-30)
    assert (a - b).abs().max().item() <= rtol * scale, ((a - b).abs().max().item(), scale)


def _pair(seed=0, C=4, layers=3, memory="shared", beta=0.6):
    torch.manual_seed(seed)
    ref = dm.Network(C, 3, layers, nn.CrossEntropyLoss(), aux_skip_beta=beta).to(D)
    torch.manual_seed(seed)
    fused = DartsMinusNetwork(C, 3, layers, nn.CrossEntropyLoss(), memory=memory,
                              aux_skip_beta=beta).to(D)
    assert list(fused.state_dict()) == list(ref.state_dict())
    fused.load_state_dict(ref.state_dict())
    with torch.no_grad():
        for a, b in zip(ref.arch_parameters(), fused.arch_parameters()):
            a.normal_(0, 0.8)
            b.copy_(a)
    return ref, fused


# ------------------------------------------------------------ reference vs transcription
def _fr(m: FactorizedReduce, x):
    """FactorizedReduce written out: ReLU, two stride-2 1x1 convs (the second on x shifted
    by one pixel), concatenated, batch norm with batch statistics (no affine)."""
    r = torch.clamp(x, min=0)
    y = torch.cat([F.conv2d(r, m.conv_1.weight, stride=2),
                   F.conv2d(r[:, :, 1:, 1:], m.conv_2.weight, stride=2)], 1)
    mean = y.mean((0, 2, 3), keepdim=True)
    var = ((y - mean) ** 2).mean((0, 2, 3), keepdim=True)
    return (y - mean) / torch.sqrt(var + m.bn.eps)


@pytest.mark.parametrize("stride", [1, 2])
def test_mixed_op_adds_beta_times_the_auxiliary_skip(stride):
    torch.manual_seed(stride)
    op = dm.MixedOp(4, stride).to(D).train()
    assert isinstance(op.auxiliary_op, FactorizedReduce if stride == 2 else Identity)
    g = torch.Generator().manual_seed(9)
    x = torch.randn(2, 4, 8, 8, generator=g, dtype=D)
    alpha = torch.randn(len(PRIMITIVES), generator=g, dtype=D, requires_grad=True)
    beta = torch.tensor(0.7, dtype=D)
    state = copy.deepcopy(op.state_dict())
    out = op(x, F.softmax(alpha, -1), beta)
    v = torch.randn(out.shape, generator=g, dtype=D)
    params = [alpha, *op.parameters()]
    grads = torch.autograd.grad((out * v).sum(), params)
    op.load_state_dict(state)
    e = torch.exp(alpha - alpha.max())
    w = e / e.sum()
    aux = _fr(op.auxiliary_op, x) if stride == 2 else x
    want = sum(w[k] * op._ops[k](x) for k in range(1, len(PRIMITIVES))) + 0.7 * aux
    _close(out, want)
    for a, b in zip(grads, torch.autograd.grad((want * v).sum(), params), strict=True):
        _close(a, b)


def test_every_edge_has_its_auxiliary_skip_and_beta_is_not_learned():
    ref, _ = _pair()
    for cell in ref.cells:
        for k, edge in enumerate(cell._ops):
            stride2 = cell.reduction and k in (0, 1, 2, 3, 5, 6, 9, 10) and \
                isinstance(edge._ops[PRIMITIVES.index("skip_connect")], FactorizedReduce)
            assert isinstance(edge.auxiliary_op, FactorizedReduce if stride2 else Identity)
    assert "aux_beta" not in ref.state_dict() and not ref.aux_beta.requires_grad
    assert all(p is not ref.aux_beta for p in ref.parameters())
    # beta 0: the network is DARTS' (the aux ops contribute nothing)
    x, y = cnn_batch(3, n=2, dtype=D)
    ref.set_aux_skip_beta(0.0)
    ref_darts = dm._ms.Network(4, 3, 3, nn.CrossEntropyLoss()).to(D)
    ref_darts.load_state_dict(ref.state_dict(), strict=False)
    with torch.no_grad():
        for a, b in zip(ref_darts.arch_parameters(), ref.arch_parameters()):
            a.copy_(b)
    _close(ref(x), ref_darts(x))


# --------------------------------------------------------------------------- the decay
def test_linear_decay_per_epoch_as_published():
    T = 50  # --decay_max_epoch; stepped at each epoch start with the epoch index
    got = [dm.aux_skip_beta(e, T) for e in range(T + 2)]
    assert got[0] == 1.0 and abs(got[1] - 0.98) < 1e-15 and abs(got[49] - 0.02) < 1e-15
    assert got[50] == got[51] == 0.0
    assert all(a > b for a, b in zip(got[:50], got[1:51]))
    assert dm.aux_skip_beta(3, 6, beta0=2.0) == 1.0
    assert dm.aux_skip_beta(2, 4, decay="cosine") == pytest.approx(0.5, abs=1e-15)
    assert dm.aux_skip_beta(7, 4, beta0=0.3, decay="none") == 0.3
    with pytest.raises(ValueError, match="decay must be"):
        dm.aux_skip_beta(0, 4, decay="step")


def test_decay_callback_sets_the_models_beta_each_epoch():
    ref, _ = _pair()
    cbk = AuxSkipDecay(1.0, 4)
    seen = []
    for epoch in range(4):
        e = type("E", (), {"epoch": epoch, "model": ref})()
        cbk.epoch_begin(e)
        seen.append(float(ref.aux_beta))
    assert seen == [1.0, 0.75, 0.5, 0.25]


# ------------------------------------------------------------------- fused vs reference
@pytest.mark.parametrize("memory,beta", [("shared", 0.6), ("plain", 1.0), ("checkpoint", 0.35),
                                         ("shared", 0.0)])
def test_fused_matches_reference(memory, beta):
    ref, fused = _pair(seed=5, memory=memory, beta=beta)
    ref.train()
    fused.train()
    x, y = cnn_batch(6, n=3, dtype=D)
    lr_, lf = ref._loss(x, y), fused._loss(x, y)
    _close(lf, lr_)
    pr = ref.arch_parameters() + list(ref.parameters())
    pf = fused.arch_parameters() + list(fused.parameters())
    for a, b in zip(torch.autograd.grad(lf, pf), torch.autograd.grad(lr_, pr), strict=True):
        _close(a, b)
    rs = ref.state_dict()
    for k, a in fused.state_dict().items():  # the BN running statistics moved alike
        if a.is_floating_point():  # (means of normalised inputs are ~1e-17: an atol)
            torch.testing.assert_close(a, rs[k], rtol=1e-10, atol=1e-12)
    ref.eval()
    fused.eval()
    _close(fused(x), ref(x))  # eval mode: the per-edge path in every cell


def test_fused_paths_normal_cells_batched_reduction_cells_per_edge():
    _, fused = _pair()
    fused.train()
    assert [c.why_not_batched() is None for c in fused.cells] == [True, False, False]
    edge = fused.cells[1]._ops[0]
    assert isinstance(edge, DartsMinusMixedOp) and isinstance(edge.auxiliary_op, FactorizedReduce)


def test_fused_forward_is_one_mixed_sum_per_node_or_state():
    """The auxiliary skip adds no launch of its own: normal cells one state_mixed_sum per
    source state (5), reduction cells one mixed_sum per node (4), as counted by dispatch."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Count(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.calls = {}

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            name = str(func.overloadpacket)
            if name.startswith("fastdarts."):
                self.calls[name] = self.calls.get(name, 0) + 1
            return func(*args, **(kwargs or {}))

    _, fused = _pair()
    fused.train()
    x, _ = cnn_batch(1, n=2, dtype=D)
    with Count() as c:
        fused(x)
    assert c.calls == {"fastdarts.state_mixed_sum": 5, "fastdarts.mixed_sum": 8}


@pytest.mark.parametrize("index", [0, 1])
def test_fused_cell_alone_matches_reference(index):
    """A lone cell call (no precomputed blocks): weights [14, K + 1], beta in the last column."""
    ref, fused = _pair(seed=3, beta=0.8)
    rc, fc = ref.cells[index], fused.cells[index]
    g = torch.Generator().manual_seed(4)
    C_pp, C_p = rc.preprocess0.op[1].in_channels, rc.preprocess1.op[1].in_channels
    s0 = torch.randn(2, C_pp, 8, 8, generator=g, dtype=D)
    s1 = torch.randn(2, C_p, 8, 8, generator=g, dtype=D)
    w = torch.softmax(ref.alphas_normal, -1)
    ext = torch.cat([w, ref.aux_beta.expand(14, 1)], 1)  # beta as the model holds it
    _close(fc(s0, s1, ext), rc(s0, s1, w, ref.aux_beta))


@pytest.mark.parametrize("stride", [1, 2])
def test_fused_mixed_op_alone_matches_reference(stride):
    torch.manual_seed(0)
    ref = dm.MixedOp(4, stride).to(D)
    fused = DartsMinusMixedOp(4, stride).to(D)
    fused.load_state_dict(ref.state_dict())
    x = torch.randn(2, 4, 8, 8, dtype=D)
    w = torch.softmax(torch.randn(len(PRIMITIVES), dtype=D), 0)
    beta = torch.tensor(0.45, dtype=D)
    _close(fused(x, torch.cat([w, beta[None]])), ref(x, w, beta))
    with pytest.raises(ValueError, match="needs 9 weights"):
        fused(x, w)


@pytest.mark.parametrize("unrolled", [False, True])
def test_fused_architect_step_equals_the_reference(unrolled):
    ref, fused = _pair(seed=7, C=2)
    args = cnn_args(arch_learning_rate=3e-2)
    a_ref, a_fused = RefArchitect(ref, args), A.Architect(fused, args)
    opts = [torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9, weight_decay=3e-4)
            for m in (ref, fused)]
    for i in range(2):
        xt, yt = cnn_batch(10 + i, n=3, dtype=D)
        xv, yv = cnn_batch(20 + i, n=3, dtype=D)
        a_ref.step(xt, yt, xv, yv, 0.05, opts[0], unrolled)
        a_fused.step(xt, yt, xv, yv, 0.05, opts[1], unrolled)
    for a, b in zip(fused.arch_parameters(), ref.arch_parameters()):
        _close(a, b, rtol=1e-8 if unrolled else 1e-10)


# ------------------------------------------------------------------ registry and search
def test_published_defaults_and_refusals():
    cfg = method_config("darts-", data="/nowhere")
    assert (cfg.aux_skip_beta, cfg.aux_skip_decay, cfg.aux_skip_decay_epochs, cfg.unrolled,
            cfg.learning_rate, cfg.arch_learning_rate, cfg.epochs) == (1.0, "linear", None, False,
                                                                     0.025, 3e-4, 50)
    assert method_config("darts-", unrolled=True).unrolled  # second order is allowed
    with pytest.raises(ConfigError, match="FairDARTS settings"):
        method_config("darts-", zero_one_weight=3.0)
    with pytest.raises(ConfigError):
        method_config("darts-", aux_skip_beta=-1.0)


def test_cli_search_end_to_end(tmp_path):
    rc = cli.main(["search", "cnn", "--method", "darts-", "--epochs", "2",
                   "--max_steps_per_epoch", "2", "--batch_size", "16", "--train_portion", "0.9",
                   "--save", str(tmp_path / "run"), "--quiet"])
    assert rc == 0
    assert (tmp_path / "run" / "genotype.json").exists()
