"""The command line (``fastdarts ...`` or ``python -m fastdarts ...``), on top of
every other module:

    fastdarts search cnn|rnn   fastdarts.search.cli   (the original train_search.py)
    fastdarts train cnn|rnn    fastdarts.train.cli    (the original train.py)
    fastdarts test cnn|rnn     fastdarts.train.cli    (the original test.py)
    fastdarts profile cnn|rnn  fastdarts.profile.cli  (where a step's time goes)

Each command's flags and defaults come from its config dataclass
(:mod:`fastdarts.config`).  Errors a user can fix (missing dataset, bad checkpoint,
bad genotype) print one line and exit 2; bad flags are argparse errors (also exit 2).
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time

from .profile import cli as profile_cli
from .search import cli as search_cli
from .search.cli import COMMANDS, command  # noqa: F401  (the registry of search spaces)
from .train import cli as train_cli


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="fastdarts", description="Fast, faithful DARTS.")
    top = ap.add_subparsers(dest="command", required=True)
    search_cli.add_parser(top)
    train_cli.add_parser(top)
    train_cli.add_test_parser(top)
    profile_cli.add_parser(top)
    return ap


def _save_dir(a) -> str | None:
    """The output directory of a search or training command (its --save or default)."""
    from . import config
    from .search.cnn import CNNSearchConfig
    from .search.rnn import RNNSearchConfig
    from .train.cnn import CNNTrainConfig
    from .train.rnn import RNNTrainConfig

    classes = {("search", "cnn"): CNNSearchConfig, ("search", "rnn"): RNNSearchConfig,
               ("train", "cnn"): CNNTrainConfig, ("train", "rnn"): RNNTrainConfig}
    cls = classes.get((a.command, getattr(a, "net", None)))
    if cls is None:
        return None
    return getattr(a, "save", None) or config.defaults(cls)["save"]


def _without(flags: list[str], drop_value: tuple[str, ...], drop: tuple[str, ...]) -> list[str]:
    """``flags`` less the flags in ``drop_value`` (with their value) and ``drop``."""
    out, skip = [], False
    for f in flags:
        if skip:
            skip = False
        elif f in drop_value:
            skip = True
        elif f in drop or f.split("=", 1)[0] in drop_value:
            continue
        else:
            out.append(f)
    return out


def interrupted(a, exc: KeyboardInterrupt, started: float) -> str:
    """The one line Ctrl-C prints: where the run stopped, what is saved, and the exact
    command that resumes it (the same flags, --resume the checkpoint)."""
    engine = getattr(exc, "engine", None)
    where = (f"in epoch {engine.epoch + 1}/{engine.epochs}, step {engine.step}"
             if engine is not None else "before the first step")
    head = f"fastdarts: interrupted {where}"
    save = _save_dir(a)
    if save is None:
        return f"{head}; nothing to resume (this command keeps no checkpoint)"
    ckpt = os.path.join(save, "checkpoint.pt")
    resumed = getattr(engine, "start_epoch", 0) if engine is not None else 0
    if not os.path.isfile(ckpt) or (os.path.getmtime(ckpt) < started and not resumed):
        return (f"{head}; nothing saved yet (a checkpoint is written at the end of each epoch); "
                f"start again with: {_command(a, ['--overwrite'] if os.path.isdir(save) else [])}")
    saved = _saved_epochs(ckpt)
    what = f"{ckpt} holds {saved} finished epoch(s)" if saved is not None else f"{ckpt} is saved"
    return f"{head}; {what}; resume with: {_command(a, ['--resume', ckpt])}"


def _saved_epochs(path: str) -> int | None:
    try:
        import torch

        return int(torch.load(path, map_location="cpu", weights_only=False)["epoch"])
    except Exception:  # a report line must not fail: say less instead
        return None


def _command(a, extra: list[str]) -> str:
    flags = _without(list(getattr(a, "argv", [])), ("--resume",), ("--overwrite", "--continue_train"))
    return shlex.join(["fastdarts", a.command, a.net, *flags, *extra])


def main(argv=None) -> int:
    from . import backends
    from .config import ConfigError, check_run_flags
    from .data import DatasetError
    from .distributed import shutdown
    from .loop.state import CheckpointError
    from .space.genotypes import GenotypeError

    started = time.time()
    ap = build_parser()
    a = ap.parse_args(argv)
    a.argv = list(sys.argv[1:] if argv is None else argv)[2:]  # the flags after "search cnn|rnn"
    if getattr(a, "backend", None):
        backends.set_backend(a.backend)
    ok = False
    try:
        check_run_flags(a, test=a.command == "test")
        rc = a.run(a)
        ok = rc == 0
        return rc
    except (ConfigError, DatasetError, CheckpointError, GenotypeError) as exc:
        print(f"fastdarts: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:  # Ctrl-C: one line, not a traceback
        print("\n" + interrupted(a, exc, started), file=sys.stderr)
        return 130
    finally:  # a torchrun process leaves its process group before it exits
        shutdown(ok)


if __name__ == "__main__":
    sys.exit(main())
