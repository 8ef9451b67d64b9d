"""Where a search step's time goes: phase timing of a built (not run) search.

Design: a *timeline of marks*.  A step is cut at phase boundaries; each mark
says "the time since the previous mark belongs to phase P", so the phases of
one instrumented step partition it exactly (their sum is the step, by
construction, nothing unattributed: engine and callback overhead is the phase
``other``).  A mark is ``time.perf_counter()`` on the CPU (every op there is
synchronous) and a CUDA event on the GPU (recorded, never waited on inside the
step; the events are read after a ``synchronize`` at the step's end).

The boundaries come from public per-instance hooks, so ``fastdarts/architect.py``
and the search loops are not touched and nothing global is patched:

* the engine's own events, through a :class:`Callback` that runs first
  (``batch_begin``, ``after_arch_step``, ``after_weight_step``);
* forward pre-hooks on the search model: during the architect step the k-th
  forward pass starts the k-th phase (second order: train at w, validation at
  w', w+, w-; first order: validation only).  They are plain closures, so the
  reference Architect's ``deepcopy`` of the model carries them to the unrolled
  copy unchanged;
* step pre/post hooks on the Architect's Adam (alpha update = Adam's step);
* a wrapper around the engine's architecture-batch iterator (data phase).

So, in the second order, ``virtual_step`` = training forward/backward at w +
clip + w' update (+ BatchNorm statistics save); ``validation`` = forward/backward
at w'; ``w_plus`` = statistics restore, ||v||, the w+ perturbation and its
forward/backward; ``w_minus`` = the w- perturbation, its forward/backward, the
restore of w and the finite-difference combination; ``alpha_update`` = Adam;
``weight_step`` = zero_grad, forward, backward, clip, SGD.  A CUDA-graph step
(``--cuda_graph``) replays as one unit and is reported as ``captured_step``.

Checks: every measured step alternates instrumented and plain (hooks present,
only the outer two marks), so machine-load drift hits both alike.  ``step_ms``
is the plain steps' median; ``phase_sum_ms`` the sum of the phases' medians;
they agree within :data:`ADD_UP_TOLERANCE` (relative) plus
:data:`ADD_UP_SLACK_MS` (medians of parts are not the median of the sum).

A last step runs under ``torch.profiler`` with a synchronisation at each mark
(timing not used) to give per phase the busy time and op count: GPU kernel time
and kernel count on a GPU, CPU self time of ``aten::`` ops and their count on a
CPU; events are attributed to phases by their start time.  On a GPU the same
step gives each phase's peak allocated memory.
"""

from __future__ import annotations

import bisect
import contextlib
import gc
import math
import platform
import statistics
import time
from dataclasses import asdict, replace

import torch

from ..loop.engine import Callback

SCHEMA_VERSION = 1
PHASES = ("data", "virtual_step", "validation", "w_plus", "w_minus", "alpha_update", "weight_step",
          "captured_step", "other")
# phase sum vs plain step median: |sum - step| <= ADD_UP_TOLERANCE * step + ADD_UP_SLACK_MS
ADD_UP_TOLERANCE = 0.10
ADD_UP_SLACK_MS = 1.0
_RANGE = "fastdarts.profile.segment"
# labels of the forward passes inside the architect step: the k-th forward *starts*
# a phase, so it closes the one before it (None: nothing to close)
_FORWARD_CLOSES = {True: (None, "virtual_step", "validation", "w_plus"), False: (None,)}


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def versions() -> dict:
    try:
        import triton

        tv = triton.__version__
    except ImportError:
        tv = None
    from .. import __version__

    return {"fastdarts": __version__, "torch": torch.__version__, "triton": tv,
            "cuda": torch.version.cuda, "python": platform.python_version()}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class _Timeline:
    """Marks of one step.  ``fine=False``: only the outer marks count (a plain step).
    ``profiled=True``: a synchronisation, a profiler range and a peak-memory reading
    at each mark (for the torch.profiler step only)."""

    def __init__(self, device: torch.device, fine: bool = True, profiled: bool = False):
        self.device, self.fine, self.profiled = device, fine, profiled
        self.cuda = device.type == "cuda"
        self.marks: list = []      # (phase or None, timestamp or event)
        self.peaks: list = []
        self._range = None

    def _stamp(self):
        if self.profiled:
            _sync(self.device)
        if self.cuda:
            ev = torch.cuda.Event(enable_timing=True)
            ev.record()
            return ev
        return time.perf_counter()

    def _next_range(self, phase):
        if self._range is not None:
            self._range.__exit__(None, None, None)
            if self.cuda:
                self.peaks.append((phase, torch.cuda.max_memory_allocated(self.device) / 2**20))
                torch.cuda.reset_peak_memory_stats(self.device)
        self._range = None
        if phase is not False:
            self._range = torch.profiler.record_function(_RANGE)
            self._range.__enter__()

    def start(self) -> None:
        if self.profiled:
            _sync(self.device)
            if self.cuda:
                torch.cuda.reset_peak_memory_stats(self.device)
            self._next_range(None)
        self.marks = [(None, self._stamp())]

    def mark(self, phase: str, final: bool = False) -> None:
        if not (self.fine or final):
            return
        if self.cuda and torch.cuda.is_current_stream_capturing():
            return  # a graph being recorded: no events, they would join the graph
        self.marks.append((phase, self._stamp()))
        if self.profiled:
            self._next_range(False if final else phase)

    def phases(self) -> dict:
        """phase -> ms for this step (all PHASES keys; unvisited ones 0.0)."""
        _sync(self.device)
        out = dict.fromkeys(PHASES, 0.0)
        for (_, a), (phase, b) in zip(self.marks, self.marks[1:]):
            out[phase] += a.elapsed_time(b) if self.cuda else (b - a) * 1e3
        return out

    def total_ms(self) -> float:
        _sync(self.device)
        a, b = self.marks[0][1], self.marks[-1][1]
        return a.elapsed_time(b) if self.cuda else (b - a) * 1e3


