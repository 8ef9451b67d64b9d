"""The RNN second-order step and the tied embedding (issue 14, part 1).

The original builds its unrolled model by loading ``state_dict()`` updated with the
stepped tensors of ``named_parameters()``; the tied ``decoder.weight`` keeps the
un-stepped tensor and is loaded after ``encoder.weight``, so w' steps every weight but
the embedding.  Both Architects (reference and fused) must compute that by default
(``tied_embedding_step="original"``) and the plain formula with ``"consistent"``.
The oracle is a line-for-line transcription of the original (tests/original_rnn_architect.py),
in float64.  Tolerance 1e-9 relative: the paths differ only in summation order
(measured: <= 1e-13); the two modes differ by O(1) relative (0.6 and 1.7, measured
below), so a path that steps the embedding when it should not fails by ~9 orders.
"""

from __future__ import annotations

import pytest
import torch

import fastdarts
from fastdarts import nn as fnn
from fastdarts.reference import rnn

from . import original_rnn_architect as original
from .helpers import one_thread, rnn_args, rnn_batch, tiny_rnn  # noqa: F401  (autouse fixture)

ETA = 2.0
TOL = 1e-9


def _rel(a, b):
    a = torch.cat([x.reshape(-1) for x in a])
    b = torch.cat([x.reshape(-1) for x in b])
    return ((a - b).norm() / b.norm()).item()


def _step(kind, mode, unrolled, clip, seed=2):
    """alpha.grad after one architect step of ``kind`` from the same model and batches."""
    model = tiny_rnn(seed=seed)
    if kind == "fused_model":
        fused = fnn.RNNModelSearch(*model._args).double()
        fused.load_state_dict(model.state_dict())
        with torch.no_grad():
            fused.weights.copy_(model.weights)
        model = fused
    opt = torch.optim.SGD(model.parameters(), lr=ETA)
    args = rnn_args(clip=clip)
    if kind == "transcription":
        arch = original.Architect(model, args, consistent=(mode == "consistent"))
    elif kind == "reference":
        arch = rnn.Architect(model, args, tied_embedding_step=mode)
    else:
        arch = fastdarts.Architect(model, args, tied_embedding_step=mode)
    before = {k: v.clone() for k, v in model.state_dict().items() if "bn" not in k}
    ht, xt, yt = rnn_batch(20)
    hv, xv, yv = rnn_batch(21)
    hidden, _ = arch.step(ht, xt, yt, hv, xv, yv, opt, unrolled)
    after = model.state_dict()
    for k, v in before.items():  # weights restored (the transcription to its float64 drift)
        torch.testing.assert_close(after[k], v, rtol=0, atol=0 if kind != "transcription" else 1e-15)
    return [a.grad.clone() for a in model.arch_parameters()], hidden[0].detach()


@pytest.mark.parametrize("clip", [0.05, 1e3], ids=["clipped", "unclipped"])
@pytest.mark.parametrize("mode", ["original", "consistent"])
def test_second_order_matches_the_transcribed_original(mode, clip):
    expected, h_exp = _step("transcription", mode, True, clip)
    for kind in ("reference", "fused", "fused_model"):
        got, h = _step(kind, mode, True, clip)
        err = _rel(got, expected)
        assert err < TOL, (kind, err)
        torch.testing.assert_close(h, h_exp, rtol=1e-12, atol=1e-14)


def test_the_two_modes_differ():
    """Measured (torch 2.13 CPU, float64, this model): |consistent - original| /
    |original| of the alpha gradients is 0.60 (clipped) and 1.66 (unclipped); each path
    agrees with the transcription to <= 1e-13 relative in either mode."""
    for clip in (0.05, 1e3):
        faithful, _ = _step("transcription", "original", True, clip)
        consistent, _ = _step("transcription", "consistent", True, clip)
        assert _rel(consistent, faithful) > 1e-2, clip
        got, _ = _step("fused", "original", True, clip)
        assert _rel(got, consistent) > 1e-2  # the default is not the consistent step


