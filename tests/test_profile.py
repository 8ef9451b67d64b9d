"""fastdarts profile (per-phase step timing, projection, JSON, PNG, CLI) and SearchCost.

CPU, tiny configs.  Timing on the shared 2-core CI box is noisy, so the additivity
checks are of two kinds: the exact one (the phases of each instrumented step
partition it: error < 1e-6 ms, by construction, so a hook that fires out of
order or a phase that is lost shows here), and the statistical one (sum of phase
medians vs the median of *plain* steps) at ``CI_TOLERANCE``, looser than the
profiler's own ADD_UP_TOLERANCE (10 % + 1 ms, meant for a quiet machine or a GPU),
over up to 3 runs (another process on the 2 cores once made a first-order RNN run
read 43 ms of phases against a 78 ms plain median).
"""

from __future__ import annotations

import importlib.util
import io
import json
import math

import pytest

from fastdarts import distributed
from fastdarts.profile import PHASES, SCHEMA_VERSION, SearchCost, check_schema, run_profile, write_png
from fastdarts.profile import cost as cost_mod
from fastdarts.search.cnn import CNNSearchConfig, search_cnn
from fastdarts.search.rnn import RNNSearchConfig

from .helpers import one_thread  # noqa: F401  (autouse fixture)

CI_TOLERANCE = 0.35
SECOND = ("data", "virtual_step", "validation", "w_plus", "w_minus", "alpha_update", "weight_step")
FIRST = ("data", "validation", "alpha_update", "weight_step")




def _cnn(tmp_path, **kw):
    base = dict(init_channels=2, layers=3, batch_size=8, epochs=3, max_steps_per_epoch=5,
                train_portion=0.9, save=str(tmp_path / "s"), device="cpu")  # validations of 180
    return CNNSearchConfig(**{**base, **kw})


def _rnn(tmp_path, **kw):
    base = dict(emsize=8, nhid=8, nhidlast=8, batch_size=4, bptt=4, epochs=2, max_steps_per_epoch=3,
                save=str(tmp_path / "s"), device="cpu")
    return RNNSearchConfig(**{**base, **kw})


def _check_variant(r, expected):
    ph = {p: r["phases"][p]["median_ms"] for p in PHASES}
    for p in expected:
        assert ph[p] > 0, f"{p} not measured: {ph}"
    for p in set(PHASES) - set(expected) - {"other"}:
        assert ph[p] == 0.0, f"{p} should not occur here: {ph}"
    # exact partition of each instrumented step
    assert r["max_partition_error_ms"] < 1e-6 * max(1.0, r["instrumented_step_ms"])
    # engine/callback overhead is small: a mislabelled phase would land in "other"
    assert ph["other"] < 0.1 * r["phase_sum_ms"], ph
    # every compute phase ran ops (torch.profiler step)
    for p in expected:
        if p != "data":
            assert r["phases"][p]["ops"] > 0, (p, r["phases"][p])
    assert r["busy_ms"] > 0
    assert _adds_up_in_ci(r), (r["phase_sum_ms"], r["step_ms"])


def _adds_up_in_ci(r) -> bool:
    return abs(r["phase_sum_ms"] - r["step_ms"]) <= CI_TOLERANCE * r["step_ms"] + 1.0


def _profile(space, cfg, **kw):
    """run_profile, repeated (at most 3 runs) while a timing spike on the shared box
    keeps the statistical check from passing; the exact checks apply to every run
    through _check_variant, and a path that never adds up still fails."""
    for _ in range(3):
        rep = run_profile(space, cfg, **kw)
        if _adds_up_in_ci(rep["variants"][0]):
            break
    return rep


def _check_projection(r, steps_per_epoch, epochs):
    pr = r["projection"]
    assert (pr["steps_per_epoch"], pr["epochs"], pr["steps"]) == (steps_per_epoch, epochs,
                                                                  steps_per_epoch * epochs)
    assert pr["step_ms"] == r["step_ms"]
    assert math.isclose(pr["hours"], steps_per_epoch * epochs * r["step_ms"] / 3.6e6, rel_tol=1e-12)
    assert math.isclose(pr["days"], pr["hours"] / 24, rel_tol=1e-12)
    assert pr["unit"] == "CPU" and pr["device"].startswith("CPU")


