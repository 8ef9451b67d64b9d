"""The CNN search: data, model, optimizers, Architect and the engine, from a config."""

from __future__ import annotations

import itertools
import os
import time
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn as nn

from .. import distributed, methods
from ..config import (
    ConfigError,
    check_channels_last,
    device_setting,
    overwrite_setting,
    resume_setting,
    setting,
    trust_checkpoint_setting,
)
from ..config import defaults as config_defaults
from ..config import validate as validate_config
from ..data import DeviceLoader, load_cifar10, load_digits_images, search_split
from ..loop import callbacks as loop_cb
from ..loop.engine import Engine
from ..loop.state import seed_everything
from ..methods import rdarts
from ..space import genotypes as G
from ..space import nb201
from ..space.op_sets import get_op_set
from . import callbacks as cb
from . import outputs
from .checkpoint import Checkpoint, load_checkpoint, restore
from .models import model_classes


@dataclass
class CNNSearchConfig:
    """The original cnn/train_search.py's settings; ``small``: the embedded default
    (digits, 16x16), sized to finish in about two minutes on a 2-core CPU yet visibly
    learn: 5 epochs x 15 steps, weight lr 0.05, architecture lr 3e-2.  Measured on an
    idle 2-core VM (torch 2.13.0+cpu, 1 thread, 2026-12-01): 122 s wall, final valid_acc
    0.553 (chance 0.10), softmax(alpha) from 0.035 to 0.377; 6 epochs took 154 s for
    valid_acc 0.711, 0.036 to 0.523.  The original's 3 epochs at architecture lr 3e-4
    left every softmax(alpha) within 0.123..0.127."""

    data: str | None = setting(None, "CIFAR-10 root (holding cifar-10-batches-py); "
                               "without it, the embedded scikit-learn digits")
    batch_size: int = setting(64, "batch size (per rank)", bounds="[1, inf)")
    learning_rate: float = setting(0.025, "initial weight learning rate", small=0.05,
                                   bounds="[0, inf)")
    learning_rate_min: float = setting(0.001, "final learning rate of the cosine schedule", bounds="[0, inf)")
    momentum: float = setting(0.9, "weight momentum", bounds="[0, 1)")
    weight_decay: float = setting(3e-4, "weight decay", bounds="[0, inf)")
    report_freq: int = setting(50, "steps between progress lines", bounds="[0, inf)")
    epochs: int = setting(50, "search epochs", small=5, bounds="[1, inf)")
    init_channels: int = setting(16, "channels of the first cell", small=4, bounds="[1, inf)")
    layers: int = setting(8, "cells in the network", small=3, bounds="[1, inf)")
    save: str = setting("search-cnn", "output directory")
    seed: int = setting(2, "random seed", bounds="[0, 4294967295]")
    grad_clip: float = setting(5.0, "gradient clipping norm", bounds="[0, inf)")
    train_portion: float = setting(0.5, "share of the training set for the weights (the rest "
                                   "trains the architecture)", bounds="(0, 1)")
    unrolled: bool = setting(False, "second-order architecture gradient")
    # small: 100x the original's, so that the demo's 90 architecture steps move
    # softmax(alpha) visibly (at 3e-4, 42 steps left it within 0.123..0.127)
    arch_learning_rate: float = setting(3e-4, "architecture learning rate (Adam)", small=3e-2,
                                        bounds="[0, inf)")
    arch_weight_decay: float = setting(1e-3, "architecture weight decay", bounds="[0, inf)")
    impl: str = setting("fused", "fused (fastdarts.nn + fastdarts.Architect) or the reference port",
                        choices=("fused", "reference"))
    device: str | None = device_setting()
    resume: str | None = resume_setting()
    trust_checkpoint: bool = trust_checkpoint_setting()
    overwrite: bool = overwrite_setting("search")
    cuda_graph: bool = setting(False, "capture each search step in a CUDA graph")
    channels_last: bool = setting(False, "channels_last memory format")
    amp: str = setting("none", "bfloat16 autocast for every forward (weights, alphas and losses "
                       "stay float32; fused only)", choices=("none", "bf16"))
    quiet: bool = setting(False, "print nothing")
    max_steps_per_epoch: int | None = setting(None, "cut epochs short (tests, smoke runs)", bounds="[1, inf)")

    # -- the search method (fastdarts/methods; README, "Methods") -------------------------
    method: str = setting("darts", "search method: darts, or a descendant (pc-darts, fair-darts, "
                          "darts-, sdarts-rs, r-darts); its published defaults apply to the flags not given")
    arch_start_epoch: int = setting(0, "first epoch with architecture steps (the weights alone "
                                    "train before it; PC-DARTS: 15)", bounds="[0, inf)")

    # -- PC-DARTS settings --
    partial_channels: int = setting(4, "PC-DARTS' K: 1/K of each edge's channels go through the "
                                    "candidate ops (PC-DARTS model_search.py: k = 4; pc-darts only)",
                                    bounds="[2, inf)")

    # -- FairDARTS and DARTS- settings --
    # FairDARTS (xiaomi-automl/FairDARTS, fairdarts/train_search.py)
    zero_one_weight: float = setting(10.0, "fair-darts: weight of the zero-one loss "
                                     "-mean((sigmoid(alpha) - 0.5)^2) in the architecture loss "
                                     "(its --aux_loss_weight)", bounds="[0, inf)")
    fair_threshold: float = setting(0.85, "fair-darts: an edge's best op enters the genotype when "
                                    "its sigmoid(alpha) >= this (its --op_threshold)", bounds="[0, 1]")
    arch_beta1: float = setting(0.5, "Adam beta1 of the architecture optimizer (DARTS: 0.5; "
                                "fair-darts: 0.9, its --arch_lr_gamma)", bounds="[0, 1)")
    # DARTS- (Meituan-AutoML/DARTS-, src/search/args.py, scripts/run_darts_minus.sh)
    aux_skip_beta: float = setting(1.0, "darts-: initial coefficient beta of the auxiliary skip on "
                                   "every edge (its --skip_beta)", bounds="[0, inf)")
    aux_skip_decay: str = setting("linear", "darts-: how beta falls to 0 over the epochs (its --decay)",
                                  choices=("linear", "cosine", "none"))
    aux_skip_decay_epochs: int | None = setting(None, "darts-: epochs of the decay (its "
                                                "--decay_max_epoch, 50); default: --epochs",
                                                bounds="[1, inf)")

    # -- SDARTS-RS and R-DARTS settings --
    # SDARTS-RS (xiangning-chen/SmoothDARTS sota/cnn/train_search.py; fastdarts/methods/sdarts.py)
    sdarts_epsilon: float = setting(0.3, "SDARTS-RS: the perturbation's last-epoch bound (eps grows "
                                    "linearly from --sdarts_epsilon_start; the code's --epsilon_alpha)",
                                    flags=("--epsilon_alpha",), bounds="[0, inf)")
    sdarts_epsilon_start: float = setting(0.03, "SDARTS-RS: the perturbation's first-epoch bound (the "
                                          "code's constant 0.03)", bounds="[0, inf)")
    sdarts_perturb: str = setting("softmax", "SDARTS-RS: perturb softmax(alpha), clipped and used as the "
                                  "op weights (the code), or alpha before the softmax",
                                  choices=("softmax", "alpha"))
    # R-DARTS (automl/RobustDARTS src/search; fastdarts/methods/rdarts.py); L2 is --weight_decay
    hessian_every: int = setting(0, "largest eigenvalue of the validation Hessian w.r.t. alpha every N "
                                 "epochs and at the last, any method (R-DARTS' --report_freq_hessian "
                                 "with --compute_hessian); 0: off", flags=("--report_freq_hessian",),
                                 bounds="[0, inf)")
    hessian_iters: int = setting(20, "power iterations for the eigenvalue, at most", bounds="[1, inf)")
    hessian_tol: float = setting(1e-4, "power iteration stops when the eigenvalue changes by at most "
                                 "this, relative", bounds="(0, 1)")
    early_stop: bool = setting(False, "DARTS-ES: stop when the eigenvalue's local average grows past "
                               "--es_factor (needs --hessian_every); the result is the genotype from "
                               "before the growth")
    es_window: int = setting(5, "DARTS-ES: eigenvalues per local average (the code's --window)",
                             bounds="[1, inf)")
    es_delta: int = setting(4, "DARTS-ES: compare with the local average this many values back (the "
                            "code's --delta)", bounds="[1, inf)")
    es_factor: float = setting(1.3, "DARTS-ES: stop when the ratio of the two exceeds this (the code's "
                               "--factor)", bounds="(0, inf)")
    es_start_epoch: int = setting(10, "DARTS-ES: no stop whose result epoch would be before this",
                                  bounds="[0, inf)")
    search_drop_path: float = setting(0.0, "R-DARTS(DP): drop path in the supernet during the search, "
                                      "this probability at the last epoch (0 at the first; the original's "
                                      "--drop_path_prob is accepted and ignored)", bounds="[0, 1)")
    search_drop_path_on: str = setting("edge", "what search drop path drops: each edge's mixed output "
                                       "(R-DARTS' code) or each op but identity and none",
                                       choices=("edge", "op"))

    # -- search spaces and op sets --
    space: str = setting("darts", "search space: darts (the DARTS CNN supernet) or nb201 "
                         "(NAS-Bench-201's cell and skeleton, Dong and Yang 2020; DARTS only)",
                         choices=("darts", "nb201"))
    op_set: str | None = setting(None, "--space nb201: the candidate ops, a registered op set "
                                 "(fastdarts.space.register_op_set; default nb201's 5 ops)")
    cells_per_stage: int = setting(5, "--space nb201: search cells per stage (NB201: N=5)",
                                   small=1, bounds="[1, inf)")
    track_running_stats: bool = setting(False, "--space nb201: the cells' batch norms keep running "
                                        "statistics (NB201's BN=1; default BN=0: batch statistics)")


