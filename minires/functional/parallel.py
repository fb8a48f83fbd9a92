"""CPU threads: run the chunks of a convolution, and the passes of batch norm and ReLU, on
every core, BLAS single-threaded; and how a batch is cut into those chunks
(``batch_chunks`` / ``set_chunk_bytes`` for the convolutions, ``pass_chunks`` /
``set_pass_chunk_bytes`` for the element-wise passes).

Why. On the CPU, the fast conv2d works through a batch in chunks of a few images
(im2col, a GEMM, a transpose: see conv_fast.py). Left alone, only the GEMM uses more
than one core (OpenBLAS threads it), while the copies around it -- about half the
time -- run on one. Running whole chunks on a pool of threads, one per core, with BLAS
itself single-threaded, keeps every core busy for the whole chunk (NumPy and BLAS
release the GIL). It is also far more robust on a shared machine: OpenBLAS's threads
spin while they wait for each other, and when another process takes a core a
multi-threaded GEMM can slow down by an order of magnitude (benchmarks/RESULTS.md).

Nothing happens at import: importing minires leaves BLAS, threads and memory alone.
``minires.use_speed_settings()`` (the command lines call it; users may) runs
``configure()``: with NumPy on OpenBLAS it sets OpenBLAS to one thread and uses that
many workers -- by default the cores this process may use, or MINIRES_NUM_THREADS. With
another BLAS (MKL, Accelerate), or when OPENBLAS_NUM_THREADS / OMP_NUM_THREADS say how
BLAS should thread, chunks run one after the other and BLAS is left as it is.
``set_num_threads(n)`` changes only the number of workers (1 = in order, on the calling
thread).

Results do not depend on the number of workers: each chunk writes its own slice of
the output, and per-chunk partial sums (the weight gradient) are added in chunk order.
"""
from __future__ import annotations

import ctypes
import glob
import itertools
import numbers
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

_BLAS_SETTERS = ("scipy_openblas_set_num_threads64_", "scipy_openblas_set_num_threads",
                 "openblas_set_num_threads64_", "openblas_set_num_threads")


def openblas_library():
    """(the OpenBLAS library NumPy loaded, the name of its set_num_threads), or None."""
    paths = glob.glob(os.path.join(os.path.dirname(np.__file__), os.pardir, "numpy.libs",
                                   "*openblas*"))
    try:
        with open("/proc/self/maps") as f:
            paths += sorted({line.split()[-1] for line in f if "openblas" in line.lower()
                             and line.split()[-1].startswith("/")})
    except OSError:
        pass
    for path in paths:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for name in _BLAS_SETTERS:
            if hasattr(lib, name):
                return lib, name
    return None


def openblas_setter():
    """OpenBLAS's set_num_threads from the library NumPy loaded, or None if not found."""
    found = openblas_library()
    return None if found is None else getattr(*found)


def available_cores():
    """The cores this process may run on (its CPU affinity), else os.cpu_count()."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


_pool = None
_workers = 1
_inside = threading.local()              # .active: this thread is running a chunk


def num_threads() -> int:
    """How many threads run conv2d's chunks on the CPU (1: in order, on the calling thread)."""
    return _workers


def set_num_threads(n: int) -> None:
    """Run conv2d's CPU chunks on ``n`` threads (1 = in order on the calling thread)."""
    global _pool, _workers
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"set_num_threads: n must be a positive int, got {n!r}")
    if _pool is not None:
        _pool.shutdown(wait=True)
    _workers = n
    # n - 1 helper threads: the calling thread is the n-th worker.
    _pool = ThreadPoolExecutor(n - 1, thread_name_prefix="minires-cpu") if n > 1 else None


# --- cutting a batch into chunks: the one tuning knob, how much work a CPU chunk holds --
# About this many bytes of column matrix (conv_fast) or of transformed tiles (winograd)
# per chunk: small enough to stay in the CPU cache between being written and being read
# by BLAS, large enough for efficient GEMMs; within that range the exact value matters
# little (the sweep is in benchmarks/RESULTS.md, "Tried, not kept").
_chunk_bytes = 4 << 20


def get_chunk_bytes() -> int:
    """Bytes of column matrix the CPU paths build per chunk (default 4 MiB)."""
    return _chunk_bytes


def set_chunk_bytes(n: int) -> int:
    """Build about ``n`` bytes of column matrix per chunk on the CPU; returns the previous value.

    Results change only by the order of the weight-gradient sums (float rounding).
    """
    global _chunk_bytes
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
        raise ValueError(f"set_chunk_bytes: n must be a positive int, got {n!r}")
    previous, _chunk_bytes = _chunk_bytes, int(n)
    return previous


# Element-wise passes over activations (batch norm, ReLU) run on the pool too, in finer
# chunks: about 1 MiB of activations each, so that ResNet's smallest maps (128 x 64 x 8 x 8
# float32: 2 MiB) still give every core work. Measured on the ResNet-20 step in
# benchmarks/RESULTS.md (0.25-2 MiB gave the same time).
_pass_chunk_bytes = 1 << 20


