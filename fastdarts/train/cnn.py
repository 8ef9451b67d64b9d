"""Training a CNN genotype from scratch (the original cnn/train.py) on the callback
engine, and testing the trained network (cnn/test.py).

Per batch, as the original: train mode, (logits, logits_aux) = model(x), loss =
CE(logits) + auxiliary_weight * CE(logits_aux), backward, clip the gradient norm,
SGD step.  Per epoch: lr by cosine annealing to 0, drop_path_prob = p * epoch /
epochs, then the accuracy on the test set (the original validates on the CIFAR-10
test batch every epoch).  Data: CIFAR-10 with crop, flip and Cutout done on the
device, or the embedded digits (first 80% train, the rest held out).

Data parallel under torchrun (see fastdarts.train.common): rank r trains on every
world-th image from r (the shards cut to one length, so every rank takes the same
number of steps; at most world - 1 images are left out), --batch_size per rank, and
evaluates its share of the test set (the sums are reduced).  BatchNorm normalises
with each rank's batch statistics (as on N devices) and its running statistics
are averaged over the ranks at each epoch end.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from .. import distributed
from ..config import (
    check_channels_last,
    device_setting,
    overwrite_setting,
    refuse_overwrite,
    resume_setting,
    setting,
    trust_checkpoint_setting,
)
from ..data import DatasetError, DeviceLoader, load_cifar10, load_digits_images, search_split
from ..loop import callbacks as cb
from ..loop.engine import Callback, Engine
from ..loop.state import CheckpointError, seed_everything, set_rng_states
from ..space import genotypes as G
from .augment import TrainLoader
from .common import (
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
from .model_cnn import NetworkCIFAR, count_parameters_in_MB

# The embedded default (digits, 16x16, 1,437 training images) is tiny: these make a
# default run take about a minute on a 2-core CPU.  The auxiliary head pools 5x5
# windows of the 2/3-depth feature map, so it needs 32x32 inputs: with --auxiliary
# the digits are loaded at 32x32.
DIGITS_TRAIN_PORTION = 0.8


@dataclass
class CNNTrainConfig:
    """The original train.py's settings (the paper's: auxiliary and cutout on);
    ``small``: the embedded default (digits, 16x16; 80% train / 20% held out)."""

    genotype: str | G.Genotype = setting(
        "DARTS_V2", "published name (DARTS_V1, DARTS_V2, DARTS) or a genotype JSON file",
        flags=("--arch",))
    data: str | None = setting(None, "CIFAR-10 root (holding cifar-10-batches-py); without it, "
                               "the embedded scikit-learn digits")
    batch_size: int = setting(96, "batch size (per rank)", bounds="[1, inf)")
    learning_rate: float = setting(0.025, "initial learning rate (cosine to 0)", bounds="[0, inf)")
    momentum: float = setting(0.9, "momentum", bounds="[0, 1)")
    weight_decay: float = setting(3e-4, "weight decay", bounds="[0, inf)")
    epochs: int = setting(600, "training epochs", small=3, bounds="[1, inf)")
    init_channels: int = setting(36, "channels of the first cell", small=8, bounds="[1, inf)")
    layers: int = setting(20, "cells in the network", small=5, bounds="[1, inf)")
    auxiliary: bool = setting(True, "auxiliary tower (on the embedded digits, --auxiliary loads "
                              "them at 32x32)", small=False)
    auxiliary_weight: float = setting(0.4, "weight of the auxiliary loss", bounds="[0, inf)")
    cutout: bool = setting(True, "Cutout augmentation")
    cutout_length: int = setting(16, "Cutout square side", small=8, bounds="[0, inf)")
    drop_path_prob: float = setting(0.2, "drop-path probability (ramped up over the epochs)", bounds="[0, 1)")
    save: str = setting("eval-cnn", "output directory (checkpoint.pt)")
    seed: int = setting(0, "random seed", bounds="[0, 4294967295]")
    grad_clip: float = setting(5.0, "gradient clipping norm", bounds="[0, inf)")
    bf16: bool = setting(False, "bfloat16 autocast (CUDA or CPU)")
    channels_last: bool = setting(False, "channels_last memory format")
    device: str | None = device_setting()
    resume: str | None = resume_setting()
    trust_checkpoint: bool = trust_checkpoint_setting()
    overwrite: bool = overwrite_setting("training run")
    quiet: bool = setting(False, "print nothing")
    max_steps_per_epoch: int | None = setting(None, "cut epochs short (tests, smoke runs)", bounds="[1, inf)")
    eval_batch_size: int = setting(256, "test batch size", cli=False, bounds="[1, inf)")


def autocast(device: torch.device, bf16: bool):
    if not bf16:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


class CNNTrainer(Engine):
    """The engine of one training run; ``state_dict()`` is its checkpoint."""

    kind = "cnn"
    rank, world_size = 0, 1

    def __init__(self, model, optimizer, train_loader, test_loader, *, cfg: CNNTrainConfig, device,
                 callbacks=()):
        super().__init__(cfg.epochs, callbacks)
        self.model, self.optimizer = model, optimizer
        self.train_loader, self.test_loader = train_loader, test_loader
        self.loaders = {"train": train_loader}
        self.cfg = cfg
        self.device = torch.device(device)
        self.lr = cfg.learning_rate
        n = len(train_loader)
        self.steps_per_epoch = min(n, cfg.max_steps_per_epoch or n)
        self.params_M = count_parameters_in_MB(model)
        self.config_key: dict = {}

    def autocast(self):
        return autocast(self.device, self.cfg.bf16)

    def train_batches(self):
        for i, batch in enumerate(self.train_loader):
            if self.cfg.max_steps_per_epoch is not None and i >= self.cfg.max_steps_per_epoch:
                break
            yield batch

    def one_batch(self, batch):
        x, y = batch
        self.model.train()
        self.optimizer.zero_grad()
        with self.autocast():
            logits, logits_aux = self.model(x)
            loss = F.cross_entropy(logits, y)
            if logits_aux is not None:
                loss = loss + self.cfg.auxiliary_weight * F.cross_entropy(logits_aux, y)
        loss.backward()
        self.fire("after_backward")
        self.optimizer.step()
        self.loss, self.logits = loss.detach(), logits.detach()
        self.fire("after_weight_step")

    def state_dict(self) -> dict:
        return {**base_state(self), "loaders": {k: ld.state_dict() for k, ld in self.loaders.items()}}

    def load_state_dict(self, state: dict, path: str = "checkpoint") -> None:
        """Put the engine back where the checkpoint was taken (raises before changing
        anything if it does not fit)."""
        check_config(state, self.config_key, path)
        try:
            self.model.load_state_dict(state["model"])
        except RuntimeError as exc:
            raise CheckpointError(f"{path!r} does not fit this model: {exc}") from exc
        self.optimizer.load_state_dict(state["optimizer"])
        for k, ld in self.loaders.items():
            ld.load_state_dict(state["loaders"][k])
        set_rng_states(state["rng"])
        self.start_epoch = state["epoch"]
        self.global_step = state["global_step"]
        self.history = list(state["history"])
        self.lr = state["lr"]
        restore_rank_state(self, state, self.cfg.seed)


class DropPathSchedule(Callback):
    """model.drop_path_prob = p * epoch / epochs at the start of each epoch (the original)."""

    order = -20

    def __init__(self, drop_path_prob: float):
        self.p = drop_path_prob

    def epoch_begin(self, e):
        e.model.drop_path_prob = self.p * e.epoch / e.epochs


def evaluate_cnn(model, loader, device, bf16: bool = False, across_ranks: bool = False) -> dict:
    """Loss and top-1 accuracy of ``model`` (eval mode, main logits) over ``loader``;
    with ``across_ranks``, over the union of every rank's ``loader`` (each rank its
    shard; one collective)."""
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    n = 0
    with torch.no_grad(), autocast(torch.device(device), bf16):
        for x, y in loader:
            logits, _ = model(x)
            loss_sum += F.cross_entropy(logits.float(), y, reduction="sum")
            correct += (logits.argmax(1) == y).sum()
            n += y.shape[0]
    model.train(was_training)
    sums = [loss_sum.item(), float(correct.item()), float(n)]
    if across_ranks:
        sums = distributed.all_reduce_sum(sums)
    loss, hits, n = sums[0], sums[1], int(round(sums[2]))
    return {"loss": loss / max(n, 1), "acc": hits / max(n, 1), "n": n}


class TestAccuracy(Callback):
    """The original's infer() on the test set after every epoch."""

    order = 10

    def epoch_end(self, e):
        r = evaluate_cnn(e.model, e.test_loader, e.device, e.cfg.bf16, across_ranks=e.world_size > 1)
        e.metrics["test_loss"], e.metrics["test_acc"] = r["loss"], r["acc"]