# fields from ``method`` on (fastdarts/methods, the spaces): see the resume key in build()
_FIRST_METHOD_FIELD = [f.name for f in fields(CNNSearchConfig)].index("method")


class CNNSearch(Engine):
    def __init__(self, model, architect, optimizer, train_loader, valid_loader, *, epochs, unrolled,
                 device, callbacks=(), lr=0.025, max_steps_per_epoch=None, fused_step=None):
        super().__init__(epochs, callbacks)
        self.model, self.architect, self.optimizer = model, architect, optimizer
        self.train_loader, self.valid_loader = train_loader, valid_loader
        self.loaders = {"train": train_loader, "valid": valid_loader}
        self.unrolled = unrolled
        self.device = torch.device(device)
        self.lr = lr
        self.max_steps = max_steps_per_epoch
        self.steps_per_epoch = min(len(train_loader), max_steps_per_epoch or len(train_loader))
        self.fused_step = fused_step
        self.config_key = {}

    def train_batches(self):
        self.valid_iter = self.valid_loader.infinite()
        # islice pulls no batch beyond the cut (enumerate-and-break would draw, and
        # waste, one more); a cut epoch leaves the loader mid-pass and the next epoch
        # goes on with the same permutation.
        yield from itertools.islice(self.train_loader, self.max_steps)
        _close_finished_pass(self.train_loader)

    def one_batch(self, batch):
        x, y = batch
        if self.fused_step is not None:
            xv, yv = next(self.valid_iter)
            self.loss, self.logits = self.fused_step(x, y, xv, yv, self.lr)
            self.fire("after_arch_step")
            self.fire("after_weight_step")
            return
        self.fire("after_arch_step")
        self.model.train()
        self.optimizer.zero_grad()
        logits = self.model(x)
        loss = self.model._criterion(logits, y)
        loss.backward()
        self.fire("after_backward")
        self.optimizer.step()
        self.loss, self.logits = loss.detach(), logits.detach()
        self.fire("after_weight_step")


