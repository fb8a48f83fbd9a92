"""NumPy or CuPy: the one place that knows which array library holds the data.

Every op asks its input which module to use (``xp = get_array_module(x)``) and
then writes ``xp.exp``, ``xp.matmul`` ... so the same code runs on the CPU
(NumPy) and on a GPU (CuPy). CuPy is imported lazily, only here, and only when
something is moved to ``"cuda"`` -- ``import minires`` never pays for it.

One idiom per question, used everywhere else in minires:

- Which library computes, and which code path runs? ``xp = get_array_module(x)``,
  then ``xp.*``. Where a GPU kernel sits beside the portable code, ``if xp is not np:``
  picks it (CuPy), on the module the array already gave -- not a device name, not
  ``isinstance(x, cupy.ndarray)``.
- Is this an array at all (NumPy or CuPy)? ``is_array(a)``; a CuPy one?
  ``is_cupy_array(a)`` (never ``hasattr(a, "__cuda_array_interface__")``).
- Where does it live? ``device_of(a)``, ``"cpu"`` or ``"cuda"``: for messages,
  ``Tensor.device``, and moving one array next to another,
  ``to_device(a, device_of(ref))``.
- Which library makes new arrays for a device name? ``array_module_for(device)``.

Only this file imports CuPy; GPU kernels reach it through ``get_cupy()``.
"""
from __future__ import annotations

import sys

import numpy as np

DEFAULT_DTYPE = np.float32
DEVICES = ("cpu", "cuda")

_GPU_HELP = (
    "Install the GPU extra that matches your NVIDIA driver's CUDA version (nvidia-smi shows it): "
    "pip install 'minires[cuda12]' or 'minires[cuda13]' (CuPy with its CUDA toolkit packages, "
    "which CuPy 14 needs to compile kernels)."
)


def _loaded_cupy():
    """CuPy if something already imported it, else None (never imports it)."""
    return sys.modules.get("cupy")


def get_cupy():
    """Import CuPy and check that a GPU is usable, or raise a clear error."""
    try:
        import cupy
    except ImportError as err:  # pragma: no cover - depends on the machine
        raise RuntimeError("device 'cuda' needs CuPy, which is not installed. "
                           f"{_GPU_HELP}") from err
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as err:  # pragma: no cover - depends on the machine
        raise RuntimeError(f"device 'cuda': CuPy is installed but no CUDA GPU is usable ({err}). "
                           f"{_GPU_HELP}") from err
    if count == 0:  # pragma: no cover
        raise RuntimeError(f"device 'cuda': CuPy found no CUDA GPU. {_GPU_HELP}")
    return cupy


def gpu_available() -> bool:
    """True when CuPy imports and sees at least one GPU (imports CuPy if it can)."""
    try:
        get_cupy()
    except RuntimeError:
        return False
    return True


def is_cupy_array(a) -> bool:
    """True when ``a`` is a CuPy array; never imports CuPy (False if nothing imported it yet)."""
    cp = _loaded_cupy()
    return cp is not None and isinstance(a, cp.ndarray)


def get_array_module(*arrays):
    """``numpy`` or ``cupy``: the module that owns the given arrays."""
    for a in arrays:
        if is_cupy_array(a):
            return _loaded_cupy()
    return np


def is_array(a) -> bool:
    """True for a NumPy or a CuPy array (never imports CuPy)."""
    return isinstance(a, np.ndarray) or is_cupy_array(a)


def array_module_for(device) -> object:
    """``numpy`` for ``"cpu"`` (or None), ``cupy`` for ``"cuda"`` (imported, with a clear
    error when no GPU is usable): the module that makes new arrays on ``device``."""
    return np if check_device("cpu" if device is None else device) == "cpu" else get_cupy()


def device_of(a) -> str:
    """``"cuda"`` for a CuPy array, ``"cpu"`` for anything else."""
    return "cuda" if is_cupy_array(a) else "cpu"


def check_device(device: str) -> str:
    """Return ``device`` if it is one of ``DEVICES`` (cpu, cuda), else raise ValueError."""
    if device not in DEVICES:
        raise ValueError(f"unknown device {device!r}: expected one of {DEVICES}")
    return device


def to_device(a, device: str):
    """Return the array ``a`` on ``device`` (a no-op when it is already there)."""
    check_device(device)
    if device == "cpu":
        return a.get() if is_cupy_array(a) else np.asarray(a)
    cp = get_cupy()
    return cp.asarray(a)


def to_numpy(a) -> np.ndarray:
    """The array ``a`` as a NumPy array on the host: copied from the GPU for CuPy,
    ``numpy.asarray`` otherwise."""
    return to_device(a, "cpu")


# --- random numbers -------------------------------------------------------------
# One seeded NumPy Generator feeds weight initialisation and dropout masks, so
# ``manual_seed(0)`` makes a run repeatable. Code that wants its own stream passes a
# ``numpy.random.Generator`` explicitly instead.
_default_rng = np.random.default_rng()


def manual_seed(seed: int) -> None:
    """Seed minires' default generator (weight initialisation, dropout).

    The data order is not drawn from it: a ``DataLoader`` follows its own ``seed``."""
    global _default_rng
    _default_rng = np.random.default_rng(seed)


def default_rng() -> np.random.Generator:
    """minires' default ``numpy.random.Generator``: weight initialisation and dropout draw from it.

    ``manual_seed`` replaces it, so fetch it anew rather than keeping a reference.
    """
    return _default_rng


def get_rng_state() -> dict:
    """The default generator's bit-generator state (a dict), to save in a checkpoint."""
    return _default_rng.bit_generator.state


def set_rng_state(state: dict) -> None:
    """Restore the default generator to a state from ``get_rng_state()``, so the same numbers
    follow."""
    _default_rng.bit_generator.state = state


# --- CPU memory: reuse freed blocks instead of returning them to the OS ------------------
def keep_freed_memory() -> bool:
    """Ask glibc's malloc to keep freed memory for reuse; True if it took effect.

    Each training step allocates and frees the same activation-sized arrays (a few MB
    each). By default glibc hands large freed blocks back to the kernel (munmap, or
    trimming the heap), so the next step gets fresh pages and pays a page fault for
    every 4 KB of them -- a measurable share of a ResNet-20 step on the CPU (figures in
    benchmarks/RESULTS.md, optimisation 1). Raising the
    mmap threshold to its maximum (32 MB) and the trim threshold to 1 GB makes freed
    blocks reusable; peak memory is unchanged, but freed memory is then not returned to
    the system while the process runs. A no-op where malloc is not glibc's, and when
    MINIRES_DEFAULT_MALLOC=1. Never called at import: ``minires.use_speed_settings()``
    calls it.
    """
    import os
    if os.environ.get("MINIRES_DEFAULT_MALLOC") or not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes
        libc = ctypes.CDLL("libc.so.6")
        M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3          # from glibc's malloc.h
        return bool(libc.mallopt(M_MMAP_THRESHOLD, 32 << 20)
                    and libc.mallopt(M_TRIM_THRESHOLD, 1 << 30))
    except (OSError, AttributeError):                       # not glibc (musl, ...)
        return False
