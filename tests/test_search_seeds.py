"""`fastdarts search cnn --seeds N`: independent searches, one summary (tiny CPU runs).

The engine, callbacks, checkpoints and the rest of the CLI are tested in
test_loop.py, test_search_callbacks.py, test_search_checkpoint.py and test_search_cnn.py.
"""

from __future__ import annotations

import json
import os

import pytest

from fastdarts import cli

from .helpers import assert_refused_in_one_line, malicious_checkpoint

_TINY = ["--epochs", "1", "--max_steps_per_epoch", "1", "--layers", "3", "--init_channels", "2",
         "--batch_size", "8", "--train_portion", "0.9", "--quiet"]  # 0.9: validations of 180 digits


def test_several_seeds_run_and_are_summarised(tmp_path):
    save = tmp_path / "seeds"
    rc = cli.main(["search", "cnn", "--seeds", "2", "--seed", "5", "--save", str(save), *_TINY])
    assert rc == 0
    rows = json.loads((save / "summary.json").read_text())
    assert [r["seed"] for r in rows] == [5, 6] and all(r["ok"] for r in rows)
    assert (save / "seed-5" / "genotype.json").exists() and (save / "seed-6" / "genotype.json").exists()
    summary = (save / "summary.md").read_text()
    assert "| 5 | True |" in summary
    best = max(rows, key=lambda r: r["valid_acc"])
    assert f"best: seed {best['seed']} (valid_acc {best['valid_acc']:.4f})" in summary

    # each seed's search is exactly the single search with that seed
    single = tmp_path / "single6"
    assert cli.main(["search", "cnn", "--seed", "6", "--save", str(single), *_TINY]) == 0
    assert (single / "genotype.json").read_text() == (save / "seed-6" / "genotype.json").read_text()
    a6 = [json.loads(line) for line in (save / "seed-6" / "genotypes.jsonl").read_text().splitlines()]
    s6 = [json.loads(line) for line in (single / "genotypes.jsonl").read_text().splitlines()]
    assert a6 == s6
    a5 = [json.loads(line) for line in (save / "seed-5" / "genotypes.jsonl").read_text().splitlines()]
    assert a5 != a6  # the seeds really differ


class _FakeProc:
    """A search process that finishes after ``polls`` polls with ``code``."""

    live: list = []
    peak = 0

    def __init__(self, cmd, stdout, stderr, env):
        self.cmd, self.env = cmd, env
        self.polls, self.returncode, self.terminated = 2, None, False
        _FakeProc.live.append(self)
        _FakeProc.peak = max(_FakeProc.peak, len(_FakeProc.live))
        _FakeProc.started.append(self)

    def poll(self):
        self.polls -= 1
        if self.polls <= 0 and self.returncode is None:
            self.returncode = 1 if "7" in self.cmd[self.cmd.index("--seed") + 1] else 0
            _FakeProc.live.remove(self)
        return self.returncode

    def terminate(self):
        self.terminated = True

    def wait(self):
        return self.returncode


def test_seed_slots_and_gpu_assignment(tmp_path, monkeypatch):
    from fastdarts.search import seeds

    assert seeds.slots(0) == [None] and seeds.slots(2) == [0, 1] and seeds.slots(2, 2) == [0, 1, 0, 1]
    with pytest.raises(ValueError, match="--per_gpu must be >= 1"):
        seeds.slots(1, 0)
    _FakeProc.live, _FakeProc.peak, _FakeProc.started = [], 0, []
    monkeypatch.setattr(seeds.subprocess, "Popen", _FakeProc)
    monkeypatch.setattr(seeds.torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(seeds.time, "sleep", lambda s: None)
    rows = seeds.run_seeds("cnn", ["--epochs", "1", "--per_gpu", "2", "--seed", "3"], [5, 6, 7, 8, 9],
                           str(tmp_path), per_gpu=2)
    assert _FakeProc.peak == 4  # 2 GPUs x 2 searches each, never more
    gpus = [p.env["CUDA_VISIBLE_DEVICES"] for p in _FakeProc.started]
    assert gpus[:4] == ["0", "1", "0", "1"] and all(g in ("0", "1") for g in gpus)
    cmd = _FakeProc.started[0].cmd
    assert "--per_gpu" not in cmd and cmd.count("--seed") == 1
    assert cmd[-4:] == ["--seed", "5", "--save", f"{tmp_path}/seed-5"]
    # the fakes wrote no outputs: every row says so; seed 7's process failed
    assert [r["returncode"] for r in rows] == [0, 0, 1, 0, 0] and not any(r["ok"] for r in rows)
    assert "seed-7.log" in rows[2]["error"]


def test_an_interrupted_seed_run_stops_its_searches(tmp_path, monkeypatch):
    from fastdarts.search import seeds

    _FakeProc.live, _FakeProc.peak, _FakeProc.started = [], 0, []
    monkeypatch.setattr(seeds.subprocess, "Popen", _FakeProc)
    monkeypatch.setattr(seeds.torch.cuda, "device_count", lambda: 2)

    def interrupt(s):
        raise KeyboardInterrupt

    monkeypatch.setattr(seeds.time, "sleep", interrupt)
    with pytest.raises(KeyboardInterrupt):
        seeds.run_seeds("cnn", [], [1, 2, 3], str(tmp_path))
    assert len(_FakeProc.started) == 2 and all(p.terminated for p in _FakeProc.started)


def test_a_seed_whose_checkpoint_runs_code_is_refused(tmp_path, monkeypatch):
    """The summary reads each seed's checkpoint.pt; one that runs code (a save
    directory someone else filled) is refused, the row says why, and nothing ran."""
    from fastdarts.search import seeds

    marker = tmp_path / "ran"

    class LeavesAMaliciousCheckpoint(_FakeProc):
        def __init__(self, cmd, stdout, stderr, env):
            super().__init__(cmd, stdout, stderr, env)
            out = cmd[cmd.index("--save") + 1]
            os.makedirs(out)
            with open(os.path.join(out, "genotype.json"), "w") as f:
                json.dump({"normal": [["skip_connect", 0]]}, f)
            with open(os.path.join(out, "genotypes.jsonl"), "w") as f:
                f.write("{}\n")
            malicious_checkpoint(os.path.join(out, "checkpoint.pt"), marker)

    _FakeProc.live, _FakeProc.peak, _FakeProc.started = [], 0, []
    monkeypatch.setattr(seeds.subprocess, "Popen", LeavesAMaliciousCheckpoint)
    monkeypatch.setattr(seeds.time, "sleep", lambda s: None)
    [row] = seeds.run_seeds("cnn", [], [5], str(tmp_path / "seeds"))
    assert row["returncode"] == 0 and not row["ok"]
    assert row["error"].startswith("CheckpointError")
    assert_refused_in_one_line(row["error"], tmp_path / "seeds" / "seed-5" / "checkpoint.pt", marker)
