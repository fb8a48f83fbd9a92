"""Forward and backward time of each layer of ResNet-20, separately, minires against PyTorch CPU.

    python benchmarks/bench_layers.py                 # batch 128, min of 7
    python benchmarks/bench_layers.py --no-torch

For every distinct ResNet-20 shape: conv2d (3x3, padding 1), batch norm (training mode)
and ReLU; then global average pooling + linear + cross-entropy (the head and the loss).
Forward is timed on its own; backward is the time of ``y.backward(gy)`` after a
forward (so it includes the graph walk for that one op). The libraries alternate in one
process; each figure is the minimum over the repeats (the least disturbed run), in ms.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from conv_layers import RESNET20_CONVS, machine_description, optional_torch

import minires as mr
import minires.functional as F


def fwd_bwd_times(forward, make_inputs, repeats, backward_of):
    """(forward ms, backward ms), minimum over ``repeats`` after one warm-up round."""
    tf, tb = [], []
    for _ in range(repeats + 1):
        inputs = make_inputs()
        t0 = time.perf_counter()
        y = forward(*inputs)
        t1 = time.perf_counter()
        backward_of(y)
        t2 = time.perf_counter()
        tf.append(t1 - t0)
        tb.append(t2 - t1)
    return min(tf[1:]) * 1e3, min(tb[1:]) * 1e3


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--no-torch", action="store_true")
    args = parser.parse_args()
    mr.use_speed_settings()              # threads and memory, as the command lines set them
    torch = optional_torch(args.no_torch)
    N = args.batch
    print(f"machine: {machine_description()}; load {os.getloadavg()[0]:.2f}")
    print(f"batch {N}, float32, min of {args.repeats} (ms)")
    head = f"{'layer':<34}{'mr fwd':>8}{'mr bwd':>8}"
    if torch:
        head += f"{'torch fwd':>10}{'torch bwd':>10}{'fwd ratio':>10}{'bwd ratio':>10}"
    print(head)
    rng = np.random.default_rng(0)

    def row(name, mr_times, torch_times):
        line = f"{name:<34}{mr_times[0]:>8.2f}{mr_times[1]:>8.2f}"
        if torch_times:
            line += (f"{torch_times[0]:>10.2f}{torch_times[1]:>10.2f}"
                     f"{mr_times[0] / torch_times[0]:>9.2f}x{mr_times[1] / torch_times[1]:>9.2f}x")
        print(line, flush=True)

    def mr_backward(gy):
        return lambda y: y.backward(gy)

    def torch_backward(gy):
        return lambda y: y.backward(gy)

    shapes_done = set()

    def one_shape(name, C, O, HW, stride):
        """conv of this shape; batch norm and ReLU of its output shape, the first time."""
        OH = (HW + 2 - 3) // stride + 1
        x_np = rng.standard_normal((N, C, HW, HW), dtype=np.float32)
        w_np = rng.standard_normal((O, C, 3, 3), dtype=np.float32) * np.float32(0.1)
        gy_np = rng.standard_normal((N, O, OH, OH), dtype=np.float32)
        need_x = name != "conv1"
        w = mr.tensor(w_np, requires_grad=True)
        mr_t = fwd_bwd_times(lambda x: F.conv2d(x, w, stride=stride, padding=1),
                             lambda: (mr.tensor(x_np, requires_grad=need_x),), args.repeats,
                             mr_backward(gy_np))
        t_t = None
        if torch:
            tw = torch.from_numpy(w_np.copy()).requires_grad_()
            t_t = fwd_bwd_times(
                lambda x: torch.nn.functional.conv2d(x, tw, stride=stride, padding=1),
                lambda: (torch.from_numpy(x_np.copy()).requires_grad_(need_x),), args.repeats,
                torch_backward(torch.from_numpy(gy_np)))
        row(f"conv {name} {C}->{O} @{HW} /{stride}", mr_t, t_t)
        # batch norm and ReLU on this conv's output shape
        shape = (N, O, OH, OH)
        if shape in shapes_done:
            return
        shapes_done.add(shape)
        a_np = rng.standard_normal(shape, dtype=np.float32)
        g_np = rng.standard_normal(shape, dtype=np.float32)
        bn_w, bn_b = mr.tensor(np.ones(O, np.float32), requires_grad=True), \
            mr.tensor(np.zeros(O, np.float32), requires_grad=True)
        rm, rv = np.zeros(O, np.float32), np.ones(O, np.float32)
        mr_t = fwd_bwd_times(lambda a: F.batch_norm(a, rm, rv, bn_w, bn_b, training=True),
                             lambda: (mr.tensor(a_np, requires_grad=True),), args.repeats,
                             mr_backward(g_np))
        if torch:
            tbw = torch.ones(O, requires_grad=True)
            tbb = torch.zeros(O, requires_grad=True)
            trm, trv = torch.zeros(O), torch.ones(O)
            t_t = fwd_bwd_times(
                lambda a: torch.nn.functional.batch_norm(a, trm, trv, tbw, tbb, training=True),
                lambda: (torch.from_numpy(a_np.copy()).requires_grad_(),), args.repeats,
                torch_backward(torch.from_numpy(g_np)))
        row(f"batch norm {O} @{OH}", mr_t, t_t)
        mr_t = fwd_bwd_times(F.relu, lambda: (mr.tensor(a_np, requires_grad=True),),
                             args.repeats, mr_backward(g_np))
        if torch:
            t_t = fwd_bwd_times(torch.relu,
                                lambda: (torch.from_numpy(a_np.copy()).requires_grad_(),),
                                args.repeats, torch_backward(torch.from_numpy(g_np)))
        row(f"relu {O} @{OH}", mr_t, t_t)

    for name, C, O, HW, stride, _count in RESNET20_CONVS:
        one_shape(name, C, O, HW, stride)

    # head: global average pool + linear + cross-entropy
    feat_np = rng.standard_normal((N, 64, 8, 8), dtype=np.float32)
    fc_w_np = rng.standard_normal((10, 64), dtype=np.float32) * np.float32(0.1)
    labels = rng.integers(0, 10, N)
    fc_w, fc_b = mr.tensor(fc_w_np, requires_grad=True), mr.tensor(np.zeros(10, np.float32),
                                                                   requires_grad=True)

    def mr_head(f):
        logits = F.linear(F.flatten(F.adaptive_avg_pool2d(f, 1), 1), fc_w, fc_b)
        return F.cross_entropy(logits, labels)
    mr_t = fwd_bwd_times(mr_head, lambda: (mr.tensor(feat_np, requires_grad=True),),
                         args.repeats, lambda y: y.backward())
    t_t = None
    if torch:
        tfc_w = torch.from_numpy(fc_w_np.copy()).requires_grad_()
        tfc_b = torch.zeros(10, requires_grad=True)
        tlabels = torch.from_numpy(labels.astype(np.int64))

        def torch_head(f):
            logits = torch.nn.functional.linear(
                torch.flatten(torch.nn.functional.adaptive_avg_pool2d(f, 1), 1), tfc_w, tfc_b)
            return torch.nn.functional.cross_entropy(logits, tlabels)
        t_t = fwd_bwd_times(torch_head,
                            lambda: (torch.from_numpy(feat_np.copy()).requires_grad_(),),
                            args.repeats, lambda y: y.backward())
    row("avgpool + fc + cross-entropy", mr_t, t_t)


if __name__ == "__main__":
    try:                                     # the OpenBLAS kernel the command lines run
        from minires.blas_kernel import rerun_with_fastest_kernel
        rerun_with_fastest_kernel()
    except ImportError:                      # an older minires (comparing versions)
        pass
    main()