def test_cnn_second_order_phases_add_up_and_project(tmp_path):
    rep = _profile("cnn", _cnn(tmp_path, unrolled=True), warmup=1, steps=2)
    check_schema(rep)
    assert rep["order"] == "second" and rep["busy_kind"] == "cpu_top_level_aten_ops"
    (r,) = rep["variants"]
    assert r["name"] == "fused[auto]" and r["peak_mib"] is None
    _check_variant(r, SECOND)
    _check_projection(r, 5, 3)


def test_cnn_first_order_compare_every_backend(tmp_path):
    from fastdarts import available_backends, backends

    before = backends.get_requested()
    heard = []
    rep = run_profile("cnn", _cnn(tmp_path), warmup=0, steps=2, compare=True, ops=False,
                      log=heard.append)
    check_schema(rep)
    # progress: per variant its name, the warm-up and each measured step, as they happen
    for r in rep["variants"]:
        at = heard.index(f"profiling {r['name']} ...")
        assert heard[at + 1].startswith("  warm-up: 0 steps in ")
        assert [m.split(":")[0] for m in heard[at + 2:at + 4]] == ["  step 1/2", "  step 2/2"]
    names = [r["name"] for r in rep["variants"]]
    assert names == ["reference"] + [f"fused[{b}]" for b in available_backends("cpu") if b != "triton"]
    assert rep["variants"][0]["speedup_vs_reference"] == 1.0
    for r in rep["variants"]:
        assert r["phases"]["validation"]["median_ms"] > 0 and r["phases"]["w_plus"]["median_ms"] == 0
        assert r["phases"]["weight_step"]["median_ms"] > 0
        assert r["ops"] == 0  # ops=False: no torch.profiler step
        assert math.isclose(r["speedup_vs_reference"], rep["variants"][0]["step_ms"] / r["step_ms"])
    assert backends.get_requested() == before  # the backend override is put back


@pytest.mark.parametrize("unrolled", [True, False])
def test_rnn_profile(tmp_path, unrolled):
    # 1 + 2 x 2 + 1 steps over 3-step epochs: the driver starts a new epoch of batches
    rep = _profile("rnn", _rnn(tmp_path, unrolled=unrolled), warmup=1, steps=2)
    check_schema(rep)
    (r,) = rep["variants"]
    _check_variant(r, SECOND if unrolled else FIRST)
    _check_projection(r, 3, 2)


def test_reference_impl_second_order_phases(tmp_path):
    # the reference Architect deep-copies the model: the forward hooks must follow it
    rep = run_profile("cnn", _cnn(tmp_path, unrolled=True, impl="reference"), warmup=0, steps=1,
                      ops=False)
    (r,) = rep["variants"]
    assert r["name"] == "reference"
    for p in SECOND:
        assert r["phases"][p]["median_ms"] > 0, p


# the documented schema, spelled out: changing a key must bump schema_version
TOP_KEYS = {"schema_version", "space", "order", "device", "versions", "warmup", "steps", "phases",
            "busy_kind", "tolerance", "config", "variants"}
VARIANT_KEYS = {"name", "impl", "backend", "cuda_graph", "step_ms", "step_ms_q1", "step_ms_q3",
                "instrumented_step_ms", "phase_sum_ms", "max_partition_error_ms", "adds_up", "phases",
                "peak_mib", "busy_ms", "ops", "projection", "speedup_vs_reference"}
PHASE_KEYS = {"median_ms", "busy_ms", "ops", "peak_mib"}
PROJECTION_KEYS = {"steps_per_epoch", "epochs", "steps", "step_ms", "hours", "days", "unit", "device"}


def _tiny_report(tmp_path):
    return run_profile("cnn", _cnn(tmp_path), warmup=0, steps=1, ops=False)


