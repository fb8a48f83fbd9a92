"""Where an experiment's results go, and what is recorded beside the numbers.

An experiment writes into one folder (``output_folder``): ``results.json`` (written with
``minires.files.write_json``, atomically, as often as it has something to keep), then at
the end ``NAME.png`` (``finish``). A figure is drawn on the side of the run: without
matplotlib it is skipped with a one-line note (``minires.files.draw_optional``), the
results are not. ``environment`` and ``Timer`` say where, how and how fast the numbers
were made.
"""
from __future__ import annotations

import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

import minires as mr

from ..files import draw_optional, write_json
from .options import ExperimentError

DEFAULT_ROOT = Path("runs") / "experiments"


def output_folder(args) -> Path:
    """The result folder, created and checked writable before any work starts.

    Nothing is ever overwritten: without ``--out`` a new folder is chosen
    (``runs/experiments/NAME``, then ``NAME-2``, ...; ``--tiny`` runs go under
    ``runs/experiments/tiny/`` so they never land beside real results); an ``--out`` that
    already holds files is refused (:class:`ExperimentError`) unless ``--resume`` asks to
    continue what is there. Sets ``args.out`` to the folder chosen.
    """
    name = getattr(args, "experiment", "experiment")
    if args.out is None:
        root = DEFAULT_ROOT / "tiny" if args.tiny else DEFAULT_ROOT
        folder, k = root / name, 1
        while folder.exists() and any(folder.iterdir()) and not args.resume:
            k += 1
            folder = root / f"{name}-{k}"
    else:
        folder = Path(args.out)
        if folder.is_file():
            raise ExperimentError(f"{name}: --out {folder} is a file; give a folder")
        if folder.is_dir() and any(folder.iterdir()) and not args.resume:
            raise ExperimentError(f"{name}: {folder} already holds results; choose a new --out, "
                                  f"or add --resume to continue the run that is there")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".write-test-")
        os.close(fd)
        os.remove(probe)
    except OSError as err:
        raise ExperimentError(f"{name}: cannot write results to {folder}: "
                              f"{err.strerror or err}") from None
    args.out = str(folder)
    return folder


def finished_results(args):
    """With ``--resume``, the results of a run in ``--out`` that already finished, else None."""
    if not getattr(args, "resume", False) or args.out is None:
        return None
    path = Path(args.out) / "results.json"
    if path.is_file():
        saved = json.loads(path.read_text())
        if saved.get("complete"):
            print(f"{saved.get('experiment')}: already finished in {args.out}; kept")
            return saved
    return None


def save_results(path, results) -> Path:
    """``results`` as JSON at ``path``, atomically (NumPy numbers become plain ones)."""
    return write_json(path, results, what="results")


def finish(results, out_dir, name, plot, seconds):
    """The common end of every experiment: record the run time, write results.json and,
    when matplotlib is installed, ``plot(results)`` as NAME.png to ``out_dir``; say where.

    Returns ``results``, with ``figure`` the PNG's path (None when it was not drawn).
    """
    results["seconds"] = seconds
    results["complete"] = True
    save_results(out_dir / "results.json", results)
    results["figure"] = draw_optional(lambda: plot(results), out_dir / f"{name}.png")
    print(f"results in {out_dir}")
    return results


def environment(args) -> dict:
    """Where and how the numbers were made, stored next to them."""
    return {"minires": mr.__version__, "numpy": np.__version__,
            "python": platform.python_version(), "machine": platform.machine(),
            "cpus": os.cpu_count(), "device": args.device,
            "command": "python -m minires.experiments " + " ".join(getattr(args, "argv", []))}


class Timer:
    """Seconds since it was made (``timer.seconds``), on the monotonic performance clock."""

    def __init__(self):
        self.start = time.perf_counter()

    @property
    def seconds(self):
        """Seconds elapsed since the timer was made."""
        return time.perf_counter() - self.start


__all__ = ["DEFAULT_ROOT", "Timer", "environment", "finish", "finished_results",
           "output_folder", "save_results"]
