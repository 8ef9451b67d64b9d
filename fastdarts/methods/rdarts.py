"""R-DARTS (Zela et al., "Understanding and Robustifying Differentiable Architecture
Search", ICLR 2020; code automl/RobustDARTS, src/search/train_search.py, analyze.py,
utils.py ``EVLocalAvg``, args.py): the Hessian eigenvalue monitor, DARTS-ES and the
two regularisers.

* Monitor: every ``every`` epochs (epoch % every == 0, and the last epoch, as the
  code's ``--report_freq_hessian``), the largest eigenvalue of
  H = d^2/d alpha^2 [L_val + arch_weight_decay/2 * |alpha|^2] over all alphas (the code
  differentiates grad + arch_weight_decay * alpha, so H includes arch_weight_decay * I),
  by power iteration on exact Hessian-vector products (double backward) where the code
  built the whole matrix and took max(eigvals).  Batch: the first ``batch_size``
  images of the architecture half, unaugmented, the same at every epoch (the code used
  the epoch's last augmented architecture batch).  The model is in training mode, as
  in the code; its BatchNorm statistics and the RNG are left as they were.
* DARTS-ES (``EVLocalAvg.update`` / ``early_stop``): local averages of the eigenvalues
  over ``window`` values; at epoch e (not the last) with la = e - every*floor(window/2),
  once la - every*delta >= es_start_epoch, stop if avg[-1] / avg[-1-delta] > factor;
  the result is the genotype of epoch la - every*delta.  Defaults: window 5, delta 4,
  factor 1.3, es_start_epoch 10; the ES/ADA scripts use --report_freq_hessian 2.
* L2: a larger ``--weight_decay``; R-DARTS(L2) searched with 3e-4, 9e-4, 27e-4,
  81e-4, 243e-4 (scripts/start_search.sh, experiments/search_logs).
* Drop path in the supernet (R-DARTS(DP)): ``--search_drop_path p``, scheduled as the
  code's ``drop_path_prob * epoch / (epochs - 1)``, on each edge's mixed output (the
  code's Cell.forward) or, with ``--search_drop_path_on op``, on each op but identity and
  none; the values searched: 0.2, 0.4, 0.6.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable

import torch

from .. import distributed
from ..config import ConfigError
from ..loop.engine import Callback
from ..space import genotypes as G
from . import Method, register

# -- the eigenvalue ---------------------------------------------------------------------------


class ValidationHessian:
    """Exact products with H = d^2/d alpha^2 [loss(x, y) + weight_decay/2 * |alpha|^2] for
    the flattened alphas of ``model`` at its current weights: one forward and one backward
    with ``create_graph`` here, then one double backward per :meth:`hvp`."""

    def __init__(self, model, x: torch.Tensor, y: torch.Tensor, weight_decay: float = 0.0):
        self.alphas = list(model.arch_parameters())
        self.weight_decay = weight_decay
        loss = model._loss(x, y)
        self.grad = self._flat(torch.autograd.grad(loss, self.alphas, create_graph=True, allow_unused=True))
        self.n = self.grad.numel()

    def _flat(self, grads) -> torch.Tensor:
        # an alpha the loss does not reach (no reduction cell) has a zero row block
        return torch.cat([(torch.zeros_like(a) if g is None else g).reshape(-1)
                          for g, a in zip(grads, self.alphas, strict=True)])

    def hvp(self, v: torch.Tensor) -> torch.Tensor:
        """H v for a flat v [n] (no graph kept)."""
        hv = self._flat(torch.autograd.grad(self.grad @ v, self.alphas, retain_graph=True,
                                            allow_unused=True))
        return hv + self.weight_decay * v if self.weight_decay else hv


def power_iteration(matvec: Callable[[torch.Tensor], torch.Tensor], v0: torch.Tensor,
                    iters: int = 20, tol: float = 1e-4) -> tuple[float, torch.Tensor, int]:
    """(Rayleigh quotient v.Av, v, iterations) for the eigenvalue of the symmetric A largest
    in magnitude; stops when the quotient changes by at most ``tol`` relative."""
    v = v0 / v0.norm()
    lam = math.nan
    for i in range(1, iters + 1):
        w = matvec(v)
        new = float(v @ w)  # a host read per iteration: the monitor runs once per epoch
        norm = w.norm()
        if float(norm) == 0.0:
            return 0.0, v, i
        v = w / norm
        done = abs(new - lam) <= tol * abs(new)
        lam = new
        if done:
            break
    return lam, v, i


def largest_eigenvalue(matvec: Callable[[torch.Tensor], torch.Tensor], v0: torch.Tensor,
                       iters: int = 20, tol: float = 1e-4) -> tuple[float, int]:
    """(max eigenvalue, matvecs used) of a symmetric A, the code's ``max(eigvals(H))``: power
    iteration finds the one largest in magnitude; if that one is negative, a second run on
    A - lam I (whose eigenvalues are then all >= 0) finds the largest."""
    lam, _, k = power_iteration(matvec, v0, iters, tol)
    if lam >= 0:
        return lam, k
    shifted, _, k2 = power_iteration(lambda u: matvec(u) - lam * u, v0, iters, tol)
    return shifted + lam, k + k2


def hessian_eigenvalue(model, x: torch.Tensor, y: torch.Tensor, weight_decay: float = 0.0,
                       iters: int = 20, tol: float = 1e-4, seed: int = 0) -> tuple[float, int]:
    """The largest eigenvalue of the validation Hessian w.r.t. all alphas (see the module
    docstring) on (x, y), and the Hessian-vector products it took.  The model's
    BatchNorm buffers and the global RNG (drop-path masks) come back as they were."""
    buffers = [b.detach().clone() for b in model.buffers()]
    devices = [x.device] if x.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        H = ValidationHessian(model, x, y, weight_decay)
        a = H.alphas[0]
        v0 = torch.randn(H.n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        lam, k = largest_eigenvalue(H.hvp, v0.to(device=a.device, dtype=a.dtype), iters, tol)
    with torch.no_grad():
        for b, saved in zip(model.buffers(), buffers, strict=True):
            b.copy_(saved)
    return lam, k


# -- DARTS-ES ---------------------------------------------------------------------------------


class EigenvalueEarlyStop:
    """The code's ``EVLocalAvg`` rule, step for step (see the module docstring).

    ``update(epoch, ev, genotype)`` after each eigenvalue; ``should_stop(epoch)`` then
    says whether to stop (never at the last epoch, which the code does not check) and
    sets ``stop_epoch`` (the epoch whose genotype is the result) and ``stop_genotype``."""

    def __init__(self, epochs: int, every: int, window: int = 5, factor: float = 1.3,
                 start_epoch: int = 10, delta: int = 4):
        if every < 1 or window < 1 or delta < 1:
            raise ValueError(f"every, window and delta must be >= 1, got {every}, {window}, {delta}")
        self.epochs, self.every, self.window = epochs, every, window
        self.factor, self.start_epoch, self.delta = factor, start_epoch, delta
        self.ev: list[float] = []
        self.local_avg: list[float] = []
        self.la_epochs: dict[int, int] = {}
        self.genotypes: dict = {}
        self.start_idx, self.end_idx = 0, window
        self.stop_epoch: int | None = None
        self.stop_genotype = None
        self.ratio: float | None = None

    def update(self, epoch: int, ev: float, genotype=None) -> None:
        self.ev.append(ev)
        self.genotypes[epoch] = genotype
        half_up = math.ceil(self.window / 2)
        if len(self.ev) >= half_up and epoch < self.epochs - 1:
            if len(self.ev) < self.window:  # the window fills: mean of all so far
                self.local_avg.append(sum(self.ev) / len(self.ev))
            else:
                part = self.ev[self.start_idx:self.end_idx]
                self.local_avg.append(sum(part) / len(part))
                self.start_idx += 1
                self.end_idx += 1
            self.la_epochs[epoch] = epoch - self.every * (self.window // 2)
        elif len(self.ev) < half_up:
            self.la_epochs[epoch] = -1
        elif epoch == self.epochs - 1:  # the code's closing averages of the shrinking window
            for _ in range(half_up):
                part = self.ev[self.start_idx:self.end_idx + 1]
                self.local_avg.append(sum(part) / len(part))
                self.start_idx += 1

    def should_stop(self, epoch: int) -> bool:
        if epoch == self.epochs - 1 or epoch not in self.la_epochs:
            return False
        previous_epoch = self.la_epochs[epoch] - self.every * self.delta
        if previous_epoch < self.start_epoch:
            return False
        self.ratio = self.local_avg[-1] / self.local_avg[-1 - self.delta]
        if self.ratio > self.factor:
            self.stop_epoch = previous_epoch
            self.stop_genotype = self.genotypes.get(previous_epoch)
            return True
        return False


# -- the callbacks ----------------------------------------------------------------------------


def fixed_batch(loader, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``n`` examples of a DeviceLoader's set, normalised, not augmented."""
    x = (loader.images[:n].float() - loader.mean) / loader.std
    if getattr(loader, "channels_last", False):
        x = x.contiguous(memory_format=torch.channels_last)
    return x, loader.labels[:n]


