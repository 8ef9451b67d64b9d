"""Data-parallel training of the evaluation networks (fastdarts train cnn|rnn) with
gloo on the CPU: 2 ranks against one process in float64 (CNN: 2 micro-batches, as
BatchNorm is per device; RNN: one process with twice the batch), an exact resume
on 2 ranks, the errors when ranks diverge or fall out of step, and torchrun runs of
the CLI."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from fastdarts.loop.engine import Callback

from .helpers import StopAfter, cli_ranks, free_port, one_thread, start_ranks  # noqa: F401  (autouse fixture)

WORLD = 2
LOCAL = 3          # CNN images per rank and step
CNN_STEPS = 3
RNN_B = 4          # RNN batch columns per rank


def _join(rank, world, port):
    from fastdarts import distributed as D

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      LOCAL_RANK=str(rank), WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    D.init("gloo", timeout_s=30)


def _same_state(a, b) -> list[str]:
    """Names of what differs (bit for bit) between two engines' models and optimizers."""
    bad = [k for k, v in a.model.state_dict().items() if not torch.equal(v, b.model.state_dict()[k])]
    sa, sb = a.optimizer.state_dict()["state"], b.optimizer.state_dict()["state"]
    bad += [f"opt {i} {k}" for i in sa for k in sa[i]
            if not torch.equal(torch.as_tensor(sa[i][k]), torch.as_tensor(sb[i][k]))]
    return bad


# ---------------------------------------------------------------- CNN

def _cnn_cfg(save, **kw):
    from fastdarts.train import CNNTrainConfig

    base = dict(init_channels=4, layers=3, batch_size=LOCAL, epochs=1, auxiliary=True, drop_path_prob=0.0,
                learning_rate=0.1, save=str(save), quiet=True, device="cpu", eval_batch_size=512)
    base.update(kw)
    return CNNTrainConfig(**base)


def _cnn_batch(step):
    g = torch.Generator().manual_seed(500 + step)
    n = WORLD * LOCAL
    x = torch.randn(n, 3, 32, 32, generator=g, dtype=torch.float64)
    return x, torch.randint(0, 10, (n,), generator=g)


def _cnn_worker(rank, world, port, out):
    import numpy as np

    from fastdarts import distributed as D
    from fastdarts.train import cnn as T
    from fastdarts.train.common import RankSync

    _join(rank, world, port)
    res, errors = {}, {}
    # 1. float64 steps through the engine (gradients averaged before clipping) on fixed batches
    e = T.build(_cnn_cfg(os.path.join(out, "eq")))
    e.model.double()
    for step in range(CNN_STEPS):
        x, y = _cnn_batch(step)
        s = slice(rank * LOCAL, (rank + 1) * LOCAL)
        e.batch = (x[s], y[s])
        e.one_batch(e.batch)
    e.metrics = {}
    e.get_callback(RankSync).epoch_end(e)  # BatchNorm statistics averaged, ranks checked
    res["params"] = {k: p.detach().clone() for k, p in e.model.named_parameters()}
    res["buffers"] = {k: b.clone() for k, b in e.model.named_buffers()}

    # 2. an exact resume on 2 ranks (drop-path, Cutout, auxiliary head: each rank's own streams)
    def cfg(name, **kw):
        return _cnn_cfg(os.path.join(out, name), epochs=2, batch_size=16, drop_path_prob=0.3,
                        cutout_length=8, max_steps_per_epoch=2, learning_rate=0.025, **kw)

    full = T.train_cnn(cfg("full"))
    T.train_cnn(cfg("part"), callbacks=[StopAfter(1)])
    resumed = T.train_cnn(cfg("part", resume=os.path.join(out, "part", "checkpoint.pt")))
    res["resume_differs"] = _same_state(full, resumed)
    res["resume_start"] = resumed.start_epoch
    res["history"] = [{k: v for k, v in r.items() if k != "seconds"} for r in full.history]

    # 3. the errors: a diverged weight, a step out of step, numpy drawn on one rank only
    model = e.model
    if rank == 1:
        with torch.no_grad():
            model.classifier.bias[0] += 1e-6
    try:
        D.check_params_in_sync(model, what="the test model")
    except D.DistributedError as exc:
        errors["diverged"] = str(exc)
    if rank == 1:
        with torch.no_grad():
            model.classifier.bias[0] -= 1e-6
    avg = D.FlatGradAverager(model.parameters())
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    try:
        avg(agree=(7, 20 + rank))
    except D.DistributedError as exc:
        errors["out_of_step"] = str(exc)
    # a gradient only one rank has: both end with the average (the other's zero counted)
    params = list(model.parameters())
    for p in params:
        p.grad = torch.full_like(p, 2.0 + rank)
    params[0].grad = None if rank == 0 else torch.full_like(params[0], 4.0)
    params[1].grad = None
    avg(agree=(7,))
    res["grad0"] = params[0].grad.clone()
    res["grad1_is_none"] = params[1].grad is None
    res["grad2"] = params[2].grad.clone()
    if rank == 1:
        np.random.random()
    try:
        e.get_callback(RankSync)._check(e, "test")
    except D.DistributedError as exc:
        errors["numpy"] = str(exc)
    res["errors"] = errors
    torch.save(res, os.path.join(out, f"cnn{rank}.pt"))


