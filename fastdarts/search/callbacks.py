"""The callbacks of a DARTS search: what the original train_search.py does inline."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..space import genotypes as G
from .engine import Callback


def _is_rank0() -> bool:
    dist = torch.distributed
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


class ArchitectureUpdate(Callback):
    """The architect step on (this training batch, the next architecture batch),
    eta = the current weight learning rate; first or second order."""

    order = -10

    def batch_begin(self, e):
        if getattr(e, "fused_step", None) is not None:
            return  # the captured/fused step does the architecture update itself
        xv, yv = next(e.valid_iter)
        x, y = e.batch
        e.architect.step(x, y, xv, yv, e.lr, e.optimizer, e.unrolled)


class CosineLR(Callback):
    """lr(e) = lr_min + (lr0 - lr_min) (1 + cos(pi e / epochs)) / 2 for epoch e.

    Modern semantics: epoch 0 uses lr0.  (The original, on PyTorch 0.3, called
    scheduler.step() at the start of each epoch, so its epoch e used lr(e + 1).)"""

    order = -20

    def __init__(self, lr0: float, lr_min: float, epochs: int):
        self.lr0, self.lr_min, self.epochs = lr0, lr_min, epochs

    def lr_at(self, epoch: int) -> float:
        return self.lr_min + (self.lr0 - self.lr_min) * (1 + math.cos(math.pi * epoch / self.epochs)) / 2

    def epoch_begin(self, e):
        e.lr = self.lr_at(e.epoch)
        for g in e.optimizer.param_groups:
            g["lr"] = e.lr


class GradClip(Callback):
    def __init__(self, max_norm: float):
        self.max_norm = max_norm

    def after_backward(self, e):
        nn.utils.clip_grad_norm_(e.model.parameters(), self.max_norm)


class TrainMetrics(Callback):
    """Loss and accuracy of the weight steps, accumulated on the device (one host
    read per epoch)."""

    def epoch_begin(self, e):
        dev = e.device
        self.loss_sum = torch.zeros((), device=dev)
        self.correct = torch.zeros((), device=dev, dtype=torch.long)
        self.count = 0

    def batch_end(self, e):
        n = e.batch[1].shape[0]
        self.loss_sum += e.loss * n
        self.correct += (e.logits.argmax(1) == e.batch[1]).sum()
        self.count += n

    def running(self) -> dict:
        """Averages so far this epoch (one host read; the Logger asks every report_freq steps)."""
        n = max(self.count, 1)
        return {"loss": self.loss_sum.item() / n, "acc": self.correct.item() / n}

    def epoch_end(self, e):
        if self.count:
            e.metrics["train_loss"] = self.loss_sum.item() / self.count
            e.metrics["train_acc"] = self.correct.item() / self.count


class Validation(Callback):
    """The original's infer(): loss and accuracy on the architecture half, model.eval()
    and no_grad.  ``loader`` is normally a non-augmented, unshuffled loader over that
    half (the original reused its augmented architecture queue, which made the number
    noisier without changing what it measures)."""

    order = 10

    def __init__(self, loader):
        self.loader = loader

    def epoch_end(self, e):
        model = e.model
        model.eval()
        loss_sum = torch.zeros((), device=e.device)
        correct = torch.zeros((), device=e.device, dtype=torch.long)
        n = 0
        with torch.no_grad():
            for x, y in self.loader:
                logits = model(x)
                loss_sum += F.cross_entropy(logits, y, reduction="sum")
                correct += (logits.argmax(1) == y).sum()
                n += y.shape[0]
        model.train()
        e.metrics["valid_loss"] = loss_sum.item() / max(n, 1)
        e.metrics["valid_acc"] = correct.item() / max(n, 1)
        e.metrics["valid_n"] = n


def softmax_alphas(model) -> dict:
    names = ["normal", "reduce"] if len(model.arch_parameters()) == 2 else ["recurrent"]
    return {k: F.softmax(a.detach().float(), dim=-1).cpu().tolist()
            for k, a in zip(names, model.arch_parameters())}


def _tqdm():
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm


class _Bar:
    """A minimal progress bar on a terminal (used when tqdm is not installed)."""

    def __init__(self, total: int, desc: str, stream):
        self.total, self.desc, self.stream, self.n = max(total, 1), desc, stream, 0

    def update(self, k: int = 1) -> None:
        self.n += k
        width = 30
        bar = "#" * int(width * min(self.n, self.total) / self.total)
        print(f"\r{self.desc} [{bar:<{width}}] {self.n}/{self.total}", end="", file=self.stream,
              flush=True)

    def write(self, text: str, file=None) -> None:  # tqdm.write's signature
        print("\r" + " " * (len(self.desc) + 45) + "\r" + text, file=self.stream, flush=True)

    def close(self) -> None:
        print("\r" + " " * (len(self.desc) + 45) + "\r", end="", file=self.stream, flush=True)


def format_alphas(model, digits: int = 3) -> str:
    """softmax(alpha) per cell kind, one row per edge (what the original logged each epoch)."""
    out = []
    for kind, rows in softmax_alphas(model).items():
        out.append(f"  softmax(alpha_{kind}) [edges x ops]:")
        out.extend("    " + " ".join(f"{p:.{digits}f}" for p in row) for row in rows)
    return "\n".join(out)


class Logger(Callback):
    """Rank 0 only.  A progress bar per epoch (tqdm when installed, else a small built-in
    one, on terminals only); every ``report_freq`` steps a line with the running train
    loss/accuracy (the original's ``train %03d`` line); per epoch one line with lr, train
    and valid loss/accuracy and time, then the genotype and softmax(alpha).  Appends the
    epoch's row (metrics, lr, genotype, softmax(alpha)) to ``engine.history``."""

    order = 20

    def __init__(self, report_freq: int = 50, quiet: bool = False, stream=None, alphas: bool = True):
        self.report_freq = report_freq
        self.quiet = quiet
        self.stream = stream
        self.alphas = alphas
        self.bar = None

    @property
    def out(self):
        return self.stream or sys.stdout

    def _active(self) -> bool:
        return not self.quiet and _is_rank0()

    def _print(self, text: str) -> None:
        if not self._active():
            return
        if self.bar is not None:
            self.bar.write(text, file=self.out)
        else:
            print(text, file=self.out, flush=True)

    def search_begin(self, e):
        self.t0 = time.perf_counter()
        order = "second" if getattr(e, "unrolled", False) else "first"
        start = f", resuming at epoch {e.start_epoch + 1}" if e.start_epoch else ""
        self._print(f"search: {e.epochs} epochs x {getattr(e, 'steps_per_epoch', '?')} steps, "
                    f"{order} order, device {getattr(e, 'device', '?')}{start}")

    def epoch_begin(self, e):
        self.t_epoch = time.perf_counter()
        self.bar = None
        if not self._active():
            return
        total = getattr(e, "steps_per_epoch", 0)
        desc = f"epoch {e.epoch + 1}/{e.epochs}"
        if not (hasattr(self.out, "isatty") and self.out.isatty()):
            return  # logs to a file or a pipe: the per-epoch lines only, no bar
        tqdm = _tqdm()
        if tqdm is not None:
            self.bar = tqdm(total=total, desc=desc, leave=False, file=self.out, dynamic_ncols=True)
        else:
            self.bar = _Bar(total, desc, self.out)

    def batch_end(self, e):
        if not self._active():
            return
        if self.bar is not None:
            self.bar.update(1)
        if self.report_freq and e.step % self.report_freq == 0:
            metrics = e.get_callback(TrainMetrics)
            if metrics is not None:
                r = metrics.running()
                self._print(f"train {e.step:03d} loss {r['loss']:.4f} acc {r['acc']:.4f}")
            elif e.loss is not None:
                self._print(f"train {e.step:03d} loss {float(e.loss):.4f}")

    def epoch_end(self, e):
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        genotype = e.model.genotype()
        row = {"epoch": e.epoch, "lr": e.lr, **e.metrics, "seconds": time.perf_counter() - self.t_epoch,
               "genotype": G.to_dict(genotype), "alphas": softmax_alphas(e.model)}
        e.history.append(row)
        m = " ".join(f"{k} {v}" if isinstance(v, int) else f"{k} {v:.4f}" for k, v in e.metrics.items())
        self._print(f"epoch {e.epoch + 1}/{e.epochs} lr {e.lr:.5f} {m} ({row['seconds']:.1f} s)")
        self._print(f"  genotype = {genotype}")
        if self.alphas:
            self._print(format_alphas(e.model))

    def search_end(self, e):
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        self._print(f"search done in {time.perf_counter() - self.t0:.1f} s")


class GenotypeLog(Callback):
    """<save>/genotypes.jsonl: one line per epoch; <save>/genotype.json: the final one.

    At the start the file is rewritten to hold exactly the epochs before
    ``start_epoch`` (none for a fresh search; on a resume the lines already there,
    else those of ``engine.history``), so a rerun in the same directory or a resume
    after a crash never leaves stale or doubled lines."""

    order = 30

    def __init__(self, save_dir: str):
        self.save_dir = save_dir

    @property
    def path(self) -> str:
        return os.path.join(self.save_dir, "genotypes.jsonl")

    def search_begin(self, e):
        if not _is_rank0():
            return
        os.makedirs(self.save_dir, exist_ok=True)
        kept = {}
        if e.start_epoch and os.path.isfile(self.path):
            with open(self.path) as f:
                for line in f:
                    try:
                        rec = json.loads(line)
                    except ValueError:
                        continue  # a line cut short by a crash
                    if isinstance(rec, dict) and isinstance(rec.get("epoch"), int):
                        kept[rec["epoch"]] = rec
        for row in e.history:
            if "genotype" in row and row["epoch"] not in kept:
                kept[row["epoch"]] = {"epoch": row["epoch"], **row["genotype"]}
        with open(self.path, "w") as f:
            for epoch in sorted(k for k in kept if k < e.start_epoch):
                f.write(json.dumps(kept[epoch]) + "\n")

    def epoch_end(self, e):
        if _is_rank0():
            with open(self.path, "a") as f:
                f.write(json.dumps({"epoch": e.epoch, **G.to_dict(e.model.genotype())}) + "\n")

    def search_end(self, e):
        if _is_rank0():
            G.save_json(e.model.genotype(), os.path.join(self.save_dir, "genotype.json"))


def genotype_dot(genotype, kind: str) -> str:
    """Graphviz DOT text of one cell of a CNN genotype (``kind`` normal/reduce)."""
    gene = getattr(genotype, kind)
    concat = getattr(genotype, kind + "_concat")
    lines = [f'digraph {kind} {{', "  rankdir=LR;", '  node [shape=box, style="rounded,filled"];',
             '  "c_{k-2}" [fillcolor=darkseagreen2]; "c_{k-1}" [fillcolor=darkseagreen2];',
             '  "c_{k}" [fillcolor=palegoldenrod];']
    names = ["c_{k-2}", "c_{k-1}"] + [str(i) for i in range(len(gene) // 2)]
    for i in range(len(gene) // 2):
        lines.append(f'  "{i}" [fillcolor=lightblue];')
    for e, (op, j) in enumerate(gene):
        lines.append(f'  "{names[j]}" -> "{e // 2}" [label="{op}"];')
    for c in concat:
        lines.append(f'  "{names[c]}" -> "c_{{k}}";')
    lines.append("}")
    return "\n".join(lines) + "\n"


def rnn_genotype_dot(genotype) -> str:
    """Graphviz DOT text of a recurrent cell: node 0 from (x_t, h_{t-1}), node i+1 from
    its chosen predecessor, h_t the mean of the concat nodes."""
    lines = ["digraph recurrent {", "  rankdir=LR;", '  node [shape=box, style="rounded,filled"];',
             '  "x_{t}" [fillcolor=darkseagreen2]; "h_{t-1}" [fillcolor=darkseagreen2];',
             '  "h_{t}" [fillcolor=palegoldenrod];', '  "0" [fillcolor=lightblue];',
             '  "x_{t}" -> "0"; "h_{t-1}" -> "0";']
    for i, (op, j) in enumerate(genotype.recurrent):
        lines.append(f'  "{i + 1}" [fillcolor=lightblue];')
        lines.append(f'  "{j}" -> "{i + 1}" [label="{op}"];')
    for c in genotype.concat:
        lines.append(f'  "{c}" -> "h_{{t}}";')
    lines.append("}")
    return "\n".join(lines) + "\n"


class CellDrawing(Callback):
    """The final cells as DOT files; PNG and SVG too when graphviz's ``dot`` is installed."""

    order = 40

    def __init__(self, save_dir: str):
        self.save_dir = save_dir

    def search_end(self, e):
        if not _is_rank0():
            return
        genotype = e.model.genotype()
        if hasattr(genotype, "normal"):
            texts = {kind: genotype_dot(genotype, kind) for kind in ("normal", "reduce")}
        else:
            texts = {"recurrent": rnn_genotype_dot(genotype)}
        dot = shutil.which("dot")
        os.makedirs(self.save_dir, exist_ok=True)
        for kind, text in texts.items():
            path = os.path.join(self.save_dir, f"{kind}.dot")
            with open(path, "w") as f:
                f.write(text)
            if dot:
                for fmt in ("png", "svg"):
                    subprocess.run([dot, f"-T{fmt}", path, "-o", path[:-4] + "." + fmt], check=False)


def edge_names(kind: str, n_edges: int) -> list[str]:
    """'from -> to' for each alpha row: CNN cells (inputs c_{k-2}, c_{k-1}, nodes 0..3,
    node i has 2 + i edges) or the recurrent cell (node 0 from x and h, node i from 0..i-1)."""
    names, node = [], 0
    inputs = ["c_{k-2}", "c_{k-1}"] if kind in ("normal", "reduce") else []
    while len(names) < n_edges:
        preds = inputs + [str(j) for j in range(node + (0 if inputs else 1))]
        names += [f"{p} -> {node if inputs else node + 1}" for p in preds]
        node += 1
    return names[:n_edges]


class AlphaPlot(Callback):
    """<save>/alphas.png: softmax(alpha) over the epochs, one small panel per edge (a
    grid per cell kind) with one line per op (needs matplotlib; otherwise one info line)."""

    order = 50

    def __init__(self, save_dir: str, quiet: bool = False, cols: int = 7):
        self.save_dir = save_dir
        self.quiet = quiet
        self.cols = cols

    def search_end(self, e):
        if not _is_rank0() or not e.history:
            return
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
            from matplotlib.ticker import MaxNLocator
        except ImportError:
            if not self.quiet:
                print("info: alphas.png not written: matplotlib is not installed "
                      "(pip install matplotlib, or pip install 'fastdarts[viz]')", file=sys.stderr)
            return
        kinds = list(e.history[0]["alphas"])
        prims = G.PRIMITIVES if "normal" in kinds else G.RNN_PRIMITIVES
        epochs = [r["epoch"] + 1 for r in e.history]
        series = {k: torch.tensor([r["alphas"][k] for r in e.history]) for k in kinds}  # [ep, edges, ops]
        rows = {k: -(-series[k].shape[1] // self.cols) for k in kinds}
        fig, axes = plt.subplots(sum(rows.values()), self.cols, squeeze=False, sharex=True,
                                 figsize=(2.2 * self.cols, 1.8 * sum(rows.values()) + 0.6))
        r0 = 0
        for kind in kinds:
            names = edge_names(kind, series[kind].shape[1])
            for edge in range(rows[kind] * self.cols):
                ax = axes[r0 + edge // self.cols, edge % self.cols]
                if edge >= len(names):
                    ax.axis("off")
                    continue
                for k in range(len(prims)):
                    ax.plot(epochs, series[kind][:, edge, k].tolist(), lw=1)
                ax.set_title(f"{kind} {names[edge]}", fontsize=7)
                ax.tick_params(labelsize=6)
                ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            r0 += rows[kind]
        fig.legend(prims, loc="lower center", ncol=len(prims), fontsize=7)
        fig.suptitle("softmax(alpha) per edge over the epochs", fontsize=9)
        fig.tight_layout(rect=(0, 0.03, 1, 0.98))
        fig.savefig(os.path.join(self.save_dir, "alphas.png"), dpi=80)
        plt.close(fig)


class TensorBoard(Callback):
    """Scalars per epoch when tensorboard is installed; silent otherwise."""

    order = 60

    def __init__(self, save_dir: str):
        self.save_dir = save_dir
        self.writer = None

    def search_begin(self, e):
        if not _is_rank0():
            return
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(os.path.join(self.save_dir, "tb"))
        except Exception:
            self.writer = None

    def epoch_end(self, e):
        if self.writer is not None:
            for k, v in e.metrics.items():
                self.writer.add_scalar(k, v, e.epoch)
            self.writer.add_scalar("lr", e.lr, e.epoch)

    def search_end(self, e):
        if self.writer is not None:
            self.writer.close()
