"""Benchmark: what a CNN search forward keeps for the backward, per memory mode.

Rows: the reference Network (fastdarts.reference.cnn) and fastdarts.nn.Network with
memory = plain / shared / checkpoint, same seed and weights.  Columns: bytes autograd
saves in one forward (fastdarts.nn.memory.SavedBytes: distinct storages, parameters
excluded; device-independent), its ratio to the reference, the same scaled to
--scale-to images (activations are linear in the batch), the parameters, and the time
of one forward+backward (min over --repeats; CUDA: synchronised, plus the allocator's
peak for the step).

    python bench/bench_memory.py                         # paper shapes, batch 8, no timing
    python bench/bench_memory.py --C 4 --layers 5 --batch 4 --hw 16 --repeats 10 --threads 1
    python bench/bench_memory.py --device cuda --batch 64 --repeats 10
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import torch
import torch.nn as nn

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from fastdarts.nn import Network  # noqa: E402
from fastdarts.nn.memory import saved_bytes_of  # noqa: E402
from fastdarts.nn.mixed_op import MEMORY_MODES  # noqa: E402
from fastdarts.reference.cnn import Network as ReferenceNetwork  # noqa: E402


def step_ms(model, x, y, repeats: int, device: torch.device) -> tuple[float, float]:
    """(min ms of forward+backward over ``repeats``, CUDA peak MiB of one step or nan)."""
    if not repeats:
        return float("nan"), float("nan")
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    model._loss(x, y).backward()  # warm-up
    peak = float("nan")
    if device.type == "cuda":
        model.zero_grad()
        sync()
        torch.cuda.reset_peak_memory_stats()
        model._loss(x, y).backward()
        sync()
        peak = torch.cuda.max_memory_allocated() / 2**20
    times = []
    for _ in range(repeats):
        sync()
        t0 = time.perf_counter()
        model._loss(x, y).backward()
        sync()
        times.append(time.perf_counter() - t0)
    return 1e3 * min(times), peak


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--C", type=int, default=16)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--scale-to", type=int, default=64, help="also report MiB at this batch")
    ap.add_argument("--hw", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=0, help="timed forward+backward passes")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--modes", nargs="+", default=list(MEMORY_MODES))
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(a.batch, 3, a.hw, a.hw, generator=g).to(device)
    y = torch.randint(0, 10, (a.batch,), generator=g).to(device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.machine()
    print(f"# {name}, torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"C={a.C} layers={a.layers} batch={a.batch} {a.hw}x{a.hw} fp32")
    rows = [("reference", lambda: ReferenceNetwork(a.C, 10, a.layers, nn.CrossEntropyLoss()))]
    rows += [(m, lambda m=m: Network(a.C, 10, a.layers, nn.CrossEntropyLoss(), memory=m))
             for m in a.modes]
    base = base_ms = None
    print(f"| model | saved MiB | x reference | saved MiB at batch {a.scale_to} | params MiB "
          "| fwd+bwd ms | x reference time | CUDA peak MiB |")
    print("|---|---|---|---|---|---|---|---|")
    for label, build in rows:
        torch.manual_seed(0)
        model = build().to(device)
        mem = saved_bytes_of(model, x, y)
        base = base or mem.saved_bytes
        ms, peak = step_ms(model, x, y, a.repeats, device)
        base_ms = base_ms or ms
        mib = mem.saved_bytes / 2**20
        print(f"| {label} | {mib:.1f} | {mem.saved_bytes / base:.3f} | "
              f"{mib * a.scale_to / a.batch:.0f} | {mem.param_bytes / 2**20:.2f} | {ms:.1f} | "
              f"{ms / base_ms:.2f} | {peak:.0f} |")


if __name__ == "__main__":
    main()
