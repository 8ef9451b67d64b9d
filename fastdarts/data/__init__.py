"""Data for the searches: images (CIFAR-10, embedded digits) and text (PTB, embedded
pydoc corpus), kept on the device."""

from .images import (
    CIFAR_MEAN,
    CIFAR_STD,
    DatasetError,
    DeviceLoader,
    ImageData,
    load_cifar10,
    load_digits_images,
    search_split,
)
from .text import Corpus, Dictionary, batchify, get_batch, pydoc_corpus

__all__ = ["CIFAR_MEAN", "CIFAR_STD", "DatasetError", "DeviceLoader", "ImageData", "load_cifar10",
           "load_digits_images", "search_split", "Corpus", "Dictionary", "batchify", "get_batch",
           "pydoc_corpus"]
