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
import sys

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


def main(argv=None) -> int:
    from . import backends
    from .config import ConfigError
    from .data import DatasetError
    from .distributed import shutdown
    from .loop.state import CheckpointError
    from .space.genotypes import GenotypeError

    ap = build_parser()
    a = ap.parse_args(argv)
    a.argv = list(sys.argv[1:] if argv is None else argv)[2:]  # the flags after "search cnn|rnn"
    if getattr(a, "backend", None):
        backends.set_backend(a.backend)
    ok = False
    try:
        rc = a.run(a)
        ok = rc == 0
        return rc
    except (ConfigError, DatasetError, CheckpointError, GenotypeError) as exc:
        print(f"fastdarts: error: {exc}", file=sys.stderr)
        return 2
    finally:  # a torchrun process leaves its process group before it exits
        shutdown(ok)


if __name__ == "__main__":
    sys.exit(main())
