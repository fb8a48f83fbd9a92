"""Training speed of ``fit()`` called from Python, against the command line's condition.

    python benchmarks/repl_speed.py                        # resnet20, 384 images, 3 rounds
    python benchmarks/repl_speed.py --conditions repl cli  # skip the slow unscoped one

The conditions, each in a fresh interpreter (no OPENBLAS_NUM_THREADS, OMP_NUM_THREADS or
MINIRES_NUM_THREADS, as in a plain REPL):
  repl      ``fit(model, data)`` with no setting at all: fit applies the speed settings for
            the call (minires.speed_settings) and puts the host's back afterwards
  unscoped  ``fit(..., speed_settings=False)``: the process as it is, which is what fit did
            before it scoped the settings (OpenBLAS threading the GEMMs itself)
  cli       ``mr.use_speed_settings()`` first, as ``python -m minires.train`` does (threads,
            and malloc keeping freed memory, which the scoped version leaves alone)

Each process builds resnet20, trains one warm-up step, then times one ``fit`` of one epoch
over 384 synthetic CIFAR-shaped uint8 images (batch 128, augmentation and prefetch as on the
command line, no evaluation), and reports images/s with the BLAS thread count (threadpoolctl
when installed) and minires' conv thread count before and after the call. The conditions
take turns, ``--rounds`` times, so a change in the machine's load falls on all of them;
the figure is the median over the rounds.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

CHILD = r"""
import json, sys, time
import numpy as np
sys.path.insert(0, sys.argv[1])
condition, n_images, model_name = sys.argv[2], int(sys.argv[3]), sys.argv[4]
import minires as mr
from minires import speed
from minires.data import CIFAR10, Split
from minires.functional import parallel
from minires.train import fit

def state():
    try:
        from threadpoolctl import threadpool_info
        blas = sorted(i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas")
    except ImportError:
        blas = [speed._state()[0]]
    return {"blas_threads": blas, "conv_threads": parallel.num_threads()}

rng = np.random.default_rng(0)
data = CIFAR10(train=Split(rng.integers(0, 256, (n_images, 3, 32, 32), dtype=np.uint8),
                           rng.integers(0, 10, n_images)), test=None)
kw = dict(epochs=1, batch_size=128, progress=False, verbose=False,
          speed_settings=condition != "unscoped")
if condition == "cli":
    mr.use_speed_settings()
mr.manual_seed(0)
model = getattr(mr.models, model_name)()
fit(model, data, max_steps=1, **kw)                        # warm-up: one step
before = state()
start = time.perf_counter()
fit(model, data, **kw)
seconds = time.perf_counter() - start
print(json.dumps({"images_per_s": n_images / seconds, "before": before, "after": state()}))
"""

CONDITIONS = ("repl", "unscoped", "cli")


def run_child(condition, n_images, model):
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
    env = {k: v for k, v in os.environ.items()
           if k not in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MINIRES_NUM_THREADS")}
    out = subprocess.run([sys.executable, "-c", CHILD, root, condition, str(n_images), model],
                         capture_output=True, text=True, env=env, check=False)
    if out.returncode:
        raise SystemExit(f"{condition}: {out.stderr.strip()}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conditions", nargs="+", choices=CONDITIONS, default=list(CONDITIONS))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--images", type=int, default=384)
    parser.add_argument("--model", default="resnet20")
    args = parser.parse_args(argv)
    load = os.getloadavg()
    print(f"{args.model}, {args.images} images, batch 128, {args.rounds} rounds; "
          f"{os.cpu_count()} CPUs, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    runs = {c: [] for c in args.conditions}
    for r in range(args.rounds):
        for c in args.conditions:
            runs[c].append(run_child(c, args.images, args.model))
            print(f"  round {r + 1} {c:<9} {runs[c][-1]['images_per_s']:7.1f} img/s", flush=True)
    median = {c: statistics.median(x["images_per_s"] for x in rs) for c, rs in runs.items()}
    print(f"\n{'condition':<10} {'img/s (median)':>15}  {'BLAS threads before -> after':>29}"
          f"  {'conv threads before -> after':>28}")
    for c, rs in runs.items():
        b, a = rs[-1]["before"], rs[-1]["after"]
        print(f"{c:<10} {median[c]:15.1f}  {str(b['blas_threads']):>14} -> "
              f"{str(a['blas_threads']):<11}  {b['conv_threads']:>14} -> {a['conv_threads']}")
    if "cli" in median:
        for c in median:
            if c != "cli":
                print(f"cli / {c}: {median['cli'] / median[c]:.2f}x")
    load = os.getloadavg()
    print(f"load average at the end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")


if __name__ == "__main__":
    main()
