"""The command line: ``fastdarts search cnn|rnn``, with room for train/test/profile.

    fastdarts search cnn [--data CIFAR_ROOT] [original train_search.py flags] [--impl
        fused|reference] [--backend ...] [--resume CKPT] [--device D] [--cuda_graph]
        [--profile] [--threads N] [--quiet]
    fastdarts search rnn [...]            (also: python -m fastdarts ...)

Other modules plug in without editing this file's parser code: a top-level command
is a module named in ``PLUGINS`` that defines ``add_parser(top_subparsers)``
(until it exists the command prints "not implemented yet" and exits 2); a new
search space is a function in ``COMMANDS["search <space>"]`` that adds its parser
to the ``search`` subparsers (``@command("search nas201")``).  Each parser sets
``run=fn(args) -> exit code``.  Flags and defaults follow the original scripts.
Errors a user can fix (missing dataset, bad checkpoint, bad genotype) print one
line and exit 2; bad flags are argparse errors (also exit 2).
"""

from __future__ import annotations

import argparse
import importlib
import sys

from .backends import BACKEND_CHOICES

COMMANDS: dict = {}


def command(name: str):
    def wrap(fn):
        COMMANDS[name] = fn
        return fn
    return wrap


def _add_common(p):
    p.add_argument("--backend", default=None, choices=BACKEND_CHOICES,
                   help="kernel backend for the fused ops (default: auto)")
    p.add_argument("--impl", default="fused", choices=["fused", "reference"],
                   help="fused (fastdarts.nn + fastdarts.Architect) or the reference port")
    p.add_argument("--resume", default=None, help="checkpoint.pt to resume from")
    p.add_argument("--device", default=None, help="cuda, cuda:1, cpu (default: cuda if available)")
    p.add_argument("--cuda_graph", action="store_true", help="capture each search step in a CUDA graph")
    p.add_argument("--profile", action="store_true", help="profile a few steps instead of searching")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads for torch (default: torch's; 1 for the embedded default on a CPU)")
    p.add_argument("--quiet", action="store_true")


def _set_threads(a, cpu_default_one: bool) -> None:
    """--threads, else 1 thread for the tiny embedded-default search on a CPU.

    Why: at C=4 on 16x16 images each conv is ~0.2 ms of work, and OpenMP threads that
    wait on a busy core cost far more than they save.  The whole default search on a
    2-core VM, measured: idle, 62 s on 1 thread vs 45 s on 2; beside other jobs,
    65 s vs 245 s (one depthwise conv 0.3 ms vs 35 ms).  A predictable minute wins
    for a demo default; ``--threads 2`` is faster on an idle machine."""
    import os

    import torch

    if getattr(a, "threads", None):
        torch.set_num_threads(a.threads)
    elif cpu_default_one and "OMP_NUM_THREADS" not in os.environ and not torch.cuda.is_available() \
            and (a.device is None or a.device.startswith("cpu")):
        torch.set_num_threads(1)


def _cost_callbacks(a) -> list:
    """The search-cost report (fastdarts.profile.cost) when that module is there."""
    try:
        from .profile.cost import SearchCost
    except ImportError:
        return []
    return [SearchCost(quiet=a.quiet)]


def _profile_instead(space: str, cfg, a) -> int | None:
    """--profile: time a few steps of the configured search (fastdarts.profile) and
    print the report instead of searching (returns the exit code); if that module is
    missing, say so and return None (the caller then searches)."""
    try:
        from .profile import format_report, run_profile
    except ImportError:
        print("--profile: profiling is not available yet (fastdarts.profile is missing); "
              "running the search", file=sys.stderr)
        return None
    log = None if a.quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))
    print(format_report(run_profile(space, cfg, log=log)))
    return 0