def _load_data(data: str | None, image_size: int):
    """(train ImageData, test ImageData, name)."""
    if data:
        return load_cifar10(data, train=True), load_cifar10(data, train=False), "cifar10"
    digits = load_digits_images(image_size)
    train, test = search_split(digits, DIGITS_TRAIN_PORTION)
    return train, test, f"digits{image_size}"


def build_network(genotype, model_args: dict) -> NetworkCIFAR:
    return NetworkCIFAR(model_args["C"], model_args["num_classes"], model_args["layers"],
                        model_args["auxiliary"], genotype)


def check_save_dir(cfg) -> None:
    """A new training run (no --resume) into a directory holding an earlier run's
    checkpoint is refused unless --overwrite: the run would replace it after its
    first epoch.  Checked before anything is written."""
    if not cfg.resume and not cfg.overwrite:
        path = os.path.join(cfg.save, "checkpoint.pt")
        refuse_overwrite(cfg.save, ("checkpoint.pt",), "training run", f"--resume {path}")


def build(cfg: CNNTrainConfig, callbacks=()) -> CNNTrainer:
    """Data, network, optimizer and the engine (not yet run) from the config."""
    check_save_dir(cfg)
    device, rank, world_size = setup_distributed(pick_device(cfg.device))
    check_channels_last(cfg.channels_last, device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    genotype = cfg.genotype if isinstance(cfg.genotype, tuple) else G.resolve(cfg.genotype, "cnn")
    if not hasattr(genotype, "normal"):
        raise G.GenotypeError(f"{cfg.genotype!r} is not a CNN genotype (normal/reduce cells)")
    G.validate(genotype)
    seed_everything(cfg.seed)  # the same seed on every rank: identical initial weights
    train, test, data_name = _load_data(cfg.data, 32 if cfg.auxiliary else 16)
    if world_size > 1:  # every world-th image from rank r, the shards of one length
        per_rank = len(train) // world_size
        train = train.subset(slice(rank, per_rank * world_size, world_size))
        test = test.subset(slice(rank, None, world_size))  # evaluated shards are summed
    train_loader = TrainLoader(train, cfg.batch_size, device, augment=True,
                               seed=distributed.rank_seed(cfg.seed, rank),
                               channels_last=cfg.channels_last,
                               cutout_length=cfg.cutout_length if cfg.cutout else 0)
    test_loader = DeviceLoader(test, cfg.eval_batch_size, device, augment=False, shuffle=False,
                               channels_last=cfg.channels_last)
    model_args = {"C": cfg.init_channels, "num_classes": train.num_classes, "layers": cfg.layers,
                  "auxiliary": cfg.auxiliary}
    model = build_network(genotype, model_args).to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), cfg.learning_rate, momentum=cfg.momentum,
                                weight_decay=cfg.weight_decay)
    if rank > 0:  # the weights are built: from here each rank draws its own drop-path masks
        torch.manual_seed(distributed.rank_seed(cfg.seed, rank))
    os.makedirs(cfg.save, exist_ok=True)
    cbs = [cb.CosineLR(cfg.learning_rate, 0.0, cfg.epochs), DropPathSchedule(cfg.drop_path_prob),
           cb.TrainMetrics(), TestAccuracy(), TrainLogger(quiet=cfg.quiet), TrainCheckpoint(cfg.save),
           *callbacks]
    if cfg.grad_clip:
        cbs.append(cb.GradClip(cfg.grad_clip))
    if world_size > 1:  # gradients averaged before GradClip; ranks checked at each epoch end
        cbs += data_parallel_callbacks(model)
    engine = CNNTrainer(model, optimizer, train_loader, test_loader, cfg=cfg, device=device,
                        callbacks=cbs)
    engine.rank, engine.world_size = rank, world_size
    engine.genotype, engine.genotype_dict = genotype, G.to_dict(genotype)
    engine.model_args, engine.data_name = model_args, data_name
    engine.config_key = {k: v for k, v in asdict(cfg).items()
                         if k not in ("resume", "trust_checkpoint", "overwrite", "quiet", "save", "device",
                                      "genotype", "data", "eval_batch_size")}
    engine.config_key.update(genotype=engine.genotype_dict, data=data_name)
    if cfg.resume:
        engine.load_state_dict(load_train_checkpoint(cfg.resume, "cnn", trust=cfg.trust_checkpoint),
                               cfg.resume)
    return engine


