"""Data-parallel search with gloo on the CPU: N ranks with local batch b against one
process with batch N*b in N micro-batches (the same per-device BatchNorm)."""

from __future__ import annotations

import os
import time

import pytest
import torch

from .helpers import cli_ranks, free_port, rank_context, start_ranks

STEPS = 3
LOCAL = 3


def _batches(world, step):
    g = torch.Generator().manual_seed(1000 + step)
    n = world * LOCAL
    return (torch.randn(n, 3, 8, 8, generator=g, dtype=torch.float64), torch.randint(0, 3, (n,), generator=g),
            torch.randn(n, 3, 8, 8, generator=g, dtype=torch.float64), torch.randint(0, 3, (n,), generator=g))


def _run(rank, world, unrolled, port, out_dir, fail_rank=-1):
    import torch.distributed as dist

    import fastdarts
    from fastdarts import distributed as D
    from tests.helpers import cnn_args, tiny_cnn

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    if world > 1:
        D.init("gloo", timeout_s=30)
    model = tiny_cnn(seed=0, C=2)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=3e-4)
    arch = fastdarts.Architect(model, cnn_args(), micro_batches=1 if world > 1 else out_dir[1])
    if world > 1:
        D.make_data_parallel(arch)
    if rank == fail_rank:
        raise SystemExit(3)
    for step in range(STEPS):
        xt, yt, xv, yv = _batches(world if world > 1 else out_dir[1], step)
        if world > 1:
            s = slice(rank * LOCAL, (rank + 1) * LOCAL)
            xt, yt, xv, yv = xt[s], yt[s], xv[s], yv[s]
        arch.step(xt, yt, xv, yv, 0.05, opt, unrolled)
        opt.zero_grad()
        if world > 1:
            model._loss(xt, yt).backward()
            D.all_reduce_weight_grads_(arch)
        else:
            n = xt.shape[0]
            for c in range(0, n, LOCAL):  # per-device BatchNorm: one micro-batch per "rank"
                (model._loss(xt[c:c + LOCAL], yt[c:c + LOCAL]) * (LOCAL / n)).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
    if world > 1:
        D.check_in_sync(model)
        dist.destroy_process_group()
    torch.save({"alphas": [a.detach() for a in model.arch_parameters()],
                "weights": [p.detach() for p in model.parameters()]},
               os.path.join(out_dir[0], f"rank{rank}.pt"))


# an odd world size once, with the second order (its finite difference, two more
# collectives); 3 spawned ranks on a 2-core CI machine cost ~20-40 s per case
@pytest.mark.parametrize("unrolled, world", [(False, 2), (True, 2), (True, 3)])
def test_data_parallel_equals_single_process_micro_batches(tmp_path, world, unrolled):
    single = tmp_path / "single"
    single.mkdir()
    _run(0, 1, unrolled, 0, (str(single), world))
    ref = torch.load(single / "rank0.pt")
    start_ranks(_run, (world, unrolled, free_port(), (str(tmp_path), world)), world, [__name__])
    for r in range(world):
        got = torch.load(tmp_path / f"rank{r}.pt")
        for a, b in zip(got["alphas"], ref["alphas"]):
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
        for a, b in zip(got["weights"], ref["weights"]):
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def _run_and_report(rank, world, unrolled, port, out, fail_rank):
    try:
        _run(rank, world, unrolled, port, out, fail_rank)
    except BaseException as exc:
        with open(os.path.join(out[0], f"error{rank}.txt"), "w") as f:
            f.write(f"{type(exc).__name__}: {exc}")
        raise


