"""What every lesson shares: fast mode, the output folder, figures and data.

Read it once; the lessons then say ``from lesson_utils import ...`` and get on with it.

* Importing it calls ``minires.use_speed_settings()`` (threads and memory for speed), as
  the command lines do.
* ``FAST``: True when the environment variable ``MINIRES_TUTORIAL_FAST=1`` is set. The
  test suite sets it: data sets shrink to a few hundred synthetic images and training
  to a few dozen steps, so all lessons together run in minutes. The numbers a lesson
  prints in fast mode check that the code runs; they say nothing about ResNets.
* ``out_dir(lesson)``: where a lesson writes figures and run folders --
  ``$MINIRES_TUTORIAL_OUT/<lesson>`` when that variable is set (the tests point it at a
  temporary folder), else ``tutorials/out/<lesson>`` (git-ignored).
* ``new_figure`` / ``save_figure``: a figure is written as a PNG in the output folder and
  shown inline when the lesson runs as a notebook (its path is printed when it runs as a
  script). matplotlib is optional: without it a lesson prints a note and carries on.
* ``load_data``: CIFAR-10 from ``~/.cache/minires`` (or ``$MINIRES_DATA``), the first
  ``n`` images of each split -- or, in fast mode, a small synthetic stand-in that needs
  no files.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

try:
    import minires  # noqa: F401
except ImportError:
    # A fresh clone without `pip install -e .`: use the minires next to this folder.
    sys.path.insert(0, str(HERE.parent))

FAST = os.environ.get("MINIRES_TUTORIAL_FAST", "").strip() not in ("", "0")

# The lessons are programs of their own, so they make the one explicit speed call that
# `python -m minires.train` makes: convolution workers on every core, OpenBLAS on one thread
# each, freed memory kept for reuse (importing minires alone changes none of this).
import minires as _mr  # noqa: E402

_mr.use_speed_settings()


def fast_or_full(fast, full):
    """``fast`` in fast mode, else ``full``: the one place a lesson's budget is chosen."""
    return fast if FAST else full


def out_dir(lesson: str) -> Path:
    """The lesson's output folder (created if missing)."""
    root = os.environ.get("MINIRES_TUTORIAL_OUT")
    folder = (Path(root) if root else HERE / "out") / lesson
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def has_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def new_figure(figsize=(8, 4)):
    """A matplotlib ``Figure`` (no pyplot, no window), or None when matplotlib is missing
    (the lessons run without it; ``save_figure`` then says what was not drawn)."""
    from minires.files import MatplotlibMissing, new_figure
    try:
        return new_figure(figsize)
    except MatplotlibMissing:
        return None


def _in_jupyter_kernel() -> bool:
    """True inside a Jupyter kernel (a notebook, VS Code, nbclient), False in a script or a
    terminal IPython. Looks only at an IPython already imported: a script never pays for it."""
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return False
    get_ipython = getattr(ipython, "get_ipython", None)
    shell = get_ipython() if get_ipython is not None else None
    return shell is not None and getattr(shell, "kernel", None) is not None


def save_figure(fig, path):
    """Write ``fig`` as PNG, then show it: inline in a notebook (the PNG just written, so the
    page and the file agree), or as its path in a script. Without matplotlib (``fig is None``)
    say so instead. Returns None, so that a cell ending with it shows the figure, not a path."""
    from minires.files import INSTALL_MATPLOTLIB, save_figure
    if fig is None:
        print(f"matplotlib is not installed: {Path(path).name} not drawn ({INSTALL_MATPLOTLIB})")
        return
    saved = save_figure(fig, path, dpi=100)
    if _in_jupyter_kernel():
        from IPython.display import Image, display
        display(Image(data=Path(saved).read_bytes(), format="png"))
    else:
        print(f"figure: {path}")


def mode_line() -> str:
    return ("FAST MODE: tiny synthetic data and budgets -- the numbers check the code, "
            "they say nothing about ResNets" if FAST else "full mode: real CIFAR-10 data")


def synthetic_cifar(n_train=256, n_test=128, size=8, seed=0):
    """A learnable stand-in for CIFAR-10 (a noisy fixed template per class), as
    ``mr.data.CIFAR10``."""
    import minires as mr
    from minires.experiments.data import synthetic_split
    return mr.data.CIFAR10(train=synthetic_split(n_train, size=size, seed=seed + 1),
                           test=synthetic_split(n_test, size=size, seed=seed + 2), folder=None)


def load_data(n_train=None, n_test=None, fast_train=256, fast_test=128, fast_size=8):
    """CIFAR-10 limited to the first ``n_train`` / ``n_test`` images (None: all), or in fast
    mode ``synthetic_cifar(fast_train, fast_test, fast_size)``."""
    import minires as mr
    if FAST:
        return synthetic_cifar(fast_train, fast_test, fast_size)
    try:
        data = mr.data.load_cifar10(download=False)
    except mr.data.DataError as err:
        raise SystemExit(
            f"{err}\n\nThis lesson uses the real CIFAR-10 data. Put it in ~/.cache/minires (or "
            f"set MINIRES_DATA), or run the lesson in fast mode: MINIRES_TUTORIAL_FAST=1") from None
    return mr.data.CIFAR10(train=data.train.take(n_train), test=data.test.take(n_test),
                           folder=data.folder)


def load_degradation_data(n_train, n_test=1000, size=8, fast_train=256, fast_test=128):
    """The laptop setting of ``python -m minires.experiments degradation``: a fixed
    class-balanced subset of ``n_train`` CIFAR-10 training images (all 50,000 by default)
    and the first ``n_test`` test images, all average-pooled to ``size`` x ``size`` -- or,
    in fast mode, synthetic 8x8 images."""
    import minires as mr
    from minires.experiments.data import balanced_subset, pool_split
    if FAST:
        return synthetic_cifar(fast_train, fast_test, 8)
    full = load_data()
    return mr.data.CIFAR10(train=pool_split(balanced_subset(full.train, n_train), size),
                           test=pool_split(full.test.take(n_test), size), folder=full.folder)
