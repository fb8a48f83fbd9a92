"""``python -m minires.export CHECKPOINT [--to FILE.safetensors] [--force] [--model-name NAME]``

Writes the model weights of a minires checkpoint (from ``python -m minires.train`` or
``python -m minires.experiments``) as a safetensors file that PyTorch loads without
pickle. ``--to`` defaults to the checkpoint's path with the suffix ``.safetensors``.

A user's mistake (a missing or unreadable checkpoint, a missing folder, an existing
``--to`` file without ``--force``) is reported in one line on stderr with exit status 2.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .. import __version__, checkpoint
from ..checkpoint import CheckpointError
from . import checkpoint_model_name, export_safetensors

PROG = "python -m minires.export"


class _Refusal(Exception):
    """A one-line refusal of the command line (exit status 2)."""


def _parser():
    parser = argparse.ArgumentParser(
        prog=PROG, description="Write a minires checkpoint's model weights as a .safetensors "
                               "file that PyTorch loads with safetensors.torch.load_file.")
    parser.add_argument("checkpoint", help="a checkpoint .npz written by python -m minires.train "
                                           "or python -m minires.experiments")
    parser.add_argument("--to", metavar="FILE", help="the .safetensors file to write (default: "
                                                     "the checkpoint's path, suffix .safetensors)")
    parser.add_argument("--force", action="store_true", help="replace FILE if it exists")
    parser.add_argument("--version", action="version", version=f"minires {__version__}")
    parser.add_argument("--model-name", metavar="NAME",
                        help="the model name to record in the file's metadata (default: the "
                             "name the checkpoint records)")
    return parser


def _check_target(source: Path, target: Path, force: bool):
    """Refuse, before reading anything, a --to that cannot or should not be written."""
    if target.is_dir():
        raise _Refusal(f"--to {target} is a folder; give a file name, e.g. "
                       f"{target / 'model.safetensors'}")
    if not target.parent.is_dir():
        raise _Refusal(f"--to {target}: the folder {target.parent} does not exist")
    if target.exists():
        if source.exists() and target.resolve() == source.resolve():
            raise _Refusal(f"--to {target} is the checkpoint itself; choose another file name")
        if not force:
            raise _Refusal(f"{target} already exists; add --force to replace it")


def _size(nbytes: int) -> str:
    return f"{nbytes / 1e6:.1f} MB" if nbytes >= 1e6 else f"{nbytes / 1e3:.1f} kB"


def main(argv=None) -> int:
    """Run the command line with ``argv`` (default: ``sys.argv[1:]``); returns the exit status."""
    args = _parser().parse_args(argv)
    source = Path(args.checkpoint)
    target = Path(args.to) if args.to else source.with_suffix(".safetensors")
    try:
        _check_target(source, target, args.force)
        ckpt = checkpoint.load(source)
        name = args.model_name or checkpoint_model_name(ckpt)
        export_safetensors(ckpt, target, model_name=name, overwrite=args.force)
    except KeyboardInterrupt:
        print(f"{PROG}: stopped; {target} was not written", file=sys.stderr)
        return 130
    except (_Refusal, CheckpointError, FileExistsError, TypeError, ValueError) as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:                       # unwritable folder, disk full ...
        print(f"{PROG}: error: cannot write {target}: {err}", file=sys.stderr)
        return 1

    values = sum(int(a.size) for a in ckpt.model.values())
    print(f"wrote {target}: {name or 'model (name not recorded)'}, {len(ckpt.model)} tensors, "
          f"{values:,} values, {_size(target.stat().st_size)} (from {source})")
    print(f'load it in PyTorch: model.load_state_dict(safetensors.torch.load_file("{target}"))')
    return 0


if __name__ == "__main__":
    from minires.__main__ import run_command
    sys.exit(run_command(main))
