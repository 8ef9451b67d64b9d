"""PC-DARTS (fastdarts.methods.pc_darts): the reference port against a float64
transcription of the published math written here, the fused network against the
reference, both Architects on it, the search end to end, and the refusals."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
import torch.nn as nn

from fastdarts import cli
from fastdarts.architect import Architect
from fastdarts.config import ConfigError
from fastdarts.nn import pc_darts as fused
from fastdarts.reference.cnn import Architect as RefArchitect
from fastdarts.reference.cnn import pc_darts as ref
from fastdarts.search.cnn import method_config, search_cnn
from fastdarts.space.genotypes import PRIMITIVES

from .helpers import StopAfter, assert_close, cnn_args, cnn_batch, cnn_loss_and_grads, one_thread  # noqa: F401

F64 = torch.float64
RTOL, ATOL = 1e-10, 1e-14
NONE = PRIMITIVES.index("none")


def _net(cls, seed=0, C=4, k=2, layers=3, num_classes=3):
    torch.manual_seed(seed)
    model = cls(C, num_classes, layers, nn.CrossEntropyLoss(), k=k).to(F64)
    with torch.no_grad():  # away from uniform, so every term of every gradient matters
        for a in model.arch_parameters():
            a.normal_(0, 0.5)
    return model


# -------------------------------------------------------------- the math, transcribed here
def _softmax(v):
    e = torch.exp(v - v.max())
    return e / e.sum()


def _oracle_mixed_op(x, weights, ops, k, stride):
    """PC-DARTS' MixedOp: ops on the first C/k channels, the rest max-pooled 2x2 on a
    stride-2 edge, concatenated, then channel g*P + i moved to i*k + g."""
    N, C, H, W = x.shape
    P = C // k
    mixed = sum(weights[m] * op(x[:, :P]) for m, op in enumerate(ops))
    rest = x[:, P:]
    if stride == 2:
        rest = rest.reshape(N, C - P, H // 2, 2, W // 2, 2).amax(dim=(3, 5))
    both = torch.cat([mixed, rest], dim=1)
    return torch.stack([both[:, g * P + i] for i in range(P) for g in range(k)], dim=1)


def _oracle_cell(cell, s0, s1, alphas, betas, k, steps=4):
    """One cell: node i = sum_j b_ij * mixed_ij(state_j), b_i = softmax over node i's betas."""
    states = [cell.preprocess0(s0), cell.preprocess1(s1)]
    e = 0
    for i in range(steps):
        b = _softmax(betas[e:e + 2 + i])
        node = 0
        for j, h in enumerate(states):
            stride = 2 if cell.reduction and j < 2 else 1
            node = node + b[j] * _oracle_mixed_op(h, _softmax(alphas[e + j]), cell._ops[e + j]._ops, k,
                                                  stride)
        states.append(node)
        e += 2 + i
    return torch.cat(states[2:], dim=1)


def _oracle_genotype_cell(alphas, betas, steps=4):
    """PC-DARTS' parse: softmax(alpha) rows times the node's softmax(beta), then per node the
    two edges with the largest non-none weight (ties: lower index) and their best op."""
    gene, e = [], 0
    for i in range(steps):
        b = _softmax(betas[e:e + 2 + i])
        W = np.stack([(_softmax(alphas[e + j]) * b[j]).numpy() for j in range(2 + i)])
        W[:, NONE] = -np.inf
        best = W.max(axis=1)
        edges = sorted(range(2 + i), key=lambda j: (-best[j], j))[:2]
        gene += [(PRIMITIVES[int(np.argmax(W[j]))], j) for j in edges]
        e += 2 + i
    return gene


def _grads(outs, tensors):
    return torch.autograd.grad(outs, tensors, allow_unused=True)


