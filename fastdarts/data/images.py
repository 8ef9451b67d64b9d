"""Image data for the CNN search: CIFAR-10 from its python batches, the embedded
digits default, the original's 50/50 split, and a loader that keeps the whole
set on the device and augments there (no DataLoader workers, no iterator
rebuilt per step)."""

from __future__ import annotations

import codecs
import gzip
import importlib.util
import os
import pickle
from dataclasses import dataclass

import numpy as np
import torch

CIFAR_MEAN = (0.49139968, 0.48215827, 0.44653124)
CIFAR_STD = (0.24703233, 0.24348505, 0.26158768)
CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar.html"


class DatasetError(RuntimeError):
    """A dataset that is missing, corrupt or of the wrong shape (the message says
    where it looked and what it expected)."""


@dataclass
class ImageData:
    """images: uint8 [N, 3, H, W]; labels: int64 [N]; mean/std per channel on the 0..1 scale."""

    images: torch.Tensor
    labels: torch.Tensor
    mean: tuple
    std: tuple
    num_classes: int
    name: str

    def __len__(self) -> int:
        return self.images.shape[0]

    def subset(self, index) -> ImageData:
        return ImageData(self.images[index], self.labels[index], self.mean, self.std,
                         self.num_classes, self.name)


def _cifar_dir(root: str) -> str:
    root = os.fspath(root)
    for cand in (os.path.join(root, "cifar-10-batches-py"), root):
        if os.path.isfile(os.path.join(cand, "data_batch_1")):
            return cand
    raise DatasetError(
        f"no CIFAR-10 found at {root!r}: expected {os.path.join(root, 'cifar-10-batches-py')}/"
        f"data_batch_1..5 and test_batch in the CIFAR-10 python format ({CIFAR_URL}); download "
        "and extract cifar-10-python.tar.gz there, or run without --data for the embedded default")


# What a CIFAR-10 python batch is made of, beyond dicts, lists, bytes, str and ints
# (which need no global): numpy's array and dtype and the functions numpy pickles
# arrays with (asked of numpy itself, so that numpy 1's module names in the official
# files and numpy 2's map to the functions of the numpy installed), and
# _codecs.encode, how Python 3 writes bytes (an array's data) at protocol 2.
def _array_globals() -> dict:
    a = np.zeros(1, np.uint8)
    reconstruct = a.__reduce__()[0]  # protocols 0-4
    frombuffer = a.__reduce_ex__(5)[0]  # protocol 5
    allowed = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype,
               ("_codecs", "encode"): codecs.encode}
    for core in ("numpy.core", "numpy._core"):
        allowed[(f"{core}.multiarray", "_reconstruct")] = reconstruct
        allowed[(f"{core}.numeric", "_frombuffer")] = frombuffer
    return allowed


_BATCH_GLOBALS = _array_globals()


class _Refused(pickle.UnpicklingError):
    """A global that no CIFAR-10 batch holds (raised before it is looked up)."""


class _BatchUnpickler(pickle.Unpickler):
    """pickle.Unpickler that resolves only :data:`_BATCH_GLOBALS`: every callable a
    pickle can call comes through find_class, so a batch file cannot run code."""

    def find_class(self, module, name):
        try:
            return _BATCH_GLOBALS[(module, name)]
        except KeyError:
            raise _Refused(f"{module}.{name}") from None


def _read_batch(path: str):
    if not os.path.isfile(path):
        raise DatasetError(f"missing CIFAR-10 file {path!r} (expected data_batch_1..5 and test_batch)")
    try:
        with open(path, "rb") as f:
            d = _BatchUnpickler(f, encoding="bytes").load()
        data = np.asarray(d[b"data"], dtype=np.uint8)
        labels = np.asarray(d[b"labels"], dtype=np.int64)
    except _Refused as exc:
        raise DatasetError(f"{path!r} is not a CIFAR-10 python batch: it asks to load {exc}, which no "
                           "batch holds (refused, nothing of it ran); re-extract it from "
                           f"cifar-10-python.tar.gz ({CIFAR_URL})") from None
    except Exception as exc:  # truncated file, wrong format, missing keys
        raise DatasetError(f"{path!r} is not a CIFAR-10 python batch ({type(exc).__name__}: {exc}); "
                           f"re-extract it from cifar-10-python.tar.gz ({CIFAR_URL})") from exc
    if data.ndim != 2 or data.shape[1] != 3072 or labels.shape != (data.shape[0],):
        raise DatasetError(f"{path!r} has data of shape {data.shape} and {labels.shape[0]} labels; "
                           "expected [n, 3072] uint8 and n labels")
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise DatasetError(f"{path!r} has labels outside 0..9")
    return data, labels


def load_cifar10(root, train: bool = True) -> ImageData:
    """CIFAR-10 from ``root`` (the directory holding cifar-10-batches-py, or that directory)."""
    d = _cifar_dir(root)
    names = [f"data_batch_{i}" for i in range(1, 6)] if train else ["test_batch"]
    parts = [_read_batch(os.path.join(d, n)) for n in names]
    data = np.concatenate([p[0] for p in parts]).reshape(-1, 3, 32, 32)
    labels = np.concatenate([p[1] for p in parts])
    return ImageData(torch.from_numpy(data), torch.from_numpy(labels), CIFAR_MEAN, CIFAR_STD, 10,
                     "cifar10" if train else "cifar10-test")