def _search_cnn_parser(sub):
    p = sub.add_parser("cnn", help="DARTS CNN search (CIFAR-10, or the embedded digits without --data)")
    p.add_argument("--data", default=None, help="CIFAR-10 root (holding cifar-10-batches-py)")
    p.add_argument("--batch_size", type=int, default=None, help="64 (64 on the embedded default)")
    p.add_argument("--learning_rate", type=float, default=0.025)
    p.add_argument("--learning_rate_min", type=float, default=0.001)
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--weight_decay", type=float, default=3e-4)
    p.add_argument("--report_freq", type=int, default=50)
    p.add_argument("--gpu", type=int, default=None, help="GPU index (the original's flag)")
    p.add_argument("--epochs", type=int, default=None, help="50 (3 on the embedded default)")
    p.add_argument("--init_channels", type=int, default=None, help="16 (4 on the embedded default)")
    p.add_argument("--layers", type=int, default=None, help="8 (3 on the embedded default)")
    p.add_argument("--model_path", default="saved_models", help="unused (the original's flag)")
    p.add_argument("--cutout", action="store_true", help="unused in search (the original's flag)")
    p.add_argument("--cutout_length", type=int, default=16)
    p.add_argument("--drop_path_prob", type=float, default=0.3, help="unused in search")
    p.add_argument("--save", default="search-cnn")
    p.add_argument("--seed", type=int, default=2)
    p.add_argument("--grad_clip", type=float, default=5.0)
    p.add_argument("--train_portion", type=float, default=0.5)
    p.add_argument("--unrolled", action="store_true", help="second-order architecture gradient")
    p.add_argument("--arch_learning_rate", type=float, default=3e-4)
    p.add_argument("--arch_weight_decay", type=float, default=1e-3)
    p.add_argument("--channels_last", action="store_true")
    p.add_argument("--amp", choices=("none", "bf16"), default="none",
                   help="bfloat16 autocast for every forward (weights, alphas and losses stay float32)")
    p.add_argument("--max_steps_per_epoch", type=int, default=None, help="cut epochs short")
    p.add_argument("--seeds", type=int, default=1,
                   help="run this many independent searches (seed, seed+1, ...), one per GPU")
    p.add_argument("--per_gpu", type=int, default=1,
                   help="with --seeds: searches sharing one GPU at a time (when they fit in its memory)")
    _add_common(p)
    return p


def _maybe_seeds(a, space) -> int | None:
    if getattr(a, "seeds", 1) <= 1:
        return None
    from .search.seeds import run_seeds

    rows = run_seeds(space, a.argv, [a.seed + i for i in range(a.seeds)], a.save, per_gpu=a.per_gpu)
    with open(f"{a.save}/summary.md") as f:
        print(f.read(), end="")
    return 0 if all(r["ok"] for r in rows) else 1


def cnn_config(a):
    """The CNNSearchConfig of ``fastdarts search cnn``'s flags (also used by profile):
    the original's sizes with --data, the small embedded-default sizes without."""
    from .search.cnn import DIGITS_DEFAULTS, CNNSearchConfig

    defaults = {"batch_size": 64, "epochs": 50, "init_channels": 16, "layers": 8}
    if a.data is None:
        defaults.update(DIGITS_DEFAULTS)
    return CNNSearchConfig(
        data=a.data, learning_rate=a.learning_rate, learning_rate_min=a.learning_rate_min,
        momentum=a.momentum, weight_decay=a.weight_decay, report_freq=a.report_freq, save=a.save,
        seed=a.seed, grad_clip=a.grad_clip, train_portion=a.train_portion, unrolled=a.unrolled,
        arch_learning_rate=a.arch_learning_rate, arch_weight_decay=a.arch_weight_decay, impl=a.impl,
        device=a.device if a.device else (f"cuda:{a.gpu}" if a.gpu is not None else None),
        resume=a.resume, cuda_graph=a.cuda_graph, channels_last=a.channels_last, amp=a.amp,
        quiet=a.quiet, max_steps_per_epoch=a.max_steps_per_epoch,
        **{k: getattr(a, k) if getattr(a, k) is not None else v for k, v in defaults.items()})


