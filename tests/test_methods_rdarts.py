"""R-DARTS (fastdarts/methods/rdarts.py): the eigenvalue of the validation Hessian w.r.t.
the alphas against torch.linalg.eigvalsh of the explicit Hessian
(torch.autograd.functional.hessian), the exact Hessian-vector product, power iteration
on known spectra, the DARTS-ES rule on hand-made eigenvalue sequences, search drop path
(reference vs fused under one seed, and masks known from the seed), a search through the
command line with the monitor, and the refusals."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from fastdarts import cli
from fastdarts import nn as fused
from fastdarts.config import ConfigError
from fastdarts.methods import rdarts
from fastdarts.methods.rdarts import (
    EigenvalueEarlyStop,
    HessianMonitor,
    SearchDropPath,
    ValidationHessian,
    hessian_eigenvalue,
    largest_eigenvalue,
)
from fastdarts.reference import cnn as ref
from fastdarts.search.cnn import CNNSearchConfig, build, method_config
from fastdarts.space import genotypes as G

from .helpers import one_thread, tiny_engine  # noqa: F401  (autouse fixture)

WD = 1e-3  # the architecture weight decay: the code's H includes WD * I


def small_supernet(cls=ref.Network, seed=2, n=4):
    """A float64 supernet with 2 nodes per cell (5 edges: 80 alphas) so that the explicit
    Hessian stays cheap; at this seed its largest eigenvalue leads by 2.6x in magnitude."""
    torch.manual_seed(seed)
    model = cls(2, 3, 3, nn.CrossEntropyLoss(), steps=2, multiplier=2).double()
    with torch.no_grad():
        for a in model.arch_parameters():
            a.normal_(0, 1e-3)
    g = torch.Generator().manual_seed(1 + seed)
    x = torch.randn(n, 3, 8, 8, generator=g, dtype=torch.float64)
    return model, x, torch.arange(n) % 3


def explicit_hessian(model, x, y):
    """d^2 L_val / d alpha^2 of the flattened (alphas_normal, alphas_reduce), built by
    torch.autograd.functional.hessian, independent of fastdarts' products."""
    alphas = [a.detach().clone() for a in model.arch_parameters()]

    def loss(a_normal, a_reduce):
        model.alphas_normal, model.alphas_reduce = a_normal, a_reduce
        try:
            return F.cross_entropy(model(x), y)
        finally:
            model.alphas_normal, model.alphas_reduce = model._arch_parameters

    blocks = torch.autograd.functional.hessian(loss, tuple(alphas), vectorize=True)
    k = alphas[0].numel()
    return torch.cat([torch.cat([blocks[i][j].reshape(k, k) for j in range(2)], 1) for i in range(2)])


def test_hvp_and_eigenvalue_match_the_explicit_hessian():
    model, x, y = small_supernet()
    model.train()
    H = explicit_hessian(model, x, y) + WD * torch.eye(80, dtype=torch.float64)
    torch.testing.assert_close(H, H.T, rtol=0, atol=1e-12)
    hv = ValidationHessian(model, x, y, WD)
    g = torch.Generator().manual_seed(5)
    for _ in range(2):
        v = torch.randn(80, generator=g, dtype=torch.float64)
        torch.testing.assert_close(hv.hvp(v), H @ v, rtol=1e-10, atol=1e-12)
    spectrum = torch.linalg.eigvalsh(H)
    assert spectrum[-1] > 2 * spectrum[0].abs()  # the regime the test means: a positive lead
    buffers = [b.clone() for b in model.buffers()]
    torch.manual_seed(123)
    ev, products = hessian_eigenvalue(model, x, y, WD, iters=200, tol=1e-12)
    after = torch.rand(1)
    torch.manual_seed(123)
    assert torch.equal(after, torch.rand(1))  # the global RNG is left where it was
    assert all(torch.equal(b, c) for b, c in zip(model.buffers(), buffers, strict=True))
    assert ev == pytest.approx(float(spectrum[-1]), rel=1e-6)
    assert products < 200


