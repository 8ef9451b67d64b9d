"""The data-parallel code path with one rank against the plain path (issue 8's
overhead goal: at most 3 %), measured in one process on one device.

Both paths run the same search step (architect step + weight step with clipping,
fastdarts.nn.Network + fastdarts.Architect); the data-parallel one has a 1-rank
process group (gloo on the CPU, NCCL on CUDA), the Architect's gradient averager
(one all_reduce per flat quantity) and the weight gradients averaged through the
flat buffer.  Rounds alternate between the two paths; reported: median ms of each,
their ratio, and what the collectives carry per step.

    python bench/bench_distributed.py [--device cuda] [--C 16 --layers 8 --batch 64 --hw 32]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import sys
import time

import torch
import torch.distributed as dist
import torch.nn as nn

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import fastdarts  # noqa: E402
from bench.common import CNN_ARCH_ARGS, add_search_shape_args, device_name, versions  # noqa: E402
from fastdarts import distributed as D  # noqa: E402
from fastdarts.nn import Network  # noqa: E402

ARGS = CNN_ARCH_ARGS


def main(argv=None):
    ap = argparse.ArgumentParser()
    add_search_shape_args(ap)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=3, help="steps per round and path")
    ap.add_argument("--unrolled", action="store_true")
    a = ap.parse_args(argv)
    dev = torch.device(a.device)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK="0", WORLD_SIZE="1")
    dist.init_process_group("nccl" if dev.type == "cuda" else "gloo", rank=0, world_size=1)

    def build(dp: bool):
        torch.manual_seed(0)
        model = Network(a.C, 10, a.layers, nn.CrossEntropyLoss()).to(dev)
        opt = torch.optim.SGD(model.parameters(), 0.025, momentum=0.9, weight_decay=3e-4)
        arch = fastdarts.Architect(model, ARGS)
        if dp:
            D.make_data_parallel(arch)
        return model, opt, arch

    x = torch.randn(a.batch, 3, a.hw, a.hw, device=dev)
    y = torch.randint(0, 10, (a.batch,), device=dev)
    paths = {"plain": build(False), "data-parallel, 1 rank": build(True)}

    def step(name):
        model, opt, arch = paths[name]
        arch.step(x, y, x, y, 0.025, opt, a.unrolled)
        opt.zero_grad()
        model._loss(x, y).backward()
        if name != "plain":
            D.all_reduce_weight_grads_(arch)
        nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()

    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    times = {k: [] for k in paths}
    for name in paths:  # warm-up
        step(name)
    for _ in range(a.rounds):
        for name in paths:
            for _ in range(a.steps):
                sync()
                t0 = time.perf_counter()
                step(name)
                sync()
                times[name].append((time.perf_counter() - t0) * 1e3)
    med = {k: statistics.median(v) for k, v in times.items()}
    n = sum(p.numel() for p in paths["plain"][2].params)
    mb = 4 * n / 2**20
    per_step = (3 if a.unrolled else 1) * mb
    print(f"# {device_name(dev)} | {versions()} | C={a.C} L={a.layers} B={a.batch} {a.hw}x{a.hw} | "
          f"{'second' if a.unrolled else 'first'} order | {a.rounds} rounds x {a.steps} steps")
    print(f"flat weights {n:,} ({mb:.1f} MiB fp32): collectives carry {per_step:.1f} MiB "
          "+ a few KiB per step")
    for k in paths:
        print(f"{k:24s} median {med[k]:8.1f} ms  (min {min(times[k]):.1f}, max {max(times[k]):.1f})")
    ratio = med["data-parallel, 1 rank"] / med["plain"]
    print(f"overhead of the data-parallel path: {100 * (ratio - 1):+.1f} %")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