def _close_finished_pass(loader) -> None:
    """A loader left suspended right after its last batch (the consumer stopped exactly
    there) still reads as mid-pass; its next iteration would be an empty epoch.  Mark
    the pass finished, as running the iterator to its end would have."""
    state = loader.state_dict()
    if state["position"] >= len(loader.labels):
        state["position"] = 0
        state["epoch"] += 1
        loader.load_state_dict(state)


def shard(data, rank: int, world_size: int):
    """Rank ``rank``'s strided share of ``data``, all shares of one length (at most
    world_size - 1 images dropped): every rank then takes the same number of steps,
    where unequal shards would leave one rank waiting in a collective."""
    return data.subset(slice(rank, len(data) // world_size * world_size, world_size))


def build(cfg: CNNSearchConfig, callbacks=()):
    """Everything a search needs, from the config; returns the engine (not yet run)."""
    outputs.check_save_dir(cfg)  # before anything is written
    method = methods.get(cfg.method)
    method.validate(cfg)
    check_space(cfg)
    rdarts.check(cfg)
    if cfg.arch_start_epoch and cfg.cuda_graph:
        raise ConfigError("--arch_start_epoch needs eager steps (the captured step always updates "
                          "the architecture); drop --cuda_graph")
    device = torch.device(cfg.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    check_channels_last(cfg.channels_last, device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    rank, world_size = distributed.init()
    if world_size > 1 and cfg.hessian_every:
        raise ConfigError("--hessian_every runs in one process for now (each rank would see another "
                          "batch and could stop at another epoch); drop it or run one process")
    if world_size > 1 and cfg.impl != "fused":
        raise ValueError("a data-parallel search needs --impl fused (the reference Architect has no "
                         "gradient averaging)")
    seed_everything(cfg.seed)  # the same seed on every rank: identical initial weights and alphas
    data = load_cifar10(cfg.data) if cfg.data else load_digits_images()
    w_half, a_half = search_split(data, cfg.train_portion)
    # the per-epoch validation sees the whole architecture half on every rank (rank 0
    # reports it; its BatchNorm statistics are its own, as in the original per device)
    evaluate = DeviceLoader(a_half, 256, device, augment=False, shuffle=False)
    if world_size > 1:  # each rank takes its shard of both halves; --batch_size is per rank
        w_half, a_half = shard(w_half, rank, world_size), shard(a_half, rank, world_size)
    train = DeviceLoader(w_half, cfg.batch_size, device, augment=True, seed=cfg.seed,
                         channels_last=cfg.channels_last)
    valid = DeviceLoader(a_half, cfg.batch_size, device, augment=True, seed=cfg.seed + 1,
                         channels_last=cfg.channels_last)
    if cfg.space == "nb201":
        check_nb201(cfg, data.images.shape[-2:])
        Network, Architect = model_classes("nb201", cfg.impl)
        model = Network(cfg.init_channels, cfg.cells_per_stage, nb201.MAX_NODES, data.num_classes,
                        nn.CrossEntropyLoss(), cfg.op_set or "nb201",
                        track_running_stats=cfg.track_running_stats).to(device)
    elif method.build_model is not None:
        Network, Architect = model_classes("cnn", cfg.impl)
        model = method.build_model(cfg, data.num_classes, nn.CrossEntropyLoss()).to(device)
    else:
        Network, Architect = model_classes("cnn", cfg.impl)
        model = Network(cfg.init_channels, data.num_classes, cfg.layers, nn.CrossEntropyLoss()).to(device)
    if cfg.search_drop_path and not hasattr(model, "set_search_drop_path"):
        raise ConfigError(f"--search_drop_path needs the DARTS supernet; --method {cfg.method}'s model "
                          "has no search drop path")
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if cfg.amp != "none":
        if cfg.impl != "fused":
            raise ValueError("--amp needs --impl fused: the reference port computes in float32 like "
                             "the original (its unrolled copy, model.new(), would not autocast)")
        autocast_forward(model, cfg.amp, device)
    optimizer = torch.optim.SGD(model.parameters(), cfg.learning_rate, momentum=cfg.momentum,
                                weight_decay=cfg.weight_decay)
    args = _ArchArgs(cfg)
    fused_step = None
    if cfg.cuda_graph and cfg.impl == "fused" and device.type == "cuda":
        from ..step import SearchStep

        architect = Architect(model, args, capturable=True)
        fused_step = SearchStep(model, architect, optimizer, unrolled=cfg.unrolled,
                                grad_clip=cfg.grad_clip, cuda_graph=True)
    else:
        if cfg.cuda_graph and not cfg.quiet:
            print("note: --cuda_graph needs --impl fused on a CUDA device; running eagerly")
        architect = Architect(model, args)
    os.makedirs(cfg.save, exist_ok=True)
    cbs = [loop_cb.CosineLR(cfg.learning_rate, cfg.learning_rate_min, cfg.epochs),
           cb.ArchitectureUpdate(), loop_cb.TrainMetrics(), loop_cb.Validation(evaluate),
           cb.Logger(cfg.report_freq, quiet=cfg.quiet), outputs.GenotypeLog(cfg.save),
           outputs.CellDrawing(cfg.save, quiet=cfg.quiet), outputs.AlphaPlot(cfg.save, quiet=cfg.quiet),
           loop_cb.TensorBoard(cfg.save), Checkpoint(cfg.save),
           *(method.callbacks(cfg) if method.callbacks is not None else ()),
           *rdarts.search_callbacks(cfg), *callbacks]
    if fused_step is None and cfg.grad_clip:
        cbs.append(loop_cb.GradClip(cfg.grad_clip))
    if world_size > 1:
        if fused_step is not None:
            raise ValueError("--cuda_graph is not supported with several ranks yet")
        distributed.make_data_parallel(architect)
        cbs.append(cb.DataParallel())
    engine = CNNSearch(model, architect, optimizer, train, valid, epochs=cfg.epochs,
                       unrolled=cfg.unrolled, device=device, callbacks=cbs, lr=cfg.learning_rate,
                       max_steps_per_epoch=cfg.max_steps_per_epoch, fused_step=fused_step)
    # What a resume must match.  Left out: where outputs go and how they are shown,
    # the device (a CPU checkpoint resumes on a GPU), and ``epochs``, so a finished
    # search can be extended (its cosine schedule then differs from a longer search's).
    engine.config_key = {k: v for k, v in asdict(cfg).items()
                         if k not in ("resume", "trust_checkpoint", "overwrite", "quiet", "report_freq",
                                      "save", "device", "epochs")}
    # The settings that came with the methods and spaces count only where they differ from
    # their default, so a checkpoint written before they existed still resumes.
    for f in fields(CNNSearchConfig)[_FIRST_METHOD_FIELD:]:
        if engine.config_key.get(f.name) == f.default:
            engine.config_key.pop(f.name)
    if cfg.space == "darts":  # settings of another space
        for k in ("op_set", "cells_per_stage", "track_running_stats"):
            engine.config_key.pop(k, None)
    engine.config_key["data"] = data.name
    engine.num_classes = data.num_classes  # the summary's chance level
    engine.method = method
    engine.arch_start_epoch = cfg.arch_start_epoch
    if world_size > 1:  # the shards, hence the search, depend on it
        engine.config_key["world_size"] = world_size
    if cfg.resume:
        restore(engine, load_checkpoint(cfg.resume, trust=cfg.trust_checkpoint), cfg.resume)
    return engine


def check_space(cfg: CNNSearchConfig) -> None:
    """ConfigError (one line) for a search space the other settings cannot run."""
    if cfg.space == "darts":
        if cfg.op_set is not None:
            raise ConfigError("--op_set applies to --space nb201 (the DARTS supernet keeps its 8 ops)")
        return
    if cfg.method != "darts":
        raise ConfigError(f"--space nb201 runs --method darts only for now (got --method {cfg.method})")
    if cfg.cuda_graph:
        raise ConfigError("--space nb201 has no captured step yet; drop --cuda_graph")
    try:
        get_op_set(cfg.op_set or "nb201")
    except ValueError as exc:
        raise ConfigError(f"--op_set: {exc}") from None


def check_nb201(cfg: CNNSearchConfig, image_hw) -> None:
    """ConfigError unless the data's images fit the NB201 skeleton (two stride-2 blocks)."""
    try:
        nb201.check_image_size(int(image_hw[0]), int(image_hw[1]))
    except ValueError as exc:
        raise ConfigError(f"--space nb201: {exc}") from None


def method_config(method: str = "darts", *, small: bool | None = None, **given) -> CNNSearchConfig:
    """A CNNSearchConfig for ``method`` (the Python API's ``--method``): the settings in
    ``given`` win, then the method's published defaults, then DARTS'.  ``small`` (default:
    no ``data`` given) starts from the embedded demo's sizes.  ConfigError for an unknown
    method, a setting out of range or a combination the method cannot run."""
    small = given.get("data") is None if small is None else small
    values = config_defaults(CNNSearchConfig, small)
    values.update(methods.method_defaults(method, small))
    values.update(given)
    values["method"] = method
    cfg = CNNSearchConfig(**values)
    validate_config(cfg)
    methods.get(method).validate(cfg)
    check_space(cfg)
    return cfg


AMP_DTYPES = {"bf16": torch.bfloat16}  # float16 would need loss scaling (its gradients underflow)


def autocast_forward(model: nn.Module, amp: str, device: torch.device) -> None:
    """Run every forward of ``model`` (the Architect's losses, the weight step, the
    validation) under autocast to ``amp``; the logits come back in float32 so the loss,
    and every gradient of the float32 weights and alphas, stays in float32."""
    if amp not in AMP_DTYPES:
        raise ValueError(f"amp must be 'none' or {' or '.join(map(repr, AMP_DTYPES))}, got {amp!r}")
    dtype, forward = AMP_DTYPES[amp], model.forward

    def forward_under_autocast(*args, **kwargs):
        with torch.autocast(device_type=device.type, dtype=dtype):
            return forward(*args, **kwargs).float()

    model.forward = forward_under_autocast


class _ArchArgs:
    """The attribute names the original Architect reads from its args."""

    def __init__(self, cfg: CNNSearchConfig):
        self.momentum = cfg.momentum
        self.weight_decay = cfg.weight_decay
        self.arch_learning_rate = cfg.arch_learning_rate
        self.arch_weight_decay = cfg.arch_weight_decay
        self.arch_beta1 = cfg.arch_beta1


def search_cnn(cfg: CNNSearchConfig, callbacks=()):
    """Run a CNN search.  Returns the engine, which is the result: ``.genotype`` (the
    final genotype), ``.history`` (one dict per epoch: lr, train/valid loss and
    accuracy, seconds, genotype, softmax(alpha)), ``.save_dir``, ``.wall_seconds``,
    ``.model``, ``.stopped``.  Per batch, in the original's order: the architect step on
    (the training batch, the next architecture batch) with the current lr as eta, then
    the weight step on the training batch (zero_grad, forward, loss, backward, clip,
    SGD step); the cosine lr of epoch e is lr(e) (see :class:`callbacks.CosineLR`)."""
    t0 = time.perf_counter()
    engine = build(cfg, callbacks)
    engine.run()
    engine.wall_seconds = time.perf_counter() - t0
    engine.genotype = outputs.final_genotype(engine)
    engine.save_dir = cfg.save
    G.validate(engine.genotype, getattr(engine.model, "op_names", None))
    return engine
