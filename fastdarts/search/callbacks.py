"""The callbacks of a DARTS search that the original train_search.py does inline:
the architecture step, data-parallel gradient averaging, and the log (progress,
metrics, genotype and softmax(alpha) per epoch).  The files a search writes are
in :mod:`.outputs`; the callbacks every loop shares in :mod:`fastdarts.loop`."""

from __future__ import annotations

import sys
import time

import torch
import torch.nn.functional as F

from .. import distributed
from ..loop.callbacks import TrainMetrics
from ..loop.engine import Callback
from ..loop.progress import progress_bar
from ..space import genotypes as G
from .outputs import edge_names


class ArchitectureUpdate(Callback):
    """The architect step on (this training batch, the next architecture batch),
    eta = the current weight learning rate; first or second order."""

    order = -10

    def batch_begin(self, e):
        if getattr(e, "fused_step", None) is not None:
            return  # the captured/fused step does the architecture update itself
        xv, yv = next(e.valid_iter)
        if e.epoch < getattr(e, "arch_start_epoch", 0):
            return  # warm-up: the weights alone (PC-DARTS draws the batch and skips the step)
        x, y = e.batch
        e.architect.step(x, y, xv, yv, e.lr, e.optimizer, e.unrolled)


class DataParallel(Callback):
    """Average the weight gradients over the ranks before clipping (one collective
    through the Architect's flat buffer); check at each epoch end that alphas and
    weights are still identical everywhere."""

    order = -5  # before GradClip

    def after_backward(self, e):
        distributed.all_reduce_weight_grads_(e.architect)

    def epoch_end(self, e):
        distributed.check_in_sync(e.model)


def alpha_kinds(model) -> list[str]:
    """The name of each alpha tensor: normal/reduce (DARTS CNN), recurrent (RNN), or the
    model's own ``alpha_kinds`` (NB201: one "nb201" cell)."""
    kinds = getattr(model, "alpha_kinds", None)
    if kinds:
        return list(kinds)
    # a CNN model's first two arch parameters are its cells' alphas (PC-DARTS' betas follow)
    return ["recurrent"] if len(model.arch_parameters()) == 1 else ["normal", "reduce"]


def op_columns(kind: str, model=None) -> list[str]:
    """The op names of the alpha columns of ``kind`` (the model's ``op_names`` if it has them)."""
    names = getattr(model, "op_names", None)
    if names is not None:
        return list(names)
    return G.PRIMITIVES if kind in ("normal", "reduce") else G.RNN_PRIMITIVES


def genotype_dict(model, genotype=None) -> dict:
    """``G.to_dict`` of the model's genotype (with the op names of an NB201 cell)."""
    genotype = model.genotype() if genotype is None else genotype
    return G.to_dict(genotype, getattr(model, "op_names", None))


def softmax_alphas(model) -> dict:
    """The op weights per cell kind (:func:`alpha_kinds`) as nested lists:
    ``model.arch_weights(alpha)`` where the model has that hook (softmax in DARTS, sigmoid
    in FairDARTS), else softmax(alpha).  PC-DARTS' betas, which follow the two alphas, are
    left to :func:`edge_weights`."""
    weights = getattr(model, "arch_weights", None)
    with torch.no_grad():
        return {k: (weights(a.detach().float()) if weights is not None
                    else F.softmax(a.detach().float(), dim=-1)).cpu().tolist()
                for k, a in zip(alpha_kinds(model), model.arch_parameters())}


def weights_name(model) -> str:
    """What :func:`softmax_alphas` shows: "softmax(alpha)" or e.g. "sigmoid(alpha)"."""
    return getattr(model, "arch_weights_name", "softmax(alpha)")


def edge_weights(model) -> dict | None:
    """PC-DARTS' edge weights (each node's softmax of its edges' betas) per cell kind, or
    None for a model without betas."""
    if not callable(getattr(model, "edge_weights", None)) or not hasattr(model, "betas_normal"):
        return None
    return {k: model.edge_weights(getattr(model, f"betas_{k}").detach().float()).cpu().tolist()
            for k in ("normal", "reduce")}


