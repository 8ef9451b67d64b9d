"""Text data for the RNN search: the Penn Treebank in its usual text form, the
embedded default corpus (Python's own help texts), and the original's
batchify/get_batch."""

from __future__ import annotations

import os
import re

import torch

from .images import DatasetError

PTB_FILES = ("ptb.train.txt", "ptb.valid.txt", "ptb.test.txt")
UNK = "<unk>"


class Dictionary:
    def __init__(self):
        self.word2idx: dict[str, int] = {}
        self.idx2word: list[str] = []

    def add_word(self, word: str) -> int:
        if word not in self.word2idx:
            self.idx2word.append(word)
            self.word2idx[word] = len(self.idx2word) - 1
        return self.word2idx[word]

    def __len__(self) -> int:
        return len(self.idx2word)


class Corpus:
    """Tokenised splits as 1-D int64 tensors ``train``/``valid``/``test`` (CPU), one
    '<eos>' per line, words split on whitespace, as the original's data.Corpus."""

    def __init__(self, path=None, lines: dict[str, list[str]] | None = None, *, add_unk: bool = False):
        """The vocabulary is the training text's (in order of first appearance).  A
        validation or test word outside it becomes '<unk>' when the vocabulary has one
        (PTB's does; ``add_unk=True`` appends one after the training words), and is an
        error naming the word, its file and line otherwise.  On PTB this is the
        original's vocabulary exactly: its valid and test words all occur in train."""
        self.dictionary = Dictionary()
        if lines is None:
            if path is None:
                raise ValueError("Corpus needs a directory path or the lines of each split")
            where = {split: os.path.join(os.fspath(path), name)
                     for split, name in zip(("train", "valid", "test"), PTB_FILES)}
            lines = {split: self._read(f) for split, f in where.items()}
        else:
            where = {split: f"the {split} lines" for split in ("train", "valid", "test")}
        self.train = self._tokenize(lines["train"], where["train"], grow=True)
        if add_unk:
            self.dictionary.add_word(UNK)
        self.valid = self._tokenize(lines["valid"], where["valid"], grow=False)
        self.test = self._tokenize(lines["test"], where["test"], grow=False)

    @staticmethod
    def _read(path: str) -> list[str]:
        if not os.path.isfile(path):
            raise DatasetError(f"missing {path!r}: the PTB directory must hold {', '.join(PTB_FILES)} "
                               "(one sentence per line), or run without --data for the embedded default")
        try:
            with open(path, encoding="utf-8") as f:
                lines = f.read().splitlines()
        except UnicodeDecodeError as exc:
            raise DatasetError(f"{path!r} is not UTF-8 text ({exc})") from exc
        if not any(line.split() for line in lines):
            raise DatasetError(f"{path!r} holds no words")
        return lines

    def _tokenize(self, lines: list[str], where: str, grow: bool) -> torch.Tensor:
        word2idx, ids = self.dictionary.word2idx, []
        unk = word2idx.get(UNK)
        for n, line in enumerate(lines, 1):
            for word in line.split() + ["<eos>"]:
                if grow:
                    ids.append(self.dictionary.add_word(word))
                elif word in word2idx:
                    ids.append(word2idx[word])
                elif unk is not None:
                    ids.append(unk)
                else:
                    raise DatasetError(
                        f"{where}, line {n}: the word {word!r} is not in the training vocabulary, "
                        f"which has no {UNK!r} to map it to; replace rare words by {UNK} in every "
                        "split (as PTB does) or add the word to the training text")
        return torch.tensor(ids, dtype=torch.int64)


def pydoc_corpus() -> Corpus:
    """The embedded default: the English help texts that ship with Python
    (``pydoc_data.topics.topics``), lower-cased, punctuation split off, one line per
    text line, split 80/10/10 by lines in sorted-key order; validation and test words
    the training lines lack become '<unk>'."""
    from pydoc_data.topics import topics

    lines = []
    for key in sorted(topics):
        for line in topics[key].splitlines():
            words = re.findall(r"[a-z0-9_]+|[^\sa-z0-9_]", line.lower())
            if words:
                lines.append(" ".join(words))
    n = len(lines)
    a, b = int(0.8 * n), int(0.9 * n)
    return Corpus(lines={"train": lines[:a], "valid": lines[a:b], "test": lines[b:]}, add_unk=True)


def batchify(data: torch.Tensor, bsz: int, device) -> torch.Tensor:
    """[N] -> [N // bsz, bsz] on ``device`` (the tail that does not fill a column is dropped)."""
    nbatch = data.size(0) // bsz
    if nbatch < 2:
        raise DatasetError(f"{data.size(0)} tokens cannot make batches of {bsz} columns; "
                           "use a smaller batch size or more text")
    return data[: nbatch * bsz].view(bsz, -1).t().contiguous().to(device)


def get_batch(source: torch.Tensor, i: int, seq_len: int):
    """(data [L, B], target [L * B]) with L = min(seq_len, len(source) - 1 - i)."""
    seq_len = min(seq_len, len(source) - 1 - i)
    return source[i:i + seq_len], source[i + 1:i + 1 + seq_len].reshape(-1)
