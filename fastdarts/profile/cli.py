"""``fastdarts profile cnn|rnn [search flags] [--warmup N --steps N --compare --json F --png F]``.

Builds the search that ``fastdarts search cnn|rnn`` with the same flags would run
(without running it), times ``--steps`` search steps per phase after ``--warmup``
steps, prints a table and the projection for the whole configured search, and
optionally writes JSON (schema: fastdarts.profile.profiler.check_schema) and a PNG.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys
import tempfile

from .. import config
from ..search import cli as search_cli


def _profile_flags(p) -> None:
    g = p.add_argument_group("profile")
    g.add_argument("--warmup", type=int, default=3, help="warm-up steps, not timed (default 3)")
    g.add_argument("--steps", type=int, default=10,
                   help="measured steps (each run twice: instrumented and plain; default 10)")
    g.add_argument("--compare", action="store_true",
                   help="profile the reference implementation, the fused path on every available "
                        "kernel backend and (CNN on CUDA) the captured step; print ratios")
    g.add_argument("--json", default=None, metavar="FILE", help="write the report as JSON")
    g.add_argument("--png", default=None, metavar="FILE",
                   help="stacked bar of phase times per variant (needs matplotlib)")
    g.add_argument("--no_ops", action="store_true",
                   help="skip the torch.profiler step (busy time, op/kernel counts, per-phase peak)")


def add_parser(top) -> None:
    """Register ``profile`` with ``cnn`` and ``rnn`` on the top-level subparsers."""
    prof = top.add_parser("profile", help="where a search step's time goes, and what the search costs")
    sub = prof.add_subparsers(dest="net", required=True)
    cnn = search_cli.cnn_parser(sub)
    _profile_flags(cnn)
    cnn.set_defaults(run=run_profile_cnn)
    rnn = search_cli.rnn_parser(sub)
    _profile_flags(rnn)
    rnn.set_defaults(run=run_profile_rnn)


def cnn_config(a):
    """The CNNSearchConfig that ``fastdarts search cnn`` builds from the same flags."""
    return dataclasses.replace(search_cli.cnn_config(a), quiet=True, overwrite=True)  # writes nothing


def rnn_config(a):
    """The RNNSearchConfig that ``fastdarts search rnn`` builds from the same flags."""
    return dataclasses.replace(search_cli.rnn_config(a), quiet=True, overwrite=True)


def _run(space: str, a) -> int:
    from .profiler import check_schema, format_report, run_profile, write_png

    threads = config.set_threads(a, a.data is None)  # the policy of search and train
    tmp = None
    if a.save is None:  # the build creates its save directory; nothing is written there
        tmp = a.save = tempfile.mkdtemp(prefix="fastdarts-profile-")
    try:
        cfg = cnn_config(a) if space == "cnn" else rnn_config(a)
        log = None if a.quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))
        if log:
            log(f"threads: {threads}")
        report = run_profile(space, cfg, warmup=a.warmup, steps=a.steps, compare=a.compare,
                             ops=not a.no_ops, log=log)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    check_schema(report)
    print(format_report(report))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(report, f, indent=1)
        print(f"JSON report (schema_version {report['schema_version']}) written to {a.json}")
    if a.png:
        if write_png(report, a.png):
            print(f"PNG written to {a.png}")
        else:
            print(f"no PNG written: matplotlib is not installed (pip install matplotlib); "
                  f"--png {a.png} ignored", file=sys.stderr)
    return 0


def run_profile_cnn(a) -> int:
    return _run("cnn", a)


def run_profile_rnn(a) -> int:
    return _run("rnn", a)
