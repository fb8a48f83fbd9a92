"""Which OpenBLAS kernel runs this machine's convolution GEMMs fastest: measured, not assumed.

NumPy's OpenBLAS carries kernels for several CPU families and picks one when it loads, from
the CPU's feature flags. That guess is not always the fastest for the shapes a ResNet step
multiplies: which kernel wins differs from machine to machine (benchmarks/RESULTS.md has
the measurements). The kernel is chosen by the environment variable ``OPENBLAS_CORETYPE``,
read once, when NumPy loads, so a running process cannot change it. Hence:

* ``measure()`` times the step's GEMM shapes under each candidate kernel, each in a fresh
  subprocess (one BLAS thread), in alternating rounds, and returns the rates;
* ``fastest()`` does that once per machine and remembers the answer in the user's cache
  folder (``~/.cache/minires/blas-kernel.json``, keyed by CPU, NumPy and OpenBLAS);
* ``rerun_with_fastest_kernel()`` is what the command lines call first: when the fastest
  kernel is not the one OpenBLAS picked, it sets ``OPENBLAS_CORETYPE`` and replaces the
  process with the same command (``os.execv``: same PID, same arguments). Only the
  ``__main__`` of a command line calls it: importing minires changes nothing.

A user's own ``OPENBLAS_CORETYPE`` is always kept. ``MINIRES_BLAS_KERNEL`` overrides the
measurement: ``default`` keeps OpenBLAS' pick, a kernel name (``Haswell``) uses that one.

    python -m minires.blas_kernel          # measure (or read the cache) and print the table
"""
from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path

# The kernels tried: "" is OpenBLAS' own pick. Others exist (Zen, SandyBridge ...); these
# two are the AVX2 and AVX-512 kernels that x86-64 machines of the last decade run.
CANDIDATES = ("", "Haswell", "SkylakeX")

# The GEMMs of a ResNet-20 training step at batch 128, as the fast convolution issues them
# (one chunk of images per GEMM): (M, K, N) of W (M, K) @ cols (K, N), forward and dx, and
# the weight gradient dW = gy (M, N) @ cols.T (N, K). Weighted by how often a step runs them.
STEP_GEMMS = ((16, 144, 6368, 7), (32, 288, 3280, 6), (64, 576, 1592, 6))

PROBE = r"""
import json, statistics, sys, time
import numpy as np
from minires.blas_kernel import STEP_GEMMS, core_name
rng = np.random.default_rng(0)
rounds, out = int(sys.argv[1]), {"kernel": core_name(), "seconds": 0.0}
for M, K, N, weight in STEP_GEMMS:
    w = rng.standard_normal((M, K), dtype=np.float32)
    cols = rng.standard_normal((K, N), dtype=np.float32)
    gy = rng.standard_normal((M, N), dtype=np.float32)
    for name, f in (("forward", lambda: w @ cols), ("dW", lambda: gy @ cols.T),
                    ("dW as (cols gy.T).T", lambda: (cols @ gy.T).T)):
        f()
        times = []
        for _ in range(rounds):
            t0 = time.perf_counter(); f(); times.append(time.perf_counter() - t0)
        t = statistics.median(times)
        out[f"{M}x{K}x{N} {name}"] = 2 * M * K * N / t / 1e9         # GFLOP/s
        if name != "dW":                   # a step's cost: forward, dx (same shape), best dW
            out["seconds"] += weight * (2 if name == "forward" else 1) * t
print(json.dumps(out))
"""


def core_name() -> str | None:
    """The kernel OpenBLAS runs in this process (``openblas_get_corename``), or None."""
    import ctypes

    from .functional import parallel
    found = parallel.openblas_library()
    if found is None:
        return None
    lib = found[0]
    getter = next((n for n in ("openblas_get_corename64_", "openblas_get_corename_",
                               "scipy_openblas_get_corename64_", "openblas_get_corename")
                   if hasattr(lib, n)), None)
    if getter is None:
        return None
    get = getattr(lib, getter)
    get.restype = ctypes.c_char_p
    return get().decode()


def _probe(kernel: str, rounds: int) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_CORETYPE"}
    if kernel:
        env["OPENBLAS_CORETYPE"] = kernel
    env["OPENBLAS_NUM_THREADS"] = "1"
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    run = subprocess.run([sys.executable, "-c", PROBE, str(rounds)],
                         env=env, capture_output=True, text=True, timeout=300)
    if run.returncode != 0:
        raise RuntimeError(f"blas_kernel: the GEMM probe under OPENBLAS_CORETYPE={kernel!r} "
                           f"failed: {run.stderr.strip()[-500:]}")
    return json.loads(run.stdout)