@pytest.mark.parametrize("stride", [1, 2])
def test_mixed_op_matches_the_transcription(stride):
    torch.manual_seed(1)
    k = 2
    op = ref.MixedOp(8, stride, k).to(F64)
    x = torch.randn(2, 8, 8, 8, dtype=F64, requires_grad=True)
    w = torch.randn(len(PRIMITIVES), dtype=F64).softmax(0).requires_grad_()
    g = torch.randn(2, 8, 8 // stride, 8 // stride, dtype=F64)
    params = [x, w, *op.parameters()]
    got = op(x, w)
    want = _oracle_mixed_op(x, w, op._ops, k, stride)
    assert got.shape == want.shape == g.shape
    assert_close(got, want.detach(), RTOL, ATOL, "mixed op value")
    for name, a, b in zip(["x", "weights", *(n for n, _ in op.named_parameters())],
                          _grads((got * g).sum(), params), _grads((want * g).sum(), params), strict=True):
        assert_close(a, b, RTOL, ATOL, f"d/d{name}")
    # the shuffle puts the op outputs at channels 0, k, 2k, ... and moves the bypass
    assert not torch.allclose(got, torch.cat([got[:, :4], got[:, 4:]], 1).roll(1, 1))


@pytest.mark.parametrize("reduction", [False, True])
def test_cell_with_edge_normalisation_matches_the_transcription(reduction):
    torch.manual_seed(2)
    k, C = 2, 4
    cell = ref.Cell(4, 4, 6, 6, C, reduction, False, k).to(F64)
    s0 = torch.randn(2, 6, 8, 8, dtype=F64, requires_grad=True)
    s1 = torch.randn(2, 6, 8, 8, dtype=F64, requires_grad=True)
    alphas = torch.randn(14, len(PRIMITIVES), dtype=F64, requires_grad=True)
    betas = torch.randn(14, dtype=F64, requires_grad=True)
    got = cell(s0, s1, alphas.softmax(-1), ref.edge_weights(betas, 4))
    want = _oracle_cell(cell, s0, s1, alphas, betas, k)
    g = torch.randn_like(want)
    assert_close(got, want.detach(), RTOL, ATOL, "cell value")
    params = [s0, s1, alphas, betas, *cell.parameters()]
    names = ["s0", "s1", "alphas", "betas", *(n for n, _ in cell.named_parameters())]
    got_grads = _grads((got * g).sum(), params)
    for name, a, b in zip(names, got_grads, _grads((want * g).sum(), params), strict=True):
        assert_close(a, b, RTOL, ATOL, f"d/d{name}")
    assert got_grads[3].abs().min() > 0  # every beta moves the output


def test_edge_weights_are_a_softmax_per_node():
    betas = torch.randn(14, dtype=F64)
    w = ref.edge_weights(betas, 4)
    bounds = [0, 2, 5, 9, 14]
    for i in range(4):
        assert_close(w[bounds[i]:bounds[i + 1]], _softmax(betas[bounds[i]:bounds[i + 1]]), RTOL, 0, "node")


def test_genotype_is_pc_darts_parse():
    model = _net(ref.Network, seed=3)
    geno = model.genotype()
    assert geno.normal == _oracle_genotype_cell(model.alphas_normal.detach(), model.betas_normal.detach())
    assert geno.reduce == _oracle_genotype_cell(model.alphas_reduce.detach(), model.betas_reduce.detach())
    # betas decide: node 0's edge 1 leads on alpha, but a large beta on edge 0 wins it
    with torch.no_grad():
        model.alphas_normal[:2] = 0
        model.alphas_normal[1, 4] = 1.0
        model.alphas_normal[0, 5] = 0.9
        model.betas_normal[:2] = torch.tensor([3.0, 0.0])
    first = model.genotype().normal[0]
    assert first == ("sep_conv_5x5", 0)
    with torch.no_grad():
        model.betas_normal[:2] = 0
    assert model.genotype().normal[0] == ("sep_conv_3x3", 1)


# ------------------------------------------------------------- the model: structure, init
def test_arch_parameters_state_dict_and_init_are_pc_darts():
    model = ref.Network(8, 10, 5, nn.CrossEntropyLoss(), k=4)
    a = model.arch_parameters()
    assert [tuple(t.shape) for t in a] == [(14, 8), (14, 8), (14,), (14,)]
    assert a[2] is model.betas_normal and a[3] is model.betas_reduce
    sd = model.state_dict()
    # the ops have C // k channels (PC-DARTS: OPS[primitive](C // k, stride, False))
    assert sd["cells.0._ops.0._ops.4.op.1.weight"].shape == (2, 1, 3, 3)
    assert sd["cells.0._ops.0._ops.1.1.running_mean"].shape == (2,)
    assert not any(".mp." in key for key in sd)  # MaxPool2d(2, 2): no state
    # after the weights: alphas_normal, alphas_reduce, betas_normal, betas_reduce, 1e-3 * randn each
    class WeightsOnly(ref.Network):
        def _initialize_alphas(self):
            pass

    torch.manual_seed(5)
    WeightsOnly(8, 10, 5, nn.CrossEntropyLoss(), k=4)
    want = [1e-3 * torch.randn(14, 8), 1e-3 * torch.randn(14, 8), 1e-3 * torch.randn(14),
            1e-3 * torch.randn(14)]
    torch.manual_seed(5)
    got = ref.Network(8, 10, 5, nn.CrossEntropyLoss(), k=4).arch_parameters()
    assert all(torch.equal(a, b) for a, b in zip(got, want, strict=True))


def test_fused_builds_the_same_modules_and_weights():
    r, f = _net(ref.Network, seed=4), _net(fused.Network, seed=4)
    assert [n for n, _ in r.named_modules()] == [n for n, _ in f.named_modules()]
    sr, sf = r.state_dict(), f.state_dict()
    assert list(sr) == list(sf) and all(torch.equal(sr[k], sf[k]) for k in sr)
    assert all(torch.equal(a, b) for a, b in zip(r.arch_parameters(), f.arch_parameters(), strict=True))


# ------------------------------------------------------------------ fused vs reference
@pytest.mark.parametrize("mode", ["train-batched", "train-per-node", "eval"])
def test_fused_matches_reference(mode):
    r, f = _net(ref.Network, seed=6), _net(fused.Network, seed=6)
    if mode == "eval":
        r.eval()
        f.eval()
    if mode == "train-per-node":
        for c in f.cells:
            c.batch_states = False
    expect_batched = mode == "train-batched"
    assert [c.why_not_batched() is None for c in f.cells] == [expect_batched] * 3
    assert [c.reduction for c in f.cells] == [False, True, True]
    x, y = cnn_batch(7, n=3, hw=8)
    lr, loss_r, gr = cnn_loss_and_grads(r, x, y)
    lf, loss_f, gf = cnn_loss_and_grads(f, x, y)
    assert_close(lf, lr, RTOL, ATOL, "logits")
    assert_close(loss_f, loss_r, RTOL, ATOL, "loss")
    assert gr.keys() == gf.keys()
    for name in gr:
        assert_close(gf[name], gr[name], RTOL, ATOL, name)
    sr, sf = r.state_dict(), f.state_dict()  # batch-norm running statistics (train) or unchanged
    for key in sr:
        assert_close(sf[key].double(), sr[key].double(), RTOL, ATOL, key)
    assert f.genotype() == r.genotype()


def test_fused_mixed_op_alone_matches_reference():
    torch.manual_seed(8)
    r = ref.MixedOp(8, 2, 4).to(F64)
    f = fused.MixedOp(8, 2, 4).to(F64)
    f.load_state_dict(r.state_dict())
    x = torch.randn(2, 8, 8, 8, dtype=F64)
    w = torch.randn(len(PRIMITIVES), dtype=F64).softmax(0)
    assert_close(f(x, w), r(x, w), RTOL, ATOL, "mixed op")


# ------------------------------------------------------------------ the Architect on it
@pytest.mark.parametrize("unrolled", [False, True])
def test_architects_on_pc_darts(unrolled):
    r, f = _net(ref.Network, seed=9), _net(fused.Network, seed=9)
    xt, yt = cnn_batch(10, n=3, hw=8)
    xv, yv = cnn_batch(11, n=3, hw=8)
    arch, opts = [], []
    for m, cls in ((r, RefArchitect), (f, Architect)):
        opt = torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9, weight_decay=3e-4)
        m._loss(xt, yt).backward()  # one weight step: the momentum term of w' is exercised
        opt.step()
        opt.zero_grad()
        opts.append(opt)
        arch.append(cls(m, cnn_args(arch_learning_rate=6e-4)))
    before = {n: p.detach().clone() for n, p in f.named_parameters()}
    alphas0 = [a.detach().clone() for a in f.arch_parameters()]
    for a, opt in zip(arch, opts, strict=True):
        a.step(xt, yt, xv, yv, 0.05, opt, unrolled)
    rtol = 1e-10 if not unrolled else 1e-7  # second order: a finite difference of gradients
    for name, a, b in zip(["alphas_normal", "alphas_reduce", "betas_normal", "betas_reduce"],
                          f.arch_parameters(), r.arch_parameters(), strict=True):
        assert_close(a.grad, b.grad, rtol, ATOL, f"{name}.grad")
        assert_close(a.detach(), b.detach(), rtol, ATOL, name)
    assert all(not torch.equal(a, b) for a, b in zip(f.arch_parameters(), alphas0, strict=True))
    for n, p in f.named_parameters():  # the fused Architect restores w bit for bit
        assert torch.equal(p, before[n]), n


