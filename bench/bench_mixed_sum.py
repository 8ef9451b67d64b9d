"""Benchmark: fused mixed sum (forward + backward) vs the original DARTS formulation.

The original computes a node as ``sum(w * op(x) for w, op in ...)`` per edge and then
sums the edges, all through autograd; here that baseline is timed on the same op
outputs (every op but ``none``, whose multiply-by-zero the original also pays for,
so the baseline is, if anything, flattered) against ``fastdarts.functional.mixed_sum``
on each backend available for the device.

    python bench/bench_mixed_sum.py                 # paper shapes on the GPU, else CPU
    python bench/bench_mixed_sum.py --small         # quick CPU run
    python bench/bench_mixed_sum.py --device cpu --edges 2 5 --dtype float32 bfloat16

GPU timing: triton.testing.do_bench (median of many runs, L2 flushed between runs),
or CUDA events without triton.  CPU timing: timeit, median of --repeat runs.  Each
row: device, torch/triton versions, shape, M, dtype, backend, median, ratio to the
baseline (>1 is faster), effective bandwidth of the fused pass, GPU peak memory.
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import fastdarts  # noqa: E402
from bench.common import median_ms as time_ms  # noqa: E402
from bench.common import print_table, version_fields  # noqa: E402
from fastdarts import backends  # noqa: E402
from fastdarts.functional import mixed_sum  # noqa: E402

NON_NONE_OPS = 7  # the DARTS CNN space: 8 primitives, 'none' skipped


def original_node(weights: torch.Tensor, outputs: list[torch.Tensor]) -> torch.Tensor:
    """The original's node: per edge sum(w * op_out), then the sum over edges."""
    E, K = weights.shape
    return sum(sum(weights[e, k] * outputs[e * K + k] for k in range(K)) for e in range(E))


def fused_node(weights: torch.Tensor, outputs: list[torch.Tensor]) -> torch.Tensor:
    return mixed_sum(outputs, weights)


def make_step(node_fn, weights, outputs, grad):
    inputs = [weights, *outputs]

    def step():
        y = node_fn(weights, outputs)
        torch.autograd.grad(y, inputs, grad)

    return step


def bench(device: torch.device, shape, edges, dtypes, backend_names, repeat):
    rows = []
    n = 1
    for s in shape:
        n *= s
    for dtype in dtypes:
        for E in edges:
            M = E * NON_NONE_OPS
            g = torch.Generator(device="cpu").manual_seed(0)
            outputs = [torch.randn(shape, generator=g).to(device, dtype).requires_grad_()
                       for _ in range(M)]
            alpha = torch.randn(E, NON_NONE_OPS + 1, generator=g).to(device)
            # float32 softmax weights (as under autocast), none column dropped
            weights = torch.softmax(alpha, -1)[:, 1:].contiguous().requires_grad_()
            grad = torch.randn(shape, generator=g).to(device, dtype)
            base = time_ms(make_step(original_node, weights, outputs, grad), device, repeat)
            fused_bytes = (3 * M + 2) * n * outputs[0].element_size()  # fwd (M+1)N, bwd (2M+1)N
            common = dict(version_fields(device), shape="x".join(map(str, shape)), M=M,
                          dtype=str(dtype).replace("torch.", ""))
            rows.append(dict(common, backend="original sum(w*op)", median_ms=base, ratio=1.0,
                             gbps=None, peak_mib=None))
            for name in backend_names:
                fastdarts.set_backend(name)
                if device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(device)
                ms = time_ms(make_step(fused_node, weights, outputs, grad), device, repeat)
                peak = (torch.cuda.max_memory_allocated(device) / 2**20
                        if device.type == "cuda" else None)
                rows.append(dict(common, backend=f"fused[{name}]", median_ms=ms,
                                 ratio=base / ms, gbps=fused_bytes / ms / 1e6, peak_mib=peak))
            fastdarts.set_backend(None)
            del outputs, weights, grad
    return rows


def print_rows(rows):
    print_table(rows, ["device", "torch", "triton", "shape", "M", "dtype", "backend", "median_ms", "ratio",
                       "gbps", "peak_mib"])
    print("ratio = baseline median / this median (>1: faster than the original); "
          "gbps = fused bytes (fwd (M+1)N + bwd (2M+1)N elements) / median")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda if available)")
    p.add_argument("--small", action="store_true", help="a small shape for a quick CPU run")
    p.add_argument("--shape", type=int, nargs=4, default=None, help="N C H W (default 64 16 32 32)")
    p.add_argument("--edges", type=int, nargs="+", default=None,
                   help="incoming edges per node (M = 7 * E); default 2 5")
    p.add_argument("--dtype", nargs="+", default=None, choices=["float32", "bfloat16", "float16"])
    p.add_argument("--backends", nargs="+", default=None,
                   help="fused backends to time (default: all that run on the device, without "
                        "the Triton interpreter)")
    p.add_argument("--repeat", type=int, default=None)
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads (torch.set_num_threads); 1 avoids OpenMP barrier stalls "
                        "on a machine shared with other work")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    shape = tuple(args.shape or ((16, 16, 16, 16) if args.small else (64, 16, 32, 32)))
    edges = args.edges or ([2] if args.small else [2, 5])
    dtypes = [getattr(torch, d) for d in (args.dtype or (
        ["float32", "bfloat16"] if device.type == "cuda" or not args.small else ["float32"]))]
    names = args.backends or [b for b in backends.available_backends(device)
                              if not (b == "triton" and device.type == "cpu")]
    repeat = args.repeat or (5 if device.type == "cpu" else 50)
    print_rows(bench(device, shape, edges, dtypes, names, repeat))


if __name__ == "__main__":
    main()