def format_edge_weights(weights: dict, digits: int = 3) -> str:
    """One line per cell kind: the edge weights, node by node ('c_{k-2} -> 0' ... order)."""
    out = []
    for kind, row in weights.items():
        names = edge_names(kind, len(row))
        cells = ", ".join(f"{n}: {p:.{digits}f}" for n, p in zip(names, row))
        out.append(f"  edge weights ({kind}; per node softmax(beta)): {cells}")
    return "\n".join(out)


def short_op(name: str) -> str:
    """A column header for an op: sep_conv_3x3 -> sep3x3, max_pool_3x3 -> max3x3,
    skip_connect -> skip (the log's alpha table stays within ~90 columns)."""
    return name.replace("_conv_", "").replace("_pool_", "").replace("_connect", "")


def format_alphas(model, digits: int = 3) -> str:
    """softmax(alpha) per cell kind (what the original logged each epoch), as a table:
    a header of op names, one row per edge named 'from -> to', ``*`` after the op
    that leads on the edge (the one the genotype would pick among the non-'none' ops
    is usually it)."""
    out = []
    for kind, rows in softmax_alphas(model).items():
        prims = op_columns(kind, model)
        names = edge_names(kind, len(rows))
        width = max(digits + 3, *(len(short_op(p)) + 1 for p in prims))
        label = max(len(n) for n in names) + 2
        name = weights_name(model)
        ref = f"; uniform = {1 / len(prims):.3f}" if name == "softmax(alpha)" else ""
        out.append(f"  {name.replace('alpha', f'alpha_{kind}')}, edges x ops (* the largest{ref}):")
        header = "".join(short_op(p).rjust(width) + " " for p in prims)
        out.append(("    " + "edge".ljust(label) + header).rstrip())
        for name, row in zip(names, rows):
            best = max(range(len(row)), key=row.__getitem__)
            cells = "".join(f"{p:.{digits}f}".rjust(width) + ("*" if k == best else " ")
                            for k, p in enumerate(row))
            out.append("    " + name.ljust(label) + cells.rstrip())
    return "\n".join(out)


def _kv(metrics: dict) -> str:
    return " ".join(f"{k}={v}" if isinstance(v, int) else f"{k}={v:.4f}" for k, v in metrics.items())


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
        return not self.quiet and distributed.is_rank0()

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
        self.bar = progress_bar(total, desc, self.out)

    def batch_end(self, e):
        if not self._active():
            return
        if self.bar is not None:
            self.bar.update(1)
        if self.report_freq and e.step % self.report_freq == 0:
            metrics = e.get_callback(TrainMetrics)
            if metrics is not None:
                r = metrics.running()
                self._print(f"train step={e.step:03d} loss={r['loss']:.4f} acc={r['acc']:.4f}")
            elif e.loss is not None:
                self._print(f"train step={e.step:03d} loss={float(e.loss):.4f}")

    def epoch_end(self, e):
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        genotype = e.model.genotype()
        row = {"epoch": e.epoch, "lr": e.lr, **e.metrics, "seconds": time.perf_counter() - self.t_epoch,
               "genotype": genotype_dict(e.model, genotype), "alphas": softmax_alphas(e.model)}
        betas = edge_weights(e.model)
        if betas is not None:
            row["edge_weights"] = betas
        e.history.append(row)
        self._print(f"epoch {e.epoch + 1}/{e.epochs} lr={e.lr:.5f} {_kv(e.metrics)} "
                    f"seconds={row['seconds']:.1f}")
        self._print(f"  genotype = {genotype}")
        if self.alphas:
            self._print(format_alphas(e.model))
            if betas is not None:
                self._print(format_edge_weights(betas))

    def search_end(self, e):
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        self._print(f"search done in {time.perf_counter() - self.t0:.1f} s")