class HessianMonitor(Callback):
    """Every ``every`` epochs and at the last: the largest eigenvalue of the validation
    Hessian w.r.t. the alphas (:func:`hessian_eigenvalue`), in ``engine.metrics`` (so in the
    epoch line and ``engine.history``), a ``hessian`` line, ``<save>/eigenvalues.json``
    and, at the end, ``<save>/eigenvalues.png`` (matplotlib).  With ``early_stop``, the
    DARTS-ES rule sets ``engine.stop`` and records ``engine.early_stop`` (the epoch it
    decided at, the epoch whose genotype is the result, the ratio); the search's result
    (genotype.json, the cells, ``engine.genotype``) is then that epoch's genotype."""

    order = 15  # after Validation (10), before the Logger (20) writes the history row

    def __init__(self, every: int, save_dir: str | None = None, *, iters: int = 20, tol: float = 1e-4,
                 batch_size: int = 64, weight_decay: float = 1e-3, early_stop: bool = False,
                 window: int = 5, factor: float = 1.3, es_start_epoch: int = 10, delta: int = 4,
                 quiet: bool = False):
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        self.every, self.save_dir, self.iters, self.tol = every, save_dir, iters, tol
        self.batch_size, self.early_stop, self.quiet = batch_size, early_stop, quiet
        self.weight_decay = weight_decay  # the architecture's (H includes weight_decay * I)
        self.es = dict(window=window, factor=factor, start_epoch=es_start_epoch, delta=delta)
        self.rule: EigenvalueEarlyStop | None = None
        self.values: list[tuple[int, float]] = []
        self.batch = None

    def _print(self, text: str) -> None:
        if not self.quiet and distributed.is_rank0():
            print(text, flush=True)

    def search_begin(self, e):
        self.rule = EigenvalueEarlyStop(e.epochs, self.every, **self.es)
        self.values = []
        for row in e.history:  # a resumed search: the eigenvalues so far, in order
            if "eigenvalue" in row:
                self.values.append((row["epoch"], row["eigenvalue"]))
                genotype = G.from_dict(row["genotype"]) if "genotype" in row else None
                self.rule.update(row["epoch"], row["eigenvalue"], genotype)
        self.batch = fixed_batch(e.valid_loader, self.batch_size)

    def due(self, epoch: int, epochs: int) -> bool:
        return epoch % self.every == 0 or epoch == epochs - 1

    def epoch_end(self, e):
        if not self.due(e.epoch, e.epochs):
            return
        t0 = time.perf_counter()
        ev, products = hessian_eigenvalue(e.model, *self.batch, self.weight_decay, self.iters, self.tol)
        e.metrics["eigenvalue"] = ev
        self.values.append((e.epoch, ev))
        self._print(f"hessian epoch={e.epoch + 1} eigenvalue={ev:.6g} products={products} "
                    f"batch={self.batch[1].shape[0]} seconds={time.perf_counter() - t0:.1f}")
        self.rule.update(e.epoch, ev, e.model.genotype())
        if self.early_stop and self.rule.should_stop(e.epoch):
            e.stop = True
            e.early_stop = {"decided_at_epoch": e.epoch, "stop_epoch": self.rule.stop_epoch,
                            "ratio": self.rule.ratio, "factor": self.es["factor"]}
            self._print(f"early stop (DARTS-ES): epoch={e.epoch + 1} local-average ratio="
                        f"{self.rule.ratio:.4f} > factor={self.es['factor']}; result: the genotype of "
                        f"epoch {self.rule.stop_epoch + 1}")
        self._write_json(e)

    def _write_json(self, e) -> None:
        if self.save_dir is None or not distributed.is_rank0():
            return
        os.makedirs(self.save_dir, exist_ok=True)
        record = {"every": self.every, "batch": f"first {self.batch[1].shape[0]} images of the "
                  "architecture half, unaugmented", "epochs": [ep for ep, _ in self.values],
                  "eigenvalues": [v for _, v in self.values], "local_averages": self.rule.local_avg,
                  "early_stop": getattr(e, "early_stop", None)}
        with open(os.path.join(self.save_dir, "eigenvalues.json"), "w") as f:
            json.dump(record, f, indent=1)

    def search_end(self, e):
        stop = getattr(e, "early_stop", None)
        if stop is not None and self.rule.stop_genotype is not None:
            e.final_genotype = self.rule.stop_genotype
        if self.save_dir is None or not self.values or not distributed.is_rank0():
            return
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            self._print("info: eigenvalues.png not written: matplotlib is not installed "
                        "(pip install matplotlib, or pip install 'fastdarts[viz]')")
            return
        fig, ax = plt.subplots(figsize=(5, 3.2), layout="constrained")
        ax.plot([ep + 1 for ep, _ in self.values], [v for _, v in self.values], "o-",
                label="largest eigenvalue of the validation Hessian (alpha)")
        if stop is not None:
            ax.axvline(stop["stop_epoch"] + 1, color="tab:red", ls="--", label="DARTS-ES result")
        ax.set_xlabel("epoch")
        ax.set_ylabel("eigenvalue")
        ax.legend(fontsize=7)
        fig.savefig(os.path.join(self.save_dir, "eigenvalues.png"), dpi=120)
        plt.close(fig)


