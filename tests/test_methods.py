"""fastdarts.methods: the registry, how a method's published defaults meet the user's
settings, and the one-line refusals.  Each method's own math is tested in its own
file (tests/test_methods_<name>.py)."""

from __future__ import annotations

import pytest

from fastdarts import methods
from fastdarts.config import ConfigError
from fastdarts.methods import Method
from fastdarts.search.cnn import method_config


@pytest.fixture
def toy_method():
    m = methods.register(Method(name="toy-test", paper="nobody, 2026", summary="a test method",
                                defaults={"learning_rate": 0.5, "batch_size": 7},
                                small_defaults={"learning_rate": 0.25}, first_order_only=True))
    yield m
    del methods.METHODS["toy-test"]


def test_unknown_method_is_one_line_naming_the_known_ones():
    with pytest.raises(ConfigError) as err:
        method_config("no-such-method")
    assert "no-such-method" in str(err.value) and "darts" in str(err.value)
    assert "\n" not in str(err.value)


def test_a_name_registers_once(toy_method):
    with pytest.raises(ValueError, match="already registered"):
        methods.register(toy_method)


def test_given_settings_win_over_the_method_over_darts(toy_method):
    full = method_config("toy-test", data="/nowhere")
    assert (full.learning_rate, full.batch_size, full.epochs) == (0.5, 7, 50)
    small = method_config("toy-test")
    assert (small.learning_rate, small.batch_size, small.epochs) == (0.25, 64, 5)
    given = method_config("toy-test", data="/nowhere", learning_rate=0.1)
    assert (given.learning_rate, given.batch_size) == (0.1, 7)


def test_first_order_method_refuses_unrolled(toy_method):
    with pytest.raises(ConfigError, match="first order.*drop --unrolled"):
        method_config("toy-test", unrolled=True)


def test_cli_applies_method_defaults_only_to_flags_not_given(toy_method):
    import argparse

    from fastdarts.search.cli import add_search_flags, cnn_config
    from fastdarts.search.cnn import CNNSearchConfig

    p = argparse.ArgumentParser()
    add_search_flags(p, CNNSearchConfig)
    cfg = cnn_config(p.parse_args(["--method", "toy-test", "--data", "/nowhere", "--batch_size", "3"]))
    assert (cfg.method, cfg.learning_rate, cfg.batch_size) == ("toy-test", 0.5, 3)
    with pytest.raises(ConfigError, match="drop --unrolled"):
        cnn_config(p.parse_args(["--method", "toy-test", "--unrolled"]))


def test_resume_key_holds_the_method_settings_only_where_they_differ(tmp_path):
    """A DARTS search's checkpoint key is the one written before methods existed (so
    those checkpoints still resume); a method, or a changed method setting, is in it."""
    from dataclasses import fields

    from fastdarts.search.cnn import CNNSearchConfig, build

    first = [f.name for f in fields(CNNSearchConfig)].index("method")
    later = {f.name for f in fields(CNNSearchConfig)[first:]}
    tiny = dict(layers=1, init_channels=2, batch_size=4, quiet=True)
    plain = build(method_config("darts", save=str(tmp_path / "a"), **tiny)).config_key
    assert not later & set(plain), sorted(later & set(plain))
    assert {"learning_rate", "unrolled", "impl", "data"} <= set(plain)
    minus = build(method_config("darts-", save=str(tmp_path / "b"), aux_skip_beta=0.5, **tiny)).config_key
    assert minus["method"] == "darts-" and minus["aux_skip_beta"] == 0.5