def measure(candidates=CANDIDATES, rounds=3, repeats=7) -> dict:
    """{kernel: {"kernel": name OpenBLAS reports, "seconds": a step's GEMM time (median over
    ``rounds`` alternating rounds), "<shape> <op>": GFLOP/s ...}}, one subprocess per kernel
    and round."""
    runs = {k: [] for k in candidates}
    for _ in range(rounds):
        for k in candidates:
            runs[k].append(_probe(k, repeats))
    result = {}
    for k, rs in runs.items():
        row = {key: statistics.median(r[key] for r in rs) for key in rs[0] if key != "kernel"}
        result[k or "default"] = {"kernel": rs[0]["kernel"], **row}
    return result


def _cache_path() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(root) / "minires" / "blas-kernel.json"


def _machine_key() -> str:
    import numpy as np
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f
                        if line.startswith("model name")), cpu)
    except OSError:
        pass
    return f"{cpu} | cpus {os.cpu_count()} | numpy {np.__version__} | {core_name()}"


def fastest(refresh=False, note=False) -> dict:
    """{"choice": "" (OpenBLAS' pick) or a kernel name, "rates": measure()'s table, "key": the
    machine}: read from the cache, or measured (a few seconds; ``note``: say so on stderr)
    and cached."""
    from .files import write_json
    path, key = _cache_path(), _machine_key()
    if not refresh:
        try:
            cached = json.loads(path.read_text())
            if cached.get("key") == key:
                return cached
        except (OSError, ValueError):
            pass
    if note:
        print("minires: timing OpenBLAS' kernels on this machine's convolution GEMMs (once per "
              "machine, a few seconds; MINIRES_BLAS_KERNEL=default skips it)", file=sys.stderr)
    rates = measure()
    best = min(rates, key=lambda k: rates[k]["seconds"])
    # a kernel replaces OpenBLAS' pick only when it is clearly faster (5%), not by noise
    choice = "" if rates[best]["seconds"] > 0.95 * rates["default"]["seconds"] else best
    found = {"key": key, "choice": choice, "rates": rates}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json(path, found, what="BLAS kernel cache")
    except OSError:
        pass                              # a read-only home: measure again next time
    return found


def rerun_with_fastest_kernel() -> None:
    """For a command line's ``__main__``: make this process run under the fastest OpenBLAS
    kernel, by setting ``OPENBLAS_CORETYPE`` and ``os.execv``-ing the same command, or return
    having changed nothing (the user chose a kernel; OpenBLAS' pick is the fastest; NumPy's
    BLAS is not OpenBLAS; the process was already re-run)."""
    if os.environ.get("OPENBLAS_CORETYPE") or os.environ.get("_MINIRES_BLAS_RERUN"):
        return
    wanted = os.environ.get("MINIRES_BLAS_KERNEL") or "auto"
    if wanted == "default" or core_name() is None:
        return
    if wanted == "auto":
        found = fastest(note=True)
        wanted = found["choice"]
        if not wanted:
            return
        rates = found["rates"]
        print(f"minires: OpenBLAS' {wanted} kernel runs this CPU's convolution GEMMs "
              f"{rates['default']['seconds'] / rates[wanted]['seconds']:.2f}x as fast as its own "
              f"pick ({rates['default']['kernel']}); using it (MINIRES_BLAS_KERNEL=default keeps "
              f"OpenBLAS' pick)", file=sys.stderr)
    os.environ["OPENBLAS_CORETYPE"] = wanted
    os.environ["_MINIRES_BLAS_RERUN"] = "1"
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, getattr(sys, "orig_argv", [sys.executable, *sys.argv]))


def main(argv=None) -> int:
    import argparse
    parser = argparse.ArgumentParser(prog="python -m minires.blas_kernel",
                                     description="Measure which OpenBLAS kernel runs this "
                                     "machine's ResNet-20 GEMMs fastest (cached per machine).")
    parser.add_argument("--refresh", action="store_true", help="measure again, ignore the cache")
    args = parser.parse_args(argv)
    found = fastest(refresh=args.refresh)
    rates = found["rates"]
    shapes = [k for k in rates["default"] if k not in ("kernel", "seconds")]
    print(f"machine: {found['key']}")
    print("| GEMM (M x K x N) | " + " | ".join(f"{k} ({v['kernel']})" for k, v in rates.items())
          + " |")
    print("|---|" + "---|" * len(rates))
    for shape in shapes:
        print(f"| {shape} GFLOP/s | " + " | ".join(f"{v[shape]:.1f}" for v in rates.values())
              + " |")
    weighted = " | ".join(f"{1000 * v['seconds']:.1f}" for v in rates.values())
    print(f"| the probe's GEMMs, weighted as a step runs them, ms | {weighted} |")
    print(f"choice: {found['choice'] or 'OpenBLAS pick (default)'}")
    return 0


__all__ = ["CANDIDATES", "STEP_GEMMS", "core_name", "fastest", "measure",
           "rerun_with_fastest_kernel"]

if __name__ == "__main__":
    sys.exit(main())
