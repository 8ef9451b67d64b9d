"""Benchmark: the fused RNN search-cell node (and model) vs the original DARTS formulation.

Two levels, forward + backward each:
  node   one node with n incoming states: the original's per-op math through autograd
         (split, sigmoid, then per op an activation, a blend, a weighted sum over the
         states and an add: ~25 kernels forward) against ``torch.ops.fastdarts.rnn_node``
         on each backend available for the device;
  model  the whole search model (``_loss`` + backward): fastdarts.reference.rnn
         against fastdarts.nn.search_rnn with the same weights.

    python bench/bench_rnn_node.py                  # paper shapes on the GPU, else CPU small
    python bench/bench_rnn_node.py --small          # quick CPU run
    python bench/bench_rnn_node.py --states 1 8 --level node

GPU timing: triton.testing.do_bench (median, L2 flushed between runs), or CUDA events
without triton.  CPU timing: timeit, median of --repeat runs.  Each row: device,
torch/triton versions, shape, dtype, backend, median, ratio to the baseline (>1 is
faster), GPU peak memory.
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import median_ms as time_ms  # noqa: E402
from bench.common import peak_mib, print_table  # noqa: E402
from bench.common import version_fields as common_fields  # noqa: E402
from fastdarts import backends  # noqa: E402
from fastdarts.nn.search_rnn import RNNModelSearch  # noqa: E402
from fastdarts.ops.rnn_node_ref import node_forward_math  # noqa: E402
from fastdarts.reference import rnn as ref_rnn  # noqa: E402


def bench_node(device, B, H, states_list, dtype, names, repeat):
    rows = []
    for n in states_list:
        g = torch.Generator().manual_seed(n)
        ch = torch.randn(n, B, 2 * H, generator=g).to(device, dtype).requires_grad_()
        st = torch.randn(n, B, H, generator=g).to(device, dtype).requires_grad_()
        probs = torch.randn(n, 5, generator=g).softmax(-1).to(device).requires_grad_()
        grad = torch.randn(B, H, generator=g).to(device, dtype)

        def step(fn):
            return lambda: torch.autograd.grad(fn(ch, st, probs), (ch, st, probs), grad)

        base = step(lambda c, s, p: node_forward_math(c, s, p.to(dtype)))
        fields = dict(common_fields(device), level="node",
                      shape=f"n={n} B={B} H={H}", dtype=str(dtype).replace("torch.", ""))
        base_ms = time_ms(base, device, repeat)
        rows.append(dict(fields, backend="original (per-op, autograd)", median_ms=base_ms,
                         ratio=1.0, peak_mib=peak_mib(base, device)))
        for name in names:
            backends.set_backend(name)
            fused = step(torch.ops.fastdarts.rnn_node)
            ms = time_ms(fused, device, repeat)
            rows.append(dict(fields, backend=f"rnn_node[{name}]", median_ms=ms,
                             ratio=base_ms / ms, peak_mib=peak_mib(fused, device)))
        backends.set_backend(None)
    return rows


def bench_model(device, ntoken, nhid, B, T, dtype, names, repeat):
    torch.manual_seed(0)
    ref = ref_rnn.RNNModelSearch(ntoken, nhid, nhid, nhid).to(device, dtype).train()
    fused = RNNModelSearch(ntoken, nhid, nhid, nhid).to(device, dtype).train()
    fused.load_state_dict(ref.state_dict())
    with torch.no_grad():
        fused.weights.copy_(ref.weights)
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, ntoken, (T, B), generator=g).to(device)
    y = torch.randint(0, ntoken, (T * B,), generator=g).to(device)
    hidden = [torch.zeros(1, B, nhid, device=device, dtype=dtype)]

    def step(model):
        def run():
            loss, _ = model._loss(hidden, x, y)
            loss.backward()
        return run

    fields = dict(common_fields(device), level="model",
                  shape=f"T={T} B={B} nhid={nhid} ntoken={ntoken}",
                  dtype=str(dtype).replace("torch.", ""))
    base_ms = time_ms(step(ref), device, repeat)
    rows = [dict(fields, backend="reference model", median_ms=base_ms, ratio=1.0,
                 peak_mib=peak_mib(step(ref), device))]
    for name in names:
        backends.set_backend(name)
        ms = time_ms(step(fused), device, repeat)
        rows.append(dict(fields, backend=f"fused model[{name}]", median_ms=ms,
                         ratio=base_ms / ms, peak_mib=peak_mib(step(fused), device)))
    backends.set_backend(None)
    return rows


def print_rows(rows):
    print_table(rows, ["device", "torch", "triton", "level", "shape", "dtype", "backend", "median_ms",
                       "ratio", "peak_mib"])
    print("ratio = baseline median / this median (>1: faster than the original)")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda if available)")
    p.add_argument("--small", action="store_true", help="small shapes for a quick CPU run")
    p.add_argument("--level", choices=["node", "model", "both"], default="both")
    p.add_argument("--states", type=int, nargs="+", default=None,
                   help="incoming states per node (default 1 4 8)")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float64"])
    p.add_argument("--backends", nargs="+", default=None,
                   help="fused backends to time (default: all that run on the device, without "
                        "the Triton interpreter)")
    p.add_argument("--repeat", type=int, default=None)
    p.add_argument("--threads", type=int, default=None, help="CPU threads (torch.set_num_threads)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    small = args.small or device.type == "cpu"
    dtype = getattr(torch, args.dtype)
    names = args.backends or [b for b in backends.available_backends(device)
                              if b in ("reference", "triton", "cuda")
                              and not (b == "triton" and device.type == "cpu")]
    repeat = args.repeat or (5 if device.type == "cpu" else 50)
    B, H = (16, 32) if small else (256, 300)
    rows = []
    if args.level in ("node", "both"):
        rows += bench_node(device, B, H, args.states or [1, 4, 8], dtype, names, repeat)
    if args.level in ("model", "both"):
        ntoken, T = (200, 5) if small else (10000, 35)
        rows += bench_model(device, ntoken, H, B, T, dtype, names, repeat)
    print_rows(rows)


if __name__ == "__main__":
    main()
