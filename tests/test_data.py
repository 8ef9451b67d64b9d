"""Data layer: CIFAR-10 reader, digits default, split, device loader, text corpora."""

from __future__ import annotations

import io
import pickle
import struct

import numpy as np
import pytest
import torch

from fastdarts import cli
from fastdarts import data as D

from .helpers import RunsCode, assert_refused_in_one_line


def _write_cifar(root, n=20, seed=0):
    rng = np.random.default_rng(seed)
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        x = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        y = rng.integers(0, 10, n).tolist()
        with open(d / name, "wb") as f:
            pickle.dump({b"data": x, b"labels": y}, f)
        batches[name] = (x, y)
    return batches


def test_cifar_round_trip(tmp_path):
    batches = _write_cifar(tmp_path)
    train = D.load_cifar10(tmp_path)
    test = D.load_cifar10(tmp_path / "cifar-10-batches-py", train=False)
    assert train.images.shape == (100, 3, 32, 32) and train.images.dtype == torch.uint8
    x, y = batches["data_batch_2"]
    assert torch.equal(train.images[20:40], torch.from_numpy(x.reshape(-1, 3, 32, 32)))
    assert train.labels[20:40].tolist() == y
    assert len(test) == 20 and test.num_classes == 10


def test_cifar_errors_say_where_and_what(tmp_path):
    with pytest.raises(D.DatasetError, match=r"no CIFAR-10 found at .*data_batch_1\.\.5"):
        D.load_cifar10(tmp_path / "nowhere")
    _write_cifar(tmp_path)
    d = tmp_path / "cifar-10-batches-py"
    (d / "data_batch_3").unlink()
    with pytest.raises(D.DatasetError, match="missing CIFAR-10 file .*data_batch_3"):
        D.load_cifar10(tmp_path)
    (d / "data_batch_3").write_bytes(b"\x80\x04 truncated")
    with pytest.raises(D.DatasetError, match="data_batch_3.*not a CIFAR-10 python batch"):
        D.load_cifar10(tmp_path)
    with open(d / "data_batch_3", "wb") as f:
        pickle.dump({b"data": np.zeros((5, 100), np.uint8), b"labels": [0] * 5}, f)
    with pytest.raises(D.DatasetError, match=r"expected \[n, 3072\]"):
        D.load_cifar10(tmp_path)


class _Python2Pickler(pickle._Pickler):
    """Pickles as Python 2's cPickle wrote the official CIFAR-10 batches (protocol 2):
    bytes as str opcodes (BINSTRING), not Python 3's _codecs.encode call."""

    dispatch = dict(pickle._Pickler.dispatch)

    def _save_str(self, obj):
        n = len(obj)
        head = pickle.SHORT_BINSTRING + bytes([n]) if n < 256 else pickle.BINSTRING + struct.pack("<i", n)
        self.write(head + obj)
        self.memoize(obj)

    dispatch[bytes] = _save_str


def _python2_batch(obj) -> bytes:
    f = io.BytesIO()
    _Python2Pickler(f, protocol=2).dump(obj)
    # numpy 1's module name, as in the official files (numpy 2 writes numpy._core)
    return f.getvalue().replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")


