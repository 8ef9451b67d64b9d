"""``fastdarts train cnn|rnn`` (the original train.py, flags and defaults generated
from :class:`CNNTrainConfig` / :class:`RNNTrainConfig`) and ``fastdarts test cnn|rnn``
(the original test.py: test accuracy / perplexity of a trained network).

Data parallel: ``torchrun --nproc_per_node=N -m fastdarts train cnn|rnn ...`` (N
ranks, --batch_size per rank, gradients averaged; rank 0 prints and writes)."""

from __future__ import annotations

import os

from .. import config
from .cnn import CNNTrainConfig
from .rnn import RNNTrainConfig


def _cnn_parser(sub):
    p = sub.add_parser("cnn", help="train a CNN genotype (CIFAR-10, or the embedded digits without --data)",
                       description="The original cnn/train.py. The paper's run: --data DIR (auxiliary "
                       "head and cutout are on by default; --no-auxiliary / --no-cutout turn them off).")
    config.add_flags(p, CNNTrainConfig)
    config.add_run_flags(p, backend=False)
    for flag, typ in (("--model_path", str), ("--report_freq", int)):
        p.add_argument(flag, type=typ, default=None, help="unused (the original's flag)")
    return p


def _rank(device: str | None) -> int:
    """Join torchrun's process group when launched by it; this process's rank."""
    from .common import pick_device, setup_distributed

    return setup_distributed(pick_device(device))[1]


def _check_genotype(a, space: str) -> None:
    from ..space import genotypes as G

    G.resolve(a.genotype or "DARTS_V2", space)  # a bad name or file fails before any work


def run_train_cnn(a) -> int:
    from .cnn import train_cnn

    _check_genotype(a, "cnn")
    small = a.data is None
    cfg = config.from_args(CNNTrainConfig, a, small=small, device=config.device_of(a))
    threads = config.set_threads(a, small)
    rank = _rank(cfg.device)
    if small and not a.quiet and rank == 0:
        size = 32 if cfg.auxiliary else 16
        print(f"no --data given: training on the embedded default (scikit-learn digits, {size}x{size}, "
              f"80% train / 20% held out) with C={cfg.init_channels}, {cfg.layers} layers, batch "
              f"{cfg.batch_size}, {cfg.epochs} epochs, auxiliary {'on' if cfg.auxiliary else 'off'}")
    if not a.quiet and rank == 0:
        print(f"threads: {threads}")
    engine = train_cnn(cfg)
    if rank != 0:  # the ranks are checked identical at every epoch end; rank 0 reports
        return 0
    last = engine.history[-1] if engine.history else {}
    # the original printed "param size = ... MB": it counts millions of parameters, not bytes
    print(f"parameters = {engine.params_M:.6f} M (auxiliary head excluded); final test_acc "
          f"{100 * last.get('test_acc', float('nan')):.2f}%; wall time {engine.wall_seconds:.1f} s")
    print(f"checkpoint: {os.path.join(cfg.save, 'checkpoint.pt')} "
          f"(fastdarts test cnn --checkpoint {os.path.join(cfg.save, 'checkpoint.pt')})")
    return 0


def _rnn_parser(sub):
    p = sub.add_parser("rnn", help="train a recurrent genotype (PTB, or Python's help texts without --data)",
                       description="The original rnn/train.py.")
    config.add_flags(p, RNNTrainConfig)
    config.add_run_flags(p, backend=False)
    p.add_argument("--continue_train", action="store_true", help="resume from <save>/checkpoint.pt")
    return p


