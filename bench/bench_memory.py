"""Benchmark: what a CNN search forward keeps for the backward, per memory mode.

Rows: the reference Network (fastdarts.reference.cnn) and fastdarts.nn.Network with
memory = plain / shared / checkpoint, same seed and weights.  Columns: bytes autograd
saves in one forward (fastdarts.nn.memory.SavedBytes: distinct storages, parameters
excluded; device-independent), its ratio to the reference, the same scaled to
--scale-to images (activations are linear in the batch), the parameters, and the time
of one forward+backward (min over --repeats, rounds interleaved; CUDA: synchronised,
plus the allocator's peak for the step); --peak adds the device-independent peak of
live bytes over one forward+backward (fastdarts.nn.memory.PeakLiveBytes).

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
from fastdarts.nn.memory import peak_step_bytes, saved_bytes_of  # noqa: E402
from fastdarts.nn.mixed_op import MEMORY_MODES  # noqa: E402
from fastdarts.reference.cnn import Network as ReferenceNetwork  # noqa: E402


def one_step_s(model, x, y, device: torch.device) -> float:
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    t0 = time.perf_counter()
    model._loss(x, y).backward()
    sync()
    return time.perf_counter() - t0


def cuda_peak_mib(model, x, y) -> float:
    """The CUDA allocator's peak over one forward+backward (weights and grads included)."""
    model._loss(x, y).backward()  # warm-up: grads allocated, cuDNN chosen
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    model._loss(x, y).backward()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() / 2**20


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
    ap.add_argument("--peak", action="store_true",
                    help="also the peak live bytes of one forward+backward (PeakLiveBytes)")
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
    print(f"| model | saved MiB | x reference | saved MiB at batch {a.scale_to} | params MiB "
          "| step peak MiB | x reference | fwd+bwd ms | x reference time | CUDA peak MiB |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    models, mems = [], []
    for _, build in rows:
        torch.manual_seed(0)
        models.append(build().to(device))
        mems.append(saved_bytes_of(models[-1], x, y))
    # Interleaved rounds (each model once per round), min per model: a shared machine's
    # load then hits every row alike.
    times = [[] for _ in models]
    for _ in range(a.repeats + (1 if a.repeats else 0)):
        for k, model in enumerate(models):
            times[k].append(one_step_s(model, x, y, device))
    peaks = [peak_step_bytes(m, x, y) if a.peak else float("nan") for m in models]
    base, base_ms = mems[0].saved_bytes, (1e3 * min(times[0][1:]) if a.repeats else float("nan"))
    for (label, _), model, mem, ts, pk in zip(rows, models, mems, times, peaks, strict=True):
        ms = 1e3 * min(ts[1:]) if a.repeats else float("nan")  # the first round warms up
        peak = cuda_peak_mib(model, x, y) if device.type == "cuda" else float("nan")
        mib = mem.saved_bytes / 2**20
        print(f"| {label} | {mib:.1f} | {mem.saved_bytes / base:.3f} | "
              f"{mib * a.scale_to / a.batch:.0f} | {mem.param_bytes / 2**20:.2f} | "
              f"{pk / 2**20:.1f} | {pk / peaks[0]:.3f} | {ms:.1f} | "
              f"{ms / base_ms:.2f} | {peak:.0f} |")


if __name__ == "__main__":
    main()
