"""Every Triton kernel in kernels/ compiles for Hopper (sm_90) and Ampere (sm_80), at every
specialization its launchers make, without a register spill, and with the PTX its design
assumes: checked on a machine with no GPU, so that a GPU's first minutes are not spent on
a kernel that does not compile.  The interpreter the other tests run the kernels in accepts
code the compiler rejects and says nothing about the machine code.

bench/bench_compile.py does the work: a worker process records the launches of the public
ops and of a small search step, then compiles the ``bounds`` set of their
specializations (every dtype and option; COUNT-like constexprs at their extremes) for
both archs in a pool of processes.  Results are kept between runs, keyed on the kernels'
source and the toolchain, so an unchanged kernel is not compiled twice;
FASTDARTS_COMPILE_CACHE=0 compiles everything.  ``python bench/bench_compile.py --notes``
regenerates the table of registers, spills and shared memory in bench/NOTES.md.
"""

from __future__ import annotations

import pytest


def _why_no_nvidia_backend() -> str | None:
    try:
        from triton.backends import backends
    except ImportError:
        return "triton is not installed"
    if "nvidia" not in backends:
        return "triton's NVIDIA backend is not installed (it compiles without a GPU when it is)"
    return None


pytestmark = [pytest.mark.skipif(_why_no_nvidia_backend() is not None,
                                 reason=str(_why_no_nvidia_backend())),
              pytest.mark.slow]  # cold: ~130-160 s of CPU; warm (results cached): ~15 s


@pytest.fixture(scope="session")
def report():
    """The worker's report, compiled once (the ``bounds`` set).  The suite runs with
    pytest-xdist's ``--dist loadfile`` (pyproject.toml), which keeps this module on one
    worker; split over two, each compiled it (measured: 2 x 100 s)."""
    from bench import bench_compile

    return bench_compile.run_worker("bounds")


def _ok(report):
    return [r for r in report["results"] if "error" not in r]


def _where(r) -> str:
    pointers = " ".join(t for t in r["signature"].values() if t.startswith("*"))
    return f"{r['kernel']} sm_{r['arch']} {r['dtype']} {r['constexprs']} ({pointers})"


def test_every_target_compiled(report):
    from bench import bench_compile

    for arch in bench_compile.ARCHS:
        kernels = {r["kernel"] for r in report["results"] if r["arch"] == arch}
        assert kernels, f"nothing was compiled for sm_{arch}"


def test_every_specialization_compiles(report):
    failed = [f"{_where(r)}:\n{r['error']}" for r in report["results"] if "error" in r]
    assert not failed, f"{len(failed)} specializations fail to compile:\n\n" + "\n\n".join(failed)


def test_no_register_spills(report):
    from bench import bench_compile

    spills = [f"{_where(r)}: {r['regs']} registers, spill stores {r['spill_stores']} B, loads "
              f"{r['spill_loads']} B, stack {r['stack']} B, local {r['local']} B"
              for r in _ok(report) if bench_compile.spilled(r)]
    assert not spills, "kernels that spill registers to local memory:\n" + "\n".join(spills)


def test_ptxas_log_read(report):
    """The spill byte counts come from ptxas's own log; without it only the cubin's stack
    and local sizes would be checked.  Say so rather than pass on half the evidence."""
    missing = [_where(r) for r in _ok(report) if r["spill_stores"] is None]
    assert not missing, ("ptxas's -v log was not captured (has Triton changed how it calls "
                         f"ptxas?) for {len(missing)} kernels, e.g. {missing[0]}")


def test_every_jit_function_is_compiled(report):
    """A new kernel (or helper) in kernels/ that no recorded launch reaches fails here, so
    it cannot escape the compile check."""
    for arch in {r["arch"] for r in report["results"]}:
        reached = set()
        for r in report["results"]:
            if r["arch"] != arch:
                continue
            reached.add(r["kernel"])
            for callee in r.get("callees", []):  # 'fastdarts.kernels.<module>.<name>'
                module, _, name = callee.rpartition(".")
                reached.add(f"{module.rpartition('.')[2]}.{name}")
        missing = sorted(set(report["defined"]) - reached)
        assert not missing, (f"@triton.jit functions in kernels/ never compiled for sm_{arch}: "
                             f"{missing}; drive their launcher in bench/bench_compile.py "
                             "(_exercise_ops)")


def test_every_dtype_and_flag_exercised(report):
    """Every kernel was launched by ops on fp32, bf16, fp16 and fp64 tensors, and each
    boolean constexpr took both values: a new option the driver never flips fails here."""
    from bench import bench_compile

    dtypes: dict = {}
    for r in report["results"]:
        dtypes.setdefault(r["kernel"], set()).update(r["dtype"].split("/"))
    for kernel, seen in dtypes.items():
        missing = set(bench_compile.DTYPE_NAMES) - seen
        assert not missing, f"{kernel} never launched on {sorted(missing)} tensors"
    for kernel, constexprs in report["constexpr_values"].items():
        for name, values in constexprs.items():
            if set(values) & {"True", "False"}:
                assert set(values) == {"True", "False"}, f"{kernel}: {name} only ever {values}"


def test_ptx_matches_design(report):
    from bench import bench_compile

    problems = [f"{_where(r)}: {p}" for r in _ok(report) for p in r["ptx_problems"]]
    assert not problems, "PTX contradicts the kernels' design:\n" + "\n".join(problems)
    # the 16-byte check must have had an aligned specialization of every streaming kernel
    checked = {r["kernel"] for r in _ok(report) if r["vectors_checked"]}
    unchecked = sorted(set(bench_compile.STREAMING) - checked)
    assert not unchecked, f"no specialization of {unchecked} was aligned enough to check"