class _Marks(Callback):
    """Marks at the engine's events; runs before every other callback."""

    order = -10_000

    def __init__(self, driver):
        self.driver = driver

    def batch_begin(self, e):
        self.driver.mark("other")
        self.driver.in_arch, self.driver.forwards = True, 0

    def after_arch_step(self, e):
        self.driver.in_arch = False
        self.driver.mark("captured_step" if getattr(e, "fused_step", None) is not None else "alpha_update")

    def after_weight_step(self, e):
        self.driver.mark("weight_step")


class _MarkedIterator:
    """The engine's architecture-batch iterator, with the fetch marked as ``data``."""

    def __init__(self, it, driver):
        self.it, self.driver = it, driver

    def __iter__(self):
        return self

    def __next__(self):
        self.driver.mark("other")
        batch = next(self.it)
        self.driver.mark("data")
        return batch


class StepDriver:
    """Runs single search steps of a built engine, as its ``run()`` would, with marks.

    ``engine``: from fastdarts.search.cnn.build / rnn.build (not yet run)."""

    def __init__(self, engine):
        self.engine = engine
        self.timeline: _Timeline | None = None
        self.in_arch, self.forwards = False, 0
        self._batches = None
        self._callback = _Marks(self)
        engine.add_callback(self._callback)
        closes = _FORWARD_CLOSES[bool(engine.unrolled)]

        def on_forward(module, args):  # a closure, not a bound method: deepcopy keeps it as is
            if self.in_arch:
                if self.forwards < len(closes) and closes[self.forwards] is not None:
                    self.mark(closes[self.forwards])
                self.forwards += 1

        def before_adam(opt, args, kwargs):
            self.mark("w_minus" if engine.unrolled else "validation")

        def after_adam(opt, args, kwargs):
            self.in_arch = False
            self.mark("alpha_update")

        adam = engine.architect.optimizer
        self._handles = [engine.model.register_forward_pre_hook(on_forward),
                         adam.register_step_pre_hook(before_adam),
                         adam.register_step_post_hook(after_adam)]
        engine.fire("epoch_begin")  # learning rate, hidden states, metric sums

    def mark(self, phase: str) -> None:
        if self.timeline is not None:
            self.timeline.mark(phase)

    def _next_batch(self):
        e = self.engine
        while True:
            if self._batches is None:
                self._batches = iter(e.train_batches())
            try:
                batch = next(self._batches)
                break
            except StopIteration:
                self._batches = None
                e.step = 0
        it = getattr(e, "valid_iter", None)
        if it is not None and not isinstance(it, _MarkedIterator):
            e.valid_iter = _MarkedIterator(it, self)
        return batch

    def step(self, timeline: _Timeline) -> _Timeline:
        """One search step (data included) under ``timeline``."""
        e = self.engine
        self.timeline = timeline
        timeline.start()
        batch = self._next_batch()
        timeline.mark("data")
        e.batch = batch
        e.fire("batch_begin")
        e.one_batch(batch)
        e.fire("batch_end")
        e.step += 1
        e.global_step += 1
        timeline.mark("other", final=True)
        self.timeline = None
        return timeline

    def close(self) -> None:
        for h in self._handles:
            h.remove()
        self.engine.callbacks = [c for c in self.engine.callbacks if c is not self._callback]


