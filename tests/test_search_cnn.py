"""The CNN search from a config (fastdarts.search.cnn) and the command line
(fastdarts.cli, python -m fastdarts): tiny CPU runs on the embedded digits and on a
fake CIFAR-10 directory in the python-pickle format."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import warnings
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from fastdarts import cli
from fastdarts.loop import callbacks as loop_cb
from fastdarts.loop.state import seed_everything
from fastdarts.reference import cnn as ref_cnn
from fastdarts.search import CNNSearchConfig, outputs, search_cnn
from fastdarts.search import callbacks as cb
from fastdarts.search import cnn as search_cnn_mod
from fastdarts.search.cnn import build
from fastdarts.search.models import model_classes
from fastdarts.space import genotypes as G

from .helpers import one_thread  # noqa: F401  (autouse fixture)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# --train_portion 0.9: each epoch's validation covers 180 digits, not 899 (half of a tiny
# search's time went to it)
TINY = ["--epochs", "1", "--max_steps_per_epoch", "2", "--layers", "3", "--init_channels", "2",
        "--batch_size", "16", "--train_portion", "0.9"]


def _cfg(tmp_path, **kw):
    base = dict(init_channels=2, layers=3, batch_size=16, epochs=2, save=str(tmp_path / "run"),
                max_steps_per_epoch=2, quiet=True, impl="reference", train_portion=0.9)
    base.update(kw)
    return CNNSearchConfig(**base)


def fake_cifar(root, per_batch: int = 8):
    """cifar-10-batches-py/data_batch_1..5 and test_batch, random pixels and labels."""
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
                 b"labels": rng.integers(0, 10, per_batch).tolist()}
        with open(d / name, "wb") as f:
            pickle.dump(batch, f)
    return root


# --------------------------------------------------------------------------- the search


def test_defaults_are_the_originals():
    c = CNNSearchConfig()
    assert (c.batch_size, c.learning_rate, c.learning_rate_min, c.momentum, c.weight_decay) == \
        (64, 0.025, 0.001, 0.9, 3e-4)
    assert (c.epochs, c.init_channels, c.layers, c.seed, c.grad_clip, c.train_portion) == \
        (50, 16, 8, 2, 5.0, 0.5)
    assert (c.unrolled, c.arch_learning_rate, c.arch_weight_decay, c.impl) == (False, 3e-4, 1e-3, "fused")


def test_build_wires_the_originals_hyperparameters(tmp_path):
    e = build(_cfg(tmp_path, unrolled=True, train_portion=0.5))
    assert isinstance(e.model, ref_cnn.Network) and isinstance(e.architect, ref_cnn.Architect)
    assert e.model._C == 2 and e.model._layers == 3 and e.model._num_classes == 10
    g = e.optimizer.param_groups[0]
    assert isinstance(e.optimizer, torch.optim.SGD)
    assert (g["lr"], g["momentum"], g["weight_decay"]) == (0.025, 0.9, 3e-4)
    a = e.architect.optimizer
    assert isinstance(a, torch.optim.Adam)
    ga = a.param_groups[0]
    assert (ga["lr"], ga["betas"], ga["weight_decay"]) == (3e-4, (0.5, 0.999), 1e-3)
    assert {id(p) for p in ga["params"]} == {id(p) for p in e.model.arch_parameters()}
    assert len(e.train_loader.labels) == 898 and len(e.valid_loader.labels) == 899  # digits, 50/50
    assert e.train_loader.batch_size == 16 and e.unrolled
    kinds = [type(c) for c in e.callbacks]
    for c in (loop_cb.CosineLR, cb.ArchitectureUpdate, loop_cb.GradClip, loop_cb.Validation, cb.Logger,
              outputs.GenotypeLog, outputs.CellDrawing, outputs.AlphaPlot, loop_cb.TensorBoard):
        assert c in kinds, c
    assert e.get_callback(loop_cb.GradClip).max_norm == 5.0


def test_seed_makes_the_search_reproducible(tmp_path):
    a = build(_cfg(tmp_path)).model.arch_parameters()
    b = build(_cfg(tmp_path)).model.arch_parameters()
    c = build(_cfg(tmp_path, seed=3)).model.arch_parameters()
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(a[0], c[0])
    import random

    seed_everything(5)
    r = (random.random(), np.random.rand(), torch.rand(1).item())
    seed_everything(5)
    assert r == (random.random(), np.random.rand(), torch.rand(1).item())


def test_search_cnn_result_and_outputs(tmp_path):
    res = search_cnn(_cfg(tmp_path))
    assert G.validate(res.genotype) is not None and res.genotype == res.model.genotype()
    assert res.save_dir == str(tmp_path / "run") and res.wall_seconds > 0 and not res.stopped
    assert [r["epoch"] for r in res.history] == [0, 1]
    assert [r["lr"] for r in res.history] == [loop_cb.CosineLR(0.025, 0.001, 2).lr_at(i) for i in range(2)]
    assert all(0 <= r["valid_acc"] <= 1 and r["train_loss"] > 0 for r in res.history)
    save = tmp_path / "run"
    assert G.load_json(save / "genotype.json") == res.genotype
    lines = [json.loads(x) for x in (save / "genotypes.jsonl").read_text().splitlines()]
    assert [x["epoch"] for x in lines] == [0, 1]
    assert G.from_dict({k: v for k, v in lines[-1].items() if k != "epoch"}) == res.genotype
    for name in ("normal.dot", "reduce.dot", "checkpoint.pt"):
        assert (save / name).exists(), name


def test_cuda_graph_on_a_cpu_says_so_and_runs_eagerly(tmp_path, capsys):
    e = build(_cfg(tmp_path, cuda_graph=True, quiet=False, device="cpu"))
    assert e.fused_step is None
    assert "--cuda_graph needs --impl fused on a CUDA device; running eagerly" in capsys.readouterr().out


def test_amp_bf16_runs_every_forward_in_bf16_and_tracks_fp32(tmp_path):
    """--amp bf16: convolutions run in bfloat16 (seen by a hook), logits, losses,
    weights and alphas stay float32, and the alphas follow the float32 search to
    within bf16's precision (2 first-order steps)."""
    runs = {}
    for amp in ("none", "bf16"):
        e = build(_cfg(tmp_path, impl="fused", amp=amp, epochs=1, save=str(tmp_path / amp)))
        start = torch.cat([a.detach().flatten() for a in e.model.arch_parameters()])
        conv_dtypes = set()
        for m in e.model.modules():
            if isinstance(m, torch.nn.Conv2d):
                m.register_forward_hook(lambda mod, inp, out, seen=conv_dtypes: seen.add(out.dtype))
        e.run()
        assert all(p.dtype == torch.float32 for p in e.model.parameters())
        assert e.model(torch.randn(2, 3, 16, 16)).dtype == torch.float32
        end = torch.cat([a.detach().flatten() for a in e.model.arch_parameters()])
        assert (end - start).abs().max() > 1e-4  # the alphas did move
        runs[amp] = (end - start, conv_dtypes)
    assert runs["none"][1] == {torch.float32} and runs["bf16"][1] == {torch.bfloat16}
    # Adam moves each alpha by about lr*sign(grad) per step, so compare the directions
    # of the two updates: bf16 noise flips the sign of only the smallest gradients.
    d32, d16 = runs["none"][0], runs["bf16"][0]
    cos = torch.nn.functional.cosine_similarity(d32, d16, dim=0)
    print(f"cos(delta alpha fp32, bf16) = {cos:.4f}")
    assert cos > 0.8 and not torch.equal(d16, d32)


