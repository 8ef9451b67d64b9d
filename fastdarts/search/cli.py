"""``fastdarts search cnn|rnn``: the original train_search.py flags and defaults,
generated from :class:`CNNSearchConfig` / :class:`RNNSearchConfig` (fastdarts.config).

    fastdarts search cnn [--data CIFAR_ROOT] [train_search.py flags] [--impl fused|reference]
        [--backend ...] [--resume CKPT] [--device D] [--cuda_graph] [--profile] [--threads N]
        [--seeds N --per_gpu K] [--quiet]
    fastdarts search rnn [...]

A new search space is a function registered with ``@command("search <space>")``
that adds its parser to the ``search`` subparsers and sets ``run=fn(args) -> exit code``.
"""

from __future__ import annotations

import sys

from .. import config
from .cnn import CNNSearchConfig
from .rnn import RNNSearchConfig

COMMANDS: dict = {}


def command(name: str):
    """Register ``fn(search_subparsers)`` as the parser of ``fastdarts <name>``."""
    def wrap(fn):
        COMMANDS[name] = fn
        return fn
    return wrap


def add_search_flags(p, cls) -> None:
    """The flags of one search's config, plus how it runs (--backend, --threads, --gpu)."""
    config.add_flags(p, cls)
    config.add_run_flags(p)


def cnn_parser(sub):
    p = sub.add_parser("cnn", help="DARTS CNN search (CIFAR-10, or the embedded digits without --data)")
    add_search_flags(p, CNNSearchConfig)
    # accepted so that the original's command lines run; they do not change a search
    for flag, typ in (("--model_path", str), ("--cutout_length", int), ("--drop_path_prob", float)):
        p.add_argument(flag, type=typ, default=None, help="unused in search (the original's flag)")
    p.add_argument("--cutout", action="store_true", help="unused in search (the original's flag)")
    return p


def rnn_parser(sub):
    p = sub.add_parser("rnn", help="DARTS recurrent search (PTB, or Python's help texts without --data)")
    add_search_flags(p, RNNSearchConfig)
    return p


def _search_only_flags(p) -> None:
    p.add_argument("--profile", action="store_true", help="profile a few steps instead of searching")
    p.add_argument("--seeds", type=int, default=1,
                   help="run this many independent searches (seed, seed+1, ...), one per GPU")
    p.add_argument("--per_gpu", type=int, default=1,
                   help="with --seeds: searches sharing one GPU at a time (when they fit in its memory)")


def cnn_config(a) -> CNNSearchConfig:
    """The CNNSearchConfig of ``fastdarts search cnn``'s flags (also used by profile):
    the original's sizes with --data, the small embedded-default sizes without; with
    --method, the method's published defaults for every flag not given."""
    from .. import methods

    small = a.data is None
    method = getattr(a, "method", None) or "darts"
    published = {k: v for k, v in methods.method_defaults(method, small).items()
                 if getattr(a, k, None) is None}
    cfg = config.from_args(CNNSearchConfig, a, small=small, device=config.device_of(a), **published)
    methods.get(cfg.method).validate(cfg)
    return cfg


def rnn_config(a) -> RNNSearchConfig:
    """The RNNSearchConfig of ``fastdarts search rnn``'s flags (also used by profile)."""
    return config.from_args(RNNSearchConfig, a, small=a.data is None, device=config.device_of(a))


def _maybe_seeds(a, space, cfg) -> int | None:
    if getattr(a, "seeds", 1) <= 1:
        return None
    from .seeds import run_seeds

    rows = run_seeds(space, a.argv, [cfg.seed + i for i in range(a.seeds)], cfg.save, per_gpu=a.per_gpu)
    with open(f"{cfg.save}/summary.md") as f:
        print(f.read(), end="")
    return 0 if all(r["ok"] for r in rows) else 1


def _profile_instead(space: str, cfg, a) -> int:
    """--profile: time a few steps of the configured search and print the report
    (nothing is written to --save, so an earlier search there is no obstacle)."""
    import dataclasses

    from ..profile import format_report, run_profile

    cfg = dataclasses.replace(cfg, overwrite=True)
    log = None if a.quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))
    print(format_report(run_profile(space, cfg, log=log)))
    return 0


def _run(space: str, a) -> int:
    cfg = cnn_config(a) if space == "cnn" else rnn_config(a)
    multi = _maybe_seeds(a, space, cfg)
    if multi is not None:
        return multi
    from ..distributed import world
    from ..profile.cost import SearchCost

    small = a.data is None
    if not a.profile:  # refuse to replace an earlier search before printing anything
        from .outputs import check_save_dir

        check_save_dir(cfg)
    if small and not a.quiet:
        if space == "cnn":
            cells = (f"NAS-Bench-201 skeleton with {cfg.cells_per_stage} cell(s) per stage"
                     if cfg.space == "nb201" else f"{cfg.layers} layers")
            print("no --data given: searching on the embedded default (scikit-learn digits, 16x16) "
                  f"with C={cfg.init_channels}, {cells}, batch {cfg.batch_size}, "
                  f"{cfg.epochs} epochs")
        else:
            print("no --data given: searching on the embedded default (Python's help texts) with "
                  f"emsize=nhid={cfg.nhid}, batch {cfg.batch_size}, bptt {cfg.bptt}, {cfg.epochs} "
                  f"epochs of {cfg.max_steps_per_epoch} steps")
    threads = config.set_threads(a, small)
    if not a.quiet:
        print(f"threads: {threads}")
    if a.profile:
        return _profile_instead(space, cfg, a)
    if space == "cnn":
        from .cnn import search_cnn as search
    else:
        from .rnn import search_rnn as search
    engine = search(cfg, callbacks=[SearchCost(quiet=a.quiet)])
    if world()[0] != 0:  # ranks are checked identical (check_in_sync); rank 0 reports
        return 0
    if a.quiet:
        print(f"genotype = {engine.genotype}")
        return 0
    from .outputs import summary

    print(summary(engine, cfg.save, space))
    return 0


def run_search_cnn(a) -> int:
    return _run("cnn", a)


def run_search_rnn(a) -> int:
    return _run("rnn", a)


def add_parser(top) -> None:
    """Register ``search`` with ``cnn``, ``rnn`` and every ``@command("search ...")``."""
    search = top.add_parser("search", help="architecture search")
    sub = search.add_subparsers(dest="net", required=True)
    for build, run in ((cnn_parser, run_search_cnn), (rnn_parser, run_search_rnn)):
        p = build(sub)
        _search_only_flags(p)
        p.set_defaults(run=run)
    for name, fn in COMMANDS.items():
        if name.startswith("search "):
            fn(sub)