@pytest.mark.parametrize("mode", ["original", "consistent"])
def test_first_order_is_the_same_in_both_modes(mode):
    expected, _ = _step("transcription", "original", False, 0.05)
    for kind in ("reference", "fused", "fused_model"):
        got, _ = _step(kind, mode, False, 0.05)
        assert _rel(got, expected) < 1e-12, kind


def test_unrolled_model_of_the_original_keeps_the_embedding():
    """What _construct_model_from_theta builds: every weight stepped but the tied one."""
    model = tiny_rnn(seed=3)
    arch = original.Architect(model, rnn_args())
    theta = original._concat(model.parameters()).data
    unrolled = arch._construct_model_from_theta(theta + 1.0)
    assert unrolled.decoder.weight is unrolled.encoder.weight
    torch.testing.assert_close(unrolled.encoder.weight, model.encoder.weight, rtol=0, atol=0)
    for (name, p), q in zip(model.named_parameters(), unrolled.parameters()):
        if name != "encoder.weight":
            torch.testing.assert_close(q, p + 1.0, rtol=0, atol=0)


def test_fused_virtual_step_holds_the_embedding_slice():
    """The fused Architect's w' in place: the embedding's slice of the flat buffer is
    the un-stepped weight during the validation pass (default) or stepped (consistent);
    everything is bit-exactly restored afterwards (float32)."""
    seen = {}
    for mode in ("original", "consistent"):
        model = tiny_rnn(seed=4, dtype=torch.float32)
        emb0 = model.encoder.weight.detach().clone()
        W0 = model.rnns[0]._W0.detach().clone()
        arch = fastdarts.Architect(model, rnn_args(), tied_embedding_step=mode)
        assert arch.held_ranges == ([(0, emb0.numel())] if mode == "original" else [])
        calls = []
        loss = model._loss

        def spy(*a, loss=loss, calls=calls, model=model):
            calls.append((model.encoder.weight.detach().clone(), model.rnns[0]._W0.detach().clone()))
            return loss(*a)

        model._loss = spy
        ht, xt, yt = rnn_batch(30, dtype=torch.float32)
        hv, xv, yv = rnn_batch(31, dtype=torch.float32)
        arch.step(ht, xt, yt, hv, xv, yv, torch.optim.SGD(model.parameters(), lr=ETA), True)
        emb_val, W0_val = calls[1]  # train pass, validation pass at w', w+, w-
        assert not torch.equal(W0_val, W0)  # every other weight is stepped
        assert torch.equal(emb_val, emb0) == (mode == "original")
        assert torch.equal(model.encoder.weight, emb0) and torch.equal(model.rnns[0]._W0, W0)
        assert model.decoder.weight is model.encoder.weight
        seen[mode] = calls[2][0]  # the w+ pass moves the embedding in both modes
        assert not torch.equal(seen[mode], emb0)


def test_bad_mode_is_refused():
    with pytest.raises(ValueError, match="tied_embedding_step"):
        fastdarts.Architect(tiny_rnn(), rnn_args(), tied_embedding_step="stepped")
    with pytest.raises(ValueError, match="tied_embedding_step"):
        rnn.Architect(tiny_rnn(), rnn_args(), tied_embedding_step="stepped")


def test_cli_flag_reaches_the_config_and_the_architect(tmp_path):
    from fastdarts.cli import build_parser
    from fastdarts.search.cli import rnn_config
    from fastdarts.search.rnn import build

    for flags, want in (([], "original"), (["--tied_embedding_step", "consistent"], "consistent")):
        a = build_parser().parse_args(["search", "rnn", "--save", str(tmp_path), "--quiet", *flags])
        cfg = rnn_config(a)
        assert cfg.tied_embedding_step == want
    cfg.emsize = cfg.nhid = cfg.nhidlast = 4
    cfg.batch_size, cfg.impl = 2, "fused"
    assert build(cfg).architect.tied_embedding_step == "consistent"