def load_digits_images(size: int = 16) -> ImageData:
    """The embedded default: scikit-learn's bundled 1,797 handwritten digits (8x8, 17
    gray levels), as 3-channel uint8 images of ``size`` x ``size`` (nearest upsampling),
    10 classes, with their own mean/std.  No download."""
    images, target = _digits_arrays()
    img = torch.from_numpy((images * (255.0 / 16.0)).round().astype(np.uint8))  # [N, 8, 8]
    rep = size // 8
    img = img.repeat_interleave(rep, 1).repeat_interleave(rep, 2)
    img = img.unsqueeze(1).expand(-1, 3, -1, -1).contiguous()
    mean = float(img.float().mean() / 255)
    std = float(img.float().std() / 255)
    return ImageData(img, torch.from_numpy(target.astype(np.int64)), (mean,) * 3, (std,) * 3, 10,
                     "digits")


def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """(images float64 [1797, 8, 8] in 0..16, labels [1797]) as ``load_digits()`` gives them.
    Read straight from the CSV that scikit-learn ships when it is where scikit-learn keeps
    it: importing sklearn.datasets (and SciPy with it) costs about 1.7 s of every process
    that runs the embedded default (measured 2026-12-01, scikit-learn on a 2-core VM),
    and the subprocess tests start many.  Otherwise through ``load_digits()``."""
    spec = importlib.util.find_spec("sklearn")  # finds the package without importing it
    if spec is None:
        raise DatasetError("the embedded default data set needs scikit-learn "
                           "(pip install scikit-learn, or pip install 'fastdarts[data]')")
    csv = os.path.join(os.path.dirname(spec.origin or ""), "datasets", "data", "digits.csv.gz")
    if os.path.isfile(csv):
        with gzip.open(csv, "rt") as f:
            data = np.loadtxt(f, delimiter=",")
        if data.shape == (1797, 65):
            return data[:, :-1].reshape(-1, 8, 8), data[:, -1].astype(int)
    from sklearn.datasets import load_digits

    d = load_digits()
    return d.images, d.target


def search_split(data: ImageData, train_portion: float = 0.5) -> tuple[ImageData, ImageData]:
    """The original's split of the training set: the first floor(portion * N)
    examples train the weights, the rest the architecture (25k/25k on CIFAR-10)."""
    if not 0 < train_portion < 1:
        raise ValueError(f"train_portion must be in (0, 1), got {train_portion}")
    split = int(np.floor(train_portion * len(data)))
    return data.subset(slice(0, split)), data.subset(slice(split, len(data)))


class DeviceLoader:
    """Batches of (x float32 normalised [B, 3, H, W], y int64 [B]) made on ``device``.

    The uint8 set is copied to the device once (CIFAR-10 train: 150 MB).  Each epoch
    draws a permutation from the loader's own generator (on the CPU, so a seed gives
    the same batches on any device; one small copy per epoch).  With ``augment`` the
    original's training transform runs on the device, vectorised over the batch:
    random crop with 4-pixel zero padding, random horizontal flip, normalisation.
    ``state_dict()`` captures the generator and the position for an exact resume.
    """

    def __init__(self, data: ImageData, batch_size: int, device, augment: bool = True,
                 shuffle: bool = True, drop_last: bool = False, seed: int = 0,
                 channels_last: bool = False, padding: int = 4):
        if len(data) == 0:
            raise DatasetError(f"{data.name}: no examples to load")
        self.device = torch.device(device)
        self.images = data.images.to(self.device)
        self.labels = data.labels.to(self.device)
        self.mean = torch.tensor(data.mean, device=self.device).view(1, 3, 1, 1) * 255
        self.std = torch.tensor(data.std, device=self.device).view(1, 3, 1, 1) * 255
        self.batch_size = int(batch_size)
        self.augment, self.shuffle, self.drop_last = augment, shuffle, drop_last
        self.channels_last = channels_last
        self.padding = padding
        self.generator = torch.Generator().manual_seed(seed)
        self.epoch = 0
        self.position = 0
        self._order = None

    def __len__(self) -> int:
        n = len(self.labels)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def _new_order(self):
        n = len(self.labels)
        order = torch.randperm(n, generator=self.generator) if self.shuffle else torch.arange(n)
        self._order = order.to(self.device)

    def _batch(self, idx: torch.Tensor):
        x = self.images[idx]
        y = self.labels[idx]
        if self.augment:
            x = self._augment(x)
        x = (x.float() - self.mean) / self.std
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, y

    def _augment(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        p = self.padding
        # offsets and flips drawn on the CPU generator (reproducible on any device)
        dy = torch.randint(0, 2 * p + 1, (B,), generator=self.generator).to(self.device)
        dx = torch.randint(0, 2 * p + 1, (B,), generator=self.generator).to(self.device)
        flip = (torch.rand(B, generator=self.generator) < 0.5).to(self.device)
        padded = torch.nn.functional.pad(x, (p, p, p, p))
        rows = (dy.view(B, 1) + torch.arange(H, device=self.device)).view(B, 1, H, 1)
        cols = dx.view(B, 1) + torch.arange(W, device=self.device)
        cols = torch.where(flip.view(B, 1), cols.flip(1), cols).view(B, 1, 1, W)
        b = torch.arange(B, device=self.device).view(B, 1, 1, 1)
        c = torch.arange(C, device=self.device).view(1, C, 1, 1)
        return padded[b, c, rows, cols]

    def __iter__(self):
        n = len(self.labels)
        if self.position == 0 or self._order is None:
            self._new_order()
        while self.position < n:
            end = min(self.position + self.batch_size, n)
            if self.drop_last and end - self.position < self.batch_size:
                break
            idx = self._order[self.position:end]
            self.position = end
            yield self._batch(idx)
        self.position = 0
        self.epoch += 1

    def infinite(self):
        """Batches forever, epoch after epoch (the architecture queue)."""
        while True:
            yield from self

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state(), "epoch": self.epoch,
                "position": self.position,
                "order": None if self._order is None else self._order.cpu()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        self.epoch = state["epoch"]
        self.position = state["position"]
        self._order = None if state["order"] is None else state["order"].to(self.device)
