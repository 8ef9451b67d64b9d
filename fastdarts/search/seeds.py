"""Several independent searches (DARTS reports the best of several seeds).

``fastdarts search cnn --seeds 4 ...`` runs one search per seed (seed, seed+1, ...)
in its own process, ``per_gpu`` per visible GPU at a time (CUDA_VISIBLE_DEVICES set
per child; default 1, more when several searches fit in one GPU's memory) or one at
a time on a CPU, each writing to ``<save>/seed-<s>`` and ``<save>/seed-<s>.log``;
then it collects their genotypes and last-epoch metrics into ``<save>/summary.md``
(with the best seed) and ``<save>/summary.json``.  Interrupting it (Ctrl-C) stops
the searches it started.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import torch

from ..loop.state import CheckpointError
from .checkpoint import load_checkpoint


def _strip(argv: list[str], flag: str, takes_value: bool = True) -> list[str]:
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a == flag:
            skip = takes_value
            continue
        if a.startswith(flag + "="):
            continue
        out.append(a)
    return out


def slots(gpu_count: int, per_gpu: int = 1) -> list[int | None]:
    """The places a search can run at once: each GPU ``per_gpu`` times, or one CPU."""
    if per_gpu < 1:
        raise ValueError(f"--per_gpu must be >= 1, got {per_gpu}")
    return [g for _ in range(per_gpu) for g in range(gpu_count)] or [None]


def run_seeds(space: str, argv: list[str], seeds: list[int], save: str, per_gpu: int = 1) -> list[dict]:
    base = _strip(_strip(_strip(_strip(argv, "--seeds"), "--seed"), "--save"), "--per_gpu")
    free = slots(torch.cuda.device_count(), per_gpu)
    os.makedirs(save, exist_ok=True)
    pending = list(seeds)
    running: list[tuple[int, subprocess.Popen, int | None]] = []
    codes: dict[int, int] = {}
    try:
        while pending or running:
            while pending and free:
                seed, gpu = pending.pop(0), free.pop(0)
                env = dict(os.environ)
                if gpu is not None:
                    env["CUDA_VISIBLE_DEVICES"] = str(gpu)
                out = os.path.join(save, f"seed-{seed}")
                cmd = [sys.executable, "-m", "fastdarts", "search", space, *base, "--seed", str(seed),
                       "--save", out]
                with open(os.path.join(save, f"seed-{seed}.log"), "w") as log:
                    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
                running.append((seed, proc, gpu))
            time.sleep(0.2)
            for item in list(running):
                seed, proc, gpu = item
                if proc.poll() is not None:
                    running.remove(item)
                    codes[seed] = proc.returncode
                    free.append(gpu)
    finally:  # Ctrl-C or an error here: stop what was started, leave nothing orphaned
        for _, proc, _ in running:
            proc.terminate()
        for _, proc, _ in running:
            proc.wait()
    rows = []
    for seed in seeds:
        out = os.path.join(save, f"seed-{seed}")
        row = {"seed": seed, "save": out, "returncode": codes.get(seed)}
        try:
            with open(os.path.join(out, "genotype.json")) as f:
                row["genotype"] = json.load(f)
            with open(os.path.join(out, "genotypes.jsonl")) as f:
                row["epochs"] = sum(1 for _ in f)
            state = load_checkpoint(os.path.join(out, "checkpoint.pt"))  # tensors and plain data only
            last = state["history"][-1] if state["history"] else {}
            row.update({k: v for k, v in last.items() if isinstance(v, float)})
            row["ok"] = codes.get(seed) == 0
        except (OSError, KeyError, json.JSONDecodeError, CheckpointError) as exc:
            row["ok"] = False
            row["error"] = f"{type(exc).__name__}: {exc} (see {out}.log)"
        rows.append(row)
    with open(os.path.join(save, "summary.json"), "w") as f:
        json.dump(rows, f, indent=1)
    metric = "valid_acc" if space == "cnn" else "valid_ppl"
    lines = [f"| seed | ok | {metric} | genotype |", "|---|---|---|---|"]
    for r in rows:
        g = r.get("genotype", {})
        desc = " ".join(f"{op}<-{j}" for op, j in g.get("normal", g.get("recurrent", [])))
        lines.append(f"| {r['seed']} | {r['ok']} | {r.get(metric, '-')} | {desc} |")
    scored = [r for r in rows if r["ok"] and isinstance(r.get(metric), float)]
    if scored:
        best = (max if space == "cnn" else min)(scored, key=lambda r: r[metric])
        lines += ["", f"best: seed {best['seed']} ({metric} {best[metric]:.4f}), "
                      f"{best['save']}/genotype.json"]
    with open(os.path.join(save, "summary.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    return rows