def test_amp_needs_the_fused_classes(tmp_path):
    with pytest.raises(ValueError, match="--amp needs --impl fused"):
        build(_cfg(tmp_path, impl="reference", amp="bf16"))
    with pytest.raises(ValueError, match="amp must be 'none' or 'bf16'"):
        build(_cfg(tmp_path, impl="fused", amp="fp8"))


def test_model_classes_and_the_fallback_to_the_reference(monkeypatch):
    from fastdarts import Architect
    from fastdarts import nn as fused

    assert model_classes("cnn", "fused") == (fused.Network, Architect)
    assert model_classes("cnn", "reference") == (ref_cnn.Network, ref_cnn.Architect)
    with pytest.raises(ValueError, match="impl must be"):
        model_classes("cnn", "fast")
    monkeypatch.setitem(sys.modules, "fastdarts.architect", None)  # the fused Architect is missing
    with pytest.warns(RuntimeWarning, match="not importable.*using the reference implementation"):
        assert model_classes("cnn", "fused") == (ref_cnn.Network, ref_cnn.Architect)


def test_a_fresh_search_over_old_outputs_is_refused_unless_overwrite(tmp_path):
    from fastdarts.config import ConfigError

    search_cnn(_cfg(tmp_path, epochs=1, max_steps_per_epoch=1))
    with pytest.raises(ConfigError, match="holds the results of an earlier search"):
        build(_cfg(tmp_path, epochs=1, quiet=False))
    build(_cfg(tmp_path, epochs=1, overwrite=True))


