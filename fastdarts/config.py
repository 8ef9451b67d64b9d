"""Settings declared once: each field of a config dataclass carries its default,
its default on the embedded dataset, its help and its flag, and the command
line (argparse flags, help text, defaults) is generated from it.

    @dataclass
    class CNNSearchConfig:
        epochs: int = setting(50, "training epochs", small=3)

    add_flags(parser, CNNSearchConfig)            # --epochs N  "training epochs (50; 3 on ...)"
    cfg = from_args(CNNSearchConfig, args, small=args.data is None)

A flag left out takes the field's default, or its ``small`` default when the run
uses the embedded dataset (no ``--data``).  Fields with ``cli=False`` have no flag.
The search, training and profiling commands all build their configs this way,
so a default is written in exactly one place.
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import MISSING, field, fields
from typing import Any

_TYPES = {"int": int, "float": float, "str": str, "bool": bool}


class ConfigError(ValueError):
    """Settings that cannot run as given (the CLI prints it as one line, exit 2)."""


def setting(default: Any, help: str = "", *, small: Any = MISSING, flags: tuple[str, ...] = (),
            choices: tuple | None = None, cli: bool = True, metavar: str | None = None):
    """A config field: ``default`` (the original's), ``small`` (on the embedded
    dataset, if different), ``help``, extra flag names (``flags``, e.g. the
    original's spelling), ``choices``; ``cli=False`` for API-only fields."""
    meta = {"help": help, "small": small, "flags": flags, "choices": choices, "cli": cli,
            "metavar": metavar}
    return field(default=default, metadata=meta)


def _base_type(f: dataclasses.Field) -> type:
    """int/float/str/bool of a field annotated ``int``, ``int | None``, ``str | Genotype``..."""
    name = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", "str")
    first = name.split("|")[0].strip()
    return _TYPES.get(first, str)


def _shown(value: Any) -> str:
    return "off" if value is False else "on" if value is True else f"{value}"


def _default_text(f: dataclasses.Field) -> str:
    """What the help says of the default: '50; 3 on the embedded default' (nothing for None)."""
    meta = f.metadata
    text = "" if f.default is None else f"default {_shown(f.default)}"
    if meta.get("small", MISSING) is not MISSING:
        text += ("; " if text else "") + f"{_shown(meta['small'])} on the embedded default"
    return text


def add_flags(parser: argparse.ArgumentParser | Any, cls, *, skip: tuple[str, ...] = ()) -> None:
    """Add one flag per field of the dataclass ``cls`` (except ``skip`` and ``cli=False``)."""
    for f in fields(cls):
        meta = f.metadata
        if not meta.get("cli", True) or f.name in skip:
            continue
        names = (f"--{f.name}", *meta.get("flags", ()))
        shown = _default_text(f)
        help_ = f"{meta.get('help', '')} ({shown})" if shown else meta.get("help", "")
        typ = _base_type(f)
        if typ is bool:
            if f.default is False and meta.get("small", MISSING) is MISSING:
                parser.add_argument(*names, dest=f.name, action="store_true", help=help_)
            else:  # on by default somewhere: --x / --no-x
                parser.add_argument(*names, dest=f.name, action=argparse.BooleanOptionalAction,
                                    default=None, help=help_)
            continue
        kwargs = {"dest": f.name, "type": typ, "default": None, "help": help_}
        if meta.get("choices"):
            kwargs["choices"] = meta["choices"]
        if meta.get("metavar"):
            kwargs["metavar"] = meta["metavar"]
        parser.add_argument(*names, **kwargs)


def defaults(cls, small: bool = False) -> dict:
    """Every field's default, the ``small`` ones when ``small``."""
    out = {}
    for f in fields(cls):
        value = f.default if f.default is not MISSING else f.default_factory()  # type: ignore[misc]
        if small and f.metadata.get("small", MISSING) is not MISSING:
            value = f.metadata["small"]
        out[f.name] = value
    return out


def from_args(cls, args: argparse.Namespace, *, small: bool, **overrides):
    """The config of the parsed flags: a flag given wins, else the (small) default;
    ``overrides`` (computed by the caller, e.g. the device) win over both."""
    values = defaults(cls, small)
    for f in fields(cls):
        given = getattr(args, f.name, None)
        if f.metadata.get("cli", True) and given is not None:
            values[f.name] = given
    values.update(overrides)
    return cls(**values)


# -- flags that every command shares -------------------------------------------------
def add_run_flags(parser, *, backend: bool = True, gpu: bool = True) -> None:
    """How a command runs, not what it computes: --backend, --threads and the
    original scripts' --gpu (the device index; --device wins)."""
    if backend:
        from .backends import BACKEND_CHOICES

        parser.add_argument("--backend", default=None, choices=BACKEND_CHOICES,
                            help="kernel backend for the fused ops (default: auto)")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for torch (default: torch's; 1 for the embedded default "
                             "on a CPU)")
    if gpu:
        parser.add_argument("--gpu", type=int, default=None, help="GPU index (the original's flag)")


def device_of(args: argparse.Namespace) -> str | None:
    """--device, else cuda:<--gpu>, else None (cuda if available)."""
    if getattr(args, "device", None):
        return args.device
    gpu = getattr(args, "gpu", None)
    return f"cuda:{gpu}" if gpu is not None else None


def set_threads(args: argparse.Namespace, cpu_default_one: bool) -> None:
    """--threads, else 1 thread for the tiny embedded-default runs on a CPU.

    Why: at C=4 on 16x16 images each conv is ~0.2 ms of work, and OpenMP threads that
    wait on a busy core cost far more than they save.  The whole default search on a
    2-core VM, measured: idle, 62 s on 1 thread vs 45 s on 2; beside other jobs,
    65 s vs 245 s (one depthwise conv 0.3 ms vs 35 ms).  A predictable minute wins
    for a demo default; ``--threads 2`` is faster on an idle machine."""
    import os

    import torch

    device = device_of(args)
    if getattr(args, "threads", None):
        torch.set_num_threads(args.threads)
    elif cpu_default_one and "OMP_NUM_THREADS" not in os.environ and not torch.cuda.is_available() \
            and (device is None or device.startswith("cpu")):
        torch.set_num_threads(1)


def check_channels_last(channels_last: bool, device) -> None:
    """ConfigError for channels_last on a CPU device.

    Why: in torch 2.13 (CPU build), the oneDNN weight gradient of a 1x1 stride-2
    convolution on a channels_last input with few channels corrupts the heap on one
    thread ("corrupted double-linked list", SIGABRT): one ``nn.Conv2d(4, 2, 1, 2)``
    reproduces it in 50 steps, and FactorizedReduce is made of such convolutions.
    channels_last is a GPU layout (tensor cores); on a CPU it gains nothing here."""
    import torch

    if channels_last and torch.device(device).type == "cpu":
        raise ConfigError("--channels_last runs on CUDA devices only: on the CPU, torch's oneDNN "
                         "backward of FactorizedReduce's 1x1 stride-2 convolutions corrupts memory in "
                         "channels_last (a torch bug); drop the flag on a CPU")
