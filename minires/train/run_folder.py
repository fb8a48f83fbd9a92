"""The run folder: the checks made before a run uses it, the files a run writes there besides
its checkpoints (``config.json``, ``metrics.jsonl``, ``summary.json``, ``curves.png``), and
the clean-up after a run that ended before its first checkpoint.

Every file is written through ``minires.files`` (whole or not at all; errors are ``OSError``s
naming the file); ``curves.png`` follows its policy for side figures: without matplotlib one
note is printed and the run goes on.
"""
from __future__ import annotations

import dataclasses
import os
import tempfile
from pathlib import Path

from .. import files

# the files a run leaves in its folder: any of them means the folder is taken
RUN_FILES = ("last.npz", "best.npz", "metrics.jsonl", "config.json", "summary.json", "curves.png")


# --- before the run -------------------------------------------------------------------------------
def check_writable(out, keep=True) -> Path:
    """Create the run folder and prove we can write there -- before any training starts.

    With ``keep=False`` the folders this call had to create are removed again after the
    probe (a check that leaves nothing behind: the command line makes it before it loads
    the data, and the folder itself appears only when training starts).
    """
    out = Path(out)
    created = missing_folders(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test.", dir=out)    # a probe, not a file
        os.write(fd, b"ok")
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        remove_empty_folders(created)
        raise OSError(err.errno, f"cannot write to the run folder {out} (--out): "
                                 f"{err.strerror or err}") from err
    if not keep:
        remove_empty_folders(created)
    return out


def missing_folders(out) -> list:
    """The folders that creating ``out`` would make, deepest first (empty when it exists)."""
    def absent(path):
        try:
            return not (path.exists() or path.is_symlink())
        except OSError:              # cannot even look (permissions): not ours to remove
            return False

    missing, path = [], Path(out)
    while absent(path) and path != path.parent:
        missing.append(path)
        path = path.parent
    return missing


def remove_empty_folders(folders):
    """Remove ``folders`` (deepest first) while each is empty; stop at the first that is not."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return


def earlier_run_files(out) -> list:
    """The names of ``RUN_FILES`` that ``out`` holds (an earlier run's), in that order."""
    return [name for name in RUN_FILES if (Path(out) / name).exists()]


def refuse_earlier_run(out):
    """Raise FileExistsError when ``out`` holds any file of an earlier run (a new run would
    overwrite its checkpoints or append to its metrics); nothing is touched.

    The message says what is there and what to do: continue the run (``--resume
    OUT/last.npz``) when it left a ``last.npz``; otherwise (it diverged or was killed before
    its first checkpoint, or the checkpoint was deleted) there is nothing to resume, so remove
    the files or choose another folder.
    """
    held = earlier_run_files(out)
    if not held:
        return
    last = Path(out) / "last.npz"
    if last.exists():
        raise FileExistsError(f"{out} holds an earlier run ({', '.join(held)}): choose another "
                              f"run folder (--out), or continue it (--resume {last}); nothing "
                              f"was overwritten")
    raise FileExistsError(f"{out} holds files of an earlier run ({', '.join(held)}) but no "
                          f"checkpoint (last.npz), so there is nothing to resume: remove "
                          f"{'it' if len(held) == 1 else 'them'}, or choose another run folder "
                          f"(--out); nothing was overwritten")


# --- what a run writes ----------------------------------------------------------------------------
def write_config(out, config, resumed_from=None) -> Path:
    """``out/config.json``: the run's ``TrainConfig``, the minires version, and the checkpoint
    the run was resumed from (None for a new run)."""
    from .. import __version__
    return files.write_json(Path(out) / "config.json", {
        **dataclasses.asdict(config), "minires_version": __version__,
        "resumed_from": None if resumed_from is None else str(resumed_from)}, what="run config")


def write_metrics(out, history) -> Path:
    """``out/metrics.jsonl`` rewritten to hold ``history``, one row per line (a resumed run
    starts from its checkpoint's rows, dropping any written after it)."""
    return files.write_json_lines(Path(out) / "metrics.jsonl", history, what="metrics")


def append_metrics(out, row):
    """One epoch's row appended to ``out/metrics.jsonl``."""
    with open(Path(out) / "metrics.jsonl", "a") as f:
        files.append_json_line(f, row)


def write_summary(out, summary) -> Path:
    """``out/summary.json``: what a completed run reached."""
    return files.write_json(Path(out) / "summary.json", summary, what="run summary")


def plot_curves(history, path) -> Path | None:
    """Loss and accuracy per epoch (train, val, test) drawn to ``path`` (PNG); returns the path,
    or None when matplotlib is not installed (then one note says so: ``files.draw_optional``).

    Draws on a ``matplotlib.figure.Figure`` (``files.new_figure``), never through pyplot: the
    host's backend and pyplot's figures (a notebook's inline plots) are untouched.
    """
    def draw():
        epochs = [row["epoch"] for row in history]
        fig = files.new_figure(figsize=(10, 4), layout="tight")
        ax_loss, ax_acc = fig.subplots(1, 2)
        for split in ("train", "val", "test"):
            if history and f"{split}_loss" in history[0]:
                ax_loss.plot(epochs, [r[f"{split}_loss"] for r in history], label=split)
                ax_acc.plot(epochs, [100 * r[f"{split}_acc"] for r in history], label=split)
        ax_loss.set(xlabel="epoch", ylabel="loss", title="loss")
        ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
        for ax in (ax_loss, ax_acc):
            ax.grid(alpha=0.3)
            ax.legend()
        return fig

    return files.draw_optional(draw, path, dpi=100, what="curves")


# --- after a run that ended with an exception -----------------------------------------------------
def undo_run_without_checkpoint(out, before, new_folders) -> str:
    """After a run that ended with an exception: when its folder holds no checkpoint, remove
    the files this run wrote there (config.json ...) and the folders it made, so that the
    same command can run again; returns a sentence saying so ("" when nothing was removed).

    ``before``: the names the folder held before the run; ``new_folders``: the folders the
    run had to create, deepest first (``missing_folders``).
    """
    out = Path(out)
    if not out.is_dir() or (out / "last.npz").exists():
        return ""
    removed = []
    for name in sorted(os.listdir(out)):
        path = out / name
        if name not in before and (path.is_file() or path.is_symlink()):
            path.unlink()
            removed.append(name)
    remove_empty_folders(new_folders)
    if not out.exists():
        return (f"The run folder {out} was removed: it held no checkpoint, so there was nothing "
                f"to resume.")
    if removed:
        return (f"Removed what this run wrote in {out} ({', '.join(removed)}): no checkpoint, "
                f"nothing to resume.")
    return ""
