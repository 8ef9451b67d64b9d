"""FairDARTS (--method fair-darts): the reference against a float64 transcription of the
published math (sigmoid-weighted cell, zero-one loss, threshold genotype), the fused
supernet and Architect against the reference, and the search end to end."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import fastdarts.architect as A
from fastdarts import cli
from fastdarts.config import ConfigError
from fastdarts.nn.variants import FairNetwork as FusedFair
from fastdarts.reference.cnn import Architect as RefArchitect
from fastdarts.reference.cnn.fair_darts import FairNetwork, parse_fair, zero_one_loss
from fastdarts.search import callbacks as cb
from fastdarts.search.cnn import method_config
from fastdarts.space.genotypes import PRIMITIVES

from .helpers import cnn_args, cnn_batch, one_thread  # noqa: F401  (autouse fixture)

D = torch.float64
OPS7 = [k for k, p in enumerate(PRIMITIVES) if p != "none"]


def _pair(seed=0, C=4, layers=3, memory="shared", spread=0.8):
    torch.manual_seed(seed)
    ref = FairNetwork(C, 3, layers, nn.CrossEntropyLoss()).to(D)
    torch.manual_seed(seed)
    fused = FusedFair(C, 3, layers, nn.CrossEntropyLoss(), memory=memory).to(D)
    fused.load_state_dict(ref.state_dict())
    with torch.no_grad():  # off zero, so that every term of the gradient matters
        for a, b in zip(ref.arch_parameters(), fused.arch_parameters()):
            a.normal_(0, spread)
            b.copy_(a)
    return ref, fused


def _close(a, b, rtol=1e-10):
    scale = max(b.abs().max().item(), 1e-30)
    assert (a - b).abs().max().item() <= rtol * scale, ((a - b).abs().max().item(), scale)


# ------------------------------------------------------------ reference vs transcription
def test_cell_is_the_sigmoid_weighted_sum_of_the_seven_ops():
    """A whole cell (4 nodes, 14 edges) as the paper writes it: node = sum over its input
    edges and the 7 ops (no 'none') of sigmoid(alpha) * op(h); value and grads w.r.t.
    alpha and every weight of the cell."""
    ref, _ = _pair(seed=1)
    ref.train()
    cell = ref.cells[0]
    g = torch.Generator().manual_seed(3)
    s0 = torch.randn(2, 12, 8, 8, generator=g, dtype=D)
    s1 = torch.randn(2, 12, 8, 8, generator=g, dtype=D)
    alpha = ref.alphas_normal

    def transcription():
        w = 1.0 / (1.0 + torch.exp(-alpha))
        states = [cell.preprocess0(s0), cell.preprocess1(s1)]
        e = 0
        for i in range(4):
            node = 0.0
            for j in range(i + 2):
                for k in OPS7:
                    node = node + w[e, k] * cell._ops[e]._ops[k](states[j])
                e += 1
            states.append(node)
        return torch.cat(states[2:], 1)

    params = [alpha, *cell.parameters()]
    bn_state = copy.deepcopy(cell.state_dict())
    out_ref = cell(s0, s1, ref.arch_weights(alpha))
    v = torch.randn(out_ref.shape, generator=g, dtype=D)
    grads_ref = torch.autograd.grad((out_ref * v).sum(), params)
    cell.load_state_dict(bn_state)  # the running statistics as they were
    out_tr = transcription()
    _close(out_ref, out_tr)
    for a, b in zip(grads_ref, torch.autograd.grad((out_tr * v).sum(), params), strict=True):
        _close(a, b)
    assert ref.arch_weights(alpha)[:, 0].abs().max() == 0  # 'none' is out of the space


def test_architecture_loss_is_cross_entropy_plus_ten_zero_one():
    ref, _ = _pair(seed=2)
    x, y = cnn_batch(5, n=3, dtype=D)
    an, ar = ref.arch_parameters()
    s = torch.sigmoid(torch.cat([an[:, OPS7].reshape(-1), ar[:, OPS7].reshape(-1)]))
    want = F.cross_entropy(ref(x), y) - 10.0 * ((s - 0.5) ** 2).sum() / s.numel()
    got = ref._loss(x, y)
    _close(got, want)
    for a, b in zip(torch.autograd.grad(got, [an, ar]), torch.autograd.grad(want, [an, ar])):
        _close(a, b)


def test_zero_one_loss_value_and_gradient_by_hand():
    a = torch.tensor([[0.0, 0.3, -1.2, 2.0, 0.0, 0.5, -0.1, 4.0]], dtype=D, requires_grad=True)
    b = torch.tensor([[9.0, -0.3, 1.0, 0.0, 0.7, -2.5, 0.2, 1.5]], dtype=D, requires_grad=True)
    s = 1 / (1 + np.exp(-np.concatenate([a.detach().numpy()[0, 1:], b.detach().numpy()[0, 1:]])))
    loss = zero_one_loss([a, b])
    assert abs(loss.item() - (-np.mean((s - 0.5) ** 2))) < 1e-15
    ga, gb = torch.autograd.grad(loss, [a, b])
    grad = -2 * (s - 0.5) * s * (1 - s) / 14  # d/dalpha of -mean((s - 1/2)^2), N = 2 x 7
    np.testing.assert_allclose(np.concatenate([ga[0, 1:], gb[0, 1:]]), grad, rtol=1e-12)
    assert ga[0, 0] == 0 and gb[0, 0] == 0  # the 'none' column (alpha 9.0 in b) is not counted


def test_alphas_start_at_zero_and_none_stays_inert_under_the_architect():
    torch.manual_seed(0)
    model = FairNetwork(4, 3, 3, nn.CrossEntropyLoss()).to(D)
    assert all(torch.equal(a, torch.zeros_like(a)) for a in model.arch_parameters())
    arch = RefArchitect(model, cnn_args(arch_learning_rate=0.1, arch_beta1=0.9))
    for i in range(2):
        x, y = cnn_batch(i, n=2, dtype=D)
        arch.step(x, y, x, y, 0.01, None, False)
    assert all(torch.equal(a[:, 0], torch.zeros_like(a[:, 0])) for a in model.arch_parameters())
    assert all(a[:, 1:].abs().max() > 0 for a in model.arch_parameters())
    assert arch.optimizer.param_groups[0]["betas"] == (0.9, 0.999)


# ------------------------------------------------------------------------- the genotype
def _cell(rows):
    """[14, 8] sigmoid weights: rows = {edge: (op index, weight)}, 0.1 elsewhere."""
    w = np.full((14, 8), 0.1)
    w[:, 0] = 0.99  # 'none' never counts, however large
    for e, (k, v) in rows.items():
        w[e, k] = v
    return w


SEP3, MAX, SKIP = PRIMITIVES.index("sep_conv_3x3"), PRIMITIVES.index("max_pool_3x3"), \
    PRIMITIVES.index("skip_connect")


def test_threshold_genotype_two_one_and_no_edge_per_node():
    # node 0 (edges 0, 1): both pass; node 1 (edges 2..4): three pass, the top two kept;
    # node 2 (edges 5..8): one passes exactly at 0.85 (kept: >=), its second edge is below;
    # node 3 (edges 9..13): none passes
    w = _cell({0: (SEP3, 0.9), 1: (MAX, 0.95),
               2: (SEP3, 0.86), 3: (SKIP, 0.99), 4: (MAX, 0.97),
               5: (SEP3, 0.5), 8: (SKIP, 0.85),
               10: (SEP3, 0.84), 12: (MAX, 0.2)})
    gene, concat = parse_fair(w)
    assert gene == [("max_pool_3x3", 1), ("sep_conv_3x3", 0),
                    ("skip_connect", 1), ("max_pool_3x3", 2),
                    ("skip_connect", 3), ("none", 0),
                    ("none", 1), ("none", 3)]
    assert concat == [2, 3, 4]  # node 3 (state 5) has no edge: left out, as DCOCell does


def test_threshold_genotype_edges_reading_an_empty_node_are_dropped():
    w = _cell({0: (SEP3, 0.9), 1: (SEP3, 0.9),          # node 0: both
               3: (SEP3, 0.1),                           # node 1: nothing passes
               5: (SEP3, 0.3), 8: (MAX, 0.95),           # node 2: reads node 1 (state 3) best
               13: (SKIP, 0.99), 9: (SEP3, 0.9)})        # node 3: reads node 2 and s0
    w[8, MAX] = 0.95
    w[5, SEP3] = 0.92  # node 2's second edge: s0
    gene, concat = parse_fair(w)
    assert gene[2:4] == [("none", 0), ("none", 1)]           # node 1 empty
    assert gene[4:6] == [("none", 3), ("sep_conv_3x3", 0)]   # its edge from the empty node goes
    assert gene[6:8] == [("skip_connect", 4), ("sep_conv_3x3", 0)]
    assert concat == [2, 4, 5]


def test_threshold_genotype_ties_and_an_empty_cell():
    w = _cell({0: (SEP3, 0.9), 1: (SEP3, 0.9)})
    w[0, MAX] = 0.9  # a tie between ops goes to the lower index (max_pool before sep_conv)
    gene, concat = parse_fair(w, threshold=0.95)
    assert all(op == "none" for op, _ in gene) and concat == [2, 3, 4, 5]
    gene, _ = parse_fair(w)
    assert gene[:2] == [("max_pool_3x3", 0), ("sep_conv_3x3", 1)]  # edge tie: lower input first
    with pytest.raises(ValueError, match="do not fit"):
        parse_fair(w[:10])


def test_model_genotype_uses_sigmoid_and_its_threshold():
    ref, _ = _pair(seed=4, spread=3.0)
    g = ref.genotype()
    sn = torch.sigmoid(ref.alphas_normal).detach().numpy()
    assert (g.normal, g.normal_concat) == parse_fair(sn)
    ref.threshold = 0.0
    assert all(op != "none" for op, _ in ref.genotype().normal)
    assert "sigmoid(alpha_normal)" in cb.format_alphas(ref)
    assert cb.softmax_alphas(ref)["normal"][0][0] == 0.0


# ------------------------------------------------------------------- fused vs reference
@pytest.mark.parametrize("memory", ["shared", "plain", "checkpoint"])
def test_fused_matches_reference(memory):
    ref, fused = _pair(seed=5, memory=memory)
    ref.train()
    fused.train()
    assert fused.cells[0].why_not_batched() is None or memory == "plain"
    x, y = cnn_batch(6, n=3, dtype=D)
    lr_, lf = ref._loss(x, y), fused._loss(x, y)
    _close(lf, lr_)
    _close(fused(x), ref(x))
    pr = ref.arch_parameters() + list(ref.parameters())
    pf = fused.arch_parameters() + list(fused.parameters())
    for a, b in zip(torch.autograd.grad(lf, pf), torch.autograd.grad(lr_, pr), strict=True):
        _close(a, b)
    assert fused.genotype() == ref.genotype()


def test_fused_architect_step_equals_the_reference():
    ref, fused = _pair(seed=7)
    args = cnn_args(arch_learning_rate=3e-3, arch_beta1=0.9)
    a_ref, a_fused = RefArchitect(ref, args), A.Architect(fused, args)
    assert a_fused.optimizer.param_groups[0]["betas"] == (0.9, 0.999)
    for i in range(3):
        xt, yt = cnn_batch(10 + i, n=3, dtype=D)
        xv, yv = cnn_batch(20 + i, n=3, dtype=D)
        a_ref.step(xt, yt, xv, yv, 0.01, None, False)
        a_fused.step(xt, yt, xv, yv, 0.01, None, False)
    for a, b in zip(fused.arch_parameters(), ref.arch_parameters()):
        _close(a, b)


# ------------------------------------------------------------------ registry and search
def test_published_defaults_and_refusals():
    cfg = method_config("fair-darts", data="/nowhere")
    assert (cfg.batch_size, cfg.learning_rate, cfg.arch_learning_rate, cfg.arch_beta1,
            cfg.zero_one_weight, cfg.fair_threshold, cfg.epochs) == (128, 0.005, 3e-3, 0.9, 10.0, 0.85, 50)
    small = method_config("fair-darts")
    assert (small.layers, small.init_channels, small.epochs) == (3, 4, 5)
    with pytest.raises(ConfigError, match="first order"):
        method_config("fair-darts", unrolled=True)
    with pytest.raises(ConfigError, match="DARTS- settings"):
        method_config("fair-darts", aux_skip_beta=0.5)
    with pytest.raises(ConfigError):
        method_config("fair-darts", fair_threshold=1.5)


def test_cli_search_end_to_end(tmp_path, capsys):
    rc = cli.main(["search", "cnn", "--method", "fair-darts", "--epochs", "2",
                   "--max_steps_per_epoch", "2", "--batch_size", "16", "--train_portion", "0.9",
                   "--save", str(tmp_path / "run"), "--quiet"])
    assert rc == 0
    assert (tmp_path / "run" / "genotype.json").exists()
    assert cli.main(["search", "cnn", "--method", "fair-darts", "--unrolled",
                     "--save", str(tmp_path / "r2")]) == 2
    assert "drop --unrolled" in capsys.readouterr().err