class SearchDropPath(Callback):
    """R-DARTS(DP): at each epoch the supernet's drop-path probability is
    ``prob * epoch / (epochs - 1)`` (the code's schedule: 0 at the first epoch, ``prob``
    at the last), in ``engine.metrics["drop_path"]``."""

    order = -20

    def __init__(self, prob: float, on: str = "edge"):
        self.prob, self.on = prob, on

    def epoch_begin(self, e):
        p = self.prob * e.epoch / max(e.epochs - 1, 1)
        e.model.set_search_drop_path(p, self.on)
        e.metrics["drop_path"] = p


def search_callbacks(cfg) -> list:
    """The monitor and the drop-path schedule that ``cfg`` asks for (any method)."""
    out: list = []
    if cfg.hessian_every:
        out.append(HessianMonitor(cfg.hessian_every, cfg.save, iters=cfg.hessian_iters, tol=cfg.hessian_tol,
                                  batch_size=cfg.batch_size, weight_decay=cfg.arch_weight_decay,
                                  early_stop=cfg.early_stop,
                                  window=cfg.es_window, factor=cfg.es_factor,
                                  es_start_epoch=cfg.es_start_epoch, delta=cfg.es_delta, quiet=cfg.quiet))
    if cfg.search_drop_path:
        out.append(SearchDropPath(cfg.search_drop_path, cfg.search_drop_path_on))
    return out


def check(cfg) -> None:
    """ConfigError (one line) for monitor/ES/drop-path settings that cannot run."""
    if cfg.early_stop and not cfg.hessian_every:
        raise ConfigError("--early_stop (DARTS-ES) needs the eigenvalues: add --hessian_every N "
                          "(R-DARTS used 2)")
    if cfg.search_drop_path and cfg.cuda_graph:
        raise ConfigError("--search_drop_path changes every epoch and draws masks in the forward, which a "
                          "captured step cannot follow; drop --cuda_graph")


register(Method(
    name="r-darts",
    paper="Zela et al., ICLR 2020",
    summary="DARTS with the Hessian eigenvalue monitor and DARTS-ES early stopping (the paper's runs "
            "were second order: add --unrolled)",
    defaults={"hessian_every": 2, "early_stop": True},
    small_defaults={"hessian_every": 1, "early_stop": True},
    check=check,
))

__all__ = ["ValidationHessian", "power_iteration", "largest_eigenvalue", "hessian_eigenvalue",
           "EigenvalueEarlyStop", "HessianMonitor", "SearchDropPath", "search_callbacks", "check",
           "fixed_batch"]