def _median(xs):
    return statistics.median(xs) if xs else 0.0


def _raw_events(prof) -> list[tuple]:
    """(name, start_ns, end_ns, device_type, thread) of every event of a finished
    torch.profiler run.  Read from the profiler's raw (kineto) results where they are
    exposed: ``prof.events()`` builds a FunctionEvent tree in Python first, which took
    17 s for the 179k events of one tiny second-order CPU step (measured 2026-12-01,
    torch 2.13.0+cpu), against well under a second for this.  The events it leaves out
    (memory records, profiler bookkeeping, hidden events) are left out here too, by
    torch's own filter."""
    from torch.autograd import profiler_util

    kineto = getattr(getattr(prof, "profiler", None), "kineto_results", None)
    filtered = getattr(profiler_util, "_filter_name", None)
    if kineto is None or not hasattr(kineto, "events") or filtered is None:
        return [(e.name, int(e.time_range.start * 1e3), int(e.time_range.end * 1e3),
                 e.device_type, e.thread) for e in prof.events()]
    return [(e.name(), e.start_ns(), e.end_ns(), e.device_type(), e.start_thread_id())
            for e in kineto.events() if not (filtered(e.name()) or e.is_hidden_event())]


def _attribute_events(events: list[tuple], phases: list[str], cuda: bool) -> dict:
    """phase -> [busy ms, op count] from the :func:`_raw_events` of a profiler run of one
    step with ``_RANGE`` ranges in ``phases`` order; events are assigned by their start
    time.  GPU: every device event (kernels, memcpy, memset).  CPU: top-level ``aten::``
    ops per thread (an op inside another op is not counted again), time as measured
    under the profiler."""
    DT = torch.autograd.DeviceType
    starts = sorted(e[1] for e in events if e[0] == _RANGE)
    out = {p: [0.0, 0] for p in PHASES}
    if not starts:
        return out
    if cuda:
        picked = [e for e in events if e[3] == DT.CUDA]
    else:
        picked, ends = [], {}
        aten = sorted((e for e in events if e[3] == DT.CPU and e[0].startswith("aten::")),
                      key=lambda e: (e[1], -e[2]))
        for e in aten:
            if e[1] >= ends.get(e[4], -math.inf):
                picked.append(e)
                ends[e[4]] = e[2]
    for e in picked:
        k = max(0, bisect.bisect_right(starts, e[1]) - 1)
        if k < len(phases):
            slot = out[phases[k]]
            slot[0] += (e[2] - e[1]) / 1e6
            slot[1] += 1
    return out


def profile_engine(engine, *, warmup: int = 3, steps: int = 10, ops: bool = True, log=None) -> dict:
    """Time ``steps`` instrumented and ``steps`` plain search steps of ``engine`` (built,
    not run) after ``warmup`` steps; returns the variant's result dict (see schema).
    ``log(msg)``, if given, hears the progress: the warm-up, each measured step, the
    profiled step."""
    device = engine.device
    driver = StepDriver(engine)
    say = log or (lambda msg: None)
    try:
        fused = getattr(engine, "fused_step", None)
        if fused is not None and getattr(fused, "cuda_graph", False):
            warmup = max(warmup, fused.warmup + 2)  # eager warm-up, capture, one replay
        t0 = time.perf_counter()
        for _ in range(warmup):
            driver.step(_Timeline(device, fine=False))
        _sync(device)
        say(f"  warm-up: {warmup} steps in {time.perf_counter() - t0:.1f} s")
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        per_phase = {p: [] for p in PHASES}
        plain, instrumented, exact = [], [], 0.0
        for i in range(steps):
            t = driver.step(_Timeline(device, fine=True))
            ph = t.phases()
            total = t.total_ms()
            exact = max(exact, abs(sum(ph.values()) - total))
            instrumented.append(total)
            for p, v in ph.items():
                per_phase[p].append(v)
            plain.append(driver.step(_Timeline(device, fine=False)).total_ms())
            say(f"  step {i + 1}/{steps}: {plain[-1]:.1f} ms (instrumented {total:.1f} ms)")
        peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
        busy = {p: [0.0, 0] for p in PHASES}
        phase_peak: dict = {}
        if ops:
            say("  one more step under torch.profiler (busy time, op counts; --no_ops skips it)")
            busy, phase_peak = _profile_one_step(driver, device)
    finally:
        driver.close()
    step_ms = _median(plain)
    phases = {p: {"median_ms": _median(per_phase[p]), "busy_ms": busy[p][0], "ops": busy[p][1],
                  "peak_mib": phase_peak.get(p)} for p in PHASES}
    phase_sum = sum(v["median_ms"] for v in phases.values())
    q = statistics.quantiles(plain, n=4, method="inclusive") if len(plain) > 1 else [step_ms] * 3
    return {"step_ms": step_ms, "step_ms_q1": q[0], "step_ms_q3": q[2],
            "instrumented_step_ms": _median(instrumented), "phase_sum_ms": phase_sum,
            "max_partition_error_ms": exact,
            "adds_up": abs(phase_sum - step_ms) <= ADD_UP_TOLERANCE * step_ms + ADD_UP_SLACK_MS,
            "phases": phases, "peak_mib": peak,
            "busy_ms": sum(v["busy_ms"] for v in phases.values()),
            "ops": sum(v["ops"] for v in phases.values()),
            "projection": projection(engine, step_ms)}


