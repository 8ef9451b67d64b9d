"""fastdarts.backends: the policy table, resolve, FASTDARTS_BACKEND, set_backend/use and the
one-time fallback warnings.  Pure dispatch logic: no kernel runs here."""

from __future__ import annotations

import warnings

import pytest
import torch

import fastdarts
from fastdarts import _ext, backends
from fastdarts.ops import flat_update, mixed_sum, rnn_node, rnn_node_bn, state_sum  # noqa: F401

# every registered op name, as the ops' modules pass it to resolve
OPS = ("mixed_sum", "state_mixed_sum", "rnn_node", "rnn_node_bn", "virtual_step_", "perturb_",
       "sgd_step_")


@pytest.fixture(autouse=True)
def _clean(monkeypatch):
    """Each test starts from auto dispatch, no env override, no warnings given yet."""
    monkeypatch.delenv("FASTDARTS_BACKEND", raising=False)
    monkeypatch.setattr(backends, "_warned", set())
    backends.set_backend(None)
    yield
    backends.set_backend(None)


def _fastdarts_warnings(caught):
    return [str(w.message) for w in caught if "fastdarts" in str(w.message)]


# -- the table --------------------------------------------------------------------------------
def test_policy_covers_every_op_and_only_known_backends():
    assert set(backends.POLICY) == set(OPS)
    for op, policy in backends.POLICY.items():
        assert "reference" in policy.backends, op
        assert set(policy.backends) <= set(backends.BACKENDS), op
        assert policy.fallback in policy.backends, op
        assert policy.why, f"{op}: every choice carries its reason"
        for device_type, order in policy.auto.items():
            assert set(order) <= set(policy.backends), (op, device_type)
            assert order[-1] == "reference", (op, device_type)  # auto always ends somewhere
        compiled = {"cuda", "cpu"} & set(policy.backends)
        assert (policy.ext_op is not None) == bool(compiled), op


def test_policy_auto_orders():
    P = backends.POLICY
    assert P["mixed_sum"].auto_order("cpu") == ("cpu", "reference")
    assert P["mixed_sum"].auto_order("cuda") == ("cuda", "triton", "reference")
    for op in ("state_mixed_sum", "rnn_node_bn"):
        assert P[op].auto_order("cuda") == ("triton", "reference")
    for op in ("state_mixed_sum", "rnn_node", "rnn_node_bn", "virtual_step_", "perturb_",
               "sgd_step_"):
        assert P[op].auto_order("cpu") == ("reference",), op
    for op in OPS:
        assert P[op].auto_order("mps") == ("reference",), op  # an unlisted device type


def test_backend_choices_are_auto_and_the_backends():
    # what fastdarts/cli.py's --backend accepts
    assert backends.BACKEND_CHOICES == ("auto", *backends.BACKENDS)


# -- resolve ----------------------------------------------------------------------------------
@pytest.mark.parametrize("op", OPS)
def test_auto_on_cpu_follows_the_table(op):
    expected = next(b for b in backends.POLICY[op].auto_order("cpu")
                    if backends.why_unavailable(b, "cpu") is None)
    policy = backends.POLICY[op]
    if expected in ("cuda", "cpu") and not _ext.has_op(policy.ext_op):
        expected = policy.fallback
    assert backends.resolve(op, torch.device("cpu")) == expected
    assert backends.resolve(op, "cpu") == expected  # a string device works too


def test_auto_on_cpu_mixed_sum_takes_the_cpu_kernel_when_built():
    if backends.why_unavailable("cpu", "cpu") is not None or not _ext.has_op("mixed_sum_forward"):
        pytest.skip("fastdarts._C is not built here")
    assert backends.resolve("mixed_sum", "cpu") == "cpu"


def test_unknown_op_is_a_key_error():
    with pytest.raises(KeyError):
        backends.resolve("no_such_op", "cpu")