def rnn_config(a):
    """The RNNSearchConfig of ``fastdarts search rnn``'s flags (also used by profile)."""
    from .search.rnn import PYDOC_DEFAULTS, RNNSearchConfig

    sized = ("emsize", "nhid", "nhidlast", "epochs", "batch_size", "bptt")
    defaults = {"emsize": 300, "nhid": 300, "nhidlast": 300, "epochs": 50, "batch_size": 256, "bptt": 35,
                "max_steps_per_epoch": None}
    if a.data is None:
        defaults.update(PYDOC_DEFAULTS)
    chosen = {k: getattr(a, k) if getattr(a, k) is not None else defaults[k]
              for k in (*sized, "max_steps_per_epoch")}
    return RNNSearchConfig(
        data=a.data, lr=a.lr, clip=a.clip, dropout=a.dropout, dropouth=a.dropouth, dropoutx=a.dropoutx,
        dropouti=a.dropouti, dropoute=a.dropoute, seed=a.seed, log_interval=a.log_interval,
        save=a.save, alpha=a.alpha, beta=a.beta, wdecay=a.wdecay, unrolled=a.unrolled,
        arch_wdecay=a.arch_wdecay, arch_lr=a.arch_lr, impl=a.impl, device=a.device, resume=a.resume,
        quiet=a.quiet, tied_embedding_step=a.tied_embedding_step, cuda_graph=a.cuda_graph, **chosen)


def run_search_cnn(a) -> int:
    multi = _maybe_seeds(a, "cnn")
    if multi is not None:
        return multi
    from .search.cnn import search_cnn

    small = a.data is None
    cfg = cnn_config(a)
    if small and not a.quiet:
        print("no --data given: searching on the embedded default (scikit-learn digits, 16x16) "
              f"with C={cfg.init_channels}, {cfg.layers} layers, batch {cfg.batch_size}, "
              f"{cfg.epochs} epochs")
    _set_threads(a, cpu_default_one=small)
    if a.profile and (rc := _profile_instead("cnn", cfg, a)) is not None:
        return rc
    engine = search_cnn(cfg, callbacks=_cost_callbacks(a))
    from .distributed import world

    if world()[0] != 0:  # ranks are checked identical (check_in_sync); rank 0 reports
        return 0
    print(f"genotype = {engine.genotype}")
    print(f"outputs in {cfg.save}/ ({_listing(cfg.save)}); wall time {engine.wall_seconds:.1f} s")
    return 0


def _listing(save: str) -> str:
    import os

    try:
        return ", ".join(sorted(n for n in os.listdir(save) if not n.startswith(".")))
    except OSError:
        return "nothing written"


def _search_rnn_parser(sub):
    p = sub.add_parser("rnn", help="DARTS recurrent search (PTB, or Python's help texts without --data)")
    p.add_argument("--data", default=None, help="directory with ptb.train.txt, ptb.valid.txt, ptb.test.txt")
    for name, default, help_ in (("emsize", 300, "32 on the embedded default"),
                                 ("nhid", 300, "32 on the embedded default"),
                                 ("nhidlast", 300, "32 on the embedded default"),
                                 ("epochs", 50, "2 on the embedded default"),
                                 ("batch_size", 256, "32 on the embedded default"),
                                 ("bptt", 35, "20 on the embedded default")):
        p.add_argument(f"--{name}", type=int, default=None, help=f"{default} ({help_})")
    p.add_argument("--lr", type=float, default=20.0)
    p.add_argument("--clip", type=float, default=0.25)
    p.add_argument("--dropout", type=float, default=0.75)
    p.add_argument("--dropouth", type=float, default=0.25)
    p.add_argument("--dropoutx", type=float, default=0.75)
    p.add_argument("--dropouti", type=float, default=0.2)
    p.add_argument("--dropoute", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=3)
    p.add_argument("--log-interval", dest="log_interval", type=int, default=50)
    p.add_argument("--save", default="search-rnn")
    p.add_argument("--alpha", type=float, default=0.0, help="activation regularisation")
    p.add_argument("--beta", type=float, default=1e-3, help="temporal activation regularisation")
    p.add_argument("--wdecay", type=float, default=5e-7)
    p.add_argument("--unrolled", action="store_true")
    p.add_argument("--tied_embedding_step", choices=("original", "consistent"), default="original",
                   help="second order: 'original' (default) keeps the tied embedding/decoder weight "
                        "un-stepped in the unrolled model, as the original's state_dict reload does; "
                        "'consistent' steps it like every other weight")
    p.add_argument("--arch_wdecay", type=float, default=1e-3)
    p.add_argument("--arch_lr", type=float, default=3e-3)
    p.add_argument("--max_steps_per_epoch", type=int, default=None)
    p.add_argument("--seeds", type=int, default=1,
                   help="run this many independent searches (seed, seed+1, ...), one per GPU")
    p.add_argument("--per_gpu", type=int, default=1,
                   help="with --seeds: searches sharing one GPU at a time (when they fit in its memory)")
    _add_common(p)
    return p