# --------------------------------------------------------------------------- the CLI


def test_cli_module_entry_point_on_the_embedded_default(tmp_path):
    """python -m fastdarts search cnn (the fused path, default) writes every output."""
    save = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": REPO}
    p = subprocess.run([sys.executable, "-m", "fastdarts", "search", "cnn", *TINY, "--save", str(save)],
                       capture_output=True, text=True, timeout=300, env=env)
    assert p.returncode == 0, p.stderr
    for name in ("genotype.json", "genotypes.jsonl", "normal.dot", "reduce.dot", "checkpoint.pt"):
        assert (save / name).exists(), name
    assert "embedded default" in p.stdout
    assert "genotype = Genotype(normal=" in p.stdout and f"outputs in {save}/" in p.stdout
    assert G.load_json(save / "genotype.json") == G.validate(G.load_json(save / "genotype.json"))


def test_cli_on_a_cifar_directory(tmp_path, capsys):
    root = fake_cifar(tmp_path / "cifar")
    save = tmp_path / "out"
    rc = cli.main(["search", "cnn", "--data", str(root), "--epochs", "1", "--layers", "3",
                   "--init_channels", "2", "--batch_size", "8", "--save", str(save), "--impl",
                   "reference", "--quiet"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "genotype = Genotype(" in out and "embedded default" not in out
    assert len((save / "genotypes.jsonl").read_text().splitlines()) == 1
    assert "digraph reduce" in (save / "reduce.dot").read_text()


def test_cli_resume_continues_the_search(tmp_path, capsys):
    save = tmp_path / "out"
    flags = ["search", "cnn", *TINY, "--save", str(save), "--impl", "reference", "--quiet"]
    assert cli.main(flags) == 0
    flags[flags.index("--epochs") + 1] = "2"
    assert cli.main([*flags, "--resume", str(save / "checkpoint.pt")]) == 0
    lines = (save / "genotypes.jsonl").read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in lines] == [0, 1]
    capsys.readouterr()
    rc = cli.main([*flags, "--resume", str(save / "checkpoint.pt"), "--layers", "4"])
    assert rc == 2
    assert "another search configuration (layers: checkpoint 3, now 4)" in capsys.readouterr().err


def test_cli_missing_data_dir_exits_2_with_the_message(tmp_path, capsys):
    rc = cli.main(["search", "cnn", "--data", str(tmp_path / "nowhere"), "--save", str(tmp_path / "s")])
    std = capsys.readouterr()
    assert rc == 2
    assert "no CIFAR-10 found at" in std.err and "nowhere" in std.err
    assert "Traceback" not in std.err and "Traceback" not in std.out


@pytest.mark.parametrize("argv", [["search", "cnn", "--epochs", "x"], ["search", "cnn", "--bogus"],
                                  ["search", "cnn", "--impl", "fast"], ["search"], []])
def test_cli_bad_flags_are_argparse_errors(argv, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    assert info.value.code == 2
    assert "error:" in capsys.readouterr().err


@pytest.fixture
def captured(monkeypatch):
    """Replace the search itself: record the config the CLI built."""
    seen = []

    def fake_search(cfg, callbacks=()):
        seen.append(cfg)
        return SimpleNamespace(genotype=G.DARTS_V2, wall_seconds=0.0)

    monkeypatch.setattr(search_cnn_mod, "search_cnn", fake_search)
    return seen


def test_cli_small_settings_only_on_the_embedded_default(captured, tmp_path):
    save = ["--save", str(tmp_path / "s"), "--quiet"]
    assert cli.main(["search", "cnn", *save]) == 0
    c = captured[-1]
    assert (c.init_channels, c.layers, c.batch_size, c.epochs) == (4, 3, 64, 5) and c.data is None
    assert cli.main(["search", "cnn", "--data", "somewhere", *save]) == 0
    c = captured[-1]
    assert (c.init_channels, c.layers, c.batch_size, c.epochs) == (16, 8, 64, 50)
    assert cli.main(["search", "cnn", "--layers", "5", "--epochs", "2", *save]) == 0
    c = captured[-1]
    assert (c.init_channels, c.layers, c.epochs) == (4, 5, 2)
    assert cli.main(["search", "cnn", "--unrolled", "--seed", "7", "--learning_rate", "0.1",
                     "--arch_learning_rate", "1e-3", "--impl", "reference", "--device", "cpu", *save]) == 0
    c = captured[-1]
    assert (c.unrolled, c.seed, c.learning_rate, c.arch_learning_rate, c.impl, c.device) == \
        (True, 7, 0.1, 1e-3, "reference", "cpu")


def test_cli_threads(captured, tmp_path, monkeypatch):
    save = ["--save", str(tmp_path / "s"), "--quiet"]
    assert cli.main(["search", "cnn", "--threads", "2", *save]) == 0
    assert torch.get_num_threads() == 2
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert cli.main(["search", "cnn", *save]) == 0
    assert torch.get_num_threads() == (torch.get_num_threads() if torch.cuda.is_available() else 1)


def test_cli_backend_flag_calls_set_backend(monkeypatch, tmp_path):
    from fastdarts import backends

    calls = []
    monkeypatch.setattr(backends, "set_backend", calls.append)
    assert cli.main(["search", "cnn", "--backend", "reference", "--data", str(tmp_path / "no")]) == 2
    assert calls == ["reference"]


def test_cli_profile_flag(captured, tmp_path, monkeypatch, capsys):
    save = ["--save", str(tmp_path / "s"), "--quiet"]
    import fastdarts.profile as prof

    monkeypatch.setattr(search_cnn_mod, "search_cnn", lambda *a, **k: pytest.fail("searched"))
    monkeypatch.setattr(prof, "run_profile", lambda space, cfg, **k: {"space": space, "C": cfg.init_channels})
    monkeypatch.setattr(prof, "format_report", lambda r: f"REPORT {r}")
    assert cli.main(["search", "cnn", "--profile", *save]) == 0
    assert "REPORT {'space': 'cnn', 'C': 4}" in capsys.readouterr().out


def test_cli_search_space_registry(monkeypatch, capsys):
    with pytest.raises(SystemExit) as exc:  # an unknown command is an argparse error
        cli.main(["frobnicate", "cnn", "--x"])
    assert exc.value.code == 2 and "invalid choice: 'frobnicate'" in capsys.readouterr().err

    ran = []

    def add_toy(sub):
        p = sub.add_parser("toy")
        p.add_argument("--n", type=int, default=1)
        p.set_defaults(run=lambda a: ran.append(a.n) or 0)

    monkeypatch.setitem(cli.COMMANDS, "search toy", add_toy)
    assert cli.main(["search", "toy", "--n", "3"]) == 0 and ran == [3]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert cli.build_parser().prog == "fastdarts"