def _cnn_reference(out):
    """One process: the same steps on the whole batch in WORLD micro-batches of LOCAL,
    each loss scaled by 1/WORLD (BatchNorm per micro-batch, as per device)."""
    import torch.nn.functional as F

    from fastdarts.train import cnn as T

    e = T.build(_cnn_cfg(out))
    model, opt = e.model.double(), e.optimizer
    model.train()
    for step in range(CNN_STEPS):
        x, y = _cnn_batch(step)
        opt.zero_grad()
        for c in range(0, WORLD * LOCAL, LOCAL):
            logits, aux = model(x[c:c + LOCAL])
            loss = F.cross_entropy(logits, y[c:c + LOCAL]) + 0.4 * F.cross_entropy(aux, y[c:c + LOCAL])
            (loss / WORLD).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
    return {k: p.detach() for k, p in model.named_parameters()}


def test_cnn_two_ranks(tmp_path):
    """2 ranks x 3 images = one process with 6 images in 2 micro-batches (float64, 3
    SGD steps with momentum, weight decay, clipping, auxiliary head); BatchNorm
    statistics averaged; a resume on 2 ranks equals the unbroken run bit for bit;
    clear errors when weights, steps or numpy states differ between ranks."""
    ref = _cnn_reference(tmp_path / "single")
    start_ranks(_cnn_worker, (WORLD, free_port(), str(tmp_path)), WORLD, [__name__])
    got = [torch.load(tmp_path / f"cnn{r}.pt", weights_only=False) for r in range(WORLD)]
    for r in range(WORLD):
        for k, v in ref.items():
            torch.testing.assert_close(got[r]["params"][k], v, rtol=1e-9, atol=1e-12, msg=k)
        for k, v in got[0]["buffers"].items():  # running statistics averaged: identical ranks
            assert torch.equal(got[r]["buffers"][k], v), k
        assert got[r]["resume_start"] == 1 and got[r]["resume_differs"] == [], got[r]["resume_differs"]
        errors = got[r]["errors"]
        assert "diverged between ranks" in errors.get("diverged", "")
        assert "parameter classifier.bias" in errors["diverged"]
        assert "out of step" in errors.get("out_of_step", "")
        assert "numpy RNG state" in errors.get("numpy", "")
        torch.testing.assert_close(got[r]["grad0"], torch.full_like(got[r]["grad0"], 2.0))  # (0 + 4) / 2
        assert got[r]["grad1_is_none"]
        torch.testing.assert_close(got[r]["grad2"], torch.full_like(got[r]["grad2"], 2.5))
    assert got[0]["history"] == got[1]["history"]  # metrics reduced over ranks: the same everywhere
    assert [h["epoch"] for h in got[0]["history"]] == [0, 1]
    ckpt = torch.load(tmp_path / "full" / "checkpoint.pt", weights_only=False)
    assert ckpt["world_size"] == WORLD and len(ckpt["ranks"]) == WORLD
    # the ranks drew different augmentation and drop-path streams
    assert not torch.equal(ckpt["ranks"][0]["torch"], ckpt["ranks"][1]["torch"])


# ---------------------------------------------------------------- RNN

class ForceSwitch(Callback):
    """Make the ASGD rule fire at ``epoch`` (a validation loss worse than every earlier one)."""

    order = 14  # after validation and the best model, before NonMonotoneASGD

    def __init__(self, epoch):
        self.epoch = epoch

    def epoch_end(self, e):
        if e.epoch == self.epoch:
            e.metrics["valid_loss"] += 100.0


def _rnn_cfg(save, batch_size, **kw):
    from fastdarts.train import RNNTrainConfig

    base = dict(emsize=8, nhid=8, nhidlast=8, batch_size=batch_size, bptt=10, epochs=4, max_steps_per_epoch=3,
                eval_batch_size=200, test_batch_size=200, save=str(save), quiet=True, seed=5, nonmono=1,
                device="cpu")
    base.update(kw)
    return RNNTrainConfig(**base)


NO_DROPOUT = dict(dropout=0.0, dropouth=0.0, dropoutx=0.0, dropouti=0.0, dropoute=0.0)


def _rnn_float64_run(save, batch_size):
    from fastdarts.train import rnn as T

    e = T.build(_rnn_cfg(save, batch_size, **NO_DROPOUT), callbacks=[ForceSwitch(2)])
    e.model.double()
    e.run()
    return {"params": [p.detach().clone() for p in e.model.parameters()],
            "ax": [e.optimizer.state[p]["ax"].clone() for p in e.model.parameters()],
            "valid": [r["valid_loss"] for r in e.history], "switched_at": e.switched_at,
            "kind": type(e.optimizer).__name__}