def set_pass_chunk_bytes(n: int) -> int:
    """Pass over about ``n`` bytes of activations per chunk in batch norm and ReLU on the
    CPU; returns the previous value. Results change only by the order of batch norm's
    per-channel sums (float rounding)."""
    global _pass_chunk_bytes
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
        raise ValueError(f"set_pass_chunk_bytes: n must be a positive int, got {n!r}")
    previous, _pass_chunk_bytes = _pass_chunk_bytes, int(n)
    return previous


def pass_chunks(a):
    """(n0, n1) ranges of the first axis of the NumPy array ``a`` (a batch, N first), about
    1 MiB of ``a`` each: the chunks of an element-wise pass on the pool."""
    per_image = a.nbytes // a.shape[0] if a.shape[0] else 1
    return batch_chunks(a.shape[0], per_image, np, _pass_chunk_bytes)


def batch_chunks(N, per_image_bytes, xp, chunk_bytes=None):
    """(n0, n1) batch ranges of about ``chunk_bytes`` each (at least one image); on the GPU
    one range. The split depends on sizes only, never on the number of threads."""
    limit = _chunk_bytes if chunk_bytes is None else chunk_bytes
    step = max(1, N if xp is not np else limit // max(1, per_image_bytes))
    return [(n0, min(N, n0 + step)) for n0 in range(0, N, step)]


def sum_in_chunk_order(parts, shape, dtype, xp):
    """The weight gradient from the chunks' parts, added in chunk order (deterministic).

    On the GPU a batch is one chunk: its part is the sum, with no zeros() + add (two
    launches). The CPU keeps the addition even then: 0.0 + part turns a -0.0 into +0.0,
    and the CPU's results stay bit-identical to what they were."""
    if len(parts) == 1 and xp is not np:
        return parts[0].reshape(shape)
    total = xp.zeros(shape, dtype=dtype)
    for part in parts:
        total += part
    return total



def run_chunks(work, chunks):
    """Call ``work(n0, n1)`` for every (n0, n1) in ``chunks``, on all the threads.

    Returns the results in chunk order. ``work`` must only write its own chunk's slice.
    The calling thread and the helper threads take the next chunk from a shared counter
    until none is left, so one call costs a hand-off per helper, not one per chunk.
    """
    if _pool is None or len(chunks) < 2 or getattr(_inside, "active", False):
        # no pool, nothing to share, or called from inside a chunk (a nested call would
        # wait for helper threads that are busy with the outer call): in order, here
        return [work(n0, n1) for n0, n1 in chunks]
    results = [None] * len(chunks)
    counter = itertools.count()          # next() on it is atomic under the GIL

    def drain():
        _inside.active = True
        try:
            for i in counter:
                if i >= len(chunks):
                    return
                results[i] = work(*chunks[i])
        finally:
            _inside.active = False

    helpers = [_pool.submit(drain) for _ in range(min(_workers, len(chunks)) - 1)]
    try:
        drain()
    finally:
        for h in helpers:
            h.result()                   # waits, and re-raises a helper's error
    return results


def set_blas_threads(n: int) -> bool:
    """Set OpenBLAS's own thread count (NumPy-wide); False if NumPy's BLAS is not OpenBLAS.

    ``configure()`` sets it to 1 when minires runs chunks on its own threads (see above);
    this is for benchmarks and for users who want BLAS threading back."""
    setter = openblas_setter()
    if setter is None:
        return False
    setter(int(n))
    return True


def threads_from_environment():
    """MINIRES_NUM_THREADS as a positive int, or None when it is not set."""
    text = os.environ.get("MINIRES_NUM_THREADS", "").strip()
    if not text:
        return None
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise ValueError(f"MINIRES_NUM_THREADS: expected a positive integer (the CPU threads "
                         f"minires may use), got {text!r}")
    return n


def configure(n=None) -> str:
    """The thread settings for CPU speed: ``n`` conv workers with OpenBLAS on one thread.

    ``n`` None: MINIRES_NUM_THREADS, else -- unless OPENBLAS_NUM_THREADS or OMP_NUM_THREADS
    chose BLAS threading -- every core this process may use. Returns what it did.
    """
    if n is None:
        n = threads_from_environment()
        if n is None and (os.environ.get("OPENBLAS_NUM_THREADS") or
                          os.environ.get("OMP_NUM_THREADS")):
            return "BLAS threads as OPENBLAS_NUM_THREADS/OMP_NUM_THREADS say; conv chunks in order"
        n = available_cores() if n is None else n
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"threads: expected a positive int, got {n!r}")
    setter = openblas_setter()
    if setter is None:
        set_num_threads(1)
        return "BLAS is not OpenBLAS: left as it is; conv chunks in order"
    setter(1)
    set_num_threads(n)
    return f"{n} (minires' conv threads, OpenBLAS on one thread each)"


__all__ = ["available_cores", "batch_chunks", "configure", "get_chunk_bytes", "num_threads",
           "openblas_library", "openblas_setter", "pass_chunks", "run_chunks", "set_blas_threads",
           "set_chunk_bytes", "set_num_threads", "set_pass_chunk_bytes", "sum_in_chunk_order",
           "threads_from_environment"]
