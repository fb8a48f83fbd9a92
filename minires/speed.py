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
"""
from __future__ import annotations

from .backend import keep_freed_memory
from .functional.parallel import configure, set_num_threads


def use_speed_settings(num_threads=None, keep_memory=True) -> dict:
    """Apply minires' CPU speed settings; returns what each did.

    num_threads: CPU threads for minires' convolutions (OpenBLAS then runs on one thread
                 each); None: MINIRES_NUM_THREADS, else every core this process may use.
    keep_memory: let malloc keep freed memory for reuse (faster steps; memory is not
                 returned to the system until the process ends).
    """
    return {"threads": configure(num_threads),
            "keep_freed_memory": keep_freed_memory() if keep_memory else False}


__all__ = ["set_num_threads", "use_speed_settings"]
