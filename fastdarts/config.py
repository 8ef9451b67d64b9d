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
import math
from dataclasses import MISSING, field, fields
from typing import Any

_TYPES = {"int": int, "float": float, "str": str, "bool": bool}


class ConfigError(ValueError):
    """Settings that cannot run as given (the CLI prints it as one line, exit 2)."""


def setting(default: Any, help: str = "", *, small: Any = MISSING, flags: tuple[str, ...] = (),
            choices: tuple | None = None, cli: bool = True, metavar: str | None = None,
            bounds: str | None = None, also: tuple = ()):
    """A config field: ``default`` (the original's), ``small`` (on the embedded
    dataset, if different), ``help``, extra flag names (``flags``, e.g. the
    original's spelling), ``choices``; ``cli=False`` for API-only fields.
    ``bounds``: the values a number may take, as an interval ("[1, inf)", "(0, 1)"),
    ``also``: values allowed outside it (e.g. -1 meaning "off"); checked by
    :func:`validate` before anything runs, so a range is written once, here."""
    if bounds is not None:
        parse_bounds(bounds)  # a typo in a declaration fails at import, not at a user's run
    meta = {"help": help, "small": small, "flags": flags, "choices": choices, "cli": cli,
            "metavar": metavar, "bounds": bounds, "also": also}
    return field(default=default, metadata=meta)


def parse_bounds(text: str) -> tuple[float, bool, float, bool]:
    """"[1, inf)" -> (1.0, True, inf, False): low, low included, high, high included."""
    text = text.strip()
    if len(text) < 5 or text[0] not in "[(" or text[-1] not in "])" or "," not in text:
        raise ValueError(f"bounds must read like '[1, inf)' or '(0, 1)', got {text!r}")
    low, high = (float(v) for v in text[1:-1].split(","))
    return low, text[0] == "[", high, text[-1] == "]"


def _num(v: float) -> str:
    return f"{int(v)}" if float(v).is_integer() else f"{v:g}"


def bounds_text(text: str) -> str:
    """What a flag must be, in words: '>= 1', '> 0 and < 1'."""
    low, low_in, high, high_in = parse_bounds(text)
    parts = []
    if low != -math.inf:
        parts.append(f"{'>=' if low_in else '>'} {_num(low)}")
    if high != math.inf:
        parts.append(f"{'<=' if high_in else '<'} {_num(high)}")
    return " and ".join(parts)


def check_value(flag: str, value: Any, bounds: str | None, also: tuple = ()) -> None:
    """ConfigError naming ``flag`` when the number ``value`` lies outside ``bounds``."""
    if bounds is None or value is None or isinstance(value, bool) or value in also:
        return
    low, low_in, high, high_in = parse_bounds(bounds)
    ok = (value >= low if low_in else value > low) and (value <= high if high_in else value < high)
    if not ok or value != value:  # value != value: NaN, which no comparison rejects
        extra = f" (or {', '.join(map(_num, also))})" if also else ""
        raise ConfigError(f"{flag} must be {bounds_text(bounds)}{extra}, got {value}")


def validate(cfg) -> None:
    """Check every bounded number of the config ``cfg`` and its device (ConfigError,
    one line naming the flag): a bad value stops the run before any file is touched."""
    for f in fields(cfg):
        check_value(f"--{f.name}", getattr(cfg, f.name), f.metadata.get("bounds"),
                    f.metadata.get("also", ()))
    if any(f.name == "device" for f in fields(cfg)):
        check_device(cfg.device)


def check_device(device: Any, flag: str | None = None) -> None:
    """ConfigError for a device that this torch cannot use: not a device string, a
    device type other than cpu/cuda, CUDA on a build or machine without it, a GPU
    index beyond those present.  None (the default: cuda if available) passes."""
    if device is None:
        return
    import torch

    flag = flag or f"--device {device}"
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ConfigError(f"{flag}: not a device; use cpu, cuda or cuda:N") from None
    if dev.type not in ("cpu", "cuda"):
        raise ConfigError(f"{flag}: fastdarts runs on cpu or cuda devices, not {dev.type}")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            why = ("this torch build has no CUDA" if torch.version.cuda is None
                   else "no CUDA GPU is visible")
            raise ConfigError(f"{flag}: {why} (torch {torch.__version__}); use --device cpu "
                              "or leave --device out")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(f"{flag}: only {torch.cuda.device_count()} CUDA device(s) "
                              f"here (cuda:0 to cuda:{torch.cuda.device_count() - 1})")


# -- the settings every run has (one definition; each config lists them by name) -------
def device_setting():
    return setting(None, "cuda, cuda:1, cpu (default: cuda if available)")


def resume_setting():
    return setting(None, "checkpoint.pt to resume from")


def trust_checkpoint_setting():
    return setting(False, "load --resume with full pickle, which can run code: "
                   "only a checkpoint you trust (e.g. one of an older fastdarts)")