# ------------------------------------------------------------------ search, refusals
def test_search_end_to_end_and_resume(tmp_path, capsys):
    flags = ["search", "cnn", "--method", "pc-darts", "--epochs", "2", "--max_steps_per_epoch", "2",
             "--arch_start_epoch", "1", "--batch_size", "8", "--init_channels", "4", "--layers", "3",
             "--train_portion", "0.9", "--quiet"]  # 0.9: each validation 180 digits, not 899
    assert cli.main([*flags, "--save", str(tmp_path / "full")]) == 0
    full = torch.load(tmp_path / "full" / "checkpoint.pt", weights_only=True)
    assert len(full["alphas"]) == 4 and full["config"]["method"] == "pc-darts"
    assert full["config"]["partial_channels"] == 2  # the embedded demo's K
    rows = full["history"]
    assert [r["epoch"] for r in rows] == [0, 1]
    assert set(rows[-1]["edge_weights"]) == {"normal", "reduce"} and len(rows[-1]["alphas"]) == 2
    assert sum(rows[-1]["edge_weights"]["normal"][:2]) == pytest.approx(1)
    assert len((tmp_path / "full" / "genotypes.jsonl").read_text().splitlines()) == 2
    json.loads((tmp_path / "full" / "genotype.json").read_text())
    # stopped after epoch 1, then resumed: the same alphas, bit for bit
    cfg = method_config("pc-darts", epochs=2, max_steps_per_epoch=2, arch_start_epoch=1, batch_size=8,
                        init_channels=4, layers=3, train_portion=0.9, quiet=True,
                        save=str(tmp_path / "cut"))
    search_cnn(cfg, callbacks=[StopAfter(1)])
    cut = torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=True)
    assert cut["epoch"] == 1
    assert cli.main([*flags, "--save", str(tmp_path / "cut"),
                     "--resume", str(tmp_path / "cut" / "checkpoint.pt")]) == 0
    resumed = torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=True)
    for a, b in zip(resumed["alphas"], full["alphas"], strict=True):
        assert torch.equal(a, b)
    # epoch 0 trains the weights only (arch_start_epoch 1): the arch parameters are untouched
    assert not all(torch.equal(a, b) for a, b in zip(full["alphas"], cut["alphas"], strict=True))
    assert all(torch.equal(a, b) for a, b in zip(cut["alphas"], _initial_alphas(cfg), strict=True))