def test_fused_supernet_gives_the_references_hvp():
    g = torch.Generator().manual_seed(9)
    v = torch.randn(80, generator=g, dtype=torch.float64)
    out = []
    for cls in (ref.Network, fused.Network):
        model, x, y = small_supernet(cls)
        model.train()
        out.append(ValidationHessian(model, x, y, WD).hvp(v))
    torch.testing.assert_close(out[1], out[0], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("spectrum", [[5.0, 2.0, 1.0, 0.5, -1.0, -3.0],     # positive lead
                                      [2.0, 1.0, 0.3, -1.0, -2.5, -6.0]],   # negative lead: shifted
                         ids=["positive", "negative"])
def test_power_iteration_finds_the_largest_eigenvalue(spectrum):
    g = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(6, 6, generator=g, dtype=torch.float64))
    A = q @ torch.diag(torch.tensor(spectrum, dtype=torch.float64)) @ q.T
    v0 = torch.randn(6, generator=g, dtype=torch.float64)
    lam, used = largest_eigenvalue(lambda u: A @ u, v0, iters=2000, tol=1e-15)
    assert lam == pytest.approx(float(torch.linalg.eigvalsh(A)[-1]), rel=1e-9)
    assert lam == pytest.approx(max(spectrum), rel=1e-9)
    assert used > (1 if spectrum[0] > 0 else 30)


# -- DARTS-ES: the code's EVLocalAvg rule ---------------------------------------------------

def run_rule(rule, epochs_evs):
    """Feed (epoch, ev) in order; return the epoch at which the rule first says stop."""
    for epoch, ev in epochs_evs:
        rule.update(epoch, ev, f"genotype@{epoch}")
        if rule.should_stop(epoch):
            return epoch
    return None


def test_es_rule_stops_exactly_where_the_code_does():
    # every epoch, window 5, delta 4, factor 1.3, start 10: checked from epoch 16 on; the
    # local average at epoch e is the mean of e-4..e, compared with the one of e-8..e-4
    evs = [(e, 1.0 if e <= 15 else 2.0) for e in range(30)]
    rule = EigenvalueEarlyStop(30, 1)
    assert run_rule(rule, evs) == 17  # at 16 the ratio is (4 + 2) / 5 = 1.2: not yet
    assert rule.ratio == pytest.approx(1.4, rel=1e-12)  # at 17: (3 + 2 * 2) / 5
    assert rule.stop_epoch == 11 and rule.stop_genotype == "genotype@11"  # 17 - 2 - 4
    # the same jump before the rule may look (epochs 0..15) never stops it
    early = [(e, 1.0 if e <= 5 else 10.0) for e in range(30)]
    assert run_rule(EigenvalueEarlyStop(30, 1), early) is None


def test_es_rule_every_two_epochs():
    # eigenvalues at even epochs: la = e - 4, the earlier average 8 epochs before that
    evs = [(e, 1.0 if e <= 20 else 4.0) for e in range(0, 40, 2)]
    rule = EigenvalueEarlyStop(40, 2)
    assert run_rule(rule, evs) == 22  # (4 * 1 + 4) / 5 = 1.6 > 1.3 at the first rise
    assert rule.stop_epoch == 10
    # ... but not when the rise comes at the last epoch, which the code never checks
    last = [(e, 1.0) for e in range(0, 40, 2)] + [(39, 100.0)]
    assert run_rule(EigenvalueEarlyStop(40, 2), last) is None


def test_monitor_stops_the_search_and_the_result_is_the_stop_epochs_genotype(tmp_path, monkeypatch):
    evs = iter([1.0, 1.0, 1.0, 1.0, 3.0, 3.0, 3.0, 3.0])
    monkeypatch.setattr(rdarts, "hessian_eigenvalue", lambda *a, **k: (next(evs), 1))
    monitor = HessianMonitor(1, str(tmp_path), early_stop=True, window=3, delta=1, es_start_epoch=0,
                             batch_size=4, quiet=True)
    engine = tiny_engine(tmp_path, epochs=8, max_steps=1, callbacks=[monitor])
    engine.run()
    # window 3: averages from epoch 1 on, la = e - 1; at 4: (1 + 1 + 3) / 3 over 1 -> stop
    assert engine.stopped and [row["epoch"] for row in engine.history] == [0, 1, 2, 3, 4]
    assert [row["eigenvalue"] for row in engine.history] == [1.0, 1.0, 1.0, 1.0, 3.0]
    assert engine.early_stop["decided_at_epoch"] == 4 and engine.early_stop["stop_epoch"] == 2
    want = G.from_dict(engine.history[2]["genotype"])
    assert engine.final_genotype == want
    assert G.load_json(tmp_path / "genotype.json") == want
    record = json.loads((tmp_path / "eigenvalues.json").read_text())
    assert record["eigenvalues"] == [1.0, 1.0, 1.0, 1.0, 3.0] and record["early_stop"]["stop_epoch"] == 2


