"""Winograd F(2x2, 3x3) against the default conv paths on ResNet-20's 3x3 stride-1 shapes.

    python benchmarks/bench_winograd.py                  # batch 128, float32, median of 7
    python benchmarks/bench_winograd.py --sweep          # also Winograd's chunk size sweep
    python benchmarks/bench_winograd.py --extra          # also shapes outside ResNet-20

For each shape (C_in = C_out, H = W, padding 1) it times, in ms per call:
  forward   the default forward path (conv_fast.forward_path with use_winograd(False):
            forward_side_by_side)  vs  forward_winograd
  dx        the default backward path with dx only (backward_transposed_side_by_side,
            need_w=False)  vs  Winograd's dx
  dx+dW     the default backward path with both (what training runs)  vs
            backward_winograd (dx by Winograd, dW by conv_fast.backward_columns)
The default and Winograd calls alternate in one process, so a noisy neighbour slows both
alike; each figure is the median of the repeats after one warm-up round. Inputs are
made once per shape (the calls do not modify them). ``--sweep`` times Winograd's forward
and dx for several chunk sizes (bytes of transformed tiles V and products M per chunk).

Figures (AMD EPYC, 2 CPUs, 1 MiB L2 per core; OpenBLAS 0.3.31 on one thread per worker,
2 workers; batch 128, float32, median of 9, ms; "cores" 1.8-1.9 = the machine was ours):

    shape           fwd default  winograd  ratio   dx ratio   dx+dW default  winograd  ratio
    16ch 32x32              4.7       5.3   0.88       0.89             8.9      10.9   0.82
    32ch 16x16              3.9       4.1   0.96       0.97             7.6       9.0   0.84
    64ch 8x8                3.6       3.9   0.92       0.92             7.0       8.2   0.85
    32ch 32x32             13.8      12.8   1.08       1.10            27.7      28.5   0.97
    64ch 16x16             12.9      10.4   1.24       1.23            25.7      25.5   1.01
    64ch 32x32             52.3      41.0   1.27       1.29           100.2      95.5   1.05
    128ch 4x4               4.4       6.3   0.70       0.69             8.6      12.0   0.71
    128ch 8x8              13.0      12.0   1.09       1.08            25.9      27.4   0.95
    128ch 16x16            47.0      32.2   1.46       1.44            93.7      83.4   1.12
    256ch 4x4              15.2      18.9   0.80       0.79            31.2      38.2   0.82
    256ch 8x8              46.9      37.1   1.26       1.26            96.3      91.9   1.05

Three such runs agreed to within about 0.1 in each ratio (128ch 8x8 forward: 1.09-1.15,
64ch 32x32 dx+dW: 1.05-1.13). ResNet-20's three shapes (the first three rows) lose: at
16-64 channels the transforms' passes over memory cost more than the GEMM saves, and at 8x8
the wrap-around extra tile adds 25%; 4x4 adds 50% and loses even at 256 channels.
On one core (a busy machine) Winograd does relatively better (64ch 8x8: 1.11), since
its extra memory traffic then competes with nothing. The chunk sweep: 2-4 MiB best
(layer1 forward: 7.1 ms at 2 MiB, 5.9 at 4 MiB), 1 MiB and below up to 2.4x slower
(one image per chunk: per-call overheads), 8-16 MiB up to 1.5x, the whole batch
1.7-3.6x slower.
conv_fast's WINOGRAD_WINS / WINOGRAD_WINS_WITH_DW follow this table.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from functools import partial

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from conv_layers import machine_description  # noqa: E402

import minires as mr  # noqa: E402
from minires.functional import conv_fast, conv_select, winograd  # noqa: E402
from minires.functional.windows import conv_settings  # noqa: E402

# (name, C = C_in = C_out, H = W, how many such convs in ResNet-20): the 3x3 stride-1 ones
SHAPES = [("layer1.*", 16, 32, 6), ("layer2.*", 32, 16, 5), ("layer3.*", 64, 8, 5)]
# --extra: shapes outside ResNet-20, to tell the effect of channels from that of image size
EXTRA_SHAPES = [("extra", C, HW, 0) for C, HW in [(16, 8), (32, 32), (64, 16), (64, 32),
                                                  (128, 4), (128, 8), (128, 16), (256, 4),
                                                  (256, 8)]]


def median_ms(calls, repeats):
    """{name: median ms} of each call in ``calls`` ({name: fn}), the calls alternating."""
    times = {name: [] for name in calls}
    for r in range(repeats + 1):
        for name, fn in calls.items():
            t0 = time.perf_counter()
            fn()
            if r:                                           # round 0 warms up
                times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(t) * 1e3 for name, t in times.items()}


def inputs(C, HW, batch, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, C, HW, HW), dtype=np.float32)
    w = (rng.standard_normal((C, C, 3, 3), dtype=np.float32) * 0.1).astype(np.float32)
    gy = rng.standard_normal((batch, C, HW, HW), dtype=np.float32)
    return x, w, gy


def shape_calls(x, w, gy, s, chunk_bytes=None):
    """The six timed calls of one shape: default and Winograd, forward / dx / dx+dW. The
    default is the path conv_fast's policy picks with Winograd switched off."""
    previous = conv_fast.use_winograd(False)
    fwd, bwd = conv_fast.forward_path(x, w, s), conv_fast.backward_path(x, w, s, True)
    conv_fast.use_winograd(previous)
    return {
        "fwd default": lambda: fwd(x, w, s),
        "fwd winograd": lambda: winograd.forward_winograd(x, w, s, chunk_bytes),
        "dx default": lambda: bwd(gy, x, w, s, True, False),
        "dx winograd": lambda: conv_fast.backward_winograd(gy, x, w, s, True, False, chunk_bytes),
        "dxdW default": lambda: bwd(gy, x, w, s, True, True),
        "dxdW winograd": lambda: conv_fast.backward_winograd(gy, x, w, s, True, True, chunk_bytes),
    }


