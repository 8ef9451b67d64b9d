"""The README's guide, literally: in a code base written like the original, swap
`model_search.MixedOp` for `fastdarts.MixedOp` and `architect.Architect` for
`fastdarts.Architect`; the original's checkpoint loads and the search computes the
same thing (float64, tolerances stated per check)."""

from __future__ import annotations

import torch
import torch.nn as nn

import fastdarts
from fastdarts.reference.cnn import architect as original_architect
from fastdarts.reference.cnn import model_search

from .helpers import cnn_args, cnn_batch, one_thread  # noqa: F401  (autouse fixture)


def _network(seed=0):
    torch.manual_seed(seed)
    return model_search.Network(2, 3, 3, nn.CrossEntropyLoss()).double()


def test_the_two_import_swap_of_the_readme(monkeypatch):
    original = _network()
    with monkeypatch.context() as m:  # `from fastdarts import MixedOp` in model_search.py
        m.setattr(model_search, "MixedOp", fastdarts.MixedOp)
        swapped = _network(seed=1)
    n_fused = sum(isinstance(x, fastdarts.MixedOp) for x in swapped.modules())
    n_original = sum(isinstance(x, model_search.MixedOp) for x in original.modules())
    assert n_fused == n_original == 14 * 3  # 14 edges per cell, 3 cells
    # the original's checkpoint loads unchanged (same keys and shapes), alphas copied as the original does
    swapped.load_state_dict(original.state_dict())
    with torch.no_grad():
        for a, b in zip(swapped.arch_parameters(), original.arch_parameters()):
            a.copy_(b)

    x, y = cnn_batch(0, n=4)
    torch.testing.assert_close(swapped(x), original(x), rtol=1e-10, atol=1e-12)

    # `from fastdarts import Architect` in train_search.py: one second-order step each,
    # then the weight step, from the same state: alphas and weights agree
    results = []
    for model, Arch in ((original, original_architect.Architect), (swapped, fastdarts.Architect)):
        opt = torch.optim.SGD(model.parameters(), 0.025, momentum=0.9, weight_decay=3e-4)
        arch = Arch(model, cnn_args())
        for step in range(2):
            xt, yt = cnn_batch(10 + step, n=4)
            xv, yv = cnn_batch(20 + step, n=4)
            arch.step(xt, yt, xv, yv, 0.025, opt, True)
            opt.zero_grad()
            model._loss(xt, yt).backward()
            nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            opt.step()
        results.append(model)
    a, b = results
    start = _network().arch_parameters()
    assert any((x - s).abs().max() > 1e-4 for x, s in zip(a.arch_parameters(), start))  # it moved
    for x, z in zip(a.arch_parameters(), b.arch_parameters()):
        torch.testing.assert_close(z, x, rtol=1e-8, atol=1e-10)
    for x, z in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(z, x, rtol=1e-8, atol=1e-10)


def test_the_rnn_swap_against_the_transcribed_original():
    """The RNN case: a loop written like the original rnn/train_search.py, run once with
    the original's Architect (tests/original_rnn_architect.py, transcribed line for line)
    and the reference model, once with `from fastdarts import Architect` and the fused
    model (`fastdarts.nn.RNNModelSearch`) loading the original's checkpoint.  Two
    second-order steps, float64, dropout off (the original's ``model.new()`` draws from
    the RNG, which would shift the dropout masks): alphas and weights agree, with the
    default tied_embedding_step (the original keeps the embedding un-stepped in w')."""
    from fastdarts.nn import RNNModelSearch as FusedRNN
    from fastdarts.reference.rnn import model_search as rnn_model_search

    from . import original_rnn_architect
    from .helpers import rnn_args

    torch.manual_seed(0)
    original = rnn_model_search.RNNModelSearch(20, 6, 6, 6, 0.0, 0.0, 0.0, 0.0, 0.0).double()
    with torch.no_grad():
        original.weights.normal_(0, 0.5)
    swapped = FusedRNN(*original._args).double()
    swapped.load_state_dict(original.state_dict())
    with torch.no_grad():
        swapped.weights.copy_(original.weights)
    start = original.weights.detach().clone()

    args = rnn_args(clip=0.25)
    beta, bptt, B = 1e-3, 5, 3
    g = torch.Generator().manual_seed(7)
    train = torch.randint(0, 20, (4 * bptt + 1, B), generator=g)
    valid = torch.randint(0, 20, (4 * bptt + 1, B), generator=g)

    results = []
    for model, Arch in ((original, original_rnn_architect.Architect), (swapped, fastdarts.Architect)):
        optimizer = torch.optim.SGD(model.parameters(), lr=20.0, weight_decay=args.wdecay)
        architect = Arch(model, args)
        hidden, hidden_valid = model.init_hidden(B), model.init_hidden(B)
        for i in range(0, 2 * bptt, bptt):  # train(): the original's loop body
            data, targets = train[i:i + bptt], train[i + 1:i + 1 + bptt].reshape(-1)
            data_valid, targets_valid = valid[i:i + bptt], valid[i + 1:i + 1 + bptt].reshape(-1)
            hidden = [h.detach() for h in hidden]
            hidden_valid = [h.detach() for h in hidden_valid]
            hidden_valid, _ = architect.step(hidden, data, targets, hidden_valid, data_valid,
                                             targets_valid, optimizer, True)
            optimizer.zero_grad()
            log_prob, hidden, rnn_hs, _ = model(data, hidden, return_h=True)
            loss = nn.functional.nll_loss(log_prob.view(-1, log_prob.size(2)), targets)
            loss = loss + sum(beta * (h[1:] - h[:-1]).pow(2).mean() for h in rnn_hs[-1:])
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), args.clip)
            optimizer.step()
        results.append(model)
    a, b = results
    assert (a.weights - start).abs().max() > 1e-3  # it moved
    torch.testing.assert_close(b.weights, a.weights, rtol=1e-8, atol=1e-10)
    for x, z in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(z, x, rtol=1e-8, atol=1e-10)