def test_monitor_replays_the_history_on_resume(tmp_path):
    """A resumed search rebuilds the rule from engine.history (the eigenvalues and genotypes
    of the epochs before it), so it decides as the uninterrupted search would."""
    genotype = G.to_dict(ref.Network(2, 3, 3, nn.CrossEntropyLoss()).genotype())
    evs = [1.0, 1.1, 0.9, 1.2, 1.0, 1.3]
    engine = tiny_engine(None, epochs=20, max_steps=1, standard=False)
    engine.history = [{"epoch": e, "eigenvalue": v, "genotype": genotype} for e, v in enumerate(evs)]
    monitor = HessianMonitor(1, None, quiet=True)
    monitor.search_begin(engine)
    fresh = EigenvalueEarlyStop(20, 1)
    for e, v in enumerate(evs):
        fresh.update(e, v, None)
    assert monitor.rule.ev == fresh.ev and monitor.rule.local_avg == fresh.local_avg
    assert monitor.rule.la_epochs == fresh.la_epochs and monitor.values == list(enumerate(evs))


# -- search drop path (R-DARTS(DP)) ---------------------------------------------------------

def tiny_pair(cls, **kw):
    torch.manual_seed(0)
    model = cls(2, 3, 3, nn.CrossEntropyLoss(), **kw).double()
    with torch.no_grad():
        for a in model.arch_parameters():
            a.normal_(0, 0.5)
    return model


@pytest.mark.parametrize("on", ["edge", "op"])
@pytest.mark.parametrize("memory", ["shared", "checkpoint"])
def test_drop_path_reference_and_fused_agree_under_one_seed(on, memory):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(4, 3, 8, 8, generator=g, dtype=torch.float64)
    y = torch.tensor([0, 2, 1, 1])
    results = []
    for model in (tiny_pair(ref.Network), tiny_pair(fused.Network, memory=memory)):
        model.train()
        model.set_search_drop_path(0.4, on)
        torch.manual_seed(5)
        loss = model._loss(x, y)
        grads = torch.autograd.grad(loss, [*model.parameters(), *model.arch_parameters()])
        results.append((loss, grads, torch.rand(3)))
    (l0, g0, r0), (l1, g1, r1) = results
    torch.testing.assert_close(l1, l0, rtol=1e-12, atol=0)
    for a, b in zip(g1, g0, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-13)
    assert torch.equal(r0, r1)  # both drew the same number of masks
    # and the masks mattered
    no_drop = tiny_pair(ref.Network)
    no_drop.train()
    assert float((no_drop._loss(x, y) - l0).detach().abs()) > 1e-6


@pytest.mark.parametrize("on", ["edge", "op"])
def test_drop_path_sample_with_known_masks(on):
    """One reference cell against the rule written out, the masks drawn from the same seed
    in the same order (node, edge, op), some kept and some dropped."""
    model = tiny_pair(ref.Network)
    model.train()
    cell = model.cells[0]
    p, keep = 0.5, 0.5
    model.set_search_drop_path(p, on)
    g = torch.Generator().manual_seed(2)
    s0, s1 = (torch.randn(4, cell.preprocess0.op[1].in_channels, 8, 8, generator=g, dtype=torch.float64)
              for _ in range(2))
    w = F.softmax(model.alphas_normal, -1)
    torch.manual_seed(7)
    got = cell(s0, s1, w)
    torch.manual_seed(7)
    states, offset, drawn = [cell.preprocess0(s0), cell.preprocess1(s1)], 0, []
    for _ in range(cell._steps):
        node = 0
        for j, h in enumerate(states):
            mixed = cell._ops[offset + j]
            if on == "edge":
                out = sum(wk * op(h) for wk, op in zip(w[offset + j], mixed._ops))
                m = torch.empty(4, 1, 1, 1, dtype=torch.float64).bernoulli_(keep)
                drawn.append(m)
                node = node + out / keep * m
            else:
                for wk, op, prim in zip(w[offset + j], mixed._ops, G.PRIMITIVES):
                    y = op(h)
                    if prim not in ("none", "skip_connect"):  # stride 1: skip is the identity
                        m = torch.empty(4, 1, 1, 1, dtype=torch.float64).bernoulli_(keep)
                        drawn.append(m)
                        y = y / keep * m
                    node = node + wk * y
        offset += len(states)
        states.append(node)
    want = torch.cat(states[-cell._multiplier:], dim=1)
    masks = torch.cat(drawn)
    assert 0 < float(masks.sum()) < masks.numel()
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-14)
    model.eval()  # no drop path outside training, and no draw
    torch.manual_seed(7)
    cell(s0, s1, w)
    after = torch.rand(1)
    torch.manual_seed(7)
    assert torch.equal(after, torch.rand(1))