def test_a_failing_rank_stops_the_others(tmp_path):
    """Rank 1 dies after joining; rank 0 must fail at its next collective with a clear
    error, not hang (the group's timeout is 30 s; this returns in seconds)."""
    ctx = rank_context([__name__])
    port = free_port()
    procs = [ctx.Process(target=_run_and_report, args=(r, 2, True, port, (str(tmp_path), 2), 1))
             for r in range(2)]
    t0 = time.time()
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=90)
    assert all(p.exitcode not in (None, 0) for p in procs), [p.exitcode for p in procs]
    assert time.time() - t0 < 60
    msg = (tmp_path / "error0.txt").read_text()
    assert "DistributedError" in msg and "another rank probably stopped" in msg, msg
    assert not (tmp_path / "rank0.pt").exists()


def test_torchrun_cnn_search_runs_and_rank0_writes(tmp_path):
    import subprocess
    import sys

    save = tmp_path / "dp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port",
           str(free_port()), "-m", "fastdarts", "search", "cnn", "--epochs", "1",
           "--max_steps_per_epoch", "2", "--layers", "3", "--init_channels", "2", "--batch_size", "8",
           "--save", str(save), "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.getcwd()}
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert (save / "genotype.json").exists() and (save / "checkpoint.pt").exists()
    assert r.stdout.count("genotype = Genotype(") == 1  # rank 0 reports (ranks checked in sync)
    # the validation covers the whole architecture half (899 of the 1,797 digits), not a shard
    ck = torch.load(save / "checkpoint.pt", weights_only=False)
    assert ck["history"][-1]["valid_n"] == 1797 - 1797 // 2


# --------------------------------------------------------------------------- RNN


def _run_rnn(rank, world, unrolled, port, out_dir, n=2, T=4, B=2, steps=3):
    """Rank ``rank`` of ``world`` (local batch B columns) or, for world == 1, one process
    with n*B columns in n micro-batches; the reference RNN search model, float64."""
    import torch.distributed as dist

    import fastdarts
    from fastdarts import distributed as D
    from tests.helpers import rnn_args, tiny_rnn

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    if world > 1:
        D.init("gloo", timeout_s=30)
    model = tiny_rnn(seed=0, ntoken=20, nhid=6)
    opt = torch.optim.SGD(model.parameters(), lr=0.5, weight_decay=5e-7)
    arch = fastdarts.Architect(model, rnn_args(), micro_batches=1 if world > 1 else n)
    if world > 1:
        D.make_data_parallel(arch)
    cols = n * B
    mine = slice(rank * B, (rank + 1) * B) if world > 1 else slice(0, cols)
    width = mine.stop - mine.start
    h_train = [torch.zeros(1, width, 6, dtype=torch.float64)]
    h_valid = [torch.zeros(1, width, 6, dtype=torch.float64)]
    for step in range(steps):
        g = torch.Generator().manual_seed(500 + step)
        x, xv = (torch.randint(0, 20, (T, cols), generator=g) for _ in range(2))
        y, yv = (torch.randint(0, 20, (T, cols), generator=g) for _ in range(2))
        x, xv, y, yv = x[:, mine], xv[:, mine], y[:, mine].reshape(-1), yv[:, mine].reshape(-1)
        h_valid, _ = arch.step(h_train, x, y, h_valid, xv, yv, opt, unrolled)
        opt.zero_grad()
        if world > 1:
            loss, h_train = model._loss(h_train, x, y)
            loss.backward()
            D.all_reduce_weight_grads_(arch)
        else:  # per-device BatchNorm: one micro-batch of B columns per "rank"
            y2, hs = y.view(T, cols), []
            for c in range(0, cols, B):
                s = slice(c, c + B)
                loss, h = model._loss([h_[:, s] for h_ in h_train], x[:, s], y2[:, s].reshape(-1))
                (loss * (B / cols)).backward()
                hs.append(h)
            h_train = [torch.cat([h[i] for h in hs], dim=1) for i in range(len(hs[0]))]
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.25)
        opt.step()
        h_train = [h.detach() for h in h_train]
        h_valid = [h.detach() for h in h_valid]
    if world > 1:
        D.check_in_sync(model)
        dist.destroy_process_group()
    torch.save({"alphas": [a.detach() for a in model.arch_parameters()],
                "weights": [p.detach() for p in model.parameters()]},
               os.path.join(out_dir, f"rnn{rank}.pt"))