def test_json_schema_is_stable(tmp_path):
    rep = json.loads(json.dumps(_tiny_report(tmp_path)))  # what --json writes
    assert SCHEMA_VERSION == 1 and rep["schema_version"] == 1
    check_schema(rep)
    assert set(rep) == TOP_KEYS
    assert rep["phases"] == list(PHASES)
    for r in rep["variants"]:
        assert set(r) == VARIANT_KEYS
        assert set(r["projection"]) == PROJECTION_KEYS
        assert all(set(v) == PHASE_KEYS for v in r["phases"].values())
        assert isinstance(r["ops"], int) and isinstance(r["step_ms"], float)
    # the checker itself can fail
    broken = json.loads(json.dumps(rep))
    del broken["variants"][0]["projection"]["hours"]
    with pytest.raises(ValueError, match="hours"):
        check_schema(broken)
    broken = json.loads(json.dumps(rep))
    broken["variants"][0]["step_ms"] = "12"
    with pytest.raises(ValueError, match="step_ms"):
        check_schema(broken)


def test_png(tmp_path):
    rep = _tiny_report(tmp_path)
    path = tmp_path / "phases.png"
    if importlib.util.find_spec("matplotlib") is None:
        assert write_png(rep, str(path)) is False and not path.exists()
        pytest.skip("matplotlib is not installed: checked that no PNG is written")
    assert write_png(rep, str(path)) is True
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_profile_cnn_writes_json(tmp_path, capsys, monkeypatch):
    from fastdarts import cli

    out = tmp_path / "report.json"
    monkeypatch.chdir(tmp_path)
    # --no_ops: the torch.profiler step is checked above (python -m fastdarts, the module
    # entry, is run as a process in test_search_cnn.py)
    rc = cli.main(["profile", "cnn", "--steps", "2", "--warmup", "1", "--epochs", "1", "--no_ops",
                   "--batch_size", "16", "--json", str(out)])
    std = capsys.readouterr()
    assert rc == 0, std.err[-2000:]
    assert "  warm-up: 1 steps in " in std.err and "  step 2/2: " in std.err  # progress
    assert "projection:" in std.out and "CPU-hours" in std.out
    rep = json.loads(out.read_text())
    check_schema(rep)
    assert rep["config"]["epochs"] == 1 and rep["config"]["init_channels"] == 4  # digits defaults
    assert not any(p.name.startswith("search-cnn") for p in tmp_path.iterdir())  # temp save dir


class _FakeClock:
    """36 s (0.01 h) per reading."""

    def __init__(self):
        self.t = 0.0

    def __call__(self):
        self.t += 36.0
        return self.t


@pytest.mark.parametrize("world", [1, 4])
def test_search_cost_lines_and_projection(tmp_path, monkeypatch, world):
    monkeypatch.setattr(distributed, "world", lambda: (0, world))
    stream = io.StringIO()
    sc = SearchCost(clock=_FakeClock(), stream=stream)
    engine = search_cnn(_cnn(tmp_path, epochs=2, max_steps_per_epoch=2, quiet=True), callbacks=[sc])
    lines = stream.getvalue().splitlines()
    assert len(lines) == 3, lines
    # readings at search_begin, epoch ends (36 s, 72 s) and search_end (108 s)
    assert [round(r["device_hours"], 9) for r in sc.rows] == [0.01 * world, 0.02 * world]
    assert [round(r["projected_device_hours"], 9) for r in sc.rows] == [0.02 * world] * 2
    assert [r["eta_seconds"] for r in sc.rows] == [36.0, 0.0]
    assert lines[0].startswith(f"cost: epoch 1/2 {0.01 * world:.3g} CPU-hours so far, projected "
                               f"{0.02 * world:.3g} CPU-hours")
    assert lines[0].endswith("ETA 0:00:36")
    days = 0.03 * world / 24
    assert lines[-1].startswith(f"search cost: {days:.3g} CPU-days on CPU")
    assert engine.search_cost["device_days"] == pytest.approx(days)
    assert engine.search_cost["world_size"] == world


def test_search_cost_real_clock(tmp_path):
    stream = io.StringIO()
    t0 = cost_mod.time.perf_counter()
    engine = search_cnn(_cnn(tmp_path, epochs=1, max_steps_per_epoch=2, quiet=True),
                        callbacks=[SearchCost(stream=stream)])
    wall = cost_mod.time.perf_counter() - t0
    assert 0 < engine.search_cost["seconds"] <= wall
    assert stream.getvalue().splitlines()[-1].startswith("search cost: ")