def _profile_one_step(driver: StepDriver, device: torch.device):
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    t = _Timeline(device, fine=True, profiled=True)
    _sync(device)
    with profile(activities=acts) as prof:
        driver.step(t)
        _sync(device)
    names = [phase for phase, _ in t.marks[1:]]
    peaks: dict = {}
    for phase, mib in t.peaks:
        if phase:
            peaks[phase] = max(peaks.get(phase, 0.0), mib)
    return _attribute_events(_raw_events(prof), names, device.type == "cuda"), peaks


def projection(engine, step_ms: float) -> dict:
    """steps/epoch x epochs x step time, in device-hours and -days (this device)."""
    steps = int(engine.steps_per_epoch) * int(engine.epochs)
    hours = steps * step_ms / 3.6e6
    unit = "GPU" if engine.device.type == "cuda" else "CPU"
    return {"steps_per_epoch": int(engine.steps_per_epoch), "epochs": int(engine.epochs),
            "steps": steps, "step_ms": step_ms, "hours": hours, "days": hours / 24, "unit": unit,
            "device": device_name(engine.device)}


# -- variants and the whole report ---------------------------------------------------
def variants(space: str, cfg, compare: bool) -> list[dict]:
    """[{name, impl, backend, cuda_graph, cfg}]: the configured search, or with
    ``compare`` the reference implementation, the fused path on every kernel backend
    available on the device (not Triton's CPU interpreter), and (CNN on CUDA) the captured
    fused step."""
    from ..backends import available_backends, get_requested

    device = torch.device(cfg.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    graph_ok = space == "cnn" and device.type == "cuda"
    if not compare:
        graph = bool(getattr(cfg, "cuda_graph", False)) and cfg.impl == "fused" and graph_ok
        backend = None if cfg.impl == "reference" else get_requested()
        name = "reference" if cfg.impl == "reference" else f"fused[{backend}]" + ("+graph" if graph else "")
        return [{"name": name, "impl": cfg.impl, "backend": backend, "cuda_graph": graph, "cfg": cfg}]
    out = [{"name": "reference", "impl": "reference", "backend": None, "cuda_graph": False,
            "cfg": _with(cfg, impl="reference", cuda_graph=False)}]
    for b in available_backends(device):
        if b == "triton" and device.type != "cuda":
            continue  # Triton's interpreter on the CPU checks correctness; it is not a fast path
        out.append({"name": f"fused[{b}]", "impl": "fused", "backend": b, "cuda_graph": False,
                    "cfg": _with(cfg, impl="fused", cuda_graph=False)})
    if graph_ok:
        out.append({"name": "fused[auto]+graph", "impl": "fused", "backend": "auto", "cuda_graph": True,
                    "cfg": _with(cfg, impl="fused", cuda_graph=True)})
    return out


def _with(cfg, **kw):
    return replace(cfg, **{k: v for k, v in kw.items() if hasattr(cfg, k)})


def run_profile(space: str, cfg, *, warmup: int = 3, steps: int = 10, compare: bool = False,
                ops: bool = True, log=None) -> dict:
    """Build the configured ``space`` ("cnn"/"rnn") search per variant and profile it.

    ``cfg``: a CNNSearchConfig / RNNSearchConfig (its ``save`` directory is created by
    the build; nothing is written there).  Returns the report (schema_version 1)."""
    from .. import backends

    if space == "cnn":
        from ..search.cnn import build
    elif space == "rnn":
        from ..search.rnn import build
    else:
        raise ValueError(f"space must be 'cnn' or 'rnn', got {space!r}")
    if steps < 1 or warmup < 0:
        raise ValueError(f"need steps >= 1 and warmup >= 0 (got {steps}, {warmup})")
    cfg = _with(cfg, quiet=True)
    rows, device = [], None
    for v in variants(space, cfg, compare):
        # a variant without a backend (the reference) runs under the caller's choice
        with backends.use(v["backend"]) if v["backend"] is not None else contextlib.nullcontext():
            if log:
                log(f"profiling {v['name']} ...")
            engine = build(v["cfg"])
            device = engine.device
            res = profile_engine(engine, warmup=warmup, steps=steps, ops=ops, log=log)
            rows.append({k: v[k] for k in ("name", "impl", "backend", "cuda_graph")} | res)
            del engine
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
    base = next((r for r in rows if r["impl"] == "reference"), None)
    for r in rows:
        r["speedup_vs_reference"] = (base["step_ms"] / r["step_ms"]
                                     if base is not None and r["step_ms"] > 0 else None)
    config = {k: v for k, v in asdict(cfg).items() if k not in ("quiet",)}
    return {"schema_version": SCHEMA_VERSION, "space": space,
            "order": "second" if cfg.unrolled else "first",
            "device": {"type": device.type, "name": device_name(device)}, "versions": versions(),
            "warmup": warmup, "steps": steps, "phases": list(PHASES),
            "busy_kind": "gpu_kernels" if device.type == "cuda" else "cpu_top_level_aten_ops",
            "tolerance": {"relative": ADD_UP_TOLERANCE, "slack_ms": ADD_UP_SLACK_MS},
            "config": config, "variants": rows}


# -- output --------------------------------------------------------------------------
def _fmt_ms(x: float) -> str:
    return f"{x:.3g}" if x < 1000 else f"{x:.0f}"


def format_report(report: dict) -> str:
    """A readable terminal table: one block per variant, then the comparison."""
    dev = report["device"]
    cuda = dev["type"] == "cuda"
    busy_h, ops_h = ("GPU-busy ms", "kernels") if cuda else ("CPU-op ms", "aten ops")
    lines = [f"fastdarts profile: {report['space']} search, {report['order']} order, on {dev['name']} "
             f"({', '.join(f'{k} {v}' for k, v in report['versions'].items() if v)})",
             f"{report['warmup']} warm-up + {report['steps']} instrumented + {report['steps']} plain "
             f"steps; medians{' (CUDA events)' if cuda else ' (perf_counter)'}"]
    for r in report["variants"]:
        active = [p for p in PHASES if r["phases"][p]["median_ms"] > 0 or r["phases"][p]["ops"] > 0]
        head = ["phase", "ms", "share", busy_h, ops_h] + (["peak MiB"] if cuda else [])
        rows = []
        for p in active:
            v = r["phases"][p]
            share = v["median_ms"] / r["phase_sum_ms"] if r["phase_sum_ms"] else 0.0
            row = [p, _fmt_ms(v["median_ms"]), f"{100 * share:.0f}%", _fmt_ms(v["busy_ms"]), str(v["ops"])]
            if cuda:
                row.append("-" if v["peak_mib"] is None else f"{v['peak_mib']:.0f}")
            rows.append(row)
        rows.append(["sum of phases", _fmt_ms(r["phase_sum_ms"]), "", _fmt_ms(r["busy_ms"]), str(r["ops"])]
                    + ([""] if cuda else []))
        rows.append(["step (plain)", _fmt_ms(r["step_ms"]), "", "", ""]
                    + ([f"{r['peak_mib']:.0f}"] if cuda else []))
        pr = r["projection"]
        lines += ["", f"== {r['name']}", _table(head, rows),
                  f"phases vs step: {r['phase_sum_ms'] / r['step_ms'] - 1:+.1%} "
                  f"({'within' if r['adds_up'] else 'OUTSIDE'} the {ADD_UP_TOLERANCE:.0%} + "
                  f"{ADD_UP_SLACK_MS:g} ms tolerance)",
                  f"projection: {pr['steps_per_epoch']} steps/epoch x {pr['epochs']} epochs x "
                  f"{_fmt_ms(pr['step_ms'])} ms = {pr['hours']:.3g} {pr['unit']}-hours = "
                  f"{pr['days']:.3g} {pr['unit']}-days on {pr['device']} "
                  "(search steps only; per-epoch validation not included)"]
    if len(report["variants"]) > 1:
        head = ["variant", "ms/step", "speedup vs reference", f"{report['variants'][0]['projection']['unit']}"
                "-days"]
        rows = [[r["name"], _fmt_ms(r["step_ms"]),
                 "-" if r["speedup_vs_reference"] is None else f"{r['speedup_vs_reference']:.2f}x",
                 f"{r['projection']['days']:.3g}"] for r in report["variants"]]
        lines += ["", "== comparison", _table(head, rows)]
    return "\n".join(lines)


def _table(head: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    fmt = lambda row: "  ".join(str(x).rjust(w) if i else str(x).ljust(w)  # noqa: E731
                                for i, (x, w) in enumerate(zip(row, widths)))
    return "\n".join([fmt(head), "  ".join("-" * w for w in widths), *map(fmt, rows)])


def matplotlib_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("matplotlib") is not None


def write_png(report: dict, path: str) -> bool:
    """A stacked bar of phase medians per variant; False (and nothing written) without
    matplotlib."""
    if not matplotlib_available():
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["variants"]
    fig, ax = plt.subplots(figsize=(max(4.0, 1.6 * len(rows) + 2), 4.5))
    bottom = [0.0] * len(rows)
    x = list(range(len(rows)))
    for p in PHASES:
        vals = [r["phases"][p]["median_ms"] for r in rows]
        if not any(vals):
            continue
        ax.bar(x, vals, bottom=bottom, label=p, width=0.6)
        bottom = [b + v for b, v in zip(bottom, vals)]
    ax.set_xticks(x, [r["name"] for r in rows], rotation=15)
    ax.set_ylabel("ms per search step (median)")
    ax.set_title(f"{report['space']} search, {report['order']} order, {report['device']['name']}",
                 fontsize=9)
    # beside the axes, not on them: inside, "upper right" covered the tallest bar
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)
    fig.tight_layout()
    fig.savefig(path, dpi=90, bbox_inches="tight")
    plt.close(fig)
    return True


def check_schema(report: dict) -> None:
    """Raise ValueError unless ``report`` has the documented keys and types."""
    num = (int, float)
    top = {"schema_version": int, "space": str, "order": str, "device": dict, "versions": dict,
           "warmup": int, "steps": int, "phases": list, "busy_kind": str, "tolerance": dict,
           "config": dict, "variants": list}
    row = {"name": str, "impl": str, "backend": (str, type(None)), "cuda_graph": bool, "step_ms": num,
           "step_ms_q1": num, "step_ms_q3": num, "instrumented_step_ms": num, "phase_sum_ms": num,
           "max_partition_error_ms": num, "adds_up": bool, "phases": dict,
           "peak_mib": (*num, type(None)), "busy_ms": num, "ops": int, "projection": dict,
           "speedup_vs_reference": (*num, type(None))}
    phase = {"median_ms": num, "busy_ms": num, "ops": int, "peak_mib": (*num, type(None))}
    proj = {"steps_per_epoch": int, "epochs": int, "steps": int, "step_ms": num, "hours": num,
            "days": num, "unit": str, "device": str}

    def need(d, spec, where):
        for k, t in spec.items():
            if k not in d:
                raise ValueError(f"{where}: missing key {k!r}")
            if not isinstance(d[k], t) or (t is num and isinstance(d[k], bool)):
                raise ValueError(f"{where}.{k}: {type(d[k]).__name__} is not {t}")
            if isinstance(d[k], float) and not math.isfinite(d[k]):
                raise ValueError(f"{where}.{k} is not finite")

    need(report, top, "report")
    if report["schema_version"] != SCHEMA_VERSION:
        raise ValueError(f"schema_version {report['schema_version']} != {SCHEMA_VERSION}")
    need(report["device"], {"type": str, "name": str}, "device")
    for i, r in enumerate(report["variants"]):
        need(r, row, f"variants[{i}]")
        need(r["projection"], proj, f"variants[{i}].projection")
        if list(r["phases"]) != list(PHASES):
            raise ValueError(f"variants[{i}].phases: keys {list(r['phases'])} != {list(PHASES)}")
        for p, v in r["phases"].items():
            need(v, phase, f"variants[{i}].phases.{p}")
