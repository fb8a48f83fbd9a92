"""Convolution GFLOP/s against the machine's single-precision GEMM rate (the practical ceiling).

    python benchmarks/gemm_ceiling.py              # batch 128, ResNet-20 3x3 shapes

The ceiling: float32 GEMM of 2048 x 2048 matrices, measured three ways --
  BLAS 1 thread;
  one GEMM per core on minires' CPU threads (BLAS single-threaded), the way conv2d runs;
  BLAS on all cores (OpenBLAS's own threading), when the setter is available.
Then, for every ResNet-20 convolution shape, forward and forward+backward time of
minires' conv2d (default settings) and its rate in GFLOP/s, counting 2*MACs of the
useful work (forward: 2*N*C_out*OH*OW*C_in*KH*KW; backward: twice that, dx and dW; the
first layer needs no dx). Last, the step's GEMM shapes under each OpenBLAS kernel
(OpenBLAS' own pick, Haswell, SkylakeX) and both orientations of the weight gradient
(``python -m minires.blas_kernel --refresh``).

The practical peak is the best 2048^3 SGEMM rate: /proc/cpuinfo's MHz is not the clock the
cores run at under load, so the ceiling is measured, not computed from a nominal clock.
"""
from __future__ import annotations

import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from conv_layers import RESNET20_CONVS, machine_description

import minires as mr
import minires.functional as F
from minires import blas_kernel
from minires.functional import parallel


def best_of(fn, repeats=5):
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times), statistics.median(times)


def gemm_rates(n=2048):
    rng = np.random.default_rng(0)
    mats = [(rng.standard_normal((n, n), dtype=np.float32),
             rng.standard_normal((n, n), dtype=np.float32)) for _ in range(2)]
    flops = 2 * n ** 3
    rates = {}
    setter = parallel.openblas_setter()
    threads = max(1, parallel.num_threads())
    if setter:
        setter(1)
    rates["BLAS 1 thread"] = flops / best_of(lambda: mats[0][0] @ mats[0][1])[0]

    def one_per_core():
        parallel.run_chunks(lambda i, _: mats[i % 2][0] @ mats[i % 2][1],
                            [(i, i + 1) for i in range(threads)])
    if threads > 1:
        rates[f"{threads} GEMMs on minires' {threads} threads"] = (
            threads * flops / best_of(one_per_core)[0])
    if setter:
        setter(os.cpu_count() or 1)
        rates[f"BLAS {os.cpu_count()} threads"] = (
            flops / best_of(lambda: mats[0][0] @ mats[0][1])[0])
        setter(1 if threads > 1 else (os.cpu_count() or 1))     # back to minires' choice
    return rates


def main():
    mr.use_speed_settings()              # threads and memory, as the command lines set them
    print(f"machine: {machine_description()}; load {os.getloadavg()[0]:.2f}; "
          f"minires CPU threads: {parallel.num_threads()}")
    rates = gemm_rates()
    for name, r in rates.items():
        print(f"sgemm 2048^3, {name:<32} {r / 1e9:7.1f} GFLOP/s")
    ceiling = max(rates.values())
    print(f"\nconv2d 3x3 pad 1, batch 128, float32 (min of 5); % of the best sgemm rate "
          f"({ceiling / 1e9:.0f} GFLOP/s)")
    print(f"{'layer':<16}{'shape':<22}{'fwd ms':>8}{'GF/s':>7}{'%':>5}{'fwd+bwd ms':>12}{'GF/s':>7}"
          f"{'%':>5}")
    rng = np.random.default_rng(0)

    def one_layer(name, C, O, HW, stride):
        N = 128
        OH = (HW + 2 - 3) // stride + 1
        x = mr.tensor(rng.standard_normal((N, C, HW, HW), dtype=np.float32),
                      requires_grad=name != "conv1")
        w = mr.tensor(rng.standard_normal((O, C, 3, 3), dtype=np.float32), requires_grad=True)
        gy = rng.standard_normal((N, O, OH, OH), dtype=np.float32)
        macs = N * O * OH * OH * C * 9

        def fwd():
            with mr.no_grad():
                F.conv2d(x, w, stride=stride, padding=1)

        def fwd_bwd():
            F.conv2d(x, w, stride=stride, padding=1).backward(gy)
            x.grad = w.grad = None
        tf, tb = best_of(fwd)[0], best_of(fwd_bwd)[0]
        flops_f = 2 * macs
        flops_b = flops_f * (3 if name != "conv1" else 2)
        print(f"{name:<16}{f'{C}->{O} @{HW} /{stride}':<22}"
              f"{tf * 1e3:>8.1f}{flops_f / tf / 1e9:>7.0f}"
              f"{flops_f / tf / ceiling:>5.0%}{tb * 1e3:>12.1f}{flops_b / tb / 1e9:>7.0f}"
              f"{flops_b / tb / ceiling:>5.0%}")


    for name, C, O, HW, stride, _count in RESNET20_CONVS:
        one_layer(name, C, O, HW, stride)

    # The same step's GEMM shapes under each OpenBLAS kernel and in both orientations of dW
    # (minires.blas_kernel: one subprocess per kernel, one BLAS thread, alternating rounds).
    print("\nGEMM rates per shape, OpenBLAS kernel and orientation, 1 thread (GFLOP/s):")
    blas_kernel.main(["--refresh"])

if __name__ == "__main__":
    try:                                     # the OpenBLAS kernel the command lines run
        from minires.blas_kernel import rerun_with_fastest_kernel
        rerun_with_fastest_kernel()
    except ImportError:                      # an older minires (comparing versions)
        pass
    main()
