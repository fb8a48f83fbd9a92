"""The command-line options the experiments share, how they are read, and how a refusal is said.

Every experiment takes ``--out`` (its result folder), ``--resume``, ``--seed``, ``--device``,
``--data-dir`` and ``--tiny``. ``--tiny`` swaps CIFAR-10 for a small synthetic set of
8x8 images (no files needed) and shrinks models and budgets so the whole experiment
runs in seconds: the tests use it, and so can anyone checking that a command works.
Its numbers mean nothing about ResNets.

The readers (``depth_list``, ``seed_list``, ``model_names``) raise ``ValueError`` naming the
option at fault; a refusal that is not about one value's form (a folder that already holds
results, nets that are not where ``--from`` says) is an :class:`ExperimentError`. Neither
ends the process: ``python -m minires.experiments`` turns them into a one-line message and
exit status 2.
"""
from __future__ import annotations


class ExperimentError(ValueError):
    """An experiment refuses what it was asked to do (a folder that already holds results, a
    ``--from`` without the nets it needs, nets of different input sizes); the message is one
    line that says what to change."""


def add_common_arguments(parser, name):
    """The options of every experiment: ``--out``, ``--resume``, ``--seed``, ``--device``,
    ``--data-dir`` and ``--tiny``."""
    parser.add_argument("--out", default=None,
                        help="folder for the results (JSON, PNG, weights); it must be new or "
                             "empty unless --resume (default: a new folder runs/experiments/"
                             f"{name}[-2, -3, ...]; with --tiny runs/experiments/tiny/{name}[-k])")
    parser.add_argument("--resume", action="store_true",
                        help="continue the unfinished run in --out: what it finished is kept, "
                             "the rest is computed")
    parser.add_argument("--seed", type=int, default=0, help="seed for weights, data order and "
                        "sampling (default: %(default)s)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                        help="where the models run (default: %(default)s)")
    parser.add_argument("--data-dir", default=None, help="CIFAR-10 data root (default: "
                        "$MINIRES_DATA, else ~/.cache/minires)")
    parser.add_argument("--tiny", action="store_true", help="synthetic 8x8 data, tiny models "
                        "(unless named explicitly) and budgets: checks the pipeline in seconds; "
                        "the numbers mean nothing")


def add_training_arguments(parser, epochs, limit_train, limit_test=2000):
    """The options of an experiment that trains its nets itself when no ``--from`` is given
    (``training.trained_model`` reads them)."""
    parser.add_argument("--epochs", type=int, default=epochs, help="training epochs per model "
                        "(default: %(default)s)")
    parser.add_argument("--limit-train", type=int, default=limit_train, help="train on the first "
                        "N training images (default: %(default)s; 50000 = all)")
    parser.add_argument("--limit-test", type=int, default=limit_test, help="test on the first N "
                        "test images (default: %(default)s; 10000 = all)")
    parser.add_argument("--batch-size", type=int, default=128, help="(default: %(default)s)")
    parser.add_argument("--lr", type=float, default=0.1, help="peak learning rate of SGD with "
                        "momentum 0.9, weight decay 1e-4, warm-up then cosine (default: "
                        "%(default)s)")
    parser.add_argument("--log-every", type=int, default=10, help="record the training error "
                        "every N iterations (default: %(default)s)")


def depth_list(text):
    """'20,56' -> [20, 56]."""
    try:
        depths = [int(d) for d in str(text).split(",") if d.strip()]
    except ValueError:
        raise ValueError(f"--depths: expected comma-separated integers like 20,56, got "
                         f"{text!r}") from None
    if not depths:
        raise ValueError("--depths: give at least one depth")
    bad = [d for d in depths if d < 8 or (d - 2) % 6]
    if bad:
        raise ValueError(f"--depths: each depth must be 6n+2 with n >= 1 (8, 14, 20, 32, 44, 56, "
                         f"110, ...), got {bad[0]}")
    return depths


def seed_list(text, default):
    """'10,11,12' -> [10, 11, 12]; None -> [default]."""
    if text is None:
        return [default]
    try:
        seeds = [int(x) for x in str(text).split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"--seeds: expected comma-separated integers like 10,11,12, got "
                         f"{text!r}") from None
    if not seeds or any(x < 0 for x in seeds) or len(set(seeds)) != len(seeds):
        raise ValueError(f"--seeds: expected distinct non-negative integers, got {text!r}")
    return seeds


def model_names(text, default):
    """'plain56,resnet56' (or the default when None) -> ['plain56', 'resnet56']."""
    return [n.strip() for n in (text or default).split(",") if n.strip()]


__all__ = ["ExperimentError", "add_common_arguments", "add_training_arguments", "depth_list",
           "model_names", "seed_list"]
