"""``python -m minires.train cifar``: the command line, a thin layer over ``fit()``."""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

from .. import backend, checkpoint
from ..speed import use_speed_settings
from ..data import load_cifar10
from ..data.cifar import DataError
from .loop import NonFiniteLossError, check_writable, evaluate_views, fit, refuse_earlier_run
from .recipes import OPTIMIZERS, RECIPES, SCHEDULES, TrainConfig, build_model, recipe_config


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m minires.train`` argument parser (command ``cifar`` and its options)."""
    parser = argparse.ArgumentParser(
        prog="python -m minires.train",
        description="Train a network from minires.models with minires. Command: cifar.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    p = commands.add_parser(
        "cifar", formatter_class=argparse.RawDescriptionHelpFormatter,
        help="train on CIFAR-10",
        description="Train on CIFAR-10 (official archive; see --data-dir).\n\n"
                    "Recipes (every option below overrides the recipe's value):\n"
                    f"  fast   {_describe('fast')}\n"
                    f"  paper  {_describe('paper')}\n\n"
                    "The run folder gets config.json, metrics.jsonl (one line per epoch), "
                    "last.npz (each epoch,\nand on Ctrl-C/SIGTERM at the current step), best.npz, "
                    "summary.json and curves.png (with matplotlib).")
    g = p.add_argument_group("model and recipe")
    g.add_argument("--recipe", choices=sorted(RECIPES), default="fast",
                   help="fast (default): about an hour on a 2-core CPU; paper: He et al. 2015")
    g.add_argument("--model", help="a builder in minires.models (default: the recipe's, resnet20) "
                                   "or package.module:callable")
    g = p.add_argument_group("optimisation (default: the recipe's value)")
    g.add_argument("--epochs", type=int, help="number of epochs")
    g.add_argument("--max-steps", type=int, help="stop after this many iterations (paper: 64000)")
    g.add_argument("--batch-size", type=int, help="examples per step (128)")
    g.add_argument("--optimizer", choices=OPTIMIZERS, help="sgd (default), adam or adamw")
    g.add_argument("--lr", type=float, help="peak learning rate (fast: 0.1 x batch-size / 128)")
    g.add_argument("--momentum", type=float, help="SGD momentum, Adam beta1 (0.9)")
    g.add_argument("--nesterov", action=argparse.BooleanOptionalAction, default=None,
                   help="Nesterov momentum (fast: on, paper: off)")
    g.add_argument("--wd", type=float, dest="weight_decay",
                   help="weight decay (fast: 5e-4, paper: 1e-4)")
    g.add_argument("--decay-bn-bias", action=argparse.BooleanOptionalAction, default=None,
                   help="also decay batch-norm and bias parameters (fast: no, paper: yes)")
    g.add_argument("--schedule", choices=SCHEDULES,
                   help="learning-rate schedule, stepped per iteration: cosine (fast), onecycle, "
                        "step (milestones in iterations; paper), multistep (milestones in epochs), "
                        "constant")
    g.add_argument("--milestones", type=lambda s: [int(v) for v in s.split(",")],
                   help="comma-separated milestones for step/multistep, lr x 0.1 at each "
                        "(paper: 32000,48000)")
    g.add_argument("--warmup-epochs", type=float,
                   help="linear warm-up from 0.1 x lr over this many epochs (fast: 1)")
    g.add_argument("--label-smoothing", type=float, help="label smoothing (fast: 0.1, paper: 0)")
    g.add_argument("--flip-eval", action=argparse.BooleanOptionalAction, default=None,
                   help="after the last epoch (and with --eval-only) also report test accuracy "
                        "averaged over each image and its mirror image (fast: on, paper: off)")
    g.add_argument("--no-augment", dest="augment", action="store_false", default=None,
                   help="switch off random crop + flip")
    g = p.add_argument_group("data")
    g.add_argument("--data-dir",
                   help="folder with cifar-10-batches-bin/ (or -py/, or the .tar.gz); default "
                        "$MINIRES_DATA, else ~/.cache/minires; downloaded if absent")
    g.add_argument("--no-download", dest="download", action="store_false",
                   help="never download; fail with instructions if the data is missing")
    g.add_argument("--val-split", type=int,
                   help="hold out the last N training images for validation; best.npz then "
                        "follows validation accuracy (paper: 5000, fast: 0)")
    g.add_argument("--limit-train", type=int, help="use only the first N training examples")
    g.add_argument("--limit-test", type=int,
                   help="use only the first N test (and validation) examples")
    g.add_argument("--prefetch", type=int, default=2,
                   help="batches prepared ahead by a background thread (0: off; default 2)")
    g = p.add_argument_group("run")
    g.add_argument("--seed", type=int, help="seed for initialisation, data order, augmentation (0)")
    g.add_argument("--device", choices=backend.DEVICES, help="cpu (default) or cuda (needs CuPy)")
    g.add_argument("--threads", type=int,
                   help="CPU threads: minires' convolution workers, with OpenBLAS on one thread "
                        "each (default: $MINIRES_NUM_THREADS, else every core this process may "
                        "use; see minires.use_speed_settings)")
    g.add_argument("--out", help="run folder (default runs/cifar-MODEL-RECIPE-TIME; with --resume, "
                                 "the checkpoint's folder)")
    g.add_argument("--resume", metavar="CHECKPOINT",
                   help="continue a run exactly where its checkpoint stopped (its config is used; "
                        "options given here override it, e.g. more --epochs)")
    g.add_argument("--eval-only", metavar="CHECKPOINT",
                   help="evaluate a checkpoint on the test set and exit")
    g.add_argument("--no-progress", dest="progress", action="store_false", default=None,
                   help="no progress bar (one line per epoch is still printed)")
    g.add_argument("--inspect-every", type=int, metavar="N",
                   help="every N steps, append each layer's weight-gradient norm to gradflow.jsonl "
                        "in the run folder (minires.inspect); gradflow.png heat map at the end")
    return parser


# option -> (lowest allowed, highest allowed or None, whether the lowest is allowed itself)
_BOUNDS = {"threads": (1, None, True), "epochs": (1, None, True), "max_steps": (1, None, True),
           "batch_size": (1, None, True), "lr": (0, None, False), "momentum": (0, 1, True),
           "weight_decay": (0, None, True), "warmup_epochs": (0, None, True),
           "label_smoothing": (0, 1, True), "val_split": (0, None, True),
           "limit_train": (1, None, True), "limit_test": (1, None, True),
           "prefetch": (0, None, True), "seed": (0, None, True), "inspect_every": (1, None, True)}


def invalid_number(args):
    """A one-line message for the first numeric option out of its range, else None."""
    for name, (low, high, inclusive) in _BOUNDS.items():
        value = getattr(args, name, None)
        if value is None:
            continue
        too_low = value < low if inclusive else value <= low
        if too_low or (high is not None and value > high):
            wanted = (f">= {low}" if inclusive else f"> {low}") + (f" and <= {high}" if high
                                                                   is not None else "")
            return f"--{name.replace('_', '-')}: must be {wanted}, got {value}"
    return None


def _describe(recipe):
    r = RECIPES[recipe]
    length = f"{r['epochs']} epochs" if r["epochs"] else f"{r['max_steps']} iterations"
    lr = "0.1 x batch/128" if r["lr"] is None else r["lr"]
    return (f"{r['model']}, {length}, batch {r['batch_size']}, SGD lr {lr} momentum {r['momentum']}"
            f"{' nesterov' if r['nesterov'] else ''}, wd {r['weight_decay']}"
            f"{'' if r['decay_bn_bias'] else ' (not on BN/bias)'}, {r['schedule']} schedule"
            f"{' ' + str(r['milestones']) if r['milestones'] else ''}"
            f"{', warm-up ' + str(r['warmup_epochs']) + ' epoch' if r['warmup_epochs'] else ''}"
            f"{', label smoothing ' + str(r['label_smoothing']) if r['label_smoothing'] else ''}"
            f"{', val split ' + str(r['val_split']) if r['val_split'] else ''}"
            f"{', flip-averaged final eval' if r['flip_eval'] else ''}")


_CONFIG_FLAGS = ("model", "epochs", "max_steps", "batch_size", "optimizer", "lr", "momentum",
                 "nesterov", "weight_decay", "decay_bn_bias", "schedule", "milestones",
                 "warmup_epochs", "label_smoothing", "flip_eval", "augment", "seed", "device",
                 "val_split", "limit_train", "limit_test", "prefetch", "data_dir", "threads")


def _model_of_checkpoint(flag, path, saved, asked):
    """The model to build for a checkpoint: ``asked`` (``--model``), else the one its saved
    config names (``saved``, ``meta["config"]``).

    Raises ValueError, in one line naming both, when ``--model`` asks for another model
    than the checkpoint's; and when neither names a model.
    """
    recorded = (saved or {}).get("model")
    recorded = None if recorded in (None, "custom") else recorded   # "custom": fit() from Python
    if asked and recorded and asked != recorded:
        raise ValueError(f"{flag} {path}: the checkpoint holds a {recorded} model, but --model "
                         f"asks for {asked}; leave out --model to use the checkpoint's model "
                         f"({recorded})")
    name = asked or recorded
    if not name:
        raise ValueError(f"{flag} {path}: the checkpoint does not name its model; pass --model")
    return name


def config_from_args(args) -> TrainConfig:
    """The run's ``TrainConfig``: the recipe's values with the options given; with
    ``--resume``, the checkpoint's saved config with the options given.

    Raises ValueError (a one-line message) for a checkpoint without a config, or one of
    another model than ``--model`` asks for.
    """
    given = {k: getattr(args, k) for k in _CONFIG_FLAGS if getattr(args, k, None) is not None}
    if args.resume:
        saved = checkpoint.load(args.resume).meta.get("config")
        if not saved:
            raise ValueError(f"{args.resume}: holds no training config; cannot resume it")
        given["model"] = _model_of_checkpoint("--resume", args.resume, saved, args.model)
        changed = {k: v for k, v in given.items() if saved.get(k) != v and k != "prefetch"}
        if changed:
            print(f"resuming with changed settings: {changed}", file=sys.stderr)
        known = {f.name for f in dataclasses.fields(TrainConfig)}
        return TrainConfig(**{k: v for k, v in {**saved, **given}.items() if k in known})
    return recipe_config(args.recipe, **given)


def callbacks_from_args(args, out) -> list:
    """Callbacks the command line switches on (the place for options like --inspect-every)."""
    callbacks = []
    if getattr(args, "inspect_every", None):
        from ..inspect import GradFlowLog
        callbacks.append(GradFlowLog(None, Path(out) / "gradflow.jsonl", args.inspect_every))
    return callbacks


def _check_device(device):
    """Fail with CuPy's clear message (not a traceback) when "cuda" cannot work here."""
    if device == "cuda":
        try:
            backend.get_cupy()
        except RuntimeError as err:
            raise ValueError(str(err)) from err


