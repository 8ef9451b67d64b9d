"""``fastdarts test cnn|rnn``: the test accuracy / perplexity of a trained network
(plugged into fastdarts.cli through PLUGINS)."""

from __future__ import annotations


def run_test_cnn(a) -> int:
    from .cnn import test_cnn

    r = test_cnn(a.checkpoint, a.data, device=a.device, batch_size=a.batch_size)
    print(f"param size = {r['params_M']:.6f} MB")
    print(f"test_acc {100 * r['test_acc']:.2f}% ({r['n']} images of {r['data']}); "
          f"test_loss {r['test_loss']:.4f}")
    return 0


def run_test_rnn(a) -> int:
    from .rnn import test_rnn

    r = test_rnn(a.checkpoint, a.data, device=a.device, batch_size=a.batch_size, bptt=a.bptt)
    print(f"param size: {r['params_M']:.6f} M")
    print(f"test loss {r['test_loss']:.4f} | test ppl {r['test_ppl']:.2f} ({r['n_tokens']} tokens)")
    return 0


def add_parser(top) -> None:
    test = top.add_parser("test", help="test a trained network (accuracy / perplexity)")
    sub = test.add_subparsers(dest="space", required=True)
    p = sub.add_parser("cnn", help="test accuracy of a network trained with fastdarts train cnn")
    p.add_argument("--checkpoint", required=True, help="checkpoint.pt written by fastdarts train cnn")
    p.add_argument("--data", default=None,
                   help="CIFAR-10 root (its test batch); without it, the held-out digits for a model "
                        "trained on the embedded default")
    p.add_argument("--batch_size", type=int, default=96)
    p.add_argument("--device", default=None)
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
    p.set_defaults(run=run_test_rnn)
