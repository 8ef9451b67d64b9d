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

from .. import genotypes as G
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

    def epoch_end(self, e):
        if self.count:
            e.metrics["train_loss"] = self.loss_sum.item() / self.count
            e.metrics["train_acc"] = self.correct.item() / self.count


class Validation(Callback):
    """The original's infer(): loss and accuracy on the architecture half, eval mode."""

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


def softmax_alphas(model) -> dict:
    names = ["normal", "reduce"] if len(model.arch_parameters()) == 2 else ["recurrent"]
    return {k: F.softmax(a.detach().float(), dim=-1).cpu().tolist()
            for k, a in zip(names, model.arch_parameters())}


class Logger(Callback):
    """A progress bar per epoch and one log line per epoch (rank 0 only); appends the
    epoch's row (metrics, lr, genotype, softmax(alpha)) to ``engine.history``."""

    order = 20

    def __init__(self, report_freq: int = 50, quiet: bool = False, stream=None):
        self.report_freq = report_freq
        self.quiet = quiet
        self.stream = stream or sys.stdout

    def _print(self, *a):
        if not self.quiet and _is_rank0():
            print(*a, file=self.stream, flush=True)

    def search_begin(self, e):
        self.t0 = time.perf_counter()
        self._print(f"search: {e.epochs} epochs x {e.steps_per_epoch} steps, "
                    f"{'second' if e.unrolled else 'first'} order, device {e.device}")

    def epoch_begin(self, e):
        self.t_epoch = time.perf_counter()

    def batch_end(self, e):
        if self.quiet or not _is_rank0() or not sys.stdout.isatty():
            return
        done = e.step + 1
        width = 30
        bar = "#" * int(width * done / e.steps_per_epoch)
        print(f"\repoch {e.epoch + 1}/{e.epochs} [{bar:<{width}}] {done}/{e.steps_per_epoch}",
              end="", file=self.stream, flush=True)

    def epoch_end(self, e):
        genotype = e.model.genotype()
        row = {"epoch": e.epoch, "lr": e.lr, **e.metrics, "seconds": time.perf_counter() - self.t_epoch,
               "genotype": G.to_dict(genotype), "alphas": softmax_alphas(e.model)}
        e.history.append(row)
        if not self.quiet and _is_rank0() and sys.stdout.isatty():
            print("\r", end="", file=self.stream)
        m = " ".join(f"{k} {v:.4f}" for k, v in e.metrics.items())
        self._print(f"epoch {e.epoch + 1}/{e.epochs} lr {e.lr:.5f} {m} ({row['seconds']:.1f} s)")
        self._print(f"  genotype = {genotype}")

    def search_end(self, e):
        self._print(f"search done in {time.perf_counter() - self.t0:.1f} s")


class GenotypeLog(Callback):
    """<save>/genotypes.jsonl: one line per epoch; <save>/genotype.json: the final one."""

    order = 30

    def __init__(self, save_dir: str):
        self.save_dir = save_dir

    def epoch_end(self, e):
        if _is_rank0():
            with open(os.path.join(self.save_dir, "genotypes.jsonl"), "a") as f:
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
        for kind, text in texts.items():
            path = os.path.join(self.save_dir, f"{kind}.dot")
            with open(path, "w") as f:
                f.write(text)
            if dot:
                for fmt in ("png", "svg"):
                    subprocess.run([dot, f"-T{fmt}", path, "-o", path[:-4] + "." + fmt], check=False)


class AlphaPlot(Callback):
    """A PNG of softmax(alpha) per edge and op over the epochs (needs matplotlib)."""

    order = 50

    def __init__(self, save_dir: str):
        self.save_dir = save_dir

    def search_end(self, e):
        if not _is_rank0() or not e.history:
            return
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            return
        kinds = list(e.history[0]["alphas"])
        prims = G.PRIMITIVES if "normal" in kinds else G.RNN_PRIMITIVES
        fig, axes = plt.subplots(len(kinds), 1, figsize=(10, 4 * len(kinds)), squeeze=False)
        epochs = [r["epoch"] + 1 for r in e.history]
        for ax, kind in zip(axes[:, 0], kinds):
            series = torch.tensor([r["alphas"][kind] for r in e.history])  # [epochs, edges, ops]
            for k, name in enumerate(prims):
                ax.plot(epochs, series[:, :, k].mean(1).tolist(), label=name)
            ax.set_title(f"{kind} cell: softmax(alpha), mean over edges")
            ax.set_xlabel("epoch")
            ax.legend(fontsize=7, ncol=4)
        fig.tight_layout()
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