def _eval_only(args) -> int:
    ckpt = checkpoint.load(args.eval_only)
    saved = ckpt.meta.get("config") or {}
    name = _model_of_checkpoint("--eval-only", args.eval_only, saved, args.model)
    device = args.device or saved.get("device", "cpu")
    _check_device(device)
    model = build_model(name)
    checkpoint.load_model_state(model, ckpt.model, source=f"checkpoint {args.eval_only}")
    model.to(device)
    data = load_cifar10(args.data_dir or saved.get("data_dir"), download=args.download)
    test = data.test.take(args.limit_test)
    start = time.perf_counter()
    flip = args.flip_eval if args.flip_eval is not None else saved.get("flip_eval", False)
    views = evaluate_views(model, test, 256, device, flip=flip)
    report = {"checkpoint": str(args.eval_only), "model": name, "test_examples": len(test),
              "test_loss": views[False][0], "test_acc": views[False][1]}
    if flip:
        report["test_flip_loss"], report["test_flip_acc"] = views[True]
    print(json.dumps({**report, "epoch": ckpt.meta.get("epoch"),
                      "seconds": round(time.perf_counter() - start, 2)}))
    return 0


def main(argv=None) -> int:
    """Run the command line; returns the exit status (0 done, 1 error, 128+signal when stopped)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    problem = invalid_number(args)
    if args.resume and args.eval_only:
        problem = "--resume and --eval-only: give one of them, not both"
    if problem:
        parser.error(problem)
    try:
        speed = use_speed_settings(args.threads)
        if args.threads:
            print(f"threads: {speed['threads']}", file=sys.stderr)
        if args.eval_only:
            return _eval_only(args)
        # Every check comes before the run folder exists: the config (and with --resume the
        # checkpoint and its model), the device, the model name, the folder (probed, then
        # removed again), an earlier run there, the data. fit() creates the folder and
        # removes it again if the run cannot start.
        config = config_from_args(args)
        _check_device(config.device)
        backend.manual_seed(config.seed)
        model = build_model(config.model)
        if args.out:
            out = Path(args.out)
        elif args.resume:
            out = Path(args.resume).parent
        else:
            name = config.model.replace(":", "-")
            out = Path("runs") / f"cifar-{name}-{config.recipe}-{time.strftime('%Y%m%d-%H%M%S')}"
        check_writable(out, keep=False)                              # fail before any work
        if not args.resume:
            refuse_earlier_run(out)
        data = load_cifar10(config.data_dir, download=args.download, val_split=config.val_split)
        print(f"{config.model} ({sum(p.data.size for p in model.parameters()):,} parameters) on "
              f"{config.device}; {len(data.train.take(config.limit_train))} training images; run "
              f"folder {out}", file=sys.stderr)
        result = fit(model, data, config, out=out, resume=args.resume,
                     callbacks=callbacks_from_args(args, out), progress=args.progress)
    except NonFiniteLossError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except (DataError, checkpoint.CheckpointError, ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("aborted without saving (the last checkpoint is intact)", file=sys.stderr)
        return 130
    if result.status == "interrupted":
        return 128 + int(result.signal) if result.signal else 1
    return 0
