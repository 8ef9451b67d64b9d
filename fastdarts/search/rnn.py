"""The RNN search (the original rnn/train_search.py) on the callback engine.

Per batch, as the original: draw the sequence length (bptt, or bptt/2 with
probability 5%, from numpy's RNG), scale the learning rate by seq_len/bptt, take
the architecture batch from the search split at the same position (full bptt),
detach the hidden states, run the architect step (which returns the next
validation hidden state), then the weight step with activation (alpha) and
temporal activation (beta) regularisation, gradient clipping and SGD, and put
the learning rate back.  Hidden states start at zero each epoch.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .. import distributed
from ..config import device_setting, overwrite_setting, resume_setting, setting, trust_checkpoint_setting
from ..data import Corpus, batchify, get_batch, pydoc_corpus
from ..loop import callbacks as loop_cb
from ..loop.engine import Callback, Engine
from ..loop.rnn import RNNTrainMetrics, SequenceLengthLR, repackage_hidden
from ..loop.state import seed_everything
from ..space import genotypes as G
from . import callbacks as cb
from . import outputs
from .checkpoint import Checkpoint, load_checkpoint, restore
from .models import model_classes


@dataclass
class RNNSearchConfig:
    """The original rnn/train_search.py's settings; ``small``: the embedded default
    (Python's help texts, ~95k training tokens), a search of about a minute on 2 CPU cores."""

    data: str | None = setting(None, "directory with ptb.train.txt, ptb.valid.txt, ptb.test.txt; "
                               "without it, the embedded corpus of Python's help texts")
    emsize: int = setting(300, "embedding size", small=32, bounds="[1, inf)")
    nhid: int = setting(300, "hidden size", small=32, bounds="[1, inf)")
    nhidlast: int = setting(300, "size of the last hidden layer", small=32, bounds="[1, inf)")
    lr: float = setting(20.0, "initial learning rate", bounds="[0, inf)")
    clip: float = setting(0.25, "gradient clipping norm", bounds="(0, inf)")
    epochs: int = setting(50, "search epochs", small=2, bounds="[1, inf)")
    batch_size: int = setting(256, "batch size (per rank)", small=32, bounds="[1, inf)")
    bptt: int = setting(35, "sequence length", small=20, bounds="[2, inf)")
    dropout: float = setting(0.75, "dropout of the RNN output", bounds="[0, 1)")
    dropouth: float = setting(0.25, "dropout of the hidden states", bounds="[0, 1)")
    dropoutx: float = setting(0.75, "dropout of the input to the cell", bounds="[0, 1)")
    dropouti: float = setting(0.2, "dropout of the embedding output", bounds="[0, 1)")
    dropoute: float = setting(0.0, "dropout of whole words in the embedding", bounds="[0, 1)")
    seed: int = setting(3, "random seed", bounds="[0, 4294967295]")
    log_interval: int = setting(50, "steps between progress lines", flags=("--log-interval",),
                                bounds="[0, inf)")
    save: str = setting("search-rnn", "output directory")
    alpha: float = setting(0.0, "activation regularisation", bounds="[0, inf)")
    beta: float = setting(1e-3, "temporal activation regularisation", bounds="[0, inf)")
    wdecay: float = setting(5e-7, "weight decay", bounds="[0, inf)")
    unrolled: bool = setting(False, "second-order architecture gradient")
    arch_wdecay: float = setting(1e-3, "architecture weight decay", bounds="[0, inf)")
    arch_lr: float = setting(3e-3, "architecture learning rate (Adam)", bounds="[0, inf)")
    impl: str = setting("fused", "fused (fastdarts.nn + fastdarts.Architect) or the reference port",
                        choices=("fused", "reference"))
    device: str | None = device_setting()
    resume: str | None = resume_setting()
    trust_checkpoint: bool = trust_checkpoint_setting()
    overwrite: bool = overwrite_setting("search")
    quiet: bool = setting(False, "print nothing")
    eval_batch_size: int = setting(10, "validation batch size (the original fixes it at 10)",
                                   bounds="[1, inf)")
    max_steps_per_epoch: int | None = setting(None, "cut epochs short", small=25, bounds="[1, inf)")
    tied_embedding_step: str = setting(
        "original", "second order: 'original' keeps the tied embedding/decoder weight un-stepped "
        "in the unrolled model, as the original's state_dict reload does; 'consistent' steps it "
        "like every other weight (see fastdarts.RNNArchitect)", choices=("original", "consistent"))
    cuda_graph: bool = setting(False, "capture each search step in a CUDA graph, one per sequence "
                               "length met, at most max_graphs (fastdarts.rnn_step.RNNSearchStep)")
    max_graphs: int = setting(8, "CUDA graphs kept at most; eager steps beyond", cli=False, bounds="[1, inf)")


class RNNSearch(Engine):
    def __init__(self, model, architect, optimizer, train_data, search_data, *, cfg, device,
                 callbacks=()):
        super().__init__(cfg.epochs, callbacks)
        self.model, self.architect, self.optimizer = model, architect, optimizer
        self.train_data, self.search_data = train_data, search_data
        self.cfg = cfg
        self.device = torch.device(device)
        self.unrolled = cfg.unrolled
        self.lr = cfg.lr
        self.loaders = {}
        n = (train_data.size(0) - 2 + cfg.bptt - 1) // cfg.bptt
        self.steps_per_epoch = min(n, cfg.max_steps_per_epoch or n)
        self.config_key = {}
        self.fused_step = None  # an RNNSearchStep (--cuda_graph): the whole step in one call

    def train_batches(self):
        cfg = self.cfg
        i, k = 0, 0
        while i < self.train_data.size(0) - 1 - 1:
            if cfg.max_steps_per_epoch is not None and k >= cfg.max_steps_per_epoch:
                break
            bptt = cfg.bptt if np.random.random() < 0.95 else cfg.bptt / 2.0
            seq_len = int(bptt)
            data, targets = get_batch(self.train_data, i, seq_len)
            data_valid, targets_valid = get_batch(self.search_data, i % (self.search_data.size(0) - 1),
                                                  cfg.bptt)
            yield seq_len, data, targets, data_valid, targets_valid
            i += seq_len
            k += 1

    def one_batch(self, batch):
        cfg = self.cfg
        _, data, targets, data_valid, targets_valid = batch
        if self.fused_step is not None:  # architecture and weight step, captured per length
            self.loss, self.hidden, self.hidden_valid, self.arch_grad_norm = self.fused_step(
                self.hidden, data, targets, self.hidden_valid, data_valid, targets_valid.reshape(-1),
                self.optimizer.param_groups[0]["lr"])
            self.fire("after_arch_step")
            self.fire("after_weight_step")
            return
        self.fire("after_arch_step")
        self.model.train()
        self.optimizer.zero_grad()
        self.hidden = repackage_hidden(self.hidden)
        log_prob, self.hidden, rnn_hs, dropped_rnn_hs = self.model(data, self.hidden, return_h=True)
        raw_loss = F.nll_loss(log_prob.view(-1, log_prob.size(2)), targets)
        loss = raw_loss
        if cfg.alpha > 0:
            loss = loss + sum(cfg.alpha * h.pow(2).mean() for h in dropped_rnn_hs[-1:])
        loss = loss + sum(cfg.beta * (h[1:] - h[:-1]).pow(2).mean() for h in rnn_hs[-1:])
        loss.backward()
        self.fire("after_backward")
        self.optimizer.step()
        self.loss = raw_loss.detach()
        self.fire("after_weight_step")


class HiddenStates(Callback):
    """Zero hidden states at the start of each epoch (the original's train())."""

    order = -40

    def epoch_begin(self, e):
        e.hidden = e.model.init_hidden(e.cfg.batch_size)
        e.hidden_valid = e.model.init_hidden(e.cfg.batch_size)


class RNNArchitectureUpdate(Callback):
    order = -10

    def batch_begin(self, e):
        if e.fused_step is not None:  # the captured step does it
            return
        _, data, targets, data_valid, targets_valid = e.batch
        e.hidden = repackage_hidden(e.hidden)
        e.hidden_valid = repackage_hidden(e.hidden_valid)
        e.hidden_valid, e.arch_grad_norm = e.architect.step(
            e.hidden, data, targets, e.hidden_valid, data_valid, targets_valid.reshape(-1),
            e.optimizer, e.unrolled)


class RNNValidation(Callback):
    """The original's evaluate() on the validation split (eval mode, batch 10)."""

    order = 10

    def __init__(self, data):
        self.data = data

    def epoch_end(self, e):
        model = e.model
        model.eval()
        total, bptt = 0.0, e.cfg.bptt
        hidden = model.init_hidden(self.data.size(1))
        with torch.no_grad():
            for i in range(0, self.data.size(0) - 1, bptt):
                data, targets = get_batch(self.data, i, bptt)
                log_prob, hidden = model(data, hidden)
                total = total + len(data) * F.nll_loss(log_prob.view(-1, log_prob.size(2)), targets)
        model.train()
        loss = float(total) / len(self.data)
        e.metrics["valid_loss"] = loss
        e.metrics["valid_ppl"] = math.exp(min(loss, 50))


class _RNNArgs:
    def __init__(self, cfg):
        self.wdecay, self.clip = cfg.wdecay, cfg.clip
        self.arch_lr, self.arch_wdecay = cfg.arch_lr, cfg.arch_wdecay


def build(cfg: RNNSearchConfig, callbacks=()):
    outputs.check_save_dir(cfg)  # before anything is written
    device = torch.device(cfg.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    rank, world_size = distributed.init()
    if world_size > 1 and cfg.impl != "fused":
        raise ValueError("a data-parallel search needs --impl fused (the reference Architect has no "
                         "gradient averaging)")
    seed_everything(cfg.seed)  # the same seed on every rank: identical weights, alphas, seq_len draws
    corpus = Corpus(cfg.data) if cfg.data else pydoc_corpus()
    # --batch_size is per rank: the global batch has batch_size x world columns and
    # rank r takes its contiguous block of them (its own hidden states), as one process
    # with Architect(micro_batches=world) splits the columns.
    B = cfg.batch_size
    train_data = batchify(corpus.train, B * world_size, device)
    search_data = batchify(corpus.valid, B * world_size, device)
    if world_size > 1:
        cols = slice(rank * B, (rank + 1) * B)
        train_data, search_data = train_data[:, cols].contiguous(), search_data[:, cols].contiguous()
    val_data = batchify(corpus.valid, cfg.eval_batch_size, device)  # every rank: the whole split
    Model, Architect = model_classes("rnn", cfg.impl)
    model = Model(len(corpus.dictionary), cfg.emsize, cfg.nhid, cfg.nhidlast, cfg.dropout,
                  cfg.dropouth, cfg.dropoutx, cfg.dropouti, cfg.dropoute).to(device)
    if world_size > 1:  # independent dropout masks per rank (numpy, for seq_len, stays shared)
        torch.manual_seed(distributed.rank_seed(cfg.seed, rank))
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr, weight_decay=cfg.wdecay)
    capture = cfg.cuda_graph and cfg.impl == "fused" and device.type == "cuda" and world_size == 1
    if cfg.cuda_graph and not capture and not cfg.quiet:
        print("note: --cuda_graph needs --impl fused on one CUDA device; running eagerly")
    architect = Architect(model, _RNNArgs(cfg), tied_embedding_step=cfg.tied_embedding_step,
                          **({"capturable": True} if capture else {}))
    fused_step = None
    if capture:
        from ..rnn_step import RNNSearchStep

        fused_step = RNNSearchStep(model, architect, optimizer, unrolled=cfg.unrolled, clip=cfg.clip,
                                   alpha=cfg.alpha, beta=cfg.beta, cuda_graph=True,
                                   max_graphs=cfg.max_graphs)
    os.makedirs(cfg.save, exist_ok=True)
    cbs = [HiddenStates(), SequenceLengthLR(), RNNArchitectureUpdate(), RNNTrainMetrics(),
           RNNValidation(val_data), cb.Logger(cfg.log_interval, quiet=cfg.quiet),
           outputs.GenotypeLog(cfg.save), outputs.CellDrawing(cfg.save, quiet=cfg.quiet),
           outputs.AlphaPlot(cfg.save, quiet=cfg.quiet),
           loop_cb.TensorBoard(cfg.save), Checkpoint(cfg.save), *callbacks]
    if fused_step is None:
        cbs.insert(4, loop_cb.GradClip(cfg.clip))
    if world_size > 1:
        distributed.make_data_parallel(architect)
        cbs.append(cb.DataParallel())
    engine = RNNSearch(model, architect, optimizer, train_data, search_data, cfg=cfg, device=device,
                       callbacks=cbs)
    engine.fused_step = fused_step
    engine.config_key = {k: v for k, v in asdict(cfg).items()
                         if k not in ("resume", "trust_checkpoint", "overwrite", "quiet", "log_interval",
                                      "save", "device", "epochs", "cuda_graph", "max_graphs")}
    engine.config_key["data"] = cfg.data or "pydoc"
    if world_size > 1:  # the shards, hence the search, depend on it
        engine.config_key["world_size"] = world_size
    if cfg.resume:
        restore(engine, load_checkpoint(cfg.resume, trust=cfg.trust_checkpoint), cfg.resume)
    return engine


def search_rnn(cfg: RNNSearchConfig, callbacks=()):
    t0 = time.perf_counter()
    engine = build(cfg, callbacks)
    engine.run()
    engine.wall_seconds = time.perf_counter() - t0
    engine.genotype = engine.model.genotype()
    G.validate(engine.genotype)
    return engine