def _rnn_worker(rank, world, port, out):
    from fastdarts.train import rnn as T

    _join(rank, world, port)
    res = _rnn_float64_run(os.path.join(out, "eq"), RNN_B)

    def cfg(name, **kw):  # dropout on: each rank draws its own masks
        return _rnn_cfg(os.path.join(out, name), RNN_B, **kw)

    full = T.train_rnn(cfg("full"))
    T.train_rnn(cfg("part"), callbacks=[StopAfter(2)])
    resumed = T.train_rnn(cfg("part", resume=os.path.join(out, "part", "checkpoint.pt")))
    res["resume_differs"] = _same_state(full, resumed)
    res["resume_start"] = resumed.start_epoch
    res["test_loss"] = (full.test_loss, resumed.test_loss)
    torch.save(res, os.path.join(out, f"rnn{rank}.pt"))


def test_rnn_two_ranks(tmp_path):
    """2 ranks x 4 columns = one process with 8 columns (float64, 12 steps of drawn
    sequence lengths, clipping, the ASGD switch and averaged-weight validation on
    split validation columns); a resume on 2 ranks equals the unbroken run bit for bit."""
    ref = _rnn_float64_run(tmp_path / "single", WORLD * RNN_B)
    start_ranks(_rnn_worker, (WORLD, free_port(), str(tmp_path)), WORLD, [__name__])
    got = [torch.load(tmp_path / f"rnn{r}.pt", weights_only=False) for r in range(WORLD)]
    assert ref["switched_at"] == 2 and ref["kind"] == "ASGD"
    for r in range(WORLD):
        g = got[r]
        assert g["switched_at"] == 2 and g["kind"] == "ASGD"
        for a, b in zip(g["params"], ref["params"]):
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
        for a, b in zip(g["ax"], ref["ax"]):
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
        assert g["valid"] == pytest.approx(ref["valid"], rel=1e-6)  # float32 sums in evaluate_rnn
        assert g["resume_start"] == 2 and g["resume_differs"] == [], g["resume_differs"]
        assert g["test_loss"][0] == g["test_loss"][1] == got[0]["test_loss"][0]
    for a, b in zip(got[0]["params"], got[1]["params"]):
        assert torch.equal(a, b)
    ckpt = torch.load(tmp_path / "full" / "checkpoint.pt", weights_only=False)
    assert ckpt["world_size"] == WORLD and len(ckpt["ranks"]) == WORLD
    assert (tmp_path / "full" / "best.pt").exists()


# ---------------------------------------------------------------- errors without ranks

def test_rank_device_errors():
    from fastdarts.train.common import rank_device

    cpu, cuda1 = torch.device("cpu"), torch.device("cuda", 1)
    assert rank_device(cpu, 2, "gloo", None) == cpu
    assert rank_device(torch.device("cuda"), 2, "nccl", 1) == cuda1
    assert rank_device(cuda1, 2, "nccl", 1) == cuda1
    with pytest.raises(ValueError, match="each rank trains on its own GPU"):
        rank_device(torch.device("cuda", 0), 2, "nccl", 1)
    with pytest.raises(ValueError, match="NCCL, which cannot average CPU tensors"):
        rank_device(cpu, 2, "nccl", None)
    with pytest.raises(ValueError, match="CPUs .gloo. or CUDA GPUs"):
        rank_device(torch.device("meta"), 2, "gloo", None)


# ---------------------------------------------------------------- torchrun

def _torchrun(args, tmp_path):
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={WORLD}", "--master_port",
           str(free_port()), "-m", "fastdarts", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.getcwd()}
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    return r.stdout


def test_torchrun_train_cnn(tmp_path):
    save = tmp_path / "cnn"
    out = _torchrun(["train", "cnn", "--genotype", "DARTS_V1", "--save", str(save), "--epochs", "1",
                     "--max_steps_per_epoch", "2", "--init_channels", "4", "--layers", "3",
                     "--batch_size", "16"], tmp_path)
    assert out.count("parameters =") == 1 and out.count("no --data given") == 1  # rank 0 reports
    assert out.count("epoch 1/1") == 1 and "(2 ranks, each its shard of the data)" in out
    assert sorted(os.listdir(save)) == ["checkpoint.pt"]  # atomic, no temporary left
    ckpt = torch.load(save / "checkpoint.pt", weights_only=False)
    assert ckpt["world_size"] == WORLD and len(ckpt["ranks"]) == WORLD and ckpt["epoch"] == 1


def test_train_rnn_on_torchrun_ranks(tmp_path):
    """`train rnn` on two ranks with torchrun's environment (forked from the test's
    forkserver, tests.helpers.cli_ranks; torchrun itself launches `train cnn` above
    and the searches in test_distributed.py): rank 0 alone reports and writes."""
    save = tmp_path / "rnn"
    out = cli_ranks(["train", "rnn", "--arch", "DARTS_V1", "--save", str(save), "--epochs", "1",
                     "--max_steps_per_epoch", "2", "--nhid", "8", "--emsize", "8", "--nhidlast", "8"],
                    WORLD, tmp_path / "out")
    assert out.count("test ppl") == 1 and out.count("epoch 1/1") == 1
    assert sorted(os.listdir(save)) == ["best.pt", "checkpoint.pt"]
    ckpt = torch.load(save / "checkpoint.pt", weights_only=False)
    assert ckpt["world_size"] == WORLD and len(ckpt["ranks"]) == WORLD