def _initial_alphas(cfg):
    from fastdarts.search.cnn import build

    engine = build(dataclasses.replace(cfg, save=cfg.save + "-init"))
    return [a.detach().clone() for a in engine.model.arch_parameters()]


def test_refusals():
    with pytest.raises(ConfigError, match="not divisible by --partial_channels 4.*multiple of 4"):
        method_config("pc-darts", init_channels=6, partial_channels=4)
    with pytest.raises(ConfigError, match="--partial_channels must be >= 2"):
        method_config("pc-darts", partial_channels=1)
    with pytest.raises(ValueError, match="C=6, k=4"):
        ref.Network(6, 10, 3, nn.CrossEntropyLoss(), k=4)
    with pytest.raises(ValueError, match="k >= 2"):
        fused.Network(6, 10, 3, nn.CrossEntropyLoss(), k=1)


def test_cli_refusal_is_one_line(tmp_path, capsys):
    rc = cli.main(["search", "cnn", "--method", "pc-darts", "--init_channels", "6", "--partial_channels",
                   "4", "--epochs", "1", "--max_steps_per_epoch", "1", "--save", str(tmp_path / "x")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "--init_channels 6" in err[0]
    assert not (tmp_path / "x").exists()


def test_launch_count_of_a_pc_darts_step():
    from fastdarts.profile.launches import count_cnn_step

    kw = dict(C=4, layers=3, batch=2, hw=8, num_classes=3, warmup=1, repeats=0, method="pc-darts",
              partial_channels=2)
    r, f = count_cnn_step("reference", False, **kw), count_cnn_step("fused", False, **kw)
    assert r["syncs"] == f["syncs"] == 0
    # the bypass sums, one per node: 2 forwards (architect, weights) x 3 cells x 4 nodes
    assert f["calls"]["fastdarts.mixed_sum"] == 2 * 3 * 4
    assert f["launches"] < 0.3 * r["launches"]
