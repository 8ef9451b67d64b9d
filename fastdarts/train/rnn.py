"""Training a recurrent genotype from scratch (the original rnn/train.py) on the
callback engine, and its test perplexity.

Per batch, as the original: bptt = 35, or 17.5 with probability 5% (numpy's RNG);
seq_len = max(5, int(N(bptt, 5))) capped at bptt + max_seq_len_delta; the learning
rate scaled by seq_len / bptt for this step; the batch split into small batches
(each with its own hidden state, losses weighted by their share); activation (alpha)
and temporal activation (beta) regularisation; gradient norm clipped to 0.25; SGD
(weight decay 8e-7), later averaged SGD.  Per epoch: validation loss (with the
averaged weights, the ASGD 'ax' buffers, once ASGD is on); the best model so far in
<save>/best.pt; the switch to ASGD(t0=0, lambd=0) when the validation loss is worse
than the best of all epochs before the last ``nonmono``.

Data parallel under torchrun (see fastdarts.train.common): the training text is
batchified with batch_size x world columns and rank r trains on its contiguous
block of batch_size columns (so N ranks with --batch_size b compute what one
process with batch N*b does).  Every rank draws the same sequence lengths (numpy
is seeded alike on every rank; each step's length is checked in the gradient
collective).  The validation columns are split between the ranks when
eval_batch_size is a multiple of the world size (else every rank evaluates all of
them) and the loss is averaged, so the ASGD switch is decided alike everywhere.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .. import config, distributed
from ..config import (
    device_setting,
    overwrite_setting,
    refuse_overwrite,
    resume_setting,
    setting,
    trust_checkpoint_setting,
)
from ..data import Corpus, DatasetError, batchify, get_batch, pydoc_corpus
from ..loop import callbacks as cb
from ..loop.engine import Callback, Engine
from ..loop.rnn import RNNTrainMetrics, SequenceLengthLR, repackage_hidden
from ..loop.state import CheckpointError, atomic_save, seed_everything, set_rng_states
from ..reference.rnn.model_search import DARTSCell, RNNModel
from ..space import genotypes as G
from .common import (
    FORMAT,
    TrainCheckpoint,
    TrainLogger,
    base_state,
    check_config,
    data_parallel_callbacks,
    load_train_checkpoint,
    pick_device,
    restore_rank_state,
    setup_distributed,
)


# The embedded default (Python's help texts, ~95k training tokens, 3,595 words).
# Its test split is evaluated with batch 10 instead of the original's 1 (15k tokens one
# at a time take most of a minute on a shared CPU).
@dataclass
class RNNTrainConfig:
    """The original rnn/train.py's arguments and defaults; ``small``: the embedded
    default (Python's help texts)."""

    genotype: str | G.RNNGenotype = setting(
        "DARTS_V2", "published name (DARTS_V1, DARTS_V2, DARTS) or a genotype JSON file",
        flags=("--arch",))
    data: str | None = setting(None, "directory with ptb.train.txt, ptb.valid.txt, ptb.test.txt; "
                               "without it, the embedded corpus of Python's help texts")
    emsize: int = setting(850, "embedding size", small=32, bounds="[1, inf)")
    nhid: int = setting(850, "hidden size", small=32, bounds="[1, inf)")
    nhidlast: int = setting(850, "size of the last hidden layer", small=32, bounds="[1, inf)")
    lr: float = setting(20.0, "initial learning rate", bounds="[0, inf)")
    clip: float = setting(0.25, "gradient clipping norm", bounds="(0, inf)")
    epochs: int = setting(8000, "training epochs", small=3, bounds="[1, inf)")
    batch_size: int = setting(64, "batch size (per rank)", small=32, bounds="[1, inf)")
    bptt: int = setting(35, "sequence length", small=20, bounds="[2, inf)")
    dropout: float = setting(0.75, "dropout of the RNN output", bounds="[0, 1)")
    dropouth: float = setting(0.25, "dropout of the hidden states", bounds="[0, 1)")
    dropoutx: float = setting(0.75, "dropout of the input to the cell", bounds="[0, 1)")
    dropouti: float = setting(0.2, "dropout of the embedding output", bounds="[0, 1)")
    dropoute: float = setting(0.1, "dropout of whole words in the embedding", bounds="[0, 1)")
    seed: int = setting(1267, "random seed", bounds="[0, 4294967295]")
    nonmono: int = setting(5, "epochs without improvement before switching to ASGD", bounds="[0, inf)")
    log_interval: int = setting(200, "steps between progress lines", flags=("--log-interval",),
                                bounds="[0, inf)")
    save: str = setting("eval-rnn", "output directory (checkpoint.pt, best.pt)")
    alpha: float = setting(0.0, "activation regularisation", bounds="[0, inf)")
    beta: float = setting(1e-3, "temporal activation regularisation", bounds="[0, inf)")
    wdecay: float = setting(8e-7, "weight decay", bounds="[0, inf)")
    small_batch_size: int = setting(-1, "split each batch into chunks of this size (-1: the whole "
                                    "batch at once)", bounds="[1, inf)", also=(-1,))
    max_seq_len_delta: int = setting(20, "largest sequence length beyond bptt", bounds="[0, inf)")
    eval_batch_size: int = setting(10, "validation batch size", bounds="[1, inf)")
    test_batch_size: int = setting(1, "test batch size", small=10, bounds="[1, inf)")
    device: str | None = device_setting()
    resume: str | None = resume_setting()
    trust_checkpoint: bool = trust_checkpoint_setting()
    overwrite: bool = overwrite_setting("training run")
    quiet: bool = setting(False, "print nothing")
    max_steps_per_epoch: int | None = setting(None, "cut epochs short", small=25, bounds="[1, inf)")


def build_rnn_model(genotype, model_args: dict) -> RNNModel:
    """The evaluation model: embedding, the derived DARTSCell (no BatchNorm, no alphas),
    tied decoder.  Input [T, B] int64 -> log-probabilities [T, B, ntoken]."""
    if not hasattr(genotype, "recurrent"):
        raise G.GenotypeError(f"the RNN model needs a recurrent genotype, got {genotype!r}")
    a = model_args
    return RNNModel(a["ntoken"], a["ninp"], a["nhid"], a["nhidlast"], a["dropout"], a["dropouth"],
                    a["dropoutx"], a["dropouti"], a["dropoute"], cell_cls=DARTSCell, genotype=genotype)


def count_parameters(model: torch.nn.Module) -> int:
    """All parameters, the tied embedding/decoder weight once (as the paper counts)."""
    return sum(p.numel() for p in model.parameters())


def asgd_should_switch(best_val_loss: list[float], val_loss: float, nonmono: int) -> bool:
    """The original's non-monotone trigger: switch when more than ``nonmono`` epochs are
    recorded and ``val_loss`` is worse than the best of all but the last ``nonmono``."""
    return len(best_val_loss) > nonmono and val_loss > min(best_val_loss[:-nonmono])


def is_asgd(optimizer) -> bool:
    return "t0" in optimizer.param_groups[0]


def make_asgd(model, cfg: RNNTrainConfig):
    return torch.optim.ASGD(model.parameters(), lr=cfg.lr, t0=0, lambd=0.0, weight_decay=cfg.wdecay)


@contextlib.contextmanager
def averaged_weights(model, optimizer):
    """Inside, the parameters hold ASGD's running averages ('ax'); restored after
    (bit-exactly).  A no-op for SGD."""
    saved = []
    if is_asgd(optimizer):
        with torch.no_grad():
            for p in model.parameters():
                ax = optimizer.state.get(p, {}).get("ax")
                if ax is not None:
                    saved.append((p, p.detach().clone()))
                    p.copy_(ax)
    try:
        yield
    finally:
        with torch.no_grad():
            for p, w in saved:
                p.copy_(w)


def evaluate_rnn(model, source: torch.Tensor, bptt: int, batch_size: int) -> float:
    """Mean NLL per token of ``source`` [N, batch_size] (eval mode, bptt windows,
    hidden state carried across windows), as the original evaluate()."""
    was_training = model.training
    model.eval()
    total = torch.zeros((), device=source.device)
    hidden = model.init_hidden(batch_size)
    with torch.no_grad():
        for i in range(0, source.size(0) - 1, bptt):
            data, targets = get_batch(source, i, bptt)
            log_prob, hidden = model(data, hidden)
            total += len(data) * F.nll_loss(log_prob.view(-1, log_prob.size(2)), targets)
    model.train(was_training)
    return total.item() / len(source)


class RNNTrainer(Engine):
    kind = "rnn"
    rank, world_size = 0, 1

    def __init__(self, model, optimizer, train_data, val_data, *, cfg: RNNTrainConfig, device,
                 callbacks=()):
        super().__init__(cfg.epochs, callbacks)
        self.model, self.optimizer = model, optimizer
        self.train_data, self.val_data = train_data, val_data
        self.cfg = cfg
        self.small_batch_size = cfg.batch_size if cfg.small_batch_size <= 0 else cfg.small_batch_size
        if cfg.batch_size % self.small_batch_size:
            raise ValueError(f"batch_size {cfg.batch_size} is not a multiple of small_batch_size "
                             f"{self.small_batch_size}")
        self.device = torch.device(device)
        self.lr = cfg.lr
        self.best_val_loss: list[float] = []
        self.stored_loss = math.inf
        self.params_M = count_parameters(model) / 1e6
        n = (train_data.size(0) - 2 + cfg.bptt - 1) // cfg.bptt
        self.steps_per_epoch = min(n, cfg.max_steps_per_epoch or n)
        self.config_key: dict = {}

    def train_batches(self):
        cfg = self.cfg
        i, k = 0, 0
        while i < self.train_data.size(0) - 1 - 1:
            if cfg.max_steps_per_epoch is not None and k >= cfg.max_steps_per_epoch:
                break
            bptt = cfg.bptt if np.random.random() < 0.95 else cfg.bptt / 2.0
            seq_len = max(5, int(np.random.normal(bptt, 5)))  # no tiny or negative lengths
            seq_len = min(seq_len, cfg.bptt + cfg.max_seq_len_delta)
            data, targets = get_batch(self.train_data, i, seq_len)
            yield seq_len, data, targets.view(data.size(0), -1)
            i += seq_len
            k += 1

    def one_batch(self, batch):
        cfg = self.cfg
        _, data, targets = batch
        self.model.train()
        self.optimizer.zero_grad()
        B, sb = cfg.batch_size, self.small_batch_size
        total = torch.zeros((), device=self.device)
        for s_id, start in enumerate(range(0, B, sb)):
            cur_data, cur_targets = data[:, start:start + sb], targets[:, start:start + sb].reshape(-1)
            self.hidden[s_id] = repackage_hidden(self.hidden[s_id])
            log_prob, self.hidden[s_id], rnn_hs, dropped_rnn_hs = self.model(cur_data, self.hidden[s_id],
                                                                             return_h=True)
            raw_loss = F.nll_loss(log_prob.view(-1, log_prob.size(2)), cur_targets)
            loss = raw_loss
            if cfg.alpha > 0:  # activation regularisation
                loss = loss + sum(cfg.alpha * h.pow(2).mean() for h in dropped_rnn_hs[-1:])
            # temporal activation regularisation (slowness)
            loss = loss + sum(cfg.beta * (h[1:] - h[:-1]).pow(2).mean() for h in rnn_hs[-1:])
            loss = loss * (sb / B)
            total += raw_loss.detach() * (sb / B)
            loss.backward()
        self.fire("after_backward")
        self.optimizer.step()
        self.loss = total
        self.fire("after_weight_step")

    def state_dict(self) -> dict:
        return {**base_state(self), "optimizer_kind": "asgd" if is_asgd(self.optimizer) else "sgd",
                "best_val_loss": list(self.best_val_loss), "stored_loss": self.stored_loss}

    def load_state_dict(self, state: dict, path: str = "checkpoint") -> None:
        check_config(state, self.config_key, path)
        try:
            self.model.load_state_dict(state["model"])
        except RuntimeError as exc:
            raise CheckpointError(f"{path!r} does not fit this model: {exc}") from exc
        if state["optimizer_kind"] == "asgd":
            self.optimizer = make_asgd(self.model, self.cfg)
        self.optimizer.load_state_dict(state["optimizer"])
        set_rng_states(state["rng"])
        self.start_epoch = state["epoch"]
        self.global_step = state["global_step"]
        self.history = list(state["history"])
        self.lr = state["lr"]
        self.best_val_loss = list(state["best_val_loss"])
        self.stored_loss = state["stored_loss"]
        restore_rank_state(self, state, self.cfg.seed)


class SmallBatchHidden(Callback):
    """Zero hidden states at the start of each epoch, one per small batch."""

    order = -40

    def epoch_begin(self, e):
        n = e.cfg.batch_size // e.small_batch_size
        e.hidden = [e.model.init_hidden(e.small_batch_size) for _ in range(n)]


class AveragedValidation(Callback):
    """Validation loss and perplexity, with the averaged weights while ASGD is on
    (data parallel: each rank's validation columns, the loss averaged over ranks)."""

    order = 10

    def epoch_end(self, e):
        with averaged_weights(e.model, e.optimizer):
            loss = evaluate_rnn(e.model, e.val_data, e.cfg.bptt, e.val_data.size(1))
        if e.world_size > 1:  # equal column blocks (or all columns): the mean is the full loss
            loss, = distributed.all_reduce_mean_flat_([], [loss])
        e.metrics["valid_loss"] = loss
        e.metrics["valid_ppl"] = math.exp(min(loss, 50))


class BestModel(Callback):
    """<save>/best.pt whenever the validation loss is the best so far (the averaged
    weights while ASGD is on: what the original saved as model.pt)."""

    order = 12

    def __init__(self, save_dir: str):
        self.path = os.path.join(save_dir, "best.pt")

    def epoch_end(self, e):
        val_loss = e.metrics["valid_loss"]
        if val_loss < e.stored_loss:
            e.stored_loss = val_loss
            averaged = is_asgd(e.optimizer)
            if distributed.is_rank0():
                with averaged_weights(e.model, e.optimizer):
                    state = {"format": FORMAT, "kind": "rnn", "genotype": e.genotype_dict,
                             "model_args": e.model_args, "data": e.data_name, "epoch": e.epoch + 1,
                             "model": {k: v.clone() for k, v in e.model.state_dict().items()},
                             "averaged": averaged, "valid_loss": val_loss, "config": e.config_key}
                atomic_save(state, self.path)
            e.metrics["saved"] = "averaged" if averaged else "normal"


class NonMonotoneASGD(Callback):
    """While on SGD: switch to ASGD(lr, t0=0, lambd=0, wd) when the rule of
    :func:`asgd_should_switch` fires; record the epoch's validation loss."""

    order = 15

    def epoch_end(self, e):
        if is_asgd(e.optimizer):
            return
        val_loss = e.metrics["valid_loss"]
        if asgd_should_switch(e.best_val_loss, val_loss, e.cfg.nonmono):
            e.optimizer = make_asgd(e.model, e.cfg)
            e.switched_at = e.epoch
            e.metrics["switched_to_asgd"] = 1.0
        e.best_val_loss.append(val_loss)


def _corpus(data: str | None) -> tuple[Corpus, str]:
    return (Corpus(data), os.path.abspath(data)) if data else (pydoc_corpus(), "pydoc")


def check_save_dir(cfg) -> None:
    """A new training run (no --resume) into a directory holding an earlier run's
    checkpoint is refused unless --overwrite: the run would replace it after its
    first epoch.  Checked before anything is written."""
    if not cfg.resume and not cfg.overwrite:
        path = os.path.join(cfg.save, "checkpoint.pt")
        refuse_overwrite(cfg.save, ("checkpoint.pt", "best.pt"), "training run",
                         f"--continue_train (or --resume {path})")


def build(cfg: RNNTrainConfig, callbacks=(), validation: Callback | None = None) -> RNNTrainer:
    """Data, model, optimizer and the engine (not yet run); ``validation`` replaces the
    validation callback (tests script the loss curve with it)."""
    check_save_dir(cfg)
    device, rank, world_size = setup_distributed(pick_device(cfg.device))
    genotype = cfg.genotype if isinstance(cfg.genotype, tuple) else G.resolve(cfg.genotype, "rnn")
    G.validate(genotype)
    seed_everything(cfg.seed)  # the same on every rank: initial weights and the sequence lengths
    corpus, data_name = _corpus(cfg.data)
    train_data = batchify(corpus.train, cfg.batch_size * world_size, device)
    val_data = batchify(corpus.valid, cfg.eval_batch_size, device)
    if world_size > 1:  # rank r: columns [r*b, (r+1)*b) of the world's batch
        b = cfg.batch_size
        train_data = train_data[:, rank * b:(rank + 1) * b].contiguous()
        if cfg.eval_batch_size % world_size == 0:
            v = cfg.eval_batch_size // world_size
            val_data = val_data[:, rank * v:(rank + 1) * v].contiguous()
    model_args = {"ntoken": len(corpus.dictionary), "ninp": cfg.emsize, "nhid": cfg.nhid,
                  "nhidlast": cfg.nhidlast, "dropout": cfg.dropout, "dropouth": cfg.dropouth,
                  "dropoutx": cfg.dropoutx, "dropouti": cfg.dropouti, "dropoute": cfg.dropoute}
    model = build_rnn_model(genotype, model_args).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr, weight_decay=cfg.wdecay)
    if rank > 0:  # the weights are built: from here each rank draws its own dropout masks
        torch.manual_seed(distributed.rank_seed(cfg.seed, rank))
    os.makedirs(cfg.save, exist_ok=True)
    cbs = [SmallBatchHidden(), SequenceLengthLR(), RNNTrainMetrics(), cb.GradClip(cfg.clip),
           validation or AveragedValidation(), BestModel(cfg.save), NonMonotoneASGD(),
           TrainLogger(quiet=cfg.quiet), TrainCheckpoint(cfg.save), *callbacks]
    if world_size > 1:  # gradients averaged before GradClip, with the step and sequence length
        cbs += data_parallel_callbacks(model, agree=lambda e: (e.global_step, e.batch[0],
                                                               e.batch[1].size(0)))
    engine = RNNTrainer(model, optimizer, train_data, val_data, cfg=cfg, device=device, callbacks=cbs)
    engine.rank, engine.world_size = rank, world_size
    engine.genotype, engine.genotype_dict = genotype, G.to_dict(genotype)
    engine.model_args, engine.data_name = model_args, data_name
    engine.corpus = corpus
    engine.config_key = {k: v for k, v in asdict(cfg).items()
                         if k not in ("resume", "trust_checkpoint", "overwrite", "quiet", "log_interval",
                                      "save", "device", "genotype", "data", "eval_batch_size",
                                      "test_batch_size", "epochs")}
    engine.config_key.update(genotype=engine.genotype_dict, data=data_name)
    # epochs may change on resume (the original's --continue_train trains on): nothing depends on it
    if cfg.resume:
        engine.load_state_dict(load_train_checkpoint(cfg.resume, "rnn", trust=cfg.trust_checkpoint),
                               cfg.resume)
    return engine


