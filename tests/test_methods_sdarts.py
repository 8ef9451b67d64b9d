"""SDARTS-RS (fastdarts/methods/sdarts.py): the weight step on clip(softmax(alpha) + U(-eps,
eps)) against a float64 transcription of the published code with the same noise, the
bit-exact restore, the eps schedule, the code's clip, a search through the command line
and the refusals."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from fastdarts import cli
from fastdarts import nn as fused
from fastdarts.config import ConfigError
from fastdarts.loop.engine import Callback
from fastdarts.methods import sdarts
from fastdarts.methods.sdarts import RandomSmoothing, clip_rows_, epsilon_at, with_direct_weights
from fastdarts.reference import cnn as ref
from fastdarts.search.cnn import build, method_config

from .helpers import cnn_batch, one_thread  # noqa: F401  (autouse fixture)

TINY = ["--epochs", "2", "--max_steps_per_epoch", "2", "--layers", "3", "--init_channels", "2",
        "--batch_size", "8", "--quiet", "--train_portion", "0.9"]


def code_clip(p: torch.Tensor) -> torch.Tensor:
    """The published ``clip``, row by row as written: argmax, clamp to [0, 1], a zero row
    gets 1 at that argmax, divide by the sum."""
    p = p.clone()
    for line in p:
        max_index = int(line.argmax())
        line.clamp_(0, 1)
        if float(line.sum()) == 0.0:
            line[max_index] = 1.0
        line.div_(line.sum())
    return p


def tiny(network_cls, seed=0):
    torch.manual_seed(seed)
    model = with_direct_weights(network_cls)(2, 3, 3, nn.CrossEntropyLoss()).double()
    with torch.no_grad():
        for a in model.arch_parameters():
            a.normal_(0, 0.5)
    return model


def forward_with(model, weights_normal, weights_reduce, x):
    """Network.forward written out with given op weights (the code's updateType='weight')."""
    s0 = s1 = model.stem(x)
    for cell in model.cells:
        s0, s1 = s1, cell(s0, s1, weights_reduce if cell.reduction else weights_normal)
    out = model.global_pooling(s1)
    return model.classifier(out.view(out.size(0), -1))


def test_eps_schedule_is_the_codes():
    assert epsilon_at(0, 50) == pytest.approx(0.03, rel=1e-15)
    assert epsilon_at(49, 50) == pytest.approx(0.03 + 0.27 * 49 / 50, rel=1e-15)  # never 0.3 itself
    assert epsilon_at(25, 50, eps_max=0.5, eps_start=0.1) == pytest.approx(0.3, rel=1e-15)
    cb = RandomSmoothing(0.3)

    class E:
        epochs, metrics = 4, {}
    for epoch, want in enumerate([0.03, 0.0975, 0.165, 0.2325]):
        E.epoch = epoch
        cb.epoch_begin(E)
        assert cb.eps == pytest.approx(want, rel=1e-12) and E.metrics["sdarts_eps"] == cb.eps


def test_clip_rows_is_the_codes_clip():
    p = torch.tensor([[-0.1, -0.3, -0.05, -0.2],   # all <= 0: one-hot where the largest was
                      [0.5, 1.2, -0.1, 0.3],       # clamp to [0, 1], then normalise
                      [0.2, 0.2, 0.3, 0.3]], dtype=torch.float64)
    got = clip_rows_(p.clone())
    torch.testing.assert_close(got, code_clip(p), rtol=0, atol=0)
    torch.testing.assert_close(got[0], torch.tensor([0, 0, 1.0, 0], dtype=torch.float64), rtol=0, atol=0)
    torch.testing.assert_close(got[1], torch.tensor([0.5, 1, 0, 0.3], dtype=torch.float64) / 1.8,
                               rtol=1e-15, atol=0)
    g = torch.Generator().manual_seed(0)
    q = torch.softmax(torch.randn(14, 8, generator=g, dtype=torch.float64), -1)
    q += torch.empty_like(q).uniform_(-0.3, 0.3, generator=g)
    torch.testing.assert_close(clip_rows_(q.clone()), code_clip(q), rtol=1e-15, atol=0)


@pytest.mark.parametrize("network_cls", [ref.Network, fused.Network], ids=["reference", "fused"])
@pytest.mark.parametrize("on", ["softmax", "alpha"])
def test_weight_step_gradients_equal_a_transcription_with_the_same_noise(network_cls, on):
    model = tiny(network_cls)
    model.train()
    x, y = cnn_batch(1, n=2)
    alphas = [a.detach().clone() for a in model.arch_parameters()]
    cb = RandomSmoothing(on=on)
    cb.eps = 0.2
    torch.manual_seed(11)
    cb.perturb(model)
    if on == "softmax":  # the rows hold probabilities now
        for a in model.arch_parameters():
            torch.testing.assert_close(a.sum(-1), torch.ones(14, dtype=torch.float64), rtol=1e-14, atol=0)
    grads = torch.autograd.grad(model._loss(x, y), list(model.parameters()))
    cb.restore(model)
    for a, before in zip(model.arch_parameters(), alphas, strict=True):
        assert torch.equal(a, before)  # bit for bit
    assert not model.direct_weights

    # the published step with the same draws: noise for alphas_normal, then alphas_reduce
    torch.manual_seed(11)
    noise = [torch.empty(14, 8, dtype=torch.float64).uniform_(-0.2, 0.2) for _ in range(2)]
    if on == "softmax":
        w = [code_clip(F.softmax(a, -1) + n) for a, n in zip(alphas, noise, strict=True)]
    else:
        w = [F.softmax(a + n, -1) for a, n in zip(alphas, noise, strict=True)]
    want = torch.autograd.grad(F.cross_entropy(forward_with(model, *w, x), y), list(model.parameters()))
    for g, h in zip(grads, want, strict=True):
        torch.testing.assert_close(g, h, rtol=1e-10, atol=1e-13)
    # and the perturbation mattered: DARTS' own weights give other gradients
    plain = [F.softmax(a, -1) for a in alphas]
    darts = torch.autograd.grad(F.cross_entropy(forward_with(model, *plain, x), y), list(model.parameters()))
    assert max(float((g - h).abs().max()) for g, h in zip(grads, darts, strict=True)) > 1e-6


def test_softmax_perturbation_needs_a_direct_weights_network():
    torch.manual_seed(0)
    model = ref.Network(2, 3, 3, nn.CrossEntropyLoss()).double()
    before = [a.detach().clone() for a in model.arch_parameters()]
    with pytest.raises(ValueError, match="with_direct_weights"):
        RandomSmoothing().perturb(model)
    assert all(torch.equal(a, b) for a, b in zip(model.arch_parameters(), before, strict=True))


class Probe(Callback):
    """Alphas when the architecture step is done (before the perturbation), during the
    weight step (after the backward) and after it."""

    order = -1000

    def __init__(self):
        self.rows = []

    def after_arch_step(self, e):
        self.rows.append({"arch": [a.detach().clone() for a in e.model.arch_parameters()]})

    def after_backward(self, e):
        self.rows[-1]["weight"] = [a.detach().clone() for a in e.model.arch_parameters()]
        self.rows[-1]["direct"] = e.model.direct_weights

    def batch_end(self, e):
        self.rows[-1]["after"] = [a.detach().clone() for a in e.model.arch_parameters()]


def test_search_perturbs_only_the_weight_step_and_restores_bit_exactly(tmp_path):
    cfg = method_config("sdarts-rs", init_channels=2, layers=3, batch_size=8, epochs=1,
                        max_steps_per_epoch=2, save=str(tmp_path / "run"), quiet=True, impl="reference")
    probe = Probe()
    engine = build(cfg, callbacks=[probe])
    assert isinstance(engine.model, sdarts.DirectWeights)
    engine.run()
    assert len(probe.rows) == 2
    for row in probe.rows:
        assert row["direct"]
        assert all(torch.equal(a, b) for a, b in zip(row["arch"], row["after"], strict=True))
        for a, w in zip(row["arch"], row["weight"], strict=True):
            torch.testing.assert_close(w.sum(-1), torch.ones(14), rtol=1e-6, atol=0)
            assert float((w - F.softmax(a, -1)).abs().max()) > 1e-3  # perturbed, within eps
            assert float((w - F.softmax(a, -1)).abs().max()) < 1.0
    assert not engine.model.direct_weights
    # the next architecture step started from the restored alphas: they moved, from there
    assert not torch.equal(probe.rows[0]["after"][0], probe.rows[1]["arch"][0])


def test_cli_sdarts_rs_search_on_the_embedded_default(tmp_path):
    save = tmp_path / "sd"
    assert cli.main(["search", "cnn", "--method", "sdarts-rs", *TINY, "--impl", "reference",
                     "--save", str(save)]) == 0
    assert json.loads((save / "genotype.json").read_text())["normal"]
    assert len((save / "genotypes.jsonl").read_text().splitlines()) == 2


def test_refusals_are_one_line():
    with pytest.raises(ConfigError, match="drop --cuda_graph") as err:
        method_config("sdarts-rs", cuda_graph=True)
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="--sdarts_epsilon must be >= 0"):
        method_config("sdarts-rs", sdarts_epsilon=-0.1)
    cfg = method_config("sdarts-rs", data="/nowhere")
    assert (cfg.sdarts_epsilon, cfg.sdarts_epsilon_start, cfg.sdarts_perturb) == (0.3, 0.03, "softmax")