def overwrite_setting(what: str):
    return setting(False, f"replace the results of an earlier {what} in --save (without it, "
                   "a directory holding them is refused)")


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
                # default None, not False: a flag not given leaves the field to the
                # defaults (a search method's published True included)
                parser.add_argument(*names, dest=f.name, action="store_true", default=None, help=help_)
            else:  # on by default somewhere: --x / --no-x
                parser.add_argument(*names, dest=f.name, action=argparse.BooleanOptionalAction,
                                    default=None, help=help_)
            continue
        kwargs = {"dest": f.name, "type": typ, "default": None, "help": help_}
        if meta.get("choices"):
            kwargs["choices"] = meta["choices"]
        if meta.get("metavar"):
            kwargs["metavar"] = meta["metavar"]
        if meta.get("bounds"):
            kwargs["help"] += f"; {bounds_text(meta['bounds'])}"
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
    cfg = cls(**values)
    validate(cfg)
    return cfg


# -- flags that every command shares -------------------------------------------------
def add_run_flags(parser, *, backend: bool = True, gpu: bool = True) -> None:
    """How a command runs, not what it computes: --backend, --threads and the
    original scripts' --gpu (the device index; --device wins)."""
    if backend:
        from .backends import BACKEND_CHOICES

        parser.add_argument("--backend", default=None, choices=BACKEND_CHOICES,
                            help="kernel backend for the fused ops (default: auto)")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for torch (default: OMP_NUM_THREADS if set, else 1 for the "
                             "embedded default on a CPU, else one per core)")
    if gpu:
        parser.add_argument("--gpu", type=int, default=None, help="GPU index (the original's flag)")


# flags outside the configs (how a command runs): their ranges, checked by check_run_flags
RUN_FLAG_BOUNDS = {"threads": "[1, inf)", "gpu": "[0, inf)", "seeds": "[1, inf)", "per_gpu": "[1, inf)",
                   "warmup": "[0, inf)", "steps": "[1, inf)"}
TEST_FLAG_BOUNDS = {"batch_size": "[1, inf)", "bptt": "[2, inf)"}


def check_run_flags(args: argparse.Namespace, test: bool = False) -> None:
    """ConfigError for a run flag out of range (--threads 0, --gpu -1, ...) or a device
    this torch cannot use; ``test``: also the test command's --batch_size and --bptt
    (the other commands' come from their configs)."""
    table = {**RUN_FLAG_BOUNDS, **(TEST_FLAG_BOUNDS if test else {})}
    for name, bounds in table.items():
        check_value(f"--{name}", getattr(args, name, None), bounds)
    gpu = getattr(args, "gpu", None)
    given = getattr(args, "device", None)
    check_device(device_of(args), None if given or gpu is None else f"--gpu {gpu}")


def refuse_overwrite(save: str, markers: tuple[str, ...], what: str, resume_flag: str) -> None:
    """ConfigError when ``save`` holds the results of an earlier run (any of
    ``markers``): a new run would replace them.  The message offers the three ways
    on: continue that run (``resume_flag``), another --save, or --overwrite."""
    import os

    found = [m for m in markers if os.path.isfile(os.path.join(save, m))]
    if found:
        raise ConfigError(f"{save}/ holds the results of an earlier {what} ({', '.join(found)}); "
                          f"continue it with {resume_flag}, write elsewhere with --save DIR, or "
                          "replace them with --overwrite")


def device_of(args: argparse.Namespace) -> str | None:
    """--device, else cuda:<--gpu>, else None (cuda if available)."""
    if getattr(args, "device", None):
        return args.device
    gpu = getattr(args, "gpu", None)
    return f"cuda:{gpu}" if gpu is not None else None


def set_threads(args: argparse.Namespace, small: bool) -> str:
    """The one thread policy of every command (search, train, profile): --threads N
    when given; else OMP_NUM_THREADS when set (torch already follows it); else, for a
    run on the embedded default (``small``) on a CPU, 1 thread; else torch's default
    (one per core).  Sets torch's intra-op threads and returns what the command
    reports, e.g. "1 thread (the embedded default on a CPU; --threads N to change)".

    Why 1 for the embedded default: at C=4 on 16x16 images each conv is ~0.2 ms of
    work, and OpenMP threads that wait on a busy core cost far more than they save.
    The whole default search on a 2-core VM, measured: idle, 62 s on 1 thread vs 45 s
    on 2; beside other jobs, 65 s vs 245 s (one depthwise conv 0.3 ms vs 35 ms); the
    issue-17 report saw the same on training (164 s beside other jobs vs 8 s idle)
    and profiling.  A predictable run wins for a demo; ``--threads 2`` is faster on an
    idle machine.  A full-size run (--data) keeps torch's default."""
    import os

    import torch

    device = device_of(args)
    on_cpu = device is None and not torch.cuda.is_available() or (device or "").startswith("cpu")
    if getattr(args, "threads", None):
        torch.set_num_threads(args.threads)
        why = "--threads"
    elif "OMP_NUM_THREADS" in os.environ:
        why = "OMP_NUM_THREADS"
    elif small and on_cpu:
        torch.set_num_threads(1)
        why = "the embedded default on a CPU; --threads N to change"
    else:
        why = "torch's default, one per core; --threads N to change"
    n = torch.get_num_threads()
    return f"{n} CPU thread{'s' if n != 1 else ''} ({why})"


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