@pytest.mark.parametrize("protocol", ["python2", 0, 2, 4, 5])
def test_cifar_batches_load_however_python_pickled_them(tmp_path, protocol):
    """The restricted unpickler reads what the official batches hold (Python 2,
    protocol 2) and what Python 3 writes at any protocol."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (7, 3072), dtype=np.uint8)
    batch = {b"batch_label": b"training batch 1 of 5", b"labels": rng.integers(0, 10, 7).tolist(),
             b"data": x, b"filenames": [b"%d.png" % i for i in range(7)]}
    data = _python2_batch(batch) if protocol == "python2" else pickle.dumps(batch, protocol=protocol)
    if protocol == "python2":
        assert b"numpy.core.multiarray" in data and b"_codecs" not in data
    d = tmp_path / "cifar-10-batches-py"
    d.mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (d / name).write_bytes(data)
    test = D.load_cifar10(tmp_path, train=False)
    assert torch.equal(test.images, torch.from_numpy(x.reshape(-1, 3, 32, 32)))
    assert test.labels.tolist() == batch[b"labels"] and len(D.load_cifar10(tmp_path)) == 35


def test_a_batch_file_that_runs_code_is_refused(tmp_path, capsys):
    _write_cifar(tmp_path)
    marker = tmp_path / "ran"
    path = tmp_path / "cifar-10-batches-py" / "data_batch_2"
    with open(path, "wb") as f:
        pickle.dump({b"data": RunsCode(marker), b"labels": [0]}, f)
    with pytest.raises(D.DatasetError) as info:
        D.load_cifar10(tmp_path)
    assert_refused_in_one_line(str(info.value), path, marker)
    rc = cli.main(["search", "cnn", "--data", str(tmp_path), "--save", str(tmp_path / "run"), "--epochs",
                   "1", "--max_steps_per_epoch", "1", "--layers", "3", "--init_channels", "2", "--quiet"])
    assert rc == 2
    assert_refused_in_one_line(capsys.readouterr().err, path, marker)
    with open(path, "rb") as f:  # what the refusal prevented: a plain pickle.load runs it
        pickle.load(f)
    assert marker.exists()


def test_digits_default_and_split():
    digits = D.load_digits_images()
    assert digits.images.shape == (1797, 3, 16, 16) and digits.num_classes == 10
    w, a = D.search_split(digits, 0.5)
    assert len(w) == 898 and len(a) == 899
    assert torch.equal(w.images, digits.images[:898])


def test_digits_read_directly_equal_load_digits(monkeypatch):
    """The embedded default reads scikit-learn's digits CSV without importing sklearn;
    it must give exactly what load_digits() gives, and fall back to it (a moved file)."""
    from fastdarts.data import images as I

    sk = pytest.importorskip("sklearn.datasets")
    d = sk.load_digits()
    direct = I._digits_arrays()
    assert direct[0].dtype == d.images.dtype and np.array_equal(direct[0], d.images)
    assert np.array_equal(direct[1], d.target)
    monkeypatch.setattr(I.os.path, "isfile", lambda path: False)  # the CSV is not where expected
    via = I._digits_arrays()
    assert np.array_equal(via[0], d.images) and np.array_equal(via[1], d.target)


def test_digits_without_sklearn_says_what_to_install(monkeypatch):
    from fastdarts.data import images as I

    monkeypatch.setattr(I.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(D.DatasetError, match="scikit-learn"):
        D.load_digits_images()


def _toy(n=10, hw=8):
    g = torch.Generator().manual_seed(0)
    imgs = torch.randint(0, 256, (n, 3, hw, hw), generator=g, dtype=torch.uint8)
    return D.ImageData(imgs, torch.arange(n), (0.5, 0.4, 0.3), (0.2, 0.25, 0.3), 10, "toy")


def test_loader_normalises_and_covers_each_example_once():
    data = _toy(10)
    loader = D.DeviceLoader(data, 4, "cpu", augment=False, shuffle=True, seed=3)
    seen = []
    for x, y in loader:
        seen += y.tolist()
        ref = (data.images[y].float() / 255 - torch.tensor(data.mean).view(1, 3, 1, 1)) \
            / torch.tensor(data.std).view(1, 3, 1, 1)
        torch.testing.assert_close(x, ref)
    assert sorted(seen) == list(range(10)) and len(loader) == 3


def test_augmentation_is_shifted_window_and_flips_half():
    data = _toy(200)
    loader = D.DeviceLoader(data, 200, "cpu", augment=True, seed=1)
    loader.mean.zero_()
    loader.std.fill_(1.0)
    x, y = next(iter(loader))
    padded = torch.nn.functional.pad(data.images[y].float(), (4, 4, 4, 4))
    flips = 0
    for b in range(200):
        windows = [padded[b, :, i:i + 8, j:j + 8] for i in range(9) for j in range(9)]
        if any(torch.equal(x[b], w) for w in windows):
            continue
        assert any(torch.equal(x[b], w.flip(-1)) for w in windows), b
        flips += 1
    assert 70 < flips < 130  # ~50% (ties of symmetric windows count as unflipped)


def test_loader_resume_gives_the_same_batches():
    data = _toy(20)
    a = D.DeviceLoader(data, 3, "cpu", seed=5)
    it = iter(a)
    next(it)
    next(it)
    state = a.state_dict()
    rest_a = [y.tolist() for _, y in it]
    b = D.DeviceLoader(data, 3, "cpu", seed=99)
    b.load_state_dict(state)
    rest_b = [y.tolist() for _, y in b]
    assert rest_a == rest_b
    c = D.DeviceLoader(data, 3, "cpu", seed=5)
    assert [y.tolist() for _, y in c][2:] == rest_a


def test_corpus_and_batches(tmp_path):
    for name, text in zip(D.text.PTB_FILES, ["a b c\nb c d\n", "a d\n", "c\n"]):
        (tmp_path / name).write_text(text)
    c = D.Corpus(tmp_path)
    assert c.train.tolist() == [0, 1, 2, 3, 1, 2, 4, 3] and c.dictionary.idx2word[3] == "<eos>"
    assert c.valid.tolist() == [0, 4, 3] and c.test.tolist() == [2, 3]
    src = D.batchify(torch.arange(23), 4, "cpu")
    assert src.shape == (5, 4) and src[:, 1].tolist() == [5, 6, 7, 8, 9]
    x, y = D.get_batch(src, 2, 35)
    assert x.shape == (2, 4) and torch.equal(y, src[3:5].reshape(-1))
    (tmp_path / "ptb.test.txt").unlink()
    with pytest.raises(D.DatasetError, match="missing .*ptb.test.txt"):
        D.Corpus(tmp_path)


def test_words_outside_the_training_vocabulary(tmp_path):
    # with '<unk>' in the training text (as in PTB) an unseen word maps to it
    for name, text in zip(D.text.PTB_FILES, ["a <unk> b\n", "a zebra\n", "b\n"]):
        (tmp_path / name).write_text(text)
    c = D.Corpus(tmp_path)
    unk = c.dictionary.word2idx["<unk>"]
    assert c.valid.tolist() == [0, unk, c.dictionary.word2idx["<eos>"]] and len(c.dictionary) == 4
    # without one: an error naming the word, the file and the line; nothing guessed
    (tmp_path / "ptb.train.txt").write_text("a b\n")
    (tmp_path / "ptb.valid.txt").write_text("a\nb zebra\n")
    with pytest.raises(D.DatasetError, match=r"ptb\.valid\.txt, line 2: the word 'zebra' is not in the "
                       r"training vocabulary"):
        D.Corpus(tmp_path)
    # add_unk appends '<unk>' after the training words, whose ids do not move
    c = D.Corpus(lines={"train": ["a b"], "valid": ["a zebra"], "test": ["b"]}, add_unk=True)
    assert c.dictionary.idx2word == ["a", "b", "<eos>", "<unk>"] and c.valid.tolist() == [0, 3, 2]


def test_pydoc_corpus_is_stable():
    c = D.pydoc_corpus()
    assert len(c.dictionary) > 1000 and len(c.train) > 50000
    assert c.dictionary.idx2word[c.train[0]] != "<eos>"
    unk = c.dictionary.word2idx["<unk>"]
    assert int(c.train.max()) < unk == len(c.dictionary) - 1  # only valid/test words map to it
    assert 0 < int((c.valid == unk).sum()) < len(c.valid) // 10
