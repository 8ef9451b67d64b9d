"""Data of the paper's shapes for benchmarks on a machine that cannot download:
random CIFAR-10 (cifar-10-batches-py, the python pickle layout, 32x32x3 uint8, 10
classes) and a random PTB-sized corpus (ptb.{train,valid,test}.txt: 929k / 73k / 82k
tokens over a 10,000-word vocabulary that includes <unk>, '<eos>' per line).

Only shapes matter for timing; the contents are noise.

    python bench/make_fake_data.py DIR [--images-per-batch 10000] [--ptb-scale 1.0]
    -> DIR/cifar10/cifar-10-batches-py/..., DIR/ptb/ptb.*.txt
"""

from __future__ import annotations

import argparse
import os
import pickle

import numpy as np

PTB_TOKENS = {"train": 929_589, "valid": 73_760, "test": 82_430}  # the paper's PTB, <eos> included
VOCAB = 10_000


def fake_cifar(root: str, per_batch: int, rng) -> str:
    d = os.path.join(root, "cifar-10-batches-py")
    os.makedirs(d, exist_ok=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
                 b"labels": rng.integers(0, 10, per_batch).tolist()}
        with open(os.path.join(d, name), "wb") as f:
            pickle.dump(batch, f)
    return root


def fake_ptb(root: str, scale: float, rng) -> str:
    os.makedirs(root, exist_ok=True)
    words = ["<unk>"] + [f"w{i}" for i in range(VOCAB - 2)]  # + '<eos>' = VOCAB
    for split, n in PTB_TOKENS.items():
        n = int(n * scale)
        lens = rng.integers(10, 40, n // 20 + 1)  # sentence lengths (the <eos> is one token)
        ids = rng.integers(0, len(words), n)
        if split == "train":  # every word once first: valid/test never leave the vocabulary
            ids[: len(words)] = np.arange(len(words))
        lines, i = [], 0
        for L in lens:
            if i >= n:
                break
            lines.append(" ".join(words[j] for j in ids[i:i + L - 1]))
            i += L
        with open(os.path.join(root, f"ptb.{split}.txt"), "w") as f:
            f.write("\n".join(lines) + "\n")
    return root


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--images-per-batch", type=int, default=10_000, help="x5 training images")
    ap.add_argument("--ptb-scale", type=float, default=1.0)
    a = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    fake_cifar(os.path.join(a.dir, "cifar10"), a.images_per_batch, rng)
    fake_ptb(os.path.join(a.dir, "ptb"), a.ptb_scale, rng)
    print(f"fake CIFAR-10 in {a.dir}/cifar10, fake PTB in {a.dir}/ptb")


if __name__ == "__main__":
    main()