def test_drop_path_schedule_is_the_codes():
    model = tiny_pair(ref.Network)
    cb = SearchDropPath(0.4, "op")

    class E:
        epochs, metrics = 5, {}
    E.model = model
    for epoch in range(5):
        E.epoch = epoch
        cb.epoch_begin(E)
        assert all(c.drop_prob == pytest.approx(0.1 * epoch, rel=1e-12) and c.drop_on == "op"
                   for c in model.cells)
    with pytest.raises(ValueError, match="in \\[0, 1\\)"):
        model.set_search_drop_path(1.0)


# -- the command line and the refusals ------------------------------------------------------

TINY = ["--epochs", "2", "--max_steps_per_epoch", "2", "--layers", "3", "--init_channels", "2",
        "--batch_size", "8", "--quiet", "--impl", "reference", "--train_portion", "0.9"]


def test_cli_r_darts_with_the_monitor_on_the_embedded_default(tmp_path):
    save = tmp_path / "rd"
    assert cli.main(["search", "cnn", "--method", "r-darts", "--hessian_every", "1", "--hessian_iters", "2",
                     "--search_drop_path", "0.2", *TINY, "--save", str(save)]) == 0
    record = json.loads((save / "eigenvalues.json").read_text())
    assert record["epochs"] == [0, 1] and all(isinstance(v, float) for v in record["eigenvalues"])
    assert record["early_stop"] is None  # too short for the rule to look
    assert (save / "genotype.json").is_file()


def test_refusals(tmp_path, capsys):
    cfg = CNNSearchConfig(early_stop=True, save=str(tmp_path / "a"), quiet=True)
    with pytest.raises(ConfigError, match="needs the eigenvalues: add --hessian_every"):
        build(cfg)
    with pytest.raises(ConfigError, match="drop --cuda_graph"):
        build(CNNSearchConfig(search_drop_path=0.2, cuda_graph=True, save=str(tmp_path / "b")))
    with pytest.raises(ConfigError, match="--search_drop_path must be >= 0 and < 1"):
        method_config("r-darts", search_drop_path=1.0)
    assert cli.main(["search", "cnn", "--early_stop", "--save", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err.strip()
    assert "--hessian_every" in err and "\n" not in err
    full = method_config("r-darts", data="/nowhere")
    assert (full.hessian_every, full.early_stop, full.es_window, full.es_delta, full.es_factor,
            full.es_start_epoch) == (2, True, 5, 4, 1.3, 10)
    assert method_config("r-darts").hessian_every == 1  # the embedded demo: every epoch


def test_cli_applies_the_methods_switches_when_not_given():
    import argparse

    from fastdarts.search.cli import add_search_flags, cnn_config

    p = argparse.ArgumentParser()
    add_search_flags(p, CNNSearchConfig)
    cfg = cnn_config(p.parse_args(["--method", "r-darts", "--data", "/nowhere"]))
    assert (cfg.early_stop, cfg.hessian_every, cfg.unrolled) == (True, 2, False)
    cfg = cnn_config(p.parse_args(["--method", "darts", "--data", "/nowhere", "--unrolled"]))
    assert (cfg.early_stop, cfg.unrolled) == (False, True)