def train_rnn(cfg: RNNTrainConfig, callbacks=()) -> RNNTrainer:
    """Train a recurrent genotype; then, as the original, the test loss of the best
    model (<save>/best.pt) with test_batch_size.  Returns the engine (``.history``,
    ``.test_loss``, ``.test_ppl``, ``.params_M``)."""
    t0 = time.perf_counter()
    engine = build(cfg, callbacks)
    engine.run()
    distributed.barrier()  # rank 0 has written best.pt / checkpoint.pt; every rank tests the same model
    best = os.path.join(cfg.save, "best.pt")
    # trust as for --resume: after resuming a finished run, checkpoint.pt here may be the
    # (trusted) old-format file this run resumed from, not rewritten
    r = test_rnn(best if os.path.isfile(best) else os.path.join(cfg.save, "checkpoint.pt"), cfg.data,
                 device=engine.device, batch_size=cfg.test_batch_size, trust=cfg.trust_checkpoint)
    engine.test_loss, engine.test_ppl = r["test_loss"], r["test_ppl"]
    engine.wall_seconds = time.perf_counter() - t0
    return engine


def load_trained_rnn(checkpoint: str, device=None, trust: bool = False):
    """(model in eval mode holding the weights to evaluate, checkpoint dict): the saved
    weights, or ASGD's averages for a training checkpoint taken while ASGD was on."""
    state = load_train_checkpoint(checkpoint, "rnn", trust=trust)
    try:
        model = build_rnn_model(G.from_dict(state["genotype"]), state["model_args"])
        model.load_state_dict(state["model"])
    except (KeyError, RuntimeError) as exc:
        raise CheckpointError(f"{checkpoint!r} does not hold a consistent RNN model: {exc!r}") from exc
    if state.get("optimizer_kind") == "asgd":
        opt_state = state["optimizer"]["state"]
        with torch.no_grad():
            for i, p in enumerate(model.parameters()):
                if i in opt_state and "ax" in opt_state[i]:
                    p.copy_(opt_state[i]["ax"])
    return model.to(pick_device(device)).eval(), state