def max_rel_error(x, w, s):
    """max |winograd - reference| / max |reference| of the float32 forward, the float64
    default path as the reference."""
    want = conv_fast.forward_side_by_side(x.astype(np.float64), w.astype(np.float64), s)
    got = winograd.forward_winograd(x, w, s)
    return float(np.abs(got - want).max() / np.abs(want).max())


def sweep(args, s):
    print(f"\nWinograd chunk size sweep (forward / dx ms, median of {args.repeats})")
    sizes = [1 << 19, 1 << 20, 2 << 20, 4 << 20, 8 << 20, 16 << 20, 1 << 62]
    print(f"{'shape':<14}" + "".join(f"{_size_name(b):>16}" for b in sizes))
    for name, C, HW, _ in SHAPES:
        x, w, gy = inputs(C, HW, args.batch)
        calls = {}
        for b in sizes:
            calls[f"f{b}"] = partial(winograd.forward_winograd, x, w, s, b)
            calls[f"d{b}"] = partial(conv_fast.backward_winograd, gy, x, w, s, True, False, b)
        t = median_ms(calls, args.repeats)
        print(f"{name:<14}" + "".join(f"{t[f'f{b}']:>7.1f} /{t[f'd{b}']:>7.1f}" for b in sizes))


def _size_name(b):
    return "whole batch" if b >= 1 << 40 else f"{b >> 10} KiB" if b < 1 << 20 else f"{b >> 20} MiB"


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--sweep", action="store_true", help="also sweep Winograd's chunk size")
    parser.add_argument("--extra", action="store_true", help="also shapes outside ResNet-20")
    args = parser.parse_args()
    settings = mr.use_speed_settings()  # threads and memory, as the command lines set them
    print(f"machine: {machine_description()}; threads: {settings['threads']}; "
          f"load average {os.getloadavg()[0]:.2f}")
    print(f"conv2d 3x3 stride 1 padding 1, C_in = C_out, batch {args.batch}, float32, "
          f"median of {args.repeats} (ms); chunk bytes = {conv_select.get_chunk_bytes()}")
    s = conv_settings(1, 1)
    cols = ["fwd", "dx", "dxdW"]
    print(f"{'shape':<22}" + "".join(f"{c + ' default':>15}{c + ' winograd':>16}{'ratio':>7}"
                                     for c in cols) + f"{'f32 rel err':>13}{'cores':>7}")
    for name, C, HW, _ in SHAPES + (EXTRA_SHAPES if args.extra else []):
        x, w, gy = inputs(C, HW, args.batch)
        cpu0, wall0 = time.process_time(), time.perf_counter()
        t = median_ms(shape_calls(x, w, gy, s), args.repeats)
        cores = (time.process_time() - cpu0) / (time.perf_counter() - wall0)
        row = f"{name + f' {C}ch {HW}x{HW}':<22}"
        for c in cols:
            d, g = t[f"{c} default"], t[f"{c} winograd"]
            row += f"{d:>15.1f}{g:>16.1f}{d / g:>7.2f}"
        print(row + f"{max_rel_error(x[:8], w, s):>13.1e}{cores:>7.2f}")
    print("ratio = default / winograd (> 1: Winograd faster); cores = CPU time / wall time "
          f"of the row (below the thread count: a neighbour took CPU); load average now "
          f"{os.getloadavg()[0]:.2f}")
    if args.sweep:
        sweep(args, s)


if __name__ == "__main__":
    main()
