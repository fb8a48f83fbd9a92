"""minires.experiments: the experiments of the ResNet papers, one file each.

    python -m minires.experiments --list
    python -m minires.experiments gradient-at-init --out runs/experiments/gradient-at-init
    python -m minires.experiments degradation --help

Each experiment is a module with ``NAME``, ``DESCRIPTION``, ``add_arguments(parser)``
and ``run(args) -> dict`` (the results, also written to ``<out>/results.json``, with a
figure in ``<out>/<name>.png`` when matplotlib is installed). ``run_experiment(name,
argv)`` does the same from Python.

What the experiments share, by purpose: ``options`` (the common command-line options, the
readers of lists of depths, seeds and nets, and ``ExperimentError``, a refusal in one line),
``data`` (CIFAR-10 or the ``--tiny`` synthetic set, balanced subsets, pooling, batches),
``nets`` (net names and initialisations, ``build``, ``initial_net``, BN calibration),
``training`` (``train_net``: one recipe through ``minires.train.fit``), ``weights`` (saving
nets, loading those of an earlier run with ``--from``) and ``results`` (the result folder,
results.json and the figure, the environment, a timer). ``curvature`` holds the landscape's
curvature measures.
"""
from __future__ import annotations

import argparse
import importlib

from .options import add_common_arguments

# name on the command line -> module in this package
EXPERIMENTS = {
    "degradation": "degradation",
    "gradient-at-init": "gradient_at_init",
    "lesion": "lesion",
    "path-lengths": "path_lengths",
    "layer-responses": "layer_responses",
    "loss-landscape": "loss_landscape",
    "feature-reuse": "feature_reuse",
    "all": "all",
}


def get_experiment(name):
    """The module of the experiment called ``name`` on the command line (see ``EXPERIMENTS``).

    Imported on demand; raises ValueError for an unknown name.
    """
    if name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}; expected one of: {', '.join(EXPERIMENTS)}")
    return importlib.import_module(f".{EXPERIMENTS[name]}", __name__)


def make_parser(name):
    """The ``argparse`` parser of experiment ``name``: the common options plus the experiment's
    own."""
    module = get_experiment(name)
    parser = argparse.ArgumentParser(prog=f"python -m minires.experiments {name}",
                                     description=module.DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(parser, name)
    # the command line's speed and display options, as in python -m minires.train
    parser.add_argument("--threads", type=_positive_int, default=None, metavar="N",
                        help="CPU threads: minires' convolution workers, with OpenBLAS on one "
                             "thread each (default: $MINIRES_NUM_THREADS, else every core this "
                             "process may use; see minires.use_speed_settings)")
    parser.add_argument("--no-progress", dest="progress", action="store_false",
                        help="accepted as in python -m minires.train; the experiments print "
                             "plain lines and draw no progress bars")
    module.add_arguments(parser)
    return parser


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def run_experiment(name, argv=(), *, speed_settings=True):
    """Parse ``argv`` (a list of option strings) for experiment ``name`` and run it.

    speed_settings: True runs it inside ``minires.speed_settings()`` (the command line's
    thread settings, with ``--threads`` if given, unless settings are already in force;
    the host's put back afterwards); False: the process as it is.
    """
    from .. import speed
    args = make_parser(name).parse_args(list(argv))
    args.argv = [name, *argv]
    args.experiment = name
    module = get_experiment(name)
    if args.out is not None and not getattr(module, "HANDLES_RESUME", False):
        from .results import finished_results
        done = finished_results(args)
        if done is not None:
            return done
    with speed.scoped(speed_settings, getattr(args, "threads", None)):
        return module.run(args)


__all__ = ["EXPERIMENTS", "get_experiment", "make_parser", "run_experiment"]