def run_search_rnn(a) -> int:
    multi = _maybe_seeds(a, "rnn")
    if multi is not None:
        return multi
    from .search.rnn import search_rnn

    small = a.data is None
    cfg = rnn_config(a)
    if small and not a.quiet:
        print("no --data given: searching on the embedded default (Python's help texts) with "
              f"emsize=nhid={cfg.nhid}, batch {cfg.batch_size}, bptt {cfg.bptt}, {cfg.epochs} epochs "
              f"of {cfg.max_steps_per_epoch} steps")
    _set_threads(a, cpu_default_one=small)
    if a.profile and (rc := _profile_instead("rnn", cfg, a)) is not None:
        return rc
    engine = search_rnn(cfg, callbacks=_cost_callbacks(a))
    from .distributed import world

    if world()[0] != 0:  # ranks are checked identical (check_in_sync); rank 0 reports
        return 0
    print(f"genotype = {engine.genotype}")
    print(f"outputs in {cfg.save}/ (genotype.json, genotypes.jsonl, recurrent.dot, checkpoint.pt); "
          f"wall time {engine.wall_seconds:.1f} s")
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="fastdarts", description="Fast, faithful DARTS.")
    top = ap.add_subparsers(dest="command", required=True)
    search = top.add_parser("search", help="architecture search")
    ssub = search.add_subparsers(dest="space", required=True)
    _search_cnn_parser(ssub).set_defaults(run=run_search_cnn)
    _search_rnn_parser(ssub).set_defaults(run=run_search_rnn)
    for space, fn in COMMANDS.items():
        if space.startswith("search "):
            fn(ssub)
    # Other commands live beside the code they drive: a module in PLUGINS defines
    # add_parser(top) for its command; until it exists the command says so.
    for name, module in PLUGINS.items():
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name is None or not module.startswith(exc.name):
                raise
            p = top.add_parser(name, help=f"{name} (not implemented yet)")
            p.add_argument("rest", nargs=argparse.REMAINDER)
            p.set_defaults(run=_not_yet(name))
        else:
            mod.add_parser(top)
    return ap


PLUGINS = {"train": "fastdarts.train.cli", "test": "fastdarts.train.test_cli",
           "profile": "fastdarts.profile.cli"}


def _not_yet(name):
    def run(a) -> int:
        print(f"fastdarts {name}: not implemented yet", file=sys.stderr)
        return 2
    return run


def main(argv=None) -> int:
    from .data import DatasetError
    from .genotypes import GenotypeError
    from .search.checkpoint import CheckpointError

    ap = build_parser()
    a = ap.parse_args(argv)
    a.argv = list(sys.argv[1:] if argv is None else argv)[2:]  # the flags after "search cnn|rnn"
    if getattr(a, "backend", None):
        from . import backends

        if hasattr(backends, "set_backend"):
            backends.set_backend(a.backend)
        else:
            print("--backend: this build has no backend switch; ignored", file=sys.stderr)
    ok = False
    try:
        rc = a.run(a)
        ok = rc == 0
        return rc
    except (DatasetError, CheckpointError, GenotypeError) as exc:
        print(f"fastdarts: error: {exc}", file=sys.stderr)
        return 2
    finally:  # a torchrun process leaves its process group before it exits
        from .distributed import shutdown

        shutdown(ok)


if __name__ == "__main__":
    sys.exit(main())