def run_train_rnn(a) -> int:
    from .rnn import train_rnn

    _check_genotype(a, "rnn")
    small = a.data is None
    save = a.save or config.defaults(RNNTrainConfig)["save"]
    resume = a.resume or (os.path.join(save, "checkpoint.pt") if a.continue_train else None)
    cfg = config.from_args(RNNTrainConfig, a, small=small, device=config.device_of(a), resume=resume)
    threads = config.set_threads(a, small)
    rank = _rank(cfg.device)
    if small and not a.quiet and rank == 0:
        print("no --data given: training on the embedded default (Python's help texts) with "
              f"emsize=nhid={cfg.nhid}, batch {cfg.batch_size}, bptt {cfg.bptt}, {cfg.epochs} epochs "
              f"of {cfg.max_steps_per_epoch} steps")
    if not a.quiet and rank == 0:
        print(f"threads: {threads}")
    engine = train_rnn(cfg)
    if rank != 0:  # the ranks are checked identical at every epoch end; rank 0 reports
        return 0
    print(f"parameters = {engine.params_M:.6f} M; test loss {engine.test_loss:.4f} | "
          f"test ppl {engine.test_ppl:.2f} (best model, test batch {cfg.test_batch_size}); "
          f"wall time {engine.wall_seconds:.1f} s")
    print(f"outputs in {cfg.save}/ (checkpoint.pt, best.pt)")
    return 0


def run_test_cnn(a) -> int:
    from .cnn import test_cnn

    r = test_cnn(a.checkpoint, a.data, device=a.device, batch_size=a.batch_size,
                 trust=a.trust_checkpoint)
    print(f"parameters = {r['params_M']:.6f} M (auxiliary head excluded)")
    print(f"test_acc {100 * r['test_acc']:.2f}% ({r['n']} images of {r['data']}); "
          f"test_loss {r['test_loss']:.4f}")
    return 0


def run_test_rnn(a) -> int:
    from .rnn import test_rnn

    r = test_rnn(a.checkpoint, a.data, device=a.device, batch_size=a.batch_size, bptt=a.bptt,
                 trust=a.trust_checkpoint)
    print(f"parameters = {r['params_M']:.6f} M")
    print(f"test loss {r['test_loss']:.4f} | test ppl {r['test_ppl']:.2f} ({r['n_tokens']} tokens)")
    return 0


def add_parser(top) -> None:
    """Register ``train cnn|rnn``."""
    train = top.add_parser("train", help="train a genotype from scratch (evaluation)")
    sub = train.add_subparsers(dest="net", required=True)
    _cnn_parser(sub).set_defaults(run=run_train_cnn)
    _rnn_parser(sub).set_defaults(run=run_train_rnn)


def _trust_flag(p) -> None:
    p.add_argument("--trust_checkpoint", action="store_true",
                   help="load --checkpoint with full pickle, which can run code: only a checkpoint you "
                        "trust (e.g. one written by an older fastdarts)")


def add_test_parser(top) -> None:
    """Register ``test cnn|rnn``."""
    test = top.add_parser("test", help="test a trained network (accuracy / perplexity)")
    sub = test.add_subparsers(dest="net", required=True)
    p = sub.add_parser("cnn", help="test accuracy of a network trained with fastdarts train cnn")
    p.add_argument("--checkpoint", required=True, help="checkpoint.pt written by fastdarts train cnn")
    p.add_argument("--data", default=None,
                   help="CIFAR-10 root (its test batch); without it, the held-out digits for a model "
                        "trained on the embedded default")
    p.add_argument("--batch_size", type=int, default=96)
    p.add_argument("--device", default=None)
    _trust_flag(p)
    p.set_defaults(run=run_test_cnn)
    p = sub.add_parser("rnn", help="test perplexity of a model trained with fastdarts train rnn")
    p.add_argument("--checkpoint", required=True,
                   help="best.pt or checkpoint.pt written by fastdarts train rnn")
    p.add_argument("--data", default=None,
                   help="PTB directory (default: the one it was trained on, or the embedded corpus)")
    p.add_argument("--batch_size", type=int, default=None,
                   help="test batch size: 1 as the original (10 on the embedded corpus)")
    p.add_argument("--bptt", type=int, default=None, help="default: the training bptt")
    p.add_argument("--device", default=None)
    _trust_flag(p)
    p.set_defaults(run=run_test_rnn)
