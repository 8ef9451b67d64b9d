"""Training the architectures a search finds: the evaluation networks, their parameter
counts at the paper's sizes, drop-path, Cutout, the ASGD switch, checkpoint/resume,
and the CLI (tiny CPU runs)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fastdarts import cli
from fastdarts.data import load_digits_images
from fastdarts.loop.engine import Callback
from fastdarts.space import genotypes as G
from fastdarts.train import (
    CNNTrainConfig,
    NetworkCIFAR,
    RNNTrainConfig,
    TrainLoader,
    asgd_should_switch,
    build_rnn_model,
    count_parameters,
    count_parameters_in_MB,
    cutout,
    cutout_mask,
    drop_path,
    train_cnn,
    train_rnn,
)
from fastdarts.train import cnn as train_cnn_mod
from fastdarts.train import rnn as train_rnn_mod
from fastdarts.train.model_cnn import Cell

from .helpers import (  # noqa: F401  (one_thread: autouse fixture)
    StopAfter,
    assert_refused_in_one_line,
    malicious_checkpoint,
    one_thread,
)


def _rnn_args(ntoken=50, n=16):
    return {"ntoken": ntoken, "ninp": n, "nhid": n, "nhidlast": n, "dropout": 0.75, "dropouth": 0.25,
            "dropoutx": 0.75, "dropouti": 0.2, "dropoute": 0.1}


# ---------------------------------------------------------------- the networks

@pytest.mark.parametrize("name", ["DARTS_V1", "DARTS_V2"])
def test_every_published_cnn_genotype_builds_and_runs(name):
    torch.manual_seed(0)
    model = NetworkCIFAR(4, 10, 5, True, G.PUBLISHED[name])
    model.drop_path_prob = 0.2
    x = torch.randn(3, 3, 32, 32)
    logits, aux = model(x)
    assert logits.shape == (3, 10) and aux.shape == (3, 10)
    (logits.sum() + aux.sum()).backward()
    assert all(p.grad is not None for p in model.parameters())
    model.eval()
    logits, aux = model(x)
    assert aux is None and torch.isfinite(logits).all()
    # reductions at layers//3 and 2*layers//3, and the ops of the genotype with affine BN
    assert [c.reduction for c in model.cells] == [False, True, False, True, False]
    bns = [m for m in model.cells.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and all(m.affine for m in bns)


@pytest.mark.parametrize("name", ["DARTS_V1", "DARTS_V2"])
def test_every_published_rnn_genotype_builds_and_runs(name):
    torch.manual_seed(0)
    model = build_rnn_model(G.PUBLISHED_RNN[name], _rnn_args())
    assert not any(isinstance(m, torch.nn.BatchNorm1d) for m in model.modules())
    assert model.decoder.weight is model.encoder.weight
    data = torch.randint(0, 50, (7, 3))
    log_prob, hidden = model(data, model.init_hidden(3))
    assert log_prob.shape == (7, 3, 50) and hidden[0].shape == (1, 3, 16)
    assert torch.allclose(log_prob.exp().sum(-1), torch.ones(7, 3), atol=1e-5)


def test_parameter_counts_at_the_papers_sizes():
    cnn = NetworkCIFAR(36, 10, 20, True, G.DARTS_V2)
    mb = count_parameters_in_MB(cnn)
    print(f"\nDARTS_V2 CNN C=36 layers=20: {mb:.6f} M (auxiliary head excluded); "
          f"with it {sum(p.numel() for p in cnn.parameters()) / 1e6:.6f} M")
    assert abs(mb - 3.3) / 3.3 < 0.02
    assert mb == pytest.approx(3.349342, abs=1e-6)  # what the original code prints
    rnn = build_rnn_model(G.RNN_DARTS_V2, _rnn_args(10000, 850))
    n = count_parameters(rnn)
    print(f"DARTS_V2 RNN 850/850, vocabulary 10000: {n} parameters (tied weight once)")
    assert abs(n / 1e6 - 23) / 23 < 0.02
    # embedding 10000x850 (the decoder shares it) + decoder bias + W0 (1700x1700) + 8 Ws (850x1700)
    assert n == 10000 * 850 + 10000 + 1700 * 1700 + 8 * 850 * 1700


# ---------------------------------------------------------------- drop-path, Cutout

def test_drop_path_statistics():
    torch.manual_seed(0)
    p, N = 0.2, 200_000
    x = torch.rand(N, 2, 3, 3) + 0.5
    y = drop_path(x, p)
    zero = (y == 0).flatten(1)
    assert (zero.all(1) | ~zero.any(1)).all(), "a sample is either dropped whole or kept whole"
    frac = zero.all(1).double().mean().item()
    assert abs(frac - p) < 4 * math.sqrt(p * (1 - p) / N)
    kept = ~zero.any(1)
    torch.testing.assert_close(y[kept], x[kept] / (1 - p), rtol=1e-6, atol=0)
    assert drop_path(x, 0.0) is x


def test_identities_are_never_dropped_and_eval_never_drops():
    torch.manual_seed(0)
    skip = G.Genotype(normal=[("skip_connect", 0), ("skip_connect", 1)], normal_concat=[2],
                      reduce=[("skip_connect", 0), ("skip_connect", 1)], reduce_concat=[2])
    cell = Cell(skip, 4, 4, 4, reduction=False, reduction_prev=False)
    s0, s1 = torch.randn(64, 4, 5, 5), torch.randn(64, 4, 5, 5)
    out = cell(s0, s1, 0.9)
    torch.testing.assert_close(out, cell.preprocess0(s0) + cell.preprocess1(s1))
    conv = G.Genotype(normal=[("sep_conv_3x3", 0), ("sep_conv_3x3", 1)], normal_concat=[2],
                      reduce=[("sep_conv_3x3", 0), ("sep_conv_3x3", 1)], reduce_concat=[2])
    cell = Cell(conv, 4, 4, 4, reduction=False, reduction_prev=False)
    dropped_both = (cell(s0, s1, 0.9).flatten(1) == 0).all(1).float().mean().item()
    assert dropped_both > 0.6  # ~0.81 of the samples lose both ops
    cell.eval()
    assert not (cell(s0, s1, 0.9).flatten(1) == 0).all(1).any()


def _original_cutout(img: np.ndarray, y: int, x: int, length: int) -> np.ndarray:
    """The original Cutout.__call__ with its centre given."""
    h, w = img.shape[1], img.shape[2]
    mask = np.ones((h, w), np.float32)
    y1, y2 = np.clip(y - length // 2, 0, h), np.clip(y + length // 2, 0, h)
    x1, x2 = np.clip(x - length // 2, 0, w), np.clip(x + length // 2, 0, w)
    mask[y1:y2, x1:x2] = 0.0
    return img * mask[None]


def test_cutout_is_the_originals_square_with_a_uniform_centre():
    B, H, W, L = 4000, 32, 32, 16
    gen = torch.Generator().manual_seed(3)
    state = gen.get_state()
    x = torch.rand(B, 3, H, W) + 0.1
    out = cutout(x, L, gen)
    gen.set_state(state)  # the same draws as cutout_mask makes: B rows, then B columns
    ys = torch.randint(0, H, (B,), generator=gen).numpy()
    xs = torch.randint(0, W, (B,), generator=gen).numpy()
    for b in range(0, B, 97):
        np.testing.assert_array_equal(out[b].numpy(), _original_cutout(x[b].numpy(), ys[b], xs[b], L))
    zeros = (out == 0).all(1)  # [B, H, W]: every channel zeroed together
    assert torch.equal(zeros, (out == 0).any(1))
    rows, cols = zeros.any(2), zeros.any(1)
    assert torch.equal(zeros, rows[:, :, None] & cols[:, None, :]), "one rectangle per image"
    heights, widths = rows.sum(1), cols.sum(1)
    assert heights.min() >= L // 2 and heights.max() == L and widths.min() >= L // 2
    # a clipped square: the height is min(y + 8, H) - max(y - 8, 0)
    expect_h = np.minimum(ys + L // 2, H) - np.maximum(ys - L // 2, 0)
    np.testing.assert_array_equal(heights.numpy(), expect_h)
    for centres in (ys, xs):  # chi-square over 32 bins, 31 dof (99.9% point: 61.1)
        counts = np.bincount(centres, minlength=H)
        chi2 = ((counts - B / H) ** 2 / (B / H)).sum()
        assert chi2 < 61.1
    m = cutout_mask(2, 5, 7, 4, torch.Generator().manual_seed(0))
    assert m.shape == (2, 1, 5, 7) and m.dtype == torch.float32


def test_train_loader_applies_cutout_after_normalisation():
    data = load_digits_images(16).subset(slice(0, 200))
    loader = TrainLoader(data, 50, "cpu", seed=0, cutout_length=8)
    plain = TrainLoader(data, 50, "cpu", seed=0, cutout_length=0)
    for (x, _), (xp, _) in zip(loader, plain):
        n0 = (x == 0).all(1).flatten(1).sum(1)
        assert n0.min() >= 16 and n0.max() <= 64  # a clipped 8x8 square, exact zeros
        assert (xp == 0).sum() == 0  # normalised pixels are never exactly 0


# ---------------------------------------------------------------- the ASGD switch

def test_asgd_rule_on_a_scripted_curve():
    losses = [5.0, 4.0, 4.5, 4.2, 3.9, 4.1, 4.05]
    fired = []
    seen: list[float] = []
    for epoch, v in enumerate(losses):
        if asgd_should_switch(seen, v, 2):
            fired.append(epoch)
        seen.append(v)
    # epoch 2 (4.5 > 4.0) is not a switch: only the losses before the last 2 count;
    # epoch 5: 4.1 > min(5.0, 4.0, 4.5) = 4.0
    assert fired == [5, 6]


class ScriptedValidation(Callback):
    order = 10

    def __init__(self, losses):
        self.losses = losses

    def epoch_end(self, e):
        e.metrics["valid_loss"] = self.losses[e.epoch]
        e.metrics["valid_ppl"] = math.exp(self.losses[e.epoch])


def _rnn_cfg(tmp_path, **kw):
    base = dict(emsize=8, nhid=8, nhidlast=8, batch_size=4, bptt=6, epochs=2, max_steps_per_epoch=2,
                eval_batch_size=256, test_batch_size=256, save=str(tmp_path / "rnn"), quiet=True, seed=5)
    base.update(kw)
    return RNNTrainConfig(**base)


def test_asgd_switch_fires_in_training_exactly_when_the_rule_says(tmp_path):
    losses = [5.0, 4.0, 4.5, 4.2, 3.9, 4.1, 4.05]
    cfg = _rnn_cfg(tmp_path, epochs=len(losses), nonmono=2, max_steps_per_epoch=1)
    e = train_rnn_mod.build(cfg, validation=ScriptedValidation(losses))
    kinds = []

    class Watch(Callback):
        order = 100

        def epoch_end(self, e):
            kinds.append(type(e.optimizer).__name__)

    e.add_callback(Watch())
    e.run()
    assert e.switched_at == 5
    assert kinds == ["SGD"] * 5 + ["ASGD"] * 2
    g = e.optimizer.param_groups[0]
    assert g["t0"] == 0 and g["lambd"] == 0 and g["lr"] == cfg.lr and g["weight_decay"] == cfg.wdecay
    assert e.best_val_loss == losses[:6]  # epochs on ASGD are not recorded


def test_validation_uses_the_averaged_weights_and_restores_exactly():
    torch.manual_seed(0)
    model = build_rnn_model(G.RNN_DARTS_V2, _rnn_args())
    opt = train_rnn_mod.make_asgd(model, RNNTrainConfig())
    for _ in range(3):
        opt.zero_grad()
        data = torch.randint(0, 50, (5, 2))
        log_prob, _ = model(data, model.init_hidden(2))
        log_prob.mean().backward()
        opt.step()
    before = [p.detach().clone() for p in model.parameters()]
    with train_rnn_mod.averaged_weights(model, opt):
        for p in model.parameters():
            assert torch.equal(p, opt.state[p]["ax"])
        assert not all(torch.equal(p, b) for p, b in zip(model.parameters(), before))
    assert all(torch.equal(p, b) for p, b in zip(model.parameters(), before))


# ---------------------------------------------------------------- resume



def _cnn_cfg(tmp_path, name, **kw):
    base = dict(init_channels=4, layers=3, batch_size=16, epochs=3, auxiliary=True, cutout_length=8,
                drop_path_prob=0.3, max_steps_per_epoch=2, save=str(tmp_path / name), quiet=True,
                eval_batch_size=512)
    base.update(kw)
    return CNNTrainConfig(**base)


def _assert_same_state(a, b):
    for k, v in a.model.state_dict().items():
        assert torch.equal(v, b.model.state_dict()[k]), k
    sa, sb = a.optimizer.state_dict()["state"], b.optimizer.state_dict()["state"]
    assert sa.keys() == sb.keys()
    for i in sa:
        for k in sa[i]:
            assert torch.equal(torch.as_tensor(sa[i][k]), torch.as_tensor(sb[i][k])), (i, k)


def test_cnn_resume_equals_unbroken_training(tmp_path):
    full = train_cnn(_cnn_cfg(tmp_path, "full"))
    part = train_cnn(_cnn_cfg(tmp_path, "part"), callbacks=[StopAfter(1)])
    assert part.stopped and len(part.history) == 1
    resumed = train_cnn(_cnn_cfg(tmp_path, "part", resume=str(tmp_path / "part" / "checkpoint.pt")))
    assert resumed.start_epoch == 1 and resumed.global_step == full.global_step
    _assert_same_state(full, resumed)
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in full.history]
    assert strip == [{k: v for k, v in r.items() if k != "seconds"} for r in resumed.history]
    assert full.model.drop_path_prob == pytest.approx(0.3 * 2 / 3)  # p * epoch / epochs, last epoch
    # cosine from 0.025 to 0 over the 3 epochs
    assert [r["lr"] for r in full.history] == pytest.approx([0.025, 0.01875, 0.00625])


def test_rnn_resume_on_asgd_equals_unbroken_training(tmp_path):
    losses = [5.0, 4.0, 6.0, 6.0, 6.0]  # nonmono 1: the switch fires at epoch 2

    def cfg(name, **kw):
        return _rnn_cfg(tmp_path, save=str(tmp_path / name), epochs=5, nonmono=1, **kw)

    full = train_rnn_mod.build(cfg("full"), validation=ScriptedValidation(losses)).run()
    part = train_rnn_mod.build(cfg("part"), callbacks=[StopAfter(4)],
                               validation=ScriptedValidation(losses)).run()
    assert type(part.optimizer).__name__ == "ASGD"
    resumed = train_rnn_mod.build(cfg("part", resume=str(tmp_path / "part" / "checkpoint.pt")),
                                  validation=ScriptedValidation(losses))
    assert type(resumed.optimizer).__name__ == "ASGD"
    resumed.run()
    assert full.switched_at == 2
    _assert_same_state(full, resumed)
    assert full.best_val_loss == resumed.best_val_loss


def test_resume_refuses_another_configuration(tmp_path):
    from fastdarts.loop.state import CheckpointError

    train_cnn(_cnn_cfg(tmp_path, "a", epochs=1, max_steps_per_epoch=1, auxiliary=False))
    with pytest.raises(CheckpointError, match="another training configuration"):
        train_cnn_mod.build(_cnn_cfg(tmp_path, "b", epochs=1, auxiliary=False, learning_rate=0.1,
                                     resume=str(tmp_path / "a" / "checkpoint.pt")))


def test_bf16_step_runs(tmp_path):
    cfg = CNNTrainConfig(init_channels=4, layers=3, batch_size=8, epochs=1, auxiliary=False, bf16=True,
                         max_steps_per_epoch=1, quiet=True, save=str(tmp_path))
    e = train_cnn_mod.build(cfg)
    e.max_steps = 1
    e.fire("epoch_begin")
    batch = next(iter(e.train_batches()))
    e.batch = batch
    e.one_batch(batch)
    assert torch.isfinite(e.loss) and e.logits.dtype == torch.bfloat16


def test_channels_last_on_a_cpu_is_refused_in_one_line(tmp_path, capsys):
    """torch's oneDNN backward of a 1x1 stride-2 conv in channels_last corrupts the heap
    on one CPU thread (fastdarts.config.check_channels_last): refused before any work."""
    from fastdarts.config import ConfigError

    cfg = CNNTrainConfig(init_channels=4, layers=3, batch_size=8, epochs=1, auxiliary=False,
                         channels_last=True, quiet=True, save=str(tmp_path / "t"), device="cpu")
    with pytest.raises(ConfigError, match="CUDA devices only"):
        train_cnn_mod.build(cfg)
    for argv in (["train", "cnn"], ["search", "cnn"]):
        assert cli.main([*argv, "--channels_last", "--device", "cpu", "--quiet",
                         "--save", str(tmp_path / argv[0])]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "--channels_last runs on CUDA devices only" in err[0]
    assert not (tmp_path / "t").exists()


# ---------------------------------------------------------------- the CLI

def test_cli_train_and_test_cnn(tmp_path, capsys):
    save = str(tmp_path / "cnn")
    rc = cli.main(["train", "cnn", "--genotype", "DARTS_V1", "--save", save, "--epochs", "1",
                   "--max_steps_per_epoch", "2", "--init_channels", "4", "--layers", "3",
                   "--batch_size", "16", "--quiet"])
    assert rc == 0
    rc = cli.main(["test", "cnn", "--checkpoint", f"{save}/checkpoint.pt"])
    out = capsys.readouterr().out
    assert rc == 0 and "test_acc" in out and "360 images of digits16-heldout" in out
    assert "parameters =" in out

    # a checkpoint of an older fastdarts (numpy's RNG state an ndarray): refused by test
    # and train --resume in one line that names the opt-in, loaded with it
    state = torch.load(f"{save}/checkpoint.pt", weights_only=True)
    state["rng"]["numpy"] = np.random.get_state()
    old = str(tmp_path / "old.pt")
    torch.save(state, old)
    resume = ["train", "cnn", "--genotype", "DARTS_V1", "--save", str(tmp_path / "more"), "--epochs", "1",
              "--max_steps_per_epoch", "2", "--init_channels", "4", "--layers", "3", "--batch_size", "16",
              "--quiet", "--resume", old]
    for argv in (["test", "cnn", "--checkpoint", old], resume):
        assert cli.main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and old in err[0] and "pass --trust_checkpoint" in err[0]
        assert cli.main([*argv, "--trust_checkpoint"]) == 0
    assert "test_acc" in capsys.readouterr().out


def test_cli_train_and_test_rnn(tmp_path, capsys):
    save = str(tmp_path / "rnn")
    rc = cli.main(["train", "rnn", "--arch", "DARTS_V1", "--save", save, "--epochs", "1",
                   "--max_steps_per_epoch", "2", "--nhid", "8", "--emsize", "8", "--nhidlast", "8",
                   "--quiet"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "test ppl" in out
    rc = cli.main(["test", "rnn", "--checkpoint", f"{save}/best.pt"])
    out2 = capsys.readouterr().out
    assert rc == 0 and "test ppl" in out2
    # the same best model, the same perplexity
    assert out.split("test ppl ")[1].split()[0] == out2.split("test ppl ")[1].split()[0]


@pytest.mark.parametrize("argv", [["train", "cnn", "--resume"], ["train", "rnn", "--resume"],
                                  ["test", "cnn", "--checkpoint"], ["test", "rnn", "--checkpoint"]],
                         ids=["train-cnn", "train-rnn", "test-cnn", "test-rnn"])
def test_a_checkpoint_that_runs_code_is_refused(tmp_path, capsys, argv):
    from fastdarts.train.common import FORMAT

    marker = tmp_path / "ran"
    path = malicious_checkpoint(tmp_path / "evil.pt", marker, fmt=FORMAT)
    run = ["--save", str(tmp_path / "run"), "--epochs", "1", "--max_steps_per_epoch", "1", "--quiet"]
    assert cli.main([*argv, path, *(run if argv[0] == "train" else [])]) == 2
    assert_refused_in_one_line(capsys.readouterr().err, path, marker)


@pytest.mark.parametrize("argv", [["search", "cnn"], ["search", "rnn"], ["train", "cnn"], ["train", "rnn"],
                                  ["test", "cnn", "--checkpoint", "c.pt"],
                                  ["test", "rnn", "--checkpoint", "c.pt"]])
def test_every_command_that_loads_a_checkpoint_takes_the_opt_in(argv):
    assert cli.build_parser().parse_args([*argv, "--trust_checkpoint"]).trust_checkpoint is True
    assert cli.build_parser().parse_args(argv).trust_checkpoint in (False, None)  # off by default


def test_cli_bad_input_exits_2(tmp_path, capsys):
    assert cli.main(["train", "cnn", "--genotype", "NOT_A_CELL", "--save", str(tmp_path)]) == 2
    assert "'NOT_A_CELL' is neither a published genotype" in capsys.readouterr().err
    assert cli.main(["train", "rnn", "--genotype", "DARTS_V3", "--save", str(tmp_path)]) == 2
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x80\x02garbage")
    assert cli.main(["test", "cnn", "--checkpoint", str(bad)]) == 2
    assert "is not a readable checkpoint" in capsys.readouterr().err
    assert cli.main(["test", "rnn", "--checkpoint", str(tmp_path / "missing.pt")]) == 2
    assert "no checkpoint at" in capsys.readouterr().err
    rnn_genotype = tmp_path / "rnn.json"
    G.save_json(G.RNN_DARTS_V2, rnn_genotype)
    assert cli.main(["train", "cnn", "--genotype", str(rnn_genotype), "--save", str(tmp_path)]) == 2
    assert "not a CNN genotype" in capsys.readouterr().err


def test_cli_truncated_and_mismatched_checkpoints_exit_2(tmp_path, capsys):
    e = train_rnn(_rnn_cfg(tmp_path, epochs=1, max_steps_per_epoch=1))
    ckpt = tmp_path / "rnn" / "checkpoint.pt"
    assert cli.main(["test", "cnn", "--checkpoint", str(ckpt)]) == 2
    assert "holds a trained rnn model" in capsys.readouterr().err
    data = ckpt.read_bytes()
    trunc = tmp_path / "trunc.pt"
    trunc.write_bytes(data[: len(data) // 2])
    assert cli.main(["test", "rnn", "--checkpoint", str(trunc)]) == 2
    assert "truncated" in capsys.readouterr().err
    assert math.isfinite(e.test_ppl)


def test_rnn_sequence_lengths_and_scaled_lr_follow_the_original(tmp_path):
    cfg = _rnn_cfg(tmp_path, epochs=1, max_steps_per_epoch=12, bptt=10, max_seq_len_delta=3)
    e = train_rnn_mod.build(cfg)
    seen = []

    class Record(Callback):
        def after_backward(self, e):
            seen.append((e.batch[0], e.batch[1].shape[0], e.optimizer.param_groups[0]["lr"]))

    e.add_callback(Record())
    state = np.random.get_state()
    e.run()
    np.random.set_state(state)
    expect = []
    for _ in range(12):  # the original train.py's draws, in its order
        bptt = cfg.bptt if np.random.random() < 0.95 else cfg.bptt / 2.0
        seq_len = min(max(5, int(np.random.normal(bptt, 5))), cfg.bptt + cfg.max_seq_len_delta)
        expect.append(seq_len)
    assert [s for s, _, _ in seen] == expect
    assert [n for _, n, _ in seen] == expect  # the data windows have that length
    assert [lr for _, _, lr in seen] == [cfg.lr * s / cfg.bptt for s in expect]
    assert e.optimizer.param_groups[0]["lr"] == cfg.lr  # put back after each step
    assert max(expect) <= 13 and min(expect) >= 5
