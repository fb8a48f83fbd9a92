"""Where the time of one ResNet-20 training step goes: GEMM, im2col, col2im, batch norm, ...

    python benchmarks/profile_step.py                 # resnet20, batch 128, 3 timed steps
    python benchmarks/profile_step.py --model resnet56 --steps 2

Two tables:
  1. per op (forward and backward of each Function class), milliseconds per step;
  2. per kind of work: GEMM (every numpy.matmul), im2col (im2col_batch and the
     side-by-side layout's columns), col2im (col2im_batch), batch norm, ReLU, other
     element-wise ops, the optimizer, and the rest ("Python overhead": the graph walk,
     module calls, argument checks).
Kinds nest (conv2d's forward contains its im2col and GEMM), so each kind is counted
once: a GEMM inside conv2d counts as GEMM, the remainder of conv2d as "conv2d other
(transposes, padding)".

The step runs with minires' CPU threads set to 1 (``parallel.set_num_threads(1)``)
so that the times of the kinds add up to the wall time; BLAS keeps the setting minires
chose at import (1 thread with OpenBLAS). The figures therefore show the work, not
the speed of the default (threaded) step -- that is bench_step.py's job.
"""
from __future__ import annotations

import argparse
import collections
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from conv_layers import machine_description

import minires as mr
import minires.functional as F
from minires import autograd
from minires.functional import conv_fast, conv_layouts, parallel

_stack = []          # the kinds currently open (nesting)
_self_time = collections.defaultdict(float)
_per_op = collections.defaultdict(float)


def _timed_kind(kind, fn):
    """Wrap fn so its time, minus the time of kinds nested inside it, counts as ``kind``."""
    def wrapper(*args, **kwargs):
        t0 = time.perf_counter()
        _stack.append(0.0)
        try:
            return fn(*args, **kwargs)
        finally:
            inner = _stack.pop()
            total = time.perf_counter() - t0
            _self_time[kind] += total - inner
            if _stack:
                _stack[-1] += total
    return wrapper


def _op_kind(name):
    if name in ("Conv2d", "FastConv2d"):
        return "conv2d other (transposes, padding)"
    if name == "BatchNorm":
        return "batch norm"
    if name == "ReLU":
        return "ReLU"
    if name == "CrossEntropy":
        return "loss"
    return "other element-wise / shape ops"


def instrument():
    """Wrap every Function's forward/backward, numpy.matmul and the column builders."""
    def subclasses(cls):
        for sub in cls.__subclasses__():
            yield sub
            yield from subclasses(sub)

    for cls in set(subclasses(autograd.Function)):
        for method in ("forward", "backward"):
            if method not in cls.__dict__:
                continue
            fn = cls.__dict__[method]
            kind = _op_kind(cls.__name__)

            def per_op(fn=fn, key=f"{cls.__name__}.{method}", kind=kind):
                timed = _timed_kind(kind, fn)

                def wrapper(*args, **kwargs):
                    t0 = time.perf_counter()
                    try:
                        return timed(*args, **kwargs)
                    finally:
                        _per_op[key] += time.perf_counter() - t0
                return wrapper
            setattr(cls, method, per_op())
    np.matmul = _timed_kind("GEMM (numpy.matmul)", np.matmul)
    # the names conv_fast.py calls them by (its module globals)
    conv_fast.im2col_batch = _timed_kind("im2col", conv_fast.im2col_batch)
    conv_fast.col2im_batch = _timed_kind("col2im", conv_fast.col2im_batch)
    layout = conv_layouts.SideBySide
    layout.columns = _timed_kind("im2col", layout.columns)
    layout.shifted_planes = _timed_kind("im2col", layout.shifted_planes)


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()
    mr.use_speed_settings()              # threads and memory, as the command lines set them
    parallel.set_num_threads(1)
    instrument()
    mr.manual_seed(0)
    model = getattr(mr.models, args.model)()
    model.train()
    opt = mr.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    rng = np.random.default_rng(0)
    x = mr.tensor(rng.standard_normal((args.batch, 3, 32, 32), dtype=np.float32))
    y = rng.integers(0, 10, args.batch)
    step_opt = _timed_kind("optimizer (SGD step, zero_grad)", opt.step)
    zero = _timed_kind("optimizer (SGD step, zero_grad)", opt.zero_grad)

    def step():
        zero()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        step_opt()

    step()                                   # warm-up
    _self_time.clear()
    _per_op.clear()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step()
    wall = (time.perf_counter() - t0) / args.steps
    load = os.getloadavg()[0]
    print(f"machine: {machine_description()}; load {load:.2f}")
    print(f"{args.model}, batch {args.batch}: {wall * 1e3:.0f} ms per step (1 minires thread, "
          f"instrumented), mean of {args.steps}")
    print(f"\n{'op':<34}{'ms/step':>9}")
    for key, t in sorted(_per_op.items(), key=lambda kv: -kv[1]):
        if t / args.steps >= 0.05e-3:
            print(f"{key:<34}{t / args.steps * 1e3:>9.1f}")
    print(f"\n{'kind of work':<38}{'ms/step':>9}{'share':>8}")
    accounted = 0.0
    for kind, t in sorted(_self_time.items(), key=lambda kv: -kv[1]):
        accounted += t
        print(f"{kind:<38}{t / args.steps * 1e3:>9.1f}{t / args.steps / wall:>7.0%}")
    rest = wall - accounted / args.steps
    print(f"{'Python overhead (graph, modules)':<38}{rest * 1e3:>9.1f}{rest / wall:>7.0%}")


if __name__ == "__main__":
    main()