@pytest.mark.parametrize("unrolled", [False, True], ids=["first_order", "second_order"])
def test_rnn_data_parallel_equals_single_process_micro_batches(tmp_path, unrolled):
    """2 gloo ranks x 2 columns against one process with 4 columns in 2 micro-batches:
    the clipped second-order step (clip coefficient of the reduced gradients) included."""
    single = tmp_path / "single"
    single.mkdir()
    _run_rnn(0, 1, unrolled, 0, str(single))
    ref = torch.load(single / "rnn0.pt")
    start = tiny_rnn_alphas()
    assert (ref["alphas"][0] - start).abs().max() > 1e-3  # the search moved
    start_ranks(_run_rnn, (2, unrolled, free_port(), str(tmp_path)), 2, [__name__])
    for r in range(2):
        got = torch.load(tmp_path / f"rnn{r}.pt")
        for a, b in zip(got["alphas"] + got["weights"], ref["alphas"] + ref["weights"]):
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def tiny_rnn_alphas():
    from tests.helpers import tiny_rnn

    return tiny_rnn(seed=0, ntoken=20, nhid=6).weights.detach().clone()


def _torchrun(args, timeout=240):
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port",
           str(free_port()), "-m", "fastdarts", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.getcwd()}
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    return r


def test_torchrun_rnn_search_and_its_exact_resume(tmp_path):
    """2 ranks with dropout on: rank 0 writes and reports once; stopping after epoch 1
    and resuming (every rank's RNG restored from the checkpoint) gives the same
    weights and alphas, bit for bit, as the unbroken data-parallel search.  The first
    part goes through torchrun; the unbroken and resumed runs fork torchrun's two ranks
    from the test's forkserver (tests.helpers.cli_ranks), which saves two launches."""
    tiny = ["search", "rnn", "--emsize", "8", "--nhid", "8", "--nhidlast", "8", "--batch_size", "4",
            "--bptt", "6", "--max_steps_per_epoch", "3", "--eval_batch_size", "256", "--quiet"]
    cut = _torchrun([*tiny, "--epochs", "1", "--save", str(tmp_path / "cut")])
    assert cut.stdout.count("genotype = ") == 1
    assert (tmp_path / "cut" / "genotype.json").exists()
    cli_ranks([*tiny, "--epochs", "2", "--save", str(tmp_path / "full")], 2, tmp_path / "o1")
    out = cli_ranks([*tiny, "--epochs", "2", "--save", str(tmp_path / "cut"),
                     "--resume", str(tmp_path / "cut" / "checkpoint.pt")], 2, tmp_path / "o2")
    assert out.count("genotype = ") == 1  # rank 0 only, after the resumed run too
    a = torch.load(tmp_path / "full" / "checkpoint.pt", weights_only=False)
    b = torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=False)
    assert a["epoch"] == b["epoch"] == 2 and a["config"]["world_size"] == 2
    rng = a["rng_ranks"]
    assert len(rng) == 2 and not torch.equal(rng[0]["torch"], rng[1]["torch"])
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    for x, y in zip(a["alphas"], b["alphas"]):
        assert torch.equal(x, y)


@pytest.mark.parametrize("n", [10, 11, 12, 13])
def test_cnn_search_shards_are_equal_and_disjoint(n):
    from fastdarts.data import ImageData
    from fastdarts.search.cnn import shard

    images = torch.zeros(n, 3, 2, 2, dtype=torch.uint8)
    data = ImageData(images, torch.arange(n), (0.5,) * 3, (0.5,) * 3, n, "t")
    parts = [shard(data, r, 3).labels.tolist() for r in range(3)]
    assert len({len(p) for p in parts}) == 1 and len(parts[0]) == n // 3
    seen = sum(parts, [])
    assert len(set(seen)) == len(seen) == n // 3 * 3