def test_rnn(checkpoint: str, data: str | None = None, device=None, batch_size: int | None = None,
             bptt: int | None = None, trust: bool = False) -> dict:
    """Test loss and perplexity of a trained RNN on the test split of PTB (``data``)
    or of the embedded corpus, with ``batch_size`` (default: 1 as the original on PTB,
    10 on the embedded corpus).  Returns {"test_loss", "test_ppl", "params_M", "n_tokens"}."""
    model, state = load_trained_rnn(checkpoint, device, trust)
    dev = next(model.parameters()).device
    if data is None and state.get("data") not in (None, "pydoc"):
        data = state["data"]
    corpus, _ = _corpus(data)
    if len(corpus.dictionary) != state["model_args"]["ntoken"]:
        raise DatasetError(f"the corpus has {len(corpus.dictionary)} words, the model was trained on "
                           f"{state['model_args']['ntoken']}: give the --data it was trained on")
    bptt = bptt or state.get("config", {}).get("bptt") or 35
    if batch_size is None:
        batch_size = 1 if data else config.defaults(RNNTrainConfig, small=True)["test_batch_size"]
    test_data = batchify(corpus.test, batch_size, dev)
    loss = evaluate_rnn(model, test_data, bptt, batch_size)
    return {"test_loss": loss, "test_ppl": math.exp(min(loss, 50)),
            "params_M": count_parameters(model) / 1e6, "n_tokens": int(corpus.test.numel())}


test_rnn.__test__ = False  # not a pytest test