def test_env_var_selects_and_set_backend_wins(monkeypatch):
    monkeypatch.setenv("FASTDARTS_BACKEND", "reference")
    assert backends.get_requested() == "reference"
    assert backends.resolve("mixed_sum", "cpu") == "reference"
    if backends.why_unavailable("triton", "cpu") is None:
        backends.set_backend("triton")
        assert backends.get_requested() == "triton"
        assert backends.resolve("mixed_sum", "cpu") == "triton"
    backends.set_backend("auto")
    assert backends.get_requested() == "reference"  # auto: back to the env var


def test_bad_names_say_what_to_choose(monkeypatch):
    with pytest.raises(ValueError, match="choose one of auto, reference"):
        backends.set_backend("fast")
    monkeypatch.setenv("FASTDARTS_BACKEND", "fast")
    with pytest.raises(ValueError, match="FASTDARTS_BACKEND='fast'"):
        backends.get_requested()


def test_use_restores_the_previous_choice_even_on_error():
    backends.set_backend("reference")
    with backends.use("auto"):
        assert backends.get_requested() == "auto"
    assert backends.get_requested() == "reference"
    with pytest.raises(RuntimeError), backends.use(None):
        assert backends.get_requested() == "auto"
        raise RuntimeError
    assert backends.get_requested() == "reference"
    with pytest.raises(ValueError), backends.use("fast"):
        pass
    assert backends.get_requested() == "reference"


def test_use_clears_the_resolve_cache():
    if backends.why_unavailable("triton", "cpu") is not None:
        pytest.skip("needs TRITON_INTERPRET=1 and triton on the CPU")
    assert backends.resolve("state_mixed_sum", "cpu") == "reference"
    with backends.use("triton"):
        assert backends.resolve("state_mixed_sum", "cpu") == "triton"
    assert backends.resolve("state_mixed_sum", "cpu") == "reference"


# -- fallbacks --------------------------------------------------------------------------------
def test_a_backend_the_op_lacks_falls_back_with_one_warning():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        backends.set_backend("cpu")  # state_mixed_sum has no cpu kernel
        for _ in range(3):
            assert backends.resolve("state_mixed_sum", "cpu") == "reference"
            backends.set_backend("cpu")  # clears the cache: the warning must still come once
    ours = _fastdarts_warnings(caught)
    assert len(ours) == 1, ours
    assert "has no cpu implementation" in ours[0] and "'reference'" in ours[0]


def test_a_backend_that_cannot_run_here_falls_back_with_one_warning():
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fastdarts.set_backend("cuda")
        for op in ("mixed_sum", "rnn_node", "virtual_step_"):
            assert backends.resolve(op, "cpu") == "reference"
    ours = _fastdarts_warnings(caught)
    assert len(ours) == 1, ours  # one reason, one warning, whatever the op
    assert "'cuda'" in ours[0] and "reference" in ours[0]


def test_stale_extension_falls_back_to_the_reference(monkeypatch):
    """A fastdarts._C built before an op existed: the README's fallback (the reference, one
    warning saying to rebuild), for rnn_node too (it used to take Triton)."""
    monkeypatch.setattr(backends, "why_unavailable", lambda b, t: None)  # every backend runs
    monkeypatch.setattr(_ext, "has_op", lambda name: False)  # but _C has none of the ops
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for op in ("mixed_sum", "rnn_node"):
            assert backends.resolve(op, "cuda") == "reference"  # auto picked cuda
            backends.set_backend("cuda")
            assert backends.resolve(op, "cuda") == "reference"
            backends.set_backend(None)
        assert backends.resolve("mixed_sum", "cpu") == "reference"  # auto picked cpu
    ours = _fastdarts_warnings(caught)
    assert ours and all("rebuild it" in m for m in ours), ours
    assert len(ours) == len(set(ours))  # each reason once


def test_available_backends_lists_what_runs():
    names = fastdarts.available_backends("cpu")
    assert names[0] == "reference"
    assert all(backends.why_unavailable(b, "cpu") is None for b in names)
    assert "cuda" not in names
