"""Shared test plumbing.

``@pytest.mark.gpu`` tests are skipped at run time (never at import or
collection) when no CUDA device is visible, so the suite collects on any machine.
"""

from __future__ import annotations

import os

import pytest
import torch

# Without a GPU, run the Triton kernels in Triton's interpreter so that plain
# `python -m pytest` checks them too.  This must happen before anything imports
# triton (conftest.py is loaded before the test modules); an explicit
# TRITON_INTERPRET in the environment wins.
if "TRITON_INTERPRET" not in os.environ and not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"
if os.environ.get("TRITON_INTERPRET") == "1":
    from tests import triton_interp

    triton_interp.install()  # the interpreter's per-call scan done once (tests/triton_interp.py)


# One intra-op thread per pytest-xdist worker: the workers already use every core, and
# OpenMP threads waiting on a busy core cost far more than they save at these shapes.
if "PYTEST_XDIST_WORKER" in os.environ:
    torch.set_num_threads(1)


def cuda_available() -> bool:
    return torch.cuda.is_available()


def pytest_runtest_setup(item):
    if item.get_closest_marker("gpu") is not None and not cuda_available():
        pytest.skip("needs a CUDA device (torch.cuda.is_available() is False)")


@pytest.fixture
def use_backend():
    """``use_backend(name, device, ext_op=None)``: force a backend for the test, skipping it
    at run time when that backend cannot run on ``device`` here (or, for the compiled
    backends, when fastdarts._C lacks ``ext_op``); restores auto dispatch afterwards."""
    from fastdarts import _ext, backends

    def _use(name: str, device: str = "cpu", ext_op: str | None = None) -> str:
        reason = backends.why_unavailable(name, torch.device(device).type)
        if reason is not None:
            pytest.skip(f"backend {name!r} unavailable on {device}: {reason}")
        if name in ("cpu", "cuda") and ext_op is not None and not _ext.has_op(ext_op):
            pytest.skip(f"fastdarts._C has no {ext_op}; rebuild the extension")
        backends.set_backend(name)
        return name

    yield _use
    backends.set_backend(None)


# The longest modules first (measured: seconds of one 2-worker run, 2026-12-01, with the
# kernel compile cold as in CI): with pytest-xdist's --dist loadfile a module is one unit
# of work, handed out in collection order, so long ones left for last would keep one
# worker busy while the other idles.
LONGEST_FIRST = ("test_kernels_compile", "test_distributed", "test_profile", "test_search_checkpoint",
                 "test_search_fused_vs_reference", "test_architect", "test_search_callbacks",
                 "test_distributed_train", "test_search_cnn", "test_nn_search_rnn", "test_nn_memory",
                 "test_regressor", "test_step", "test_methods_pc_darts", "test_methods_rdarts",
                 "test_methods_darts_minus")


def pytest_collection_modifyitems(config, items):
    def rank(item):
        name = item.path.stem
        return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)  # stable: the order inside a module, and of the rest, is kept
