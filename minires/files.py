"""Writing files and drawing figures: the one place that does either.

Every file minires writes (checkpoints, run records, metrics, experiment results, reports,
figures, downloads) goes through :func:`write_atomically`: the old bytes or the new, never a
part, whatever interrupts the write. Errors are ``OSError`` subclasses, so ``except OSError``
catches every way a write can fail, and each one names the file and what kind of file it is.

Figures are drawn on a ``matplotlib.figure.Figure`` (no pyplot: the host's backend and a
notebook's figures are untouched). One policy for a missing matplotlib:

* a figure the user asked for (``FlowReport.plot()``) raises :class:`MatplotlibMissing`, an
  ``ImportError`` that says what to install;
* a figure drawn on the side of a run (training curves, an experiment's PNG) is skipped by
  :func:`draw_optional`, which prints that note once per figure and returns None.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

INSTALL_MATPLOTLIB = "pip install 'minires[plot]' (or pip install matplotlib)"


class WriteError(OSError):
    """A file could not be written; the message names the file and its kind."""


class MatplotlibMissing(ImportError):
    """A figure was asked for and matplotlib is not installed."""


def _fsync_folder(folder):
    """Make the rename itself durable (POSIX; a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. Windows
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def write_atomically(path, write, what="file") -> Path:
    """Create or replace the file ``path`` so that it holds the old bytes or the new, never a part.

    ``write(f)`` fills ``f``, an open binary temporary file in the same folder, which is then
    flushed, fsync'ed and ``os.replace``d over ``path`` (the folder is fsync'ed too). On any
    error the temporary file is removed and ``path`` is left as it was. The new file gets the
    old file's permissions, or the usual ones for a new file (``0o666`` less the umask) rather
    than ``mkstemp``'s owner-only ``0o600``. ``what`` names the kind of file in the
    :class:`WriteError` raised when the folder does not exist or cannot be written. Returns
    ``path`` as a ``Path``.
    """
    path = Path(path)
    folder = path.parent
    if not folder.is_dir():
        raise WriteError(f"cannot write {what} {path}: the folder {folder} does not exist")
    try:
        mode = path.stat().st_mode & 0o7777
    except OSError:
        umask = os.umask(0)      # reading the umask means setting it; put it straight back
        os.umask(umask)
        mode = 0o666 & ~umask
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    except OSError as err:
        raise WriteError(f"cannot write {what} {path}: {err.strerror or err}") from err
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_folder(folder)
    return path


def write_text(path, text: str, what="file") -> Path:
    """``text`` as UTF-8, atomically."""
    data = text.encode("utf-8")
    return write_atomically(path, lambda f: f.write(data), what=what)


def _plain(value):
    """What ``json`` cannot write by itself: NumPy scalars and arrays, paths."""
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def to_json(value, indent=1) -> str:
    """``value`` as JSON text; NumPy scalars and arrays become numbers and lists, paths strings.
    NaN and infinity are written as JavaScript's ``NaN``/``Infinity`` (Python reads them back)."""
    return json.dumps(value, indent=indent, default=_plain, allow_nan=True)


def write_json(path, value, what="file", indent=1) -> Path:
    """``value`` as one JSON document (see :func:`to_json`), atomically."""
    return write_text(path, to_json(value, indent) + "\n", what=what)


def write_json_lines(path, rows, what="file") -> Path:
    """One JSON object per line (a metrics log), atomically."""
    return write_text(path, "".join(to_json(row, None) + "\n" for row in rows), what=what)


def append_json_line(f, row) -> None:
    """Append one row to an open JSON-lines file and flush it (a log that grows as a run goes:
    a kill loses at most the row being written)."""
    f.write(to_json(row, None) + "\n")
    f.flush()


# --- figures -----------------------------------------------------------------------------------

def new_figure(figsize=(10, 4), layout="constrained"):
    """A matplotlib ``Figure`` without pyplot, or :class:`MatplotlibMissing`."""
    try:
        from matplotlib.figure import Figure
    except ImportError as err:
        raise MatplotlibMissing(f"drawing a figure needs matplotlib, which is not installed: "
                                f"{INSTALL_MATPLOTLIB}") from err
    return Figure(figsize=figsize, layout=layout)


def save_figure(fig, path, dpi=120, what="figure") -> Path:
    """``fig`` at ``path``, atomically, in the format its suffix names (``.pdf``, ``.svg``
    ...; PNG when it has none)."""
    suffix = Path(path).suffix.lower().lstrip(".")
    fmt = suffix or "png"
    return write_atomically(path, lambda f: fig.savefig(f, format=fmt, dpi=dpi), what=what)


def draw_optional(draw, path, dpi=120, what="figure"):
    """``draw()`` (which builds its figure with :func:`new_figure`) saved to ``path``; returns
    the path. Without matplotlib, prints one note naming the figure and returns None."""
    try:
        fig = draw()
    except MatplotlibMissing:
        print(f"matplotlib is not installed: {Path(path).name} not drawn ({INSTALL_MATPLOTLIB})")
        return None
    return save_figure(fig, path, dpi=dpi, what=what)


__all__ = ["INSTALL_MATPLOTLIB", "MatplotlibMissing", "WriteError", "append_json_line",
           "draw_optional", "new_figure", "save_figure", "to_json", "write_atomically",
           "write_json", "write_json_lines", "write_text"]
