"""Compile every Triton kernel in kernels/ for Hopper (sm_90) and Ampere (sm_80) on a
machine with no GPU: registers, spills, shared memory and PTX checks per kernel.

Why: GPUs are lent rarely and briefly, and the Triton interpreter that CI runs the
kernels in accepts code the compiler rejects (types, constexpr use, pointer
arithmetic) and says nothing about the machine code.  ``triton.compile`` needs no GPU:
given a target it lowers a kernel to PTX and runs ptxas to a cubin.

Which specializations: the ones the launchers make, found by running them, not kept by
hand.  A worker process imports kernels/ with TRITON_INTERPRET unset (so the kernels are
real ``JITFunction``s), replaces ``JITFunction.run`` with a recorder that executes
nothing, and drives the public entry points on CPU tensors: every ``torch.ops.fastdarts``
op with a Triton backend for every dtype and option (at the paper's shapes), then one
second-order search step of a small CNN supernet and RNN model (the block patterns and
views the models really pass).  Each launch is specialized by Triton's own binder, as
its JIT would on a GPU: argument types, 16-divisibility of pointers and integers,
integers equal to 1, constexprs, num_warps.

Two sets:
  * ``all``: every distinct specialization (variants that differ only in which
    pointers and sizes are 16-divisible count once: the first recorded, i.e. the
    paper shapes' alignment).  What ``--notes`` tabulates; ~350 per arch.
  * ``bounds`` (the test, to stay within CI's time): the same, except that an integer
    constexpr taking more than two values (COUNT, the number of live inputs, 1..8;
    ACCUM_MASK) is compiled at its smallest and largest recorded value only, with every
    dtype and every value of the other constexprs.  COUNT = 8 executes every input
    slot's code; ~140 per arch.

Per compiled kernel: registers, stack frame, local and static shared bytes read off the
cubin (``cuobjdump -res-usage``: what the driver reports for it; on a GPU Triton's
``n_spills`` is the driver's local-memory size / 4), spill stores and loads from
ptxas's own -v log of the compile that made the cubin (Triton runs ptxas with -v and
deletes the log; it is kept here), shared memory (Triton's dynamic request plus the
cubin's static), and checks of the PTX against what the kernels' design assumes (see
``ptx_problems``).  Results are kept between runs (``result_cache_dir``), keyed on the
kernels' source, the specialization, the toolchain and this file.

    python bench/bench_compile.py                 # every specialization, both archs
    python bench/bench_compile.py --notes         # ... and rewrite the table in bench/NOTES.md
    python bench/bench_compile.py --subset bounds --json out.json   # what the test runs
    python bench/bench_compile.py --summarize-ptxas LOG...   # nvcc -Xptxas -v logs (compile_cuda.sh)

Only the standard library is imported at module level: the test, which runs under
TRITON_INTERPRET=1, imports the helpers here and runs the worker as a subprocess.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARCHS = (90, 80)  # H100/H200, A100
DTYPE_NAMES = ("fp32", "bf16", "fp16", "fp64")
NOTES = os.path.join(ROOT, "bench", "NOTES.md")
TABLE_BEGIN = "<!-- bench_compile.py: begin table -->"
TABLE_END = "<!-- bench_compile.py: end table -->"


# ===================================================== worker: runs with TRITON_INTERPRET unset
def _kernel_modules():
    """Every module of the kernels package (installed as fastdarts.kernels), imported."""
    import importlib
    import pkgutil

    pkg = importlib.import_module("fastdarts.kernels")
    return [importlib.import_module(f"{pkg.__name__}.{m.name}")
            for m in pkgutil.iter_modules(pkg.__path__)]


def defined_jit_functions(modules) -> dict:
    """{'module.name': JITFunction} for every @triton.jit function *defined* in kernels/
    (one imported from a sibling module is listed once, where it is defined)."""
    from triton.runtime.jit import JITFunction

    found = {}
    for mod in modules:
        short = mod.__name__.rsplit(".", 1)[-1]
        for name, obj in vars(mod).items():
            if getattr(getattr(obj, "fn", None), "__module__", None) != mod.__name__:
                continue
            if not isinstance(obj, JITFunction):
                raise RuntimeError(f"{short}.{name} is a {type(obj).__name__}, not a JITFunction: "
                                   "the kernels were imported under TRITON_INTERPRET=1")
            found[f"{short}.{name}"] = obj
    return found


def _kernel_name(fn) -> str:
    return f"{fn.fn.__module__.rsplit('.', 1)[-1]}.{fn.fn.__name__}"


class Recorder:
    """Replaces ``JITFunction.run`` while active: each launch is specialized as Triton's JIT
    would on a GPU and recorded; nothing runs (outputs stay uninitialised, and no
    launcher reads them back on the host)."""

    def __init__(self):
        from triton.backends.compiler import GPUTarget
        from triton.compiler.compiler import make_backend

        # Specialization is the backend class's, not the arch's: one backend serves both.
        self.backend = make_backend(GPUTarget("cuda", ARCHS[0], 32))
        self.specs: dict = {}
        self.source = "?"  # which driver call is launching (for the report)
        self.dtype = "?"  # the op's I/O dtype (a launch's pointers mix it with float32)
        self._binders: dict = {}

    def _binder(self, fn):
        from triton.runtime.jit import create_function_from_signature

        if fn not in self._binders:
            self._binders[fn] = create_function_from_signature(fn.signature, fn.params,
                                                               self.backend)
        return self._binders[fn]

    def record(self, fn, args, kwargs):
        params = [p.name for p in fn.params]
        launch_options = {k: v for k, v in kwargs.items() if k not in params}
        _, specialization, _ = self._binder(fn)(*args, **kwargs)
        signature, constexprs, attrs = {}, {}, {}
        for i, (name, (ty, value)) in enumerate(zip(params, specialization)):
            signature[name] = ty
            if ty == "constexpr":
                constexprs[name] = value
            elif isinstance(value, str):
                attrs[(i,)] = self.backend.parse_attr(value)
        # Triton's own kernel cache keys on types, alignment attributes, constexpr values
        # and options.  Alignment alone multiplies the variants (~1100 per arch, 20 min of
        # compiling on 2 cores), so variants that differ only in which pointers and sizes
        # are 16-divisible share one entry: the first recorded, i.e. the paper-shape
        # sweep's alignment.  Every type and constexpr combination keeps its own.
        key = (_kernel_name(fn),
               tuple(t if t != "constexpr" else f"constexpr={a}" for t, a in specialization),
               tuple(sorted((k, str(v)) for k, v in launch_options.items())))
        spec = self.specs.get(key)
        if spec is None:
            spec = self.specs[key] = dict(
                kernel=_kernel_name(fn), fn=fn, signature=signature, constexprs=constexprs,
                attrs=attrs, options=launch_options,
                declared={p.name for p in fn.params if p.is_constexpr},
                aligned=sorted(p for p, (t, a) in zip(params, specialization)
                               if t != "constexpr" and a == "D"),
                launches=0, sources=set(), dtypes=set(), alignments=set())
        spec["launches"] += 1
        spec["sources"].add(self.source)
        spec["dtypes"].add(self.dtype)
        spec["alignments"].add(tuple(a for t, a in specialization if t != "constexpr"))

    def __enter__(self):
        from triton.runtime.jit import JITFunction

        recorder = self
        self._saved = JITFunction.run

        def run(fn, *args, grid, warmup, **kwargs):
            recorder.record(fn, args, kwargs)

        JITFunction.run = run
        return self

    def __exit__(self, *exc):
        from triton.runtime.jit import JITFunction

        JITFunction.run = self._saved


# ------------------------------------------------------------------ driving the launchers
# The paper's shapes, so that the 16-divisibility of sizes and strides is a real search's.
# Nothing runs, so the tensors are never filled (torch.empty) and their size costs nothing.
CNN_SHAPE = (64, 16, 32, 32)  # batch 64, C = 16, 32 x 32: one op output of a normal cell
RNN_B, RNN_H = 256, 300  # batch 256, nhid 300


def _exercise_ops(rec: Recorder, torch) -> None:
    """Every registered op with a Triton backend, for every dtype and every option a
    caller can choose; the values each constexpr takes follow from these."""
    from fastdarts.kernels import mixed_sum, state_sum

    ops = torch.ops.fastdarts
    for dtype, name in zip((torch.float32, torch.bfloat16, torch.float16, torch.float64),
                           DTYPE_NAMES):
        rec.dtype = name

        def t(*shape):
            return torch.empty(shape, dtype=dtype)

        # mixed_sum: M up to two full chunks plus one, so COUNT takes every value with
        # and without an accumulator, and low precision meets its float32 scratch.
        rec.source = "mixed_sum"
        for m in range(1, 2 * mixed_sum.MAX_INPUTS + 2):
            xs = [t(*CNN_SHAPE) for _ in range(m)]
            w = torch.empty(m)
            ops.mixed_sum(xs, w)
            ops.mixed_sum_backward(t(*CNN_SHAPE), xs, w)

        # state_mixed_sum for the E = 2 edges leaving a state: K weight columns from K
        # shared inputs (the backward accumulates every column for the second edge:
        # ACCUM_MASK all ones; none for the first) and from one wide input of K ops
        # (ACCUM_MASK 0), with and without partial sums.  The supernet's own mixes of
        # shared and wide inputs come from the model run.
        rec.source = "state_mixed_sum"
        n, c, hw = CNN_SHAPE[0], CNN_SHAPE[1], CNN_SHAPE[2:]
        E = 2
        for k in range(1, 2 * state_sum.MAX_INPUTS + 2):
            for inputs, blocks in (([t(n, c, *hw) for _ in range(k)], [0] * k),
                                   ([t(n, k * E * c, *hw)], [k])):
                w = torch.empty(E, k)
                for partials in ([], [t(n, c, *hw) for _ in range(E)]):
                    ops.state_mixed_sum(inputs, blocks, w, partials)
                ops.state_mixed_sum_backward([t(n, c, *hw) for _ in range(E)], inputs, blocks, w)

        # rnn_node and rnn_node_bn: node 0 (one incoming state) and a later node; the
        # backward of node + BN with the gradient of y, of y * h_mask, or both.
        B, H = RNN_B, RNN_H
        for nst in (1, 3):
            ch, st, p = t(nst, B, 2 * H), t(nst, B, H), torch.empty(nst, 5)
            rec.source = "rnn_node"
            ops.rnn_node(ch, st, p)
            ops.rnn_node_backward(t(B, H), ch, st, p)
            rec.source = "rnn_node_bn"
            mask = t(B, H)
            y, _, invstd = ops.rnn_node_bn(ch, st, p, mask, t(H), t(H),
                                           torch.zeros((), dtype=torch.long), 0.1, 1e-5)
            for gy, gym in ((t(B, H), None), (None, t(B, H)), (t(B, H), t(B, H))):
                ops.rnn_node_bn_backward(gy, gym, ch, st, p, mask, y, invstd, 1e-5)

        # the Architect's flat-buffer updates, with and without momentum and clip scale
        rec.source = "flat_update"
        nf = 1 << 20
        w, b, g, m = t(nf), t(nf), t(nf), t(nf)
        s = t()
        for mm in (None, m):
            for gs in (None, s):
                ops.virtual_step_(w, b, g, mm, s, 0.9, 3e-4, gs)
        ops.perturb_(w, b, g, s, 1.0)
        for gs in (None, s):
            ops.sgd_step_(w, m, g, s, 0.9, 3e-4, gs)


def _exercise_models(rec: Recorder, torch) -> None:
    """One second-order Architect step and one weight step of a small CNN supernet and RNN
    search model (fp32): the block patterns, views and offsets the models really pass.
    Small enough to run on a CPU in about a second (the unfused parts do run)."""
    from types import SimpleNamespace

    import fastdarts
    from fastdarts.nn import Network, RNNModelSearch

    torch.manual_seed(0)
    rec.dtype = "fp32"
    rec.source = "cnn search step"
    model = Network(4, 3, 2, torch.nn.CrossEntropyLoss())
    args = SimpleNamespace(momentum=0.9, weight_decay=3e-4, arch_learning_rate=3e-4,
                           arch_weight_decay=1e-3)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=3e-4)
    x, y = torch.randn(4, 3, 16, 16), torch.randint(0, 3, (4,))
    fastdarts.Architect(model, args).step(x, y, x, y, 0.05, opt, True)
    model._loss(x, y).backward()

    rec.source = "rnn search step"
    ntoken, nhid, T, B = 50, 32, 3, 32
    model = RNNModelSearch(ntoken, nhid, nhid, nhid, 0.1, 0.1, 0.1, 0.1, 0.0)
    args = SimpleNamespace(wdecay=5e-7, clip=0.25, arch_lr=3e-3, arch_wdecay=1e-3)
    opt = torch.optim.SGD(model.parameters(), lr=2.0)
    x, tgt = torch.randint(0, ntoken, (T, B)), torch.randint(0, ntoken, (T * B,))
    hidden = [torch.zeros(1, B, nhid)]
    fastdarts.Architect(model, args).step(hidden, x, tgt, hidden, x, tgt, opt, True)


def record_launches() -> tuple[list[dict], dict]:
    """(the distinct specializations the launchers make, the jit functions defined)."""
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        raise RuntimeError("run the worker with TRITON_INTERPRET unset: compiling needs the "
                           "kernels as JITFunctions")
    import torch

    torch.set_num_threads(1)
    jit_fns = defined_jit_functions(_kernel_modules())
    # The kernels are JITFunctions now.  fastdarts' 'triton' backend runs CPU tensors only
    # under TRITON_INTERPRET=1; the recorder stands in for the interpreter.
    os.environ["TRITON_INTERPRET"] = "1"
    import fastdarts

    fastdarts.set_backend("triton")
    rec = Recorder()
    try:
        with rec:
            _exercise_ops(rec, torch)
            _exercise_models(rec, torch)
    finally:
        fastdarts.set_backend(None)
        os.environ["TRITON_INTERPRET"] = "0"
    specs = sorted(rec.specs.values(), key=lambda s: (s["kernel"], str(s["signature"]),
                                                      str(s["constexprs"])))
    return specs, jit_fns


def bounds(specs: list[dict]) -> list[dict]:
    """The specializations whose integer constexprs with more than two recorded values
    (per kernel) are at the smallest or largest of them; see the module docstring."""
    values: dict = {}
    for s in specs:
        for name in s["declared"]:
            v = s["constexprs"][name]
            if isinstance(v, int) and not isinstance(v, bool):
                values.setdefault((s["kernel"], name), set()).add(v)
    extremes = {k: (min(v), max(v)) for k, v in values.items() if len(v) > 2}
    return [s for s in specs
            if all(s["constexprs"][name] in extremes[(s["kernel"], name)]
                   for name in s["declared"] if (s["kernel"], name) in extremes)]


# ------------------------------------------------------------------------------ compiling
_PTXAS_RUNS: list[tuple[str, str]] = []  # (ptxas path, its -v log), newest last


def keep_ptxas_logs() -> None:
    """Triton runs ptxas with -v and deletes the log (ptxas's stderr, a temporary file)
    once it succeeds; keep a copy.  The spill byte counts are only in that log, and it
    comes from the very ptxas run that made the cubin: nothing is compiled twice."""
    real = subprocess.run

    def run(cmd, *args, **kwargs):
        result = real(cmd, *args, **kwargs)
        err = kwargs.get("stderr")
        if (isinstance(cmd, (list, tuple)) and cmd and "ptxas" in os.path.basename(str(cmd[0]))
                and "-v" in cmd and hasattr(err, "name")):
            with open(err.name) as f:
                _PTXAS_RUNS.append((str(cmd[0]), f.read()))
        return result

    subprocess.run = run


_ENTRY = re.compile(r"Compiling entry function '([^']+)' for '(\w+)'")
_PROPS = re.compile(r"Function properties for (\S+)")
_FRAME = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_USED = re.compile(r"Used (\d+) registers")
_SMEM = re.compile(r"(\d+) bytes smem")


def parse_ptxas_log(text: str) -> list[dict]:
    """One dict per entry function in a ``ptxas -v`` (or ``nvcc -Xptxas -v``) log:
    function, arch, regs, stack, spill_stores, spill_loads, smem (static bytes)."""
    out, current, props_for = [], None, None
    for line in text.splitlines():
        if m := _ENTRY.search(line):
            current = dict(function=m.group(1), arch=m.group(2), regs=None, stack=0,
                           spill_stores=0, spill_loads=0, smem=0)
            out.append(current)
        elif m := _PROPS.search(line):
            props_for = m.group(1)
        elif ((m := _FRAME.search(line)) and current is not None
              and props_for == current["function"]):
            current.update(stack=int(m.group(1)), spill_stores=int(m.group(2)),
                           spill_loads=int(m.group(3)))
        elif (m := _USED.search(line)) and current is not None:
            current["regs"] = int(m.group(1))
            if s := _SMEM.search(line):
                current["smem"] = int(s.group(1))
    return out


def _nvidia_tool(name: str) -> str:
    try:
        from triton import knobs

        return getattr(knobs.nvidia, name).path
    except (ImportError, AttributeError):  # a Triton before knobs: the bundled binary
        import triton

        return os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", name)


_RES = re.compile(r"REG:(\d+) STACK:(\d+) SHARED:(\d+) LOCAL:(\d+)")


def resource_usage(cubin: bytes) -> dict:
    """Registers, stack, static shared and local bytes per thread, read off the cubin: the
    numbers the driver reports for it (Triton's n_regs; n_spills = local / 4)."""
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        out = subprocess.run([_nvidia_tool("cuobjdump"), "-res-usage", f.name], check=True,
                             capture_output=True, text=True).stdout
    m = _RES.search(out)
    if m is None:
        raise RuntimeError(f"cuobjdump -res-usage printed no resource line:\n{out}")
    regs, stack, shared, local = map(int, m.groups())
    return dict(regs=regs, stack=stack, static_smem=shared, local=local)


def result_cache_dir() -> str | None:
    """Where compile results are kept between runs (None: nowhere).  A result is keyed on
    what Triton's own cache keys on (the kernel's source and that of everything it
    calls, the specialization, the options, Triton's and ptxas's versions) plus this
    file, whose checks made it; so a kernel that changed, or a new specialization, is
    compiled again and an unchanged one is not.  FASTDARTS_COMPILE_CACHE=0 turns it off;
    any other value is the directory."""
    d = os.environ.get("FASTDARTS_COMPILE_CACHE")
    if d == "0":
        return None
    return d or os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"),
                             "fastdarts", "kernel-compile")


def _result_key(src, arch: int, options: dict) -> str:
    import hashlib

    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler.compiler import make_backend

    with open(__file__, "rb") as f:
        this = hashlib.sha256(f.read()).hexdigest()
    key = json.dumps([src.hash(), arch, sorted((k, str(v)) for k, v in options.items()),
                      triton.__version__, make_backend(GPUTarget("cuda", arch, 32)).hash(),
                      this])
    return hashlib.sha256(key.encode()).hexdigest()


def compile_spec(spec, arch: int, cache_dir: str | None = None) -> dict:
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    out = dict(kernel=spec["kernel"], arch=arch, dtype="/".join(sorted(spec["dtypes"])),
               signature=spec["signature"],
               constexprs={k: str(v) for k, v in spec["constexprs"].items()},
               aligned=spec["aligned"], options={k: str(v) for k, v in spec["options"].items()},
               launches=spec["launches"], sources=sorted(spec["sources"]),
               alignment_variants=len(spec["alignments"]))
    t0 = time.perf_counter()
    del _PTXAS_RUNS[:]
    cached = None
    try:
        src = ASTSource(spec["fn"], spec["signature"], spec["constexprs"], spec["attrs"])
        if cache_dir:
            cached = os.path.join(cache_dir, _result_key(src, arch, spec["options"]) + ".json")
            if os.path.exists(cached):
                with open(cached) as f:
                    return {**json.load(f), **out, "cached": True}
        ck = triton.compile(src, target=GPUTarget("cuda", arch, 32), options=spec["options"])
    except Exception as e:  # noqa: BLE001  (any compiler failure is the finding)
        out["error"] = f"{type(e).__name__}: {e}"[:4000]
        return out
    out["compile_s"] = round(time.perf_counter() - t0, 3)
    out["cached"] = False
    md = ck.metadata
    out.update(resource_usage(ck.asm["cubin"]))
    out["dynamic_smem"] = int(md.shared)
    out["smem"] = out["dynamic_smem"] + out["static_smem"]
    out["num_warps"] = md.num_warps
    entry = next((e for _, log in _PTXAS_RUNS for e in parse_ptxas_log(log)
                  if e["function"] == md.name), None)
    # None: this Triton's ptxas run was not seen (a cache hit, or another way of calling it)
    out["spill_stores"] = entry["spill_stores"] if entry else None
    out["spill_loads"] = entry["spill_loads"] if entry else None
    out["ptxas"] = _PTXAS_RUNS[-1][0] if _PTXAS_RUNS else None
    source = ck.asm.get("source")  # the IR before inlining: one tt.func per callee
    out["callees"] = (sorted(set(re.findall(r"tt\.func\s+(?:private\s+)?@([\w.]+?)__", source)))
                      if isinstance(source, str) else _jit_callees(spec["fn"]))
    ptx = ck.asm["ptx"]
    out["ptx_stats"] = ptx_stats(ptx)
    out["ptx_problems"], out["vectors_checked"] = ptx_problems(out, ptx)
    if cached:
        os.makedirs(cache_dir, exist_ok=True)
        tmp = f"{cached}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            json.dump({k: v for k, v in out.items() if k != "cached"}, f)
        os.replace(tmp, cached)  # atomic: a concurrent run never reads half a file
    return out


def _jit_callees(fn, seen=None) -> list[str]:
    """The jit functions ``fn`` calls, transitively, read off its Python source: for a
    Triton that keeps no pre-inlining IR."""
    import ast

    from triton.runtime.jit import JITFunction

    seen = set() if seen is None else seen
    for node in ast.walk(ast.parse(fn.src)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            callee = fn.fn.__globals__.get(node.func.id)
            name = f"{getattr(getattr(callee, 'fn', None), '__module__', '')}.{node.func.id}"
            if isinstance(callee, JITFunction) and name not in seen:
                seen.add(name)
                _jit_callees(callee, seen)
    return sorted(seen)


# ---------------------------------------------------------------------------- PTX checks
_LD = re.compile(r"^\s*(?:@%p\d+\s+)?ld\.global[\w.:]*?(?:\.v(\d))?\.[bfus](\d+)\s", re.M)
_ST = re.compile(r"^\s*(?:@%p\d+\s+)?st\.global[\w.:]*?(?:\.v(\d))?\.[bfus](\d+)\s", re.M)
_ELEM = {"fp32": 4, "bf16": 2, "fp16": 2, "fp64": 8}


def _widths(regex, ptx: str) -> list[int]:
    """Bytes moved by each global load (store) instruction in ``ptx``."""
    return [int(v or 1) * int(bits) // 8 for v, bits in regex.findall(ptx)]


def ptx_stats(ptx: str) -> dict:
    lds, sts = _widths(_LD, ptx), _widths(_ST, ptx)
    return dict(ld16=sum(w == 16 for w in lds), ld_other=sum(w != 16 for w in lds),
                st16=sum(w == 16 for w in sts), st_other=sum(w != 16 for w in sts),
                atomics=len(re.findall(r"^\s*(?:@%p\d+\s+)?(?:atom|red)\.", ptx, re.M)))


def _live(cx) -> range:
    return range(int(cx["COUNT"]))


def _accum(cx, k) -> bool:
    return bool(int(cx["ACCUM_MASK"]) >> k & 1)


# The streaming kernels: BLOCK consecutive elements per program, BLOCK / (32 * num_warps)
# = 8 per thread, so each tensor a thread streams is 16-byte accesses when aligned.  Per
# kernel: (the integer arguments that must be 16-divisible besides the pointers,
# the pointers read, the pointers written) for a specialization's constexprs.
STREAMING = {
    "mixed_sum.mixed_sum_fwd_kernel": lambda cx: (
        ["N"], [f"x{k}" for k in _live(cx)] + (["acc_ptr"] if cx["HAS_ACC"] == "True" else []),
        ["dst_ptr"]),
    "mixed_sum.mixed_sum_bwd_kernel": lambda cx: (
        ["N"], ["g_ptr"] + [f"x{k}" for k in _live(cx)], [f"gx{k}" for k in _live(cx)]),
    # state_sum reads each edge's slot in place: runs of L consecutive elements, so with
    # L, the offsets and the row strides 16-divisible it streams like mixed_sum.
    "state_sum.state_sum_fwd_kernel": lambda cx: (
        ["total", "L"] + [f"{a}{k}" for k in _live(cx) for a in "or"],
        [f"x{k}" for k in _live(cx)] + (["acc_ptr"] if cx["HAS_ACC"] == "True" else []),
        ["dst_ptr"]),
    "state_sum.state_sum_bwd_kernel": lambda cx: (
        ["total", "L"] + [f"{a}{k}" for k in _live(cx) for a in "or"],
        ["g_ptr"] + [f"x{k}" for k in _live(cx)]
        + [f"gx{k}" for k in _live(cx) if _accum(cx, k)],
        [f"gx{k}" for k in _live(cx)]),
    "flat_update._virtual_step_kernel": lambda cx: (
        ["n"], ["w_ptr", "g_ptr"] + (["m_ptr"] if cx["HAS_M"] == "True" else []),
        ["backup_ptr", "w_ptr"]),
    "flat_update._perturb_kernel": lambda cx: (["n"], ["backup_ptr", "v_ptr"], ["w_ptr"]),
    "flat_update._sgd_step_kernel": lambda cx: (["n"], ["w_ptr", "g_ptr", "m_ptr"], ["m_ptr", "w_ptr"]),
}


def ptx_problems(res: dict, ptx: str) -> tuple[list[str], bool]:
    """(what in the PTX contradicts the kernels' design, whether the 16-byte check ran):

    * determinism: no kernel uses atomics (partial sums are one per program, summed by the
      launcher in a fixed order; the state-sum edges' slots are disjoint);
    * the streaming kernels (``STREAMING``) move every streamed element in 16-byte
      accesses when Triton may assume alignment (the pointers and sizes involved all
      16-divisible, as at the paper's shapes): the bytes of 16-byte loads (stores) equal
      elements per thread x element size, summed over the pointers read (written);
    * the Python-float arguments annotated ``tl.float64`` (the flat updates' momentum, wd,
      sign: see _SCALARS_NOTE in kernels/flat_update.py) reach the kernel as f64 parameters;
    * the PTX asks for the block the launch asks for (.reqntid = 32 x num_warps).
    """
    problems = []
    stats = ptx_stats(ptx)
    if stats["atomics"]:
        problems.append(f"{stats['atomics']} atomic instructions (the kernels are designed "
                        "without atomics, for deterministic results)")
    m = re.search(r"\.reqntid\s+(\d+)", ptx)
    if m and int(m.group(1)) != 32 * res["num_warps"]:
        problems.append(f".reqntid {m.group(1)} != 32 x num_warps {res['num_warps']}")
    f64_args = sum(t == "fp64" for t in res["signature"].values())
    f64_params = len(re.findall(r"\.param\s+\.f64\s", ptx))
    if f64_params != f64_args:
        problems.append(f"{f64_args} float64 scalar arguments but {f64_params} .f64 parameters")
    checked = False
    design = STREAMING.get(res["kernel"])
    if design is not None:
        ints, reads, writes = design(res["constexprs"])
        if {*ints, *reads, *writes} <= set(res["aligned"]):
            checked = True
            per_thread = int(res["constexprs"]["BLOCK"]) // (32 * res["num_warps"])

            def want(ptrs):
                return sum(per_thread * _ELEM[res["signature"][p][1:]] for p in ptrs)

            for kind, got, ptrs, other in (("loads", stats["ld16"], reads, stats["ld_other"]),
                                           ("stores", stats["st16"], writes, stats["st_other"])):
                if 16 * got != want(ptrs):
                    problems.append(f"16-byte {kind} move {16 * got} B per thread, the streamed "
                                    f"tensors {want(ptrs)} B ({other} narrower {kind})")
    return problems, checked


# ------------------------------------------------------------------------------ the worker
_SPECS: list[dict] = []  # read by the forked compile processes
_CACHE: list = [None]


def _compile_task(task):
    index, arch = task
    return compile_spec(_SPECS[index], arch, _CACHE[0])


def worker(subset: str, archs, jobs: int) -> dict:
    """Record, select, compile every selected specialization for every arch: a JSON-able
    report."""
    import multiprocessing

    import triton

    t0 = time.perf_counter()
    specs, jit_fns = record_launches()
    t_record = time.perf_counter() - t0
    selected = bounds(specs) if subset == "bounds" else specs
    keep_ptxas_logs()
    _SPECS[:] = selected
    _CACHE[0] = result_cache_dir()
    # Longest first (source length stands in for compile time), so that the pool's last
    # tasks are short ones and both processes finish together.
    tasks = sorted(((i, a) for i in range(len(selected)) for a in archs),
                   key=lambda t: -len(selected[t[0]]["fn"].src))
    if jobs > 1:
        # fork: the children inherit the recorded specializations (JITFunctions do not
        # pickle) and run no torch code, only Triton's compiler.
        with multiprocessing.get_context("fork").Pool(jobs) as pool:
            results = list(pool.imap_unordered(_compile_task, tasks))
    else:
        results = [_compile_task(t) for t in tasks]
    results.sort(key=lambda r: (r["kernel"], -r["arch"], str(r["signature"]),
                                str(r["constexprs"])))
    constexpr_values: dict = {}
    for s in specs:
        for k, v in s["constexprs"].items():
            constexpr_values.setdefault(s["kernel"], {}).setdefault(k, set()).add(str(v))
    tools = {}
    for r in results:
        if r.get("ptxas"):
            tools.setdefault(f"sm_{r['arch']}", _tool_version(r["ptxas"]))
    return dict(
        triton=triton.__version__, ptxas=tools, archs=list(archs), subset=subset,
        defined=sorted(jit_fns), recorded=len(specs), selected=len(selected),
        record_s=round(t_record, 1), compile_s=round(time.perf_counter() - t0 - t_record, 1),
        jobs=jobs, cache=_CACHE[0], cached=sum(bool(r.get("cached")) for r in results),
        constexpr_values={k: {c: sorted(v) for c, v in d.items()}
                          for k, d in constexpr_values.items()},
        results=results)


def _tool_version(path: str) -> str:
    out = subprocess.run([path, "--version"], capture_output=True, text=True).stdout
    m = re.search(r"release ([\d.]+)", out)
    return f"{os.path.basename(path)} {m.group(1) if m else '?'}"


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


# ================================================ parent: run the worker, summarise, report
def run_worker(subset: str = "bounds", archs=ARCHS, jobs: int | None = None,
               cache_dir: str | None = None, timeout: float = 1800) -> dict:
    """The worker, in a fresh interpreter with TRITON_INTERPRET unset and (unless given) an
    empty Triton cache, so that a kernel not in ``result_cache_dir()`` is really compiled
    and ptxas's log is seen.  Raises with the worker's output if it fails."""
    env = dict(os.environ)
    env.pop("TRITON_INTERPRET", None)
    env.setdefault("OMP_NUM_THREADS", "1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [ROOT, env.get("PYTHONPATH")]))
    with tempfile.TemporaryDirectory() as tmp:
        env["TRITON_CACHE_DIR"] = cache_dir or os.path.join(tmp, "triton-cache")
        out = os.path.join(tmp, "report.json")
        cmd = [sys.executable, "-m", "bench.bench_compile", "--worker", "--subset", subset,
               "--archs", ",".join(map(str, archs)), "--jobs", str(jobs or _cores()),
               "--json", out]
        p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True,
                           timeout=timeout)
        if p.returncode != 0 or not os.path.exists(out):
            raise RuntimeError(f"bench_compile worker failed ({p.returncode}):\n"
                               f"{(p.stdout + p.stderr)[-8000:]}")
        with open(out) as f:
            return json.load(f)


def spilled(r: dict) -> bool:
    """Whether a compiled kernel uses local memory: ptxas's spill stores or loads, or a
    stack frame or local bytes in the cubin (Triton reports local bytes / 4 as n_spills)."""
    return bool(r["local"] or r["stack"] or r.get("spill_stores") or r.get("spill_loads"))


def _span(xs: list[int]) -> str:
    if not xs:
        return "-"
    return str(min(xs)) if min(xs) == max(xs) else f"{min(xs)}-{max(xs)}"


def markdown_table(report: dict) -> str:
    """One row per (kernel, op dtype, arch): the range over its specializations."""
    rows: dict = {}
    for r in report["results"]:
        row = rows.setdefault((r["kernel"], r["dtype"], r["arch"]), dict(
            n=0, errors=0, regs=[], spill=[], frame=[], smem=[], ptx=0))
        row["n"] += 1
        if "error" in r:
            row["errors"] += 1
            continue
        row["regs"].append(r["regs"])
        row["spill"].append((r["spill_stores"] or 0) + (r["spill_loads"] or 0))
        row["frame"].append(r["stack"] + r["local"])
        row["smem"].append(r["smem"])
        row["ptx"] += len(r["ptx_problems"])
    order = {d: i for i, d in enumerate(DTYPE_NAMES)}
    lines = ["| kernel | dtype | arch | specializations | registers | spill B (st+ld) "
             "| stack+local B | shared B | PTX problems |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for (kernel, dtype, arch) in sorted(rows, key=lambda k: (k[0], order.get(k[1], 9), -k[2])):
        row = rows[(kernel, dtype, arch)]
        errs = f" ({row['errors']} FAIL)" if row["errors"] else ""
        lines.append(f"| {kernel} | {dtype} | sm_{arch} | {row['n']}{errs} | {_span(row['regs'])} "
                     f"| {_span(row['spill'])} | {_span(row['frame'])} | {_span(row['smem'])} "
                     f"| {row['ptx']} |")
    return "\n".join(lines)


def findings(report: dict) -> list[str]:
    """One line per failed compile, spill or PTX problem."""
    lines = []
    for r in report["results"]:
        where = f"sm_{r['arch']} {r['kernel']} {r['dtype']} {r['constexprs']}"
        if "error" in r:
            lines.append(f"FAILED {where}: {r['error'].splitlines()[0]}")
        elif spilled(r):
            lines.append(f"SPILL {where}: {r['regs']} regs, {r['spill_stores']} B stores, "
                         f"{r['spill_loads']} B loads, stack {r['stack']} B")
        for p in r.get("ptx_problems", []):
            lines.append(f"PTX {where}: {p}")
    return lines


def write_notes(table: str, header: str) -> None:
    with open(NOTES) as f:
        text = f.read()
    start, end = text.find(TABLE_BEGIN), text.find(TABLE_END)
    if start < 0 or end < 0:
        raise SystemExit(f"{NOTES} has no {TABLE_BEGIN} ... {TABLE_END} block to rewrite")
    block = f"{TABLE_BEGIN}\n{header}\n\n{table}\n{TABLE_END}"
    with open(NOTES, "w") as f:
        f.write(text[:start] + block + text[end + len(TABLE_END):])


def summarize_ptxas(paths: list[str]) -> int:
    """The table of ``nvcc -Xptxas -v`` logs (bench/compile_cuda.sh), one row per kernel
    template, file and arch over its instantiations, as ``markdown_table`` does for the
    Triton kernels; a kernel that spills is named on stderr.  Always exit status 0: the
    CUDA sources are not this script's to fix, and CI must not stop on them."""
    rows: dict = {}
    for path in paths:
        with open(path) as f:
            entries = parse_ptxas_log(f.read())
        for e, name in zip(entries, _demangle([e["function"] for e in entries])):
            key = (os.path.basename(path).removesuffix(".log"), _template(name), e["arch"])
            row = rows.setdefault(key, dict(n=0, regs=[], spill=[], stack=[], smem=[],
                                            spilled=[]))
            row["n"] += 1
            row["regs"].append(e["regs"] or 0)
            row["spill"].append(e["spill_stores"] + e["spill_loads"])
            row["stack"].append(e["stack"])
            row["smem"].append(e["smem"])
            if e["spill_stores"] or e["spill_loads"] or e["stack"]:
                row["spilled"].append(f"{name} ({e['arch']}): {e['regs']} registers, "
                                      f"{e['spill_stores']} B spill stores, {e['stack']} B stack")
    print("| file | kernel | arch | instantiations | registers | spill B (st+ld) | stack B "
          "| static shared B |")
    print("|---|---|---|---:|---:|---:|---:|---:|")
    for (file, kernel, arch), row in sorted(rows.items()):
        print(f"| {file} | {kernel} | {arch} | {row['n']} | {_span(row['regs'])} "
              f"| {_span(row['spill'])} | {_span(row['stack'])} | {_span(row['smem'])} |")
    for row in rows.values():
        for line in row["spilled"]:
            print(f"SPILL {line}", file=sys.stderr)
    return 0


def _template(demangled: str) -> str:
    """'void ns::(anonymous namespace)::k<float, 8>(float*, ...)' -> 'k'."""
    demangled = demangled.replace("(anonymous namespace)", "anon")
    depth, cut = 0, len(demangled)
    for i, ch in enumerate(demangled):
        depth += (ch in "<(") - (ch in ">)")
        if ch in "<(" and depth == 1:
            cut = i
            break
    return demangled[:cut].split("::")[-1].split(" ")[-1]


def _demangle(names: list[str]) -> list[str]:
    try:
        out = subprocess.run(["c++filt"], input="\n".join(names), capture_output=True,
                             text=True, check=True).stdout.splitlines()
    except (OSError, subprocess.CalledProcessError):
        return names
    return out if len(out) == len(names) else names


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--subset", choices=("all", "bounds"), default="all")
    ap.add_argument("--archs", default=",".join(map(str, ARCHS)))
    ap.add_argument("--jobs", type=int, default=_cores(), help="compile processes")
    ap.add_argument("--json", help="write the whole report (every specialization) here")
    ap.add_argument("--notes", action="store_true", help="rewrite the table in bench/NOTES.md")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--summarize-ptxas", nargs="+", metavar="LOG")
    args = ap.parse_args(argv)
    if args.summarize_ptxas:
        return summarize_ptxas(args.summarize_ptxas)
    archs = [int(a) for a in args.archs.split(",")]
    if args.worker:
        report = worker(args.subset, archs, args.jobs)
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1, default=str)
        return 0

    t0 = time.perf_counter()
    report = run_worker(args.subset, archs, args.jobs)
    wall = time.perf_counter() - t0
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1, default=str)
    tools = ", ".join(f"{a}: {v}" for a, v in report["ptxas"].items())
    header = (f"Triton {report['triton']} ({tools}); set `{args.subset}`: "
              f"{len(report['results'])} compiles ({report['selected']} of "
              f"{report['recorded']} recorded specializations x {len(archs)} archs) in "
              f"{wall:.0f} s wall ({report['record_s']:.0f} s recording, {report['cached']} "
              f"results from the cache), {report['jobs']} processes on {os.cpu_count()} cores.")
    table = markdown_table(report)
    print(header, "\n", table, sep="\n")
    problems = findings(report)
    print("\n".join(["", *problems]) if problems else "\nno failures, spills or PTX problems")
    if args.notes:
        write_notes(table, header)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
