"""``python -m minires.train cifar``: the command line, a thin layer over ``fit()``."""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time
from pathlib import Path

from .. import __version__, backend, checkpoint
from ..data import load_cifar10
from ..data.cifar import DataError
from ..speed import use_speed_settings
from .evaluation import evaluate_views
from .loop import NonFiniteLossError, fit, planned_length
from .recipes import (
    GROUP_DATA,
    GROUP_MODEL,
    GROUP_OPTIMISATION,
    GROUP_RUN,
    RECIPES,
    Range,
    TrainConfig,
    build_model,
    command_line_settings,
    flag_of,
    recipe_config,
    value_problem,
)
from .run_folder import (
    check_writable,
    earlier_run_files,
    missing_folders,
    refuse_earlier_run,
    undo_run_without_checkpoint,
)


class OneLineParser(argparse.ArgumentParser):
    """argparse, answering a mistake in one line on stderr (exit status 2): the usage of
    ``cifar`` fills a screen and would bury the one line that matters; --help shows it."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def finite_float(text) -> float:
    """argparse type of every float option: a finite number (``nan`` and ``inf`` would pass
    every range check, since each comparison with NaN is false)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def milestone_list(text) -> list:
    """argparse type of --milestones: '32000,48000' -> [32000, 48000]."""
    try:
        return [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected whole numbers separated by commas, e.g. 32000,48000 (iterations for "
            f"--schedule step, epochs for multistep), got {text!r}") from None


def _add_setting(group, f):
    """The option of the ``TrainConfig`` field ``f``, from its declaration (``setting()``):
    its flag, help text and choices; the value's type from the field's annotation. Its
    default is None (not given: the recipe's value, or with --resume the checkpoint's)."""
    # the annotation, as text under ``from __future__ import annotations`` ("int | None")
    annotation = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    meta, kind = f.metadata, annotation.split("|")[0].strip()
    flag, options = flag_of(f), dict(dest=f.name, default=None, help=meta["help"])
    if kind == "bool":
        options["action"] = ("store_false" if flag.startswith("--no-")
                             else argparse.BooleanOptionalAction)
    else:
        options["type"] = {"int": int, "float": finite_float, "list": milestone_list}.get(kind, str)
        if meta.get("choices"):
            options["choices"] = meta["choices"]
        if meta.get("metavar"):
            options["metavar"] = meta["metavar"]
    group.add_argument(flag, **options)


# what the command line has beside the TrainConfig settings, and its ranges
_INSPECT_EVERY = Range(1)


def _add_run_options(g):
    """The options of the command itself: where the run goes, resuming, evaluating, output."""
    g.add_argument("--out", help="run folder (default runs/cifar-MODEL-RECIPE-TIME; with --resume, "
                                 "the checkpoint's folder)")
    g.add_argument("--resume", metavar="CHECKPOINT",
                   help="continue a run exactly where its checkpoint stopped (its config is used; "
                        "options given here override it, e.g. more --epochs); a run folder "
                        "means its last.npz")
    g.add_argument("--eval-only", metavar="CHECKPOINT",
                   help="evaluate a checkpoint on the test set and exit; a run folder means "
                        "its best.npz (else its last.npz)")
    g.add_argument("--no-progress", dest="progress", action="store_false", default=None,
                   help="no progress bar (one line per epoch is still printed)")
    g.add_argument("--inspect-every", type=int, metavar="N",
                   help="every N steps, append each layer's weight-gradient norm to gradflow.jsonl "
                        "in the run folder (minires.inspect); gradflow.png heat map at the end")


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m minires.train`` argument parser (command ``cifar`` and its options).

    Every ``TrainConfig`` field declared with a help text is an option here, in its group;
    the options below that are not settings of a run (the recipe, the folders, --eval-only,
    the progress bar, --inspect-every) are added by hand.
    """
    parser = OneLineParser(
        prog="python -m minires.train",
        description="Train a network from minires.models with minires. Command: cifar.")
    parser.add_argument("--version", action="version", version=f"minires {__version__}")
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
                    "summary.json and curves.png (with matplotlib).\n"
                    "A run that ends before its first checkpoint (it diverges in epoch 1, a "
                    "second Ctrl-C)\nleaves its folder as it found it: there is nothing to "
                    "resume, and the same command can run again.\n\n"
                    "Exit status: 0 done; 1 the run failed (it diverged, a file could not be "
                    "written);\n2 a mistake in the command (an option, the data, a "
                    "checkpoint, a folder that holds a run);\n128+N stopped by signal N, "
                    "after saving last.npz (130: Ctrl-C).")
    settings = command_line_settings()
    for name in (GROUP_MODEL, GROUP_OPTIMISATION, GROUP_DATA, GROUP_RUN):
        g = p.add_argument_group(name)
        if name == GROUP_MODEL:
            g.add_argument("--recipe", choices=sorted(RECIPES), default="fast",
                           help="fast (default): 22 epochs, 47-81 minutes on a 2-core CPU; "
                                "paper: He et al. 2015 (64000 iterations)")
        for f in settings:
            if f.metadata["group"] == name:
                _add_setting(g, f)
        if name == GROUP_DATA:
            g.add_argument("--no-download", dest="download", action="store_false",
                           help="never download; fail with instructions if the data is missing")
        if name == GROUP_RUN:
            _add_run_options(g)
    return parser


def invalid_number(args):
    """A one-line message for the first numeric option out of its range (or not finite),
    else None: the ranges ``TrainConfig`` declares, checked by ``value_problem``."""
    for f in command_line_settings():
        problem = value_problem(getattr(args, f.name, None), f.metadata.get("bounds"))
        if problem:
            return f"{flag_of(f)}: {problem}"
    problem = value_problem(getattr(args, "inspect_every", None), _INSPECT_EVERY)
    return f"--inspect-every: {problem}" if problem else None


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


def recorded_model(meta) -> str | None:
    """The model a checkpoint's metadata names: ``config.model`` (``python -m minires.train``),
    else ``model`` (the experiments' checkpoints); None when neither does, or for "custom"
    (``fit()`` from Python with a model of one's own)."""
    meta = meta if isinstance(meta, dict) else {}
    config = meta.get("config") if isinstance(meta.get("config"), dict) else {}
    name = config.get("model") or meta.get("model")
    return name if isinstance(name, str) and name != "custom" else None


def _architecture(name):
    """The model to build for a recorded name. The experiments name a net by its model and
    how its weights started ("resnet56-zero", "plain56-dirac"); with the weights loaded from
    the checkpoint only the model matters."""
    from ..models import MODELS
    base = name.split("-", 1)[0]
    return base if name not in MODELS and ":" not in name and base in MODELS else name


def _model_of_checkpoint(flag, path, meta, asked):
    """The model to build for a checkpoint: ``asked`` (``--model``), else the one its
    metadata names (``meta["config"]["model"]``, or ``meta["model"]`` for the experiments').

    Raises ValueError, in one line naming both, when ``--model`` asks for another model
    than the checkpoint's; and when neither names a model.
    """
    recorded = recorded_model(meta)
    if asked and recorded and asked not in (recorded, _architecture(recorded)):
        raise ValueError(f"{flag} {path}: the checkpoint holds a {recorded} model, but --model "
                         f"asks for {asked}; leave out --model to use the checkpoint's model "
                         f"({recorded})")
    name = asked or (recorded and _architecture(recorded))
    if not name:
        raise ValueError(f"{flag} {path}: the checkpoint does not name its model; pass --model")
    return name


def checkpoint_in(flag, path, names) -> Path:
    """``path`` itself, or for a run folder the first of its checkpoints ``names`` that exists.

    Raises CheckpointError (one line) for a folder with none of them.
    """
    path = Path(path)
    if not path.is_dir():
        return path
    for name in names:
        if (path / name).is_file():
            return path / name
    held = earlier_run_files(path)
    why = (f"it holds {', '.join(held)} of a run that ended before its first checkpoint, so "
           f"there is nothing to {flag[2:].replace('-only', '')}" if held else
           "it is not a run folder")
    raise checkpoint.CheckpointError(f"{flag} {path}: the folder has no {' or '.join(names)}; "
                                     f"{why}")


def config_from_args(args) -> TrainConfig:
    """The run's ``TrainConfig``: the recipe's values with the options given; with
    ``--resume``, the checkpoint's saved config with the options given.

    Raises ValueError (a one-line message) for a checkpoint without a config, or one of
    another model than ``--model`` asks for.
    """
    given = {f.name: getattr(args, f.name) for f in command_line_settings()
             if getattr(args, f.name, None) is not None}
    if args.resume:
        meta = checkpoint.load(args.resume).meta
        saved = meta.get("config")
        if not saved:
            raise ValueError(f"{args.resume}: holds no training config; cannot resume it")
        given["model"] = _model_of_checkpoint("--resume", args.resume, meta, args.model)
        changed = {k: v for k, v in given.items() if saved.get(k) != v}
        if changed:
            print(f"resuming with changed settings: {changed}", file=sys.stderr)
        known = {f.name for f in dataclasses.fields(TrainConfig)}
        return TrainConfig(**{k: v for k, v in {**saved, **given}.items() if k in known})
    return recipe_config(args.recipe, **given)


def planned_end(config, steps_per_epoch, epoch=0, batch=0, global_step=0):
    """(epochs, the iteration the run stops at), as ``fit()`` plans them: ``config.epochs``
    or ``config.max_steps``, whichever comes first, in epochs of ``steps_per_epoch``
    iterations; from a checkpoint that closed ``epoch`` epochs (one may have closed early,
    at an earlier --max-steps) and is ``batch`` steps into the next, at ``global_step``.
    """
    epochs, total = planned_length(config, steps_per_epoch)
    if epoch >= epochs or global_step >= total:
        return epochs, global_step
    return epochs, min(total, global_step - batch + (epochs - epoch) * steps_per_epoch)


def check_steps(config, args, steps_per_epoch, meta=None):
    """Refuse (ValueError) a resumed run that would train no step; return a one-line note
    when the run will stop before ``config.max_steps``; else None.

    ``meta``: the resumed checkpoint's metadata (None for a new run).
    """
    meta = meta or {}
    closed, batch, done = (int(meta.get(k, 0)) for k in ("epoch", "batch", "global_step"))
    per_epoch = int(meta.get("steps_per_epoch", steps_per_epoch))
    if per_epoch != steps_per_epoch or per_epoch < 1:
        return None                          # fit() refuses such a resume with its own message
    epochs, end = planned_end(config, per_epoch, closed, batch, done)
    whose = "the checkpoint's" if meta else "the recipe's"
    steps_flag = "--max-steps" if args.max_steps is not None else f"{whose} max_steps"
    epochs_flag = "--epochs" if args.epochs is not None else f"{whose} epochs"
    limit = config.max_steps
    if meta and end <= done:
        where = (f"--resume {args.resume}: the checkpoint is at iteration {done} ({closed} epochs "
                 f"done{f', {batch} steps into epoch {closed + 1}' if batch else ''})")
        if limit is not None and limit <= done:
            raise ValueError(f"{where} and {steps_flag} is {limit}: nothing to train; give a "
                             f"--max-steps above {done}")
        if config.epochs is not None and closed >= config.epochs:
            raise ValueError(f"{where} and {epochs_flag} is {config.epochs}: nothing to train; "
                             f"give more epochs, e.g. --epochs {closed + 1}")
        raise ValueError(f"{where}: {steps_flag} {limit} ends in epoch {epochs} (epochs of "
                         f"{per_epoch} iterations), which it has closed (an epoch of this run "
                         f"ended early, at an earlier --max-steps): nothing to train; give a "
                         f"--max-steps above {closed * per_epoch} to train epoch {closed + 1}")
    if limit is not None and end < limit:
        if config.epochs is not None and math.ceil(limit / per_epoch) > config.epochs:
            why = (f"{epochs_flag} ({config.epochs}, {per_epoch} iterations each) come first; "
                   f"give more --epochs to train longer")
        else:
            why = (f"it trains {epochs} epochs of {per_epoch} iterations and an epoch of the "
                   f"checkpoint ended early; give a larger --max-steps to train longer")
        return f"note: the run will stop at iteration {end}, before {steps_flag} {limit}: {why}"
    return None


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
    path = checkpoint_in("--eval-only", args.eval_only, ("best.npz", "last.npz"))
    if path != Path(args.eval_only):
        print(f"evaluating {path}", file=sys.stderr)
    ckpt = checkpoint.load(path)
    saved = ckpt.meta.get("config") or {}
    name = _model_of_checkpoint("--eval-only", path, ckpt.meta, args.model)
    device = args.device or saved.get("device", "cpu")
    _check_device(device)
    model = build_model(name)
    checkpoint.load_model_state(model, ckpt.model, source=f"checkpoint {path}")
    model.to(device)
    data = load_cifar10(args.data_dir or saved.get("data_dir"), download=args.download)
    test = data.test.take(args.limit_test)
    start = time.perf_counter()
    flip = args.flip_eval if args.flip_eval is not None else saved.get("flip_eval", False)
    views = evaluate_views(model, test, 256, device, flip=flip)
    report = {"checkpoint": str(path), "model": name, "test_examples": len(test),
              "test_loss": views[False][0], "test_acc": views[False][1]}
    if flip:
        report["test_flip_loss"], report["test_flip_acc"] = views[True]
    print(json.dumps({**report, "epoch": ckpt.meta.get("epoch"),
                      "seconds": round(time.perf_counter() - start, 2)}))
    return 0


def main(argv=None) -> int:
    """Run the command line; returns the exit status: 0 done; 1 the run failed (it diverged,
    a file could not be written); 2 a mistake in the command (an option, the data, a
    checkpoint, a folder that holds a run); 128+signal when stopped by a signal."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    problem = invalid_number(args)
    if args.resume and args.eval_only:
        problem = "--resume and --eval-only: give one of them, not both"
    if problem:
        parser.error(problem)
    undone = ""            # what was removed of a run that ended before its first checkpoint
    try:
        speed = use_speed_settings(args.threads)
        if args.threads:
            print(f"threads: {speed['threads']}", file=sys.stderr)
        if args.eval_only:
            return _eval_only(args)
        if args.resume:
            args.resume = str(checkpoint_in("--resume", args.resume, ("last.npz",)))
        # Every check comes before the run folder exists: the config (and with --resume the
        # checkpoint and its model), the device, the model name, the folder (probed, then
        # removed again), an earlier run there, the data, the number of steps. fit() creates
        # the folder and removes it again if the run cannot start.
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
        n_train = len(data.train.take(config.limit_train))
        per_epoch = (n_train // config.batch_size if config.drop_last
                     else math.ceil(n_train / config.batch_size))
        note = check_steps(config, args, per_epoch,
                           checkpoint.load(args.resume).meta if args.resume else None)
        if note:
            print(note, file=sys.stderr)
        print(f"{config.model} ({sum(p.data.size for p in model.parameters()):,} parameters) on "
              f"{config.device}; {n_train} training images; run folder {out}", file=sys.stderr)
        before = set(os.listdir(out)) if out.is_dir() else set()
        new_folders = missing_folders(out)
        try:
            result = fit(model, data, config, out=out, resume=args.resume,
                         callbacks=callbacks_from_args(args, out), progress=args.progress)
        except BaseException:
            # a run that ends before its first checkpoint leaves the folder as it found it: a
            # config.json alone would block the same command, with nothing to resume
            undone = undo_run_without_checkpoint(out, before, new_folders)
            raise
    except NonFiniteLossError as err:
        print(f"error: {err}{' ' + undone if undone else ''}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        raise                                    # stdout closed (| head): see minires.__main__
    except (DataError, checkpoint.CheckpointError, ValueError, FileExistsError) as err:
        print(f"error: {err}{' ' + undone if undone else ''}", file=sys.stderr)
        return 2
    except OSError as err:
        print(f"error: {err}{' ' + undone if undone else ''}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("aborted without saving " + (f"before the first checkpoint. {undone}" if undone else
                                           "(the last checkpoint is intact)"), file=sys.stderr)
        return 130
    if result.status == "interrupted":
        return 128 + int(result.signal) if result.signal else 1
    return 0