def train_cnn(cfg: CNNTrainConfig, callbacks=()) -> CNNTrainer:
    """Train a CNN genotype; returns the engine (``.model``, ``.history``, ``.params_M``).
    Writes <save>/checkpoint.pt every epoch."""
    t0 = time.perf_counter()
    engine = build(cfg, callbacks)
    engine.run()
    distributed.barrier()  # data parallel: rank 0 has written the checkpoint when any rank returns
    engine.wall_seconds = time.perf_counter() - t0
    return engine


def load_trained_cnn(checkpoint: str, device=None, trust: bool = False):
    """(model in eval mode on ``device``, checkpoint dict) from a training checkpoint
    (``trust``: full unpickle, which can run code; only for a file you trust)."""
    state = load_train_checkpoint(checkpoint, "cnn", trust=trust)
    device = pick_device(device)
    try:
        genotype = G.from_dict(state["genotype"])
        model = build_network(genotype, state["model_args"])
        model.load_state_dict(state["model"])
    except (KeyError, RuntimeError) as exc:
        raise CheckpointError(f"{checkpoint!r} does not hold a consistent CNN model: {exc!r}") from exc
    return model.to(device).eval(), state


def test_cnn(checkpoint: str, data: str | None = None, device=None, batch_size: int = 96,
             trust: bool = False) -> dict:
    """Top-1 accuracy of a trained network on the CIFAR-10 test batch (``data`` given)
    or on the held-out digits (a model trained on the embedded default).

    Returns {"test_acc", "test_loss", "n", "params_M", "data"}."""
    model, state = load_trained_cnn(checkpoint, device, trust)
    device = next(model.parameters()).device
    trained_on = state.get("data", "")
    if data:
        test = load_cifar10(data, train=False)
        name = "cifar10-test"
    elif trained_on.startswith("digits"):
        _, test, _ = _load_data(None, int(trained_on[len("digits"):] or 16))
        name = f"{trained_on}-heldout"
    else:
        raise DatasetError(f"{checkpoint!r} was trained on {trained_on}; give --data (the CIFAR-10 root "
                           "holding cifar-10-batches-py) to test it")
    if test.num_classes != state["model_args"]["num_classes"]:
        raise DatasetError(f"the test set has {test.num_classes} classes, the model "
                           f"{state['model_args']['num_classes']}")
    loader = DeviceLoader(test, batch_size, device, augment=False, shuffle=False)
    r = evaluate_cnn(model, loader, device)
    return {"test_acc": r["acc"], "test_loss": r["loss"], "n": r["n"],
            "params_M": count_parameters_in_MB(model), "data": name}


test_cnn.__test__ = False  # not a pytest test
