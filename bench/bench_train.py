"""Benchmark: images/second training DARTS_V2 from scratch, fastdarts.train's engine
(on-device crop/flip/Cutout, drop-path, auxiliary head, clipping, callbacks) against a
plain PyTorch loop of the same network on pre-made batches, fp32 and bf16 autocast +
channels_last, in one run; plus the projected device-days for the paper's 600 epochs
of 50,000 images (only for the paper's shape: batch 96, C=36, 20 layers, 32x32).

    python bench/bench_train.py                      # CUDA if present: the paper's shape
    python bench/bench_train.py --device cpu         # CPU: a tiny shape (batch 8, C=8, 5 layers)
    python bench/bench_train.py --device cpu --threads 1 --steps 4 --reps 5

Each timed call is one epoch of --steps training steps (CUDA events on GPU,
perf_counter on CPU); the table reports the median per step over --reps calls.
"""

from __future__ import annotations

import argparse
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import device_name, dump_json, print_table, time_ms, versions  # noqa: E402
from fastdarts.data import CIFAR_MEAN, CIFAR_STD, ImageData  # noqa: E402
from fastdarts.loop import callbacks as cb  # noqa: E402
from fastdarts.space import genotypes as G  # noqa: E402
from fastdarts.train.augment import TrainLoader  # noqa: E402
from fastdarts.train.cnn import CNNTrainConfig, CNNTrainer, DropPathSchedule  # noqa: E402
from fastdarts.train.model_cnn import NetworkCIFAR  # noqa: E402

PAPER = {"batch": 96, "C": 36, "layers": 20, "hw": 32}
EPOCHS, IMAGES_PER_EPOCH = 600, 50_000


def synthetic_cifar(n: int, hw: int) -> ImageData:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, hw, hw), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, 10, (n,), generator=g)
    return ImageData(images, labels, CIFAR_MEAN, CIFAR_STD, 10, "synthetic")


def make_model(a, device, channels_last: bool) -> NetworkCIFAR:
    torch.manual_seed(0)
    model = NetworkCIFAR(a.C, 10, a.layers, True, G.DARTS_V2).to(device)
    return model.to(memory_format=torch.channels_last) if channels_last else model


MID_DROP_PATH = 0.2 * 300 / EPOCHS  # the schedule's value half-way: both paths pay for drop-path


class MidTrainingDropPath(DropPathSchedule):
    def __init__(self):
        super().__init__(0.2)

    def epoch_begin(self, e):
        e.model.drop_path_prob = MID_DROP_PATH


def engine_epoch(a, device, bf16: bool, channels_last: bool):
    """One fastdarts.train epoch of a.steps steps, as train_cnn runs it (no checkpoint,
    no logging, no test pass)."""
    data = synthetic_cifar(a.batch * a.steps, a.hw)
    model = make_model(a, device, channels_last)
    cfg = CNNTrainConfig(batch_size=a.batch, epochs=1, init_channels=a.C, layers=a.layers, bf16=bf16,
                         channels_last=channels_last, max_steps_per_epoch=a.steps)
    loader = TrainLoader(data, a.batch, device, seed=0, channels_last=channels_last, cutout_length=16)
    opt = torch.optim.SGD(model.parameters(), cfg.learning_rate, momentum=0.9, weight_decay=3e-4)
    cbs = [cb.CosineLR(cfg.learning_rate, 0.0, EPOCHS), MidTrainingDropPath(), cb.TrainMetrics(),
           cb.GradClip(5.0)]
    engine = CNNTrainer(model, opt, loader, None, cfg=cfg, device=device, callbacks=cbs)

    def run():
        engine.start_epoch = 0
        engine.run()
    return run


def plain_epoch(a, device, bf16: bool, channels_last: bool):
    """The same network and optimizer in a hand-written loop over pre-made, already
    normalised batches (no augmentation, no callbacks): the floor the engine is
    measured against."""
    model = make_model(a, device, channels_last)
    model.drop_path_prob = MID_DROP_PATH
    opt = torch.optim.SGD(model.parameters(), 0.025, momentum=0.9, weight_decay=3e-4)
    g = torch.Generator().manual_seed(1)
    batches = []
    for _ in range(a.steps):
        x = torch.randn(a.batch, 3, a.hw, a.hw, generator=g).to(device)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        batches.append((x, torch.randint(0, 10, (a.batch,), generator=g).to(device)))

    def run():
        model.train()
        for x, y in batches:
            opt.zero_grad()
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                logits, aux = model(x)
                loss = F.cross_entropy(logits, y) + 0.4 * F.cross_entropy(aux, y)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            opt.step()
        loss.item()
    return run


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--C", type=int, default=None)
    ap.add_argument("--layers", type=int, default=None)
    ap.add_argument("--hw", type=int, default=32, help="image side (>= 20: the auxiliary head pools 5x5)")
    ap.add_argument("--steps", type=int, default=None, help="steps per timed epoch (GPU 20, CPU 3)")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    device = torch.device(a.device)
    if a.threads:
        torch.set_num_threads(a.threads)
    gpu = device.type == "cuda"
    tiny = {"batch": 8, "C": 8, "layers": 5}
    for k in ("batch", "C", "layers"):
        if getattr(a, k) is None:
            setattr(a, k, PAPER[k] if gpu else tiny[k])
    a.steps = a.steps or (20 if gpu else 3)
    if gpu:
        torch.backends.cudnn.benchmark = True
    paper_shape = all(getattr(a, k) == v for k, v in PAPER.items())
    shape = f"B={a.batch} C={a.C} L={a.layers} {a.hw}x{a.hw}"
    rows = []
    for mode, bf16, cl in (("fp32", False, False), ("bf16+channels_last", True, True)):
        if bf16 and gpu and not torch.cuda.is_bf16_supported():
            continue
        t_plain = time_ms(plain_epoch(a, device, bf16, cl), device, a.warmup, a.reps)
        t_engine = time_ms(engine_epoch(a, device, bf16, cl), device, a.warmup, a.reps)
        for path, t, base in (("plain loop", t_plain, None), ("fastdarts.train", t_engine, t_plain)):
            ms = t["median_ms"] / a.steps
            ips = a.batch / (ms / 1e3)
            days = EPOCHS * IMAGES_PER_EPOCH / ips / 86400 if paper_shape else None
            rows.append({"device": device_name(device), "versions": versions(), "shape": shape,
                         "mode": mode, "path": path, "ms/step": ms,
                         "q1-q3 ms": f"{t['q1_ms'] / a.steps:.3g}-{t['q3_ms'] / a.steps:.3g}",
                         "images/s": ips,
                         "x plain": None if base is None else t_plain["median_ms"] / t["median_ms"],
                         "600-ep days": days})
    print_table(rows, ["device", "versions", "shape", "mode", "path", "ms/step", "q1-q3 ms", "images/s",
                       "x plain", "600-ep days"])
    if not paper_shape:
        print(f"(600-epoch projection only for the paper's shape {PAPER}; this run is {shape})")
    dump_json(rows, a.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
