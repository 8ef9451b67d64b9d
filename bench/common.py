"""Shared timing and reporting helpers for bench/ scripts (GPU and CPU)."""

from __future__ import annotations

import json
import statistics
import time
import timeit
from types import SimpleNamespace

import torch

from fastdarts.profile.profiler import device_name
from fastdarts.profile.profiler import versions as profiler_versions

# The original train_search.py's Architect arguments (CNN).
CNN_ARCH_ARGS = SimpleNamespace(momentum=0.9, weight_decay=3e-4, arch_learning_rate=3e-4,
                                arch_weight_decay=1e-3)


def add_search_shape_args(ap) -> None:
    """--device and the CNN search shape, the paper's by default (C=16, 8 layers,
    batch 64, 32x32)."""
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--C", type=int, default=16)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--hw", type=int, default=32)


def versions() -> str:
    """'torch X, triton Y' of this process (fastdarts.profile.profiler.versions, as a line)."""
    v = profiler_versions()
    return f"torch {v['torch']}, triton {v['triton'] or 'none'}"


def version_fields(device: torch.device) -> dict:
    """device, torch and triton of a result row."""
    v = profiler_versions()
    return {"device": device_name(device), "torch": v["torch"], "triton": v["triton"] or "-"}


def time_ms(fn, device: torch.device, warmup: int = 3, reps: int = 10) -> dict:
    """Median and quartiles of fn() in ms (CUDA events on GPU, perf_counter on CPU)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    q = statistics.quantiles(times, n=4, method="inclusive") if len(times) > 1 else [times[0]] * 3
    return {"median_ms": statistics.median(times), "q1_ms": q[0], "q3_ms": q[2]}


def gpu_busy(fn, device: torch.device) -> dict:
    """Sum of kernel times (ms) and kernel count of one fn() call, from torch.profiler."""
    if device.type != "cuda":
        return {}
    from torch.profiler import ProfilerActivity, profile

    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    busy_us, kernels = 0.0, 0
    for e in prof.events():
        if e.device_type == torch.autograd.DeviceType.CUDA:
            busy_us += e.device_time_total if hasattr(e, "device_time_total") else e.cuda_time_total
            kernels += 1
    return {"gpu_busy_ms": busy_us / 1e3, "kernels": kernels}


def median_ms(step, device: torch.device, repeat: int) -> float:
    """Median ms of step() after one warm-up call (which also compiles Triton kernels):
    triton.testing.do_bench on a GPU (its own repeat count), else timeit over ``repeat``
    calls.  A single number for a table row; time_ms gives quartiles too."""
    step()
    if device.type == "cuda":
        import triton.testing

        return float(triton.testing.do_bench(step, quantiles=[0.5, 0.2, 0.8])[0])
    return statistics.median(timeit.repeat(step, number=1, repeat=repeat)) * 1e3


def peak_mib(fn, device: torch.device) -> float | None:
    """Peak CUDA memory (MiB) of one fn() call; None on other devices."""
    if device.type != "cuda":
        return None
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats(device)
    fn()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated(device) / 2**20


def print_table(rows: list[dict], keys: list[str]) -> None:
    widths = {k: max(len(k), *(len(_fmt(r.get(k))) for r in rows)) for k in keys}
    print(" | ".join(k.ljust(widths[k]) for k in keys))
    print("-|-".join("-" * widths[k] for k in keys))
    for r in rows:
        print(" | ".join(_fmt(r.get(k)).ljust(widths[k]) for k in keys))


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"
    return str(v)


def dump_json(rows: list[dict], path: str | None) -> None:
    if path:
        with open(path, "w") as f:
            json.dump(rows, f, indent=1)
