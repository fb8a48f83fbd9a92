"""The speed settings, in one explicit call. Importing minires changes nothing in the process.

    import minires as mr
    mr.use_speed_settings()          # what python -m minires.train and the experiments do
    mr.use_speed_settings(2)         # two CPU threads
    mr.set_num_threads(1)            # only minires' conv workers (BLAS left as it is)

What it sets, and why (each is process-wide, so it is the caller's choice):
- minires' convolution runs its batch chunks on ``num_threads`` worker threads with
  OpenBLAS on one thread (``functional/parallel.py``): every core busy for the whole
  chunk, and no spinning BLAS threads when another process takes a core;
- glibc's malloc keeps freed blocks for reuse instead of returning them to the system
  (``backend.keep_freed_memory``): a training step frees and reallocates the same
  activation-sized arrays every step, and fresh pages cost a page fault every 4 KB.

Environment: MINIRES_NUM_THREADS=n chooses n (a bad value is an error of this call,
never of the import); MINIRES_DEFAULT_MALLOC=1 keeps malloc's defaults.

For one call only: ``with speed_settings(): ...`` applies the thread settings inside the
block and puts back the host's BLAS thread count and minires' conv thread count when it
ends (normally or by an exception). ``fit``, ``evaluate``, ``inspect.gradient_flow`` /
``compare`` and ``experiments.run_experiment`` run inside it, so a REPL gets the command
lines' speed without its process being changed. Malloc is left alone there: glibc offers
no way to read its thresholds back, so a change could not be undone (the price: freed
memory is not reused, a few percent per step; ``use_speed_settings()`` pays it once).
"""
from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import threading

from .backend import keep_freed_memory
from .functional import parallel
from .functional.parallel import configure


def use_speed_settings(num_threads=None, keep_memory=True) -> dict:
    """Apply minires' CPU speed settings; returns what each did.

    num_threads: CPU threads for minires' convolutions (OpenBLAS then runs on one thread
                 each); None: MINIRES_NUM_THREADS, else every core this process may use.
    keep_memory: let malloc keep freed memory for reuse (faster steps; memory is not
                 returned to the system until the process ends).
    """
    global _choices
    done = {"threads": configure(num_threads),
            "keep_freed_memory": keep_freed_memory() if keep_memory else False}
    with _lock:
        _choices += 1                    # the user chose: scoped settings leave this alone
    return done


def set_num_threads(n: int) -> None:
    """Run minires' conv2d CPU chunks on ``n`` threads (1 = in order, on the calling thread);
    BLAS is left as it is. An explicit choice: ``speed_settings()`` leaves it alone."""
    global _choices
    parallel.set_num_threads(n)
    with _lock:
        _choices += 1


# --- the same settings for the duration of one call --------------------------------------
# The state a scope saves and puts back: (OpenBLAS's thread count or None, conv workers).
_lock = threading.RLock()
_choices = 0             # explicit calls so far: use_speed_settings(), set_num_threads()
_depth = 0               # scopes open now, in any thread
_outer = None            # what the outermost open scope found and must put back, or None


@functools.lru_cache(maxsize=1)
def _openblas():
    """(get, set) of the OpenBLAS thread count, from the library whose set_num_threads
    ``use_speed_settings()`` calls (``parallel.openblas_library``), or None when NumPy's
    BLAS is not OpenBLAS or cannot report its count."""
    found = parallel.openblas_library()
    if found is None:
        return None
    lib, setter = found
    getter = setter.replace("set_num_threads", "get_num_threads")
    if not hasattr(lib, getter):
        return None                              # could set it, but never put it back
    get = getattr(lib, getter)
    get.restype = ctypes.c_int
    return get, getattr(lib, setter)


def _state():
    blas = _openblas()
    return (None if blas is None else int(blas[0]())), parallel.num_threads()


def _set_state(state):
    """Set (BLAS threads, conv workers), touching only what differs (a new worker count
    replaces the thread pool)."""
    blas_now, workers_now = _state()
    blas, workers = state
    if blas is not None and blas != blas_now:
        _openblas()[1](int(blas))
    if workers != workers_now:
        parallel.set_num_threads(workers)


def _target(threads):
    """The (BLAS threads, conv workers) that ``configure(threads)`` would set, or None
    where it would leave them alone (OPENBLAS_NUM_THREADS / OMP_NUM_THREADS chose)."""
    if threads is None:
        threads = parallel.threads_from_environment()
        if threads is None and (os.environ.get("OPENBLAS_NUM_THREADS")
                                or os.environ.get("OMP_NUM_THREADS")):
            return None
        threads = parallel.available_cores() if threads is None else threads
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads: expected a positive int, got {threads!r}")
    if _openblas() is None:          # another BLAS (or one we could not put back): left alone,
        return None, 1               # and conv chunks in order, as configure() does
    return 1, threads


@contextlib.contextmanager
def speed_settings(threads=None, enabled=True):
    """Inside the block, the thread settings of ``use_speed_settings()``; afterwards, the
    host's BLAS thread count and minires' conv thread count as they were.

        with mr.speed_settings():        # what fit, evaluate, gradient_flow ... do
            ...
        with mr.speed_settings(2):       # two threads in this block
        with mr.speed_settings(enabled=False):   # this block (and the entry points
            mr.train.fit(...)                    # inside it) leaves the process as it is

    threads: as in ``use_speed_settings``. None inherits what is in force when a scope is
             already open (a nested scope never resets an outer one) or when the user made
             an explicit choice (``use_speed_settings()``, ``set_num_threads()``): that choice
             stays, during the block and after it.
    Malloc is left alone (its settings cannot be read back, so they could not be undone).
    An explicit call inside the block wins: its settings are kept when the block ends.
    The settings are process-wide: blocks open in several threads at once are put back
    when the last one ends.
    """
    global _depth, _outer
    with _lock:
        choices = _choices
        if not enabled or (threads is None and (_depth > 0 or _choices > 0)):
            undo = None                               # inherit what is in force
        else:
            target = _target(threads)
            undo = None if target is None or target == _state() else _state()
            if undo is not None:
                _set_state(target)
        if _depth == 0:                               # the outermost scope puts back the
            _outer, undo = undo, None                 # host's state when the last one ends
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _choices == choices:                   # no explicit call in the block
                if undo is not None:
                    _set_state(undo)
                if _depth == 0 and _outer is not None:
                    _set_state(_outer)
            if _depth == 0:
                _outer = None


def scoped(enabled=True, threads=None):
    """The block a library entry point runs in, for its ``speed_settings=`` argument (True:
    the settings for the call; False: the process as it is). ``threads`` (e.g. fit's
    ``config.threads``) is a default: settings already in force -- an explicit call, an
    enclosing block -- win over it, so ``python -m minires.train --resume`` keeps the
    threads of this machine, not the ones saved with the run."""
    if not isinstance(enabled, bool):
        raise TypeError(f"speed_settings: expected True or False, got {enabled!r}")
    with _lock:
        if _depth > 0 or _choices > 0:
            threads = None
    return speed_settings(threads, enabled=enabled)


__all__ = ["set_num_threads", "speed_settings", "use_speed_settings"]
