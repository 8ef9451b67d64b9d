"""The RNN search on the engine: the original's loop order, resume, the CLI."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fastdarts import cli
from fastdarts.data import get_batch
from fastdarts.loop import Callback, CancelSearch
from fastdarts.loop.rnn import repackage_hidden
from fastdarts.search.rnn import RNNSearchConfig, build, search_rnn


def _cfg(tmp_path, **kw):
    base = dict(emsize=8, nhid=8, nhidlast=8, batch_size=4, bptt=6, epochs=2, max_steps_per_epoch=3,
                save=str(tmp_path / "run"), quiet=True, impl="reference", eval_batch_size=256,
                dropout=0.1, dropouth=0.1, dropoutx=0.1, dropouti=0.1, beta=1e-3, alpha=1e-3)
    base.update(kw)
    return RNNSearchConfig(**base)


@pytest.mark.parametrize("unrolled", [False, True])
def test_engine_equals_the_original_loop_written_out(tmp_path, unrolled):
    cfg = _cfg(tmp_path, unrolled=unrolled)
    engine = search_rnn(cfg)
    m = build(_cfg(tmp_path, unrolled=unrolled, save=str(tmp_path / "m")))
    model, arch, opt = m.model, m.architect, m.optimizer
    for _epoch in range(cfg.epochs):
        hidden = model.init_hidden(cfg.batch_size)
        hidden_valid = model.init_hidden(cfg.batch_size)
        i, k = 0, 0
        while i < m.train_data.size(0) - 2 and k < cfg.max_steps_per_epoch:
            bptt = cfg.bptt if np.random.random() < 0.95 else cfg.bptt / 2.0
            seq_len = int(bptt)
            opt.param_groups[0]["lr"] = cfg.lr * seq_len / cfg.bptt
            data_v, targets_v = get_batch(m.search_data, i % (m.search_data.size(0) - 1), cfg.bptt)
            data, targets = get_batch(m.train_data, i, seq_len)
            hidden = repackage_hidden(hidden)
            hidden_valid = repackage_hidden(hidden_valid)
            hidden_valid, _ = arch.step(hidden, data, targets, hidden_valid, data_v, targets_v, opt,
                                        unrolled)
            opt.zero_grad()
            hidden = repackage_hidden(hidden)
            log_prob, hidden, rnn_hs, dropped = model(data, hidden, return_h=True)
            raw = F.nll_loss(log_prob.view(-1, log_prob.size(2)), targets)
            loss = raw + cfg.alpha * dropped[-1].pow(2).mean() \
                + cfg.beta * (rnn_hs[-1][1:] - rnn_hs[-1][:-1]).pow(2).mean()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip)
            opt.step()
            opt.param_groups[0]["lr"] = cfg.lr
            i += seq_len
            k += 1
        # the engine's end-of-epoch validation runs in eval mode and draws no random numbers
    assert torch.equal(engine.model.weights, model.weights)
    for a, b in zip(engine.model.parameters(), model.parameters()):
        assert torch.equal(a, b)


class _Stop(Callback):
    order = 100

    def epoch_end(self, e):
        raise CancelSearch


@pytest.mark.parametrize("impl", ["reference", "fused"])
def test_rnn_resume_equals_unbroken(tmp_path, impl):
    full = search_rnn(_cfg(tmp_path, epochs=2, impl=impl, save=str(tmp_path / "a")))
    search_rnn(_cfg(tmp_path, epochs=2, impl=impl, save=str(tmp_path / "b")), callbacks=[_Stop()])
    resumed = search_rnn(_cfg(tmp_path, epochs=2, impl=impl, save=str(tmp_path / "b"),
                              resume=str(tmp_path / "b" / "checkpoint.pt")))
    assert torch.equal(full.model.weights, resumed.model.weights)
    for a, b in zip(full.model.parameters(), resumed.model.parameters()):
        assert torch.equal(a, b)


def test_cli_search_rnn_and_ptb_errors(tmp_path, capsys):
    rc = cli.main(["search", "rnn", "--epochs", "1", "--max_steps_per_epoch", "2",
                   "--eval_batch_size", "256", "--save",
                   str(tmp_path / "r"), "--quiet", "--emsize", "8", "--nhid", "8", "--nhidlast", "8"])
    assert rc == 0
    assert (tmp_path / "r" / "genotype.json").exists() and (tmp_path / "r" / "recurrent.dot").exists()
    assert "Genotype(recurrent=" in capsys.readouterr().out
    rc = cli.main(["search", "rnn", "--data", str(tmp_path / "nothing"), "--save", str(tmp_path / "r2")])
    assert rc == 2 and "ptb.train.txt" in capsys.readouterr().err
