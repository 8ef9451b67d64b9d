"""Benchmark (CPU, deterministic): estimated GPU kernel launches per full search step.

Rows: CNN / RNN (NB201 too with --nb201, or alone with --only nb201) x first / second
order x reference / fused.  Each row builds the
search step as fastdarts/search/{cnn,rnn}.py runs it (architect step + weight step),
takes 2 warm-up steps and counts the third with fastdarts.profile.launches.LaunchCounter
(every dispatched op, views and metadata left out, launch rules in that module's
docstring); bytes saved for backward over the step (fastdarts.nn.memory.SavedBytes);
CPU ms = median of --repeats plain steps.  Then the top ops by launches of each fused row.

    python bench/bench_launches.py                      # paper topology, tiny batch/image
    python bench/bench_launches.py --only cnn --json launches.json
    python bench/bench_launches.py --C 4 --layers 5 --emsize 32 --bptt 35
    python bench/bench_launches.py --only nb201 --C 16 --cells_per_stage 5 --hw 16   # NAS-Bench-201
    python bench/bench_launches.py --method pc-darts    # PC-DARTS' CNN supernet (K = 4)

Launch counts do not depend on the batch, the image size or emsize (checked); they
do depend on --layers (CNN) and --bptt (RNN).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import versions  # noqa: E402
from fastdarts.profile.launches import count_cnn_step, count_nb201_step, count_rnn_step  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", choices=("cnn", "rnn", "nb201"), default=None)
    ap.add_argument("--nb201", action="store_true", help="add the NAS-Bench-201 rows to cnn and rnn")
    ap.add_argument("--cells_per_stage", type=int, default=5, help="NB201 cells per stage (N)")
    ap.add_argument("--C", type=int, default=16)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--batch", type=int, default=2, help="CNN batch")
    ap.add_argument("--hw", type=int, default=8, help="CNN image size")
    ap.add_argument("--memory", default=None, help="fused Network memory mode (default: its default)")
    ap.add_argument("--method", choices=("darts", "pc-darts"), default="darts",
                    help="CNN supernet: DARTS' or PC-DARTS' (CNN rows only)")
    ap.add_argument("--partial_channels", type=int, default=4, help="PC-DARTS' K")
    ap.add_argument("--emsize", type=int, default=300, help="RNN emsize = nhid = nhidlast")
    ap.add_argument("--ntoken", type=int, default=1000)
    ap.add_argument("--bptt", type=int, default=35)
    ap.add_argument("--rnn-batch", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3, help="timed plain steps per row")
    ap.add_argument("--backend", choices=("cuda", "triton"), default="cuda",
                    help="GPU backend whose launch counts the fastdarts ops get")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--json", default=None, metavar="PATH")
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    rows = []
    spaces = [a.only] if a.only else ["cnn", "rnn"] + (["nb201"] if a.nb201 else [])
    if a.method != "darts":
        spaces = ["cnn"]
    for space in spaces:
        for unrolled in (False, True):
            for impl in ("reference", "fused"):
                if space == "nb201":
                    r = count_nb201_step(impl, unrolled, C=a.C, N=a.cells_per_stage, batch=a.batch,
                                         hw=a.hw, repeats=a.repeats, backend=a.backend)
                elif space == "cnn":
                    r = count_cnn_step(impl, unrolled, C=a.C, layers=a.layers, batch=a.batch, hw=a.hw,
                                       memory=a.memory, repeats=a.repeats, backend=a.backend,
                                       method=a.method, partial_channels=a.partial_channels)
                else:
                    r = count_rnn_step(impl, unrolled, emsize=a.emsize, ntoken=a.ntoken, bptt=a.bptt,
                                       batch=a.rnn_batch, repeats=a.repeats, backend=a.backend)
                r.update(space=space, order="second" if unrolled else "first", impl=impl)
                rows.append(r)
                print(f"# done {space} {r['order']} {impl}", file=sys.stderr, flush=True)
    ref = {(r["space"], r["order"]): r for r in rows if r["impl"] == "reference"}
    for r in rows:
        b = ref[(r["space"], r["order"])]
        r["launch_ratio"] = r["launches"] / b["launches"]
        r["saved_ratio"] = r["saved_bytes"] / b["saved_bytes"]
    method = a.method + (f" K={a.partial_channels}" if a.method == "pc-darts" else "")
    print(f"# {datetime.date.today()}, {torch.get_num_threads()} threads, {versions()}; "
          f"backend {a.backend}; method {method}; "
          f"CNN C={a.C} layers={a.layers} batch={a.batch} {a.hw}x{a.hw}; "
          f"RNN emsize=nhid={a.emsize} ntoken={a.ntoken} bptt={a.bptt} batch={a.rnn_batch}; "
          f"NB201 C={a.C} N={a.cells_per_stage}")
    print()
    print("| net | order | impl | ops | est. launches | x reference | host syncs "
          "| saved for backward MiB | x reference | CPU ms |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        ms = f"{r['cpu_ms']:.0f}" if r["cpu_ms"] is not None else "-"
        print(f"| {r['space'].upper()} | {r['order']} | {r['impl']} | {r['ops']:,} | {r['launches']:,} "
              f"| {r['launch_ratio']:.3f} | {r['syncs']} | {r['saved_bytes'] / 2**20:.1f} "
              f"| {r['saved_ratio']:.3f} | {ms} |")
    for r in rows:
        if r["impl"] != "fused":
            continue
        print()
        print(f"Top 10 ops by launches, {r['space'].upper()} {r['order']} order, fused "
              f"({r['launches']:,} launches):")
        print()
        print("| op | calls | launches | share |")
        print("|---|---|---|---|")
        for op, n in r["top"]:
            print(f"| {op} | {r['calls'][op]:,} | {n:,} | {100 * n / r['launches']:.1f} % |")
        if r["unknown_custom_ops"]:
            print(f"\nunknown custom ops (counted 1 each): {r['unknown_custom_ops']}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"date": str(datetime.date.today()), "versions": versions(),
                       "args": vars(a), "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
