"""Time conv2d forward + backward on every ResNet-20 layer shape, minires against PyTorch CPU.

    python benchmarks/conv_layers.py                 # batch 128, median of 7, torch if installed
    python benchmarks/conv_layers.py --variants      # also the alternatives listed below
    python benchmarks/conv_layers.py --threads 1     # one BLAS / torch thread for both

Both libraries run in this one process, alternating (minires, torch, minires, ...), so a
noisy neighbour slows both alike; each figure is the median of the repeats. The input
gradient is computed for every layer except the first (whose input is the image), as
in training. ``--variants`` adds alternatives to minires' default (the fast conv2d,
minires/functional/conv_fast.py: chunks of a few images, columns recomputed in backward):
  whole-recompute   im2col of the whole batch at once, recomputed in backward
  whole-keep        im2col of the whole batch at once, kept from forward for backward
  reference         the reference conv2d of conv.py (im2col, one matmul, col2im)
which are the measurements behind the choices documented in conv_fast.py.
"whole-keep" also needs the columns of every layer in memory until its backward: the
table's last line says how much that is for the 19 convolutions of ResNet-20.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

# --threads N must reach OpenBLAS before NumPy loads it
if "--threads" in sys.argv[:-1]:
    _n = sys.argv[sys.argv.index("--threads") + 1]
    for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[_var] = _n

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import minires as mr  # noqa: E402  (after the sys.path line)
from minires.autograd import Function  # noqa: E402
from minires.functional import conv_fast, conv_select  # noqa: E402
from minires.functional.conv import Conv2d  # noqa: E402
from minires.functional.conv_fast import FastConv2d  # noqa: E402
from minires.functional.conv_layouts import col2im_batch, im2col_batch  # noqa: E402
from minires.functional.windows import batch_grid_width, conv_output_size, conv_settings  # noqa: E402

# (name, C_in, C_out, H=W of the input, stride, how many convs of this shape in ResNet-20)
RESNET20_CONVS = [
    ("conv1",          3, 16, 32, 1, 1),
    ("layer1.*",      16, 16, 32, 1, 6),
    ("layer2.0.conv1", 16, 32, 32, 2, 1),
    ("layer2.*",      32, 32, 16, 1, 5),
    ("layer3.0.conv1", 32, 64, 16, 2, 1),
    ("layer3.*",      64, 64,  8, 1, 5),
]


WHOLE_BATCH = 1 << 62        # chunk_bytes: the whole batch is one chunk


class Conv2dWholeBatch(Function):
    """Variant: one chunk for the whole batch (columns of all images at once), recomputed.

    The fast conv2d's wide-grid forward and its columns backward for every stride (not
    the side-by-side layout or the transposed backward), so that it and Conv2dKeepCols
    differ only in keeping versus recomputing the columns. No bias, groups 1."""

    def __init__(self, stride=1, padding=0):
        super().__init__()
        self.settings = conv_settings(stride, padding)

    def forward(self, x, weight, bias):
        self.save_for_backward(x, weight)
        return conv_fast.forward_grid(x, weight, self.settings, chunk_bytes=WHOLE_BATCH)

    def backward(self, gy):
        x, weight = self.saved
        need_x, need_w = self.needs_input_grad[:2]
        return conv_fast.backward_columns(gy, x, weight, self.settings, need_x, need_w,
                                          chunk_bytes=WHOLE_BATCH) + (None,)


class Conv2dKeepCols(Conv2dWholeBatch):
    """Variant: one chunk for the whole batch, the columns KEPT from forward for backward."""

    def forward(self, x, weight, bias):
        s, (H, W), O = self.settings, x.shape[2:], weight.shape[0]
        OH, OW = conv_output_size(H, W, weight.shape[2:], s.stride, s.padding)
        cols = im2col_batch(x, weight.shape[2:], s.stride, s.padding)   # (C*KH*KW, N*OH*Wq)
        y = (weight.reshape(O, -1) @ cols).reshape(O, -1, OH, batch_grid_width(W, OW, s.stride,
                                                                               s.padding))
        self.save_for_backward(x, weight, cols)
        return np.ascontiguousarray(y[:, :, :, :OW].transpose(1, 0, 2, 3))   # (N, C_out, OH, OW)

    def backward(self, gy):
        x, weight, cols = self.saved
        need_x, need_w = self.needs_input_grad[:2]
        s, (N, O, OH, OW), W = self.settings, gy.shape, x.shape[3]
        g = np.zeros((O, N, OH, batch_grid_width(W, OW, s.stride, s.padding)), dtype=gy.dtype)
        g[:, :, :, :OW] = gy.transpose(1, 0, 2, 3)                  # zero in the cut-off columns
        g = g.reshape(O, -1)                                        # (C_out, N*OH*Wq)
        gw = (g @ cols.T).reshape(weight.shape) if need_w else None
        gx = col2im_batch(weight.reshape(O, -1).T @ g, x.shape, weight.shape[2:], s.stride,
                          s.padding) if need_x else None
        return gx, gw, None


def minires_step(fn_class, x, w, gy, stride):
    y = fn_class(stride=stride, padding=1)(x, w, None)
    y.backward(gy)
    x.grad = None
    w.grad = None


def torch_step(torch, x, w, gy, stride):
    y = torch.nn.functional.conv2d(x, w, None, stride=stride, padding=1)
    y.backward(gy)
    x.grad = None
    w.grad = None


def timed(fn, *args):
    t0 = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t0


def machine_description():
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    names = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
    threads = {k: os.environ[k] for k in names if k in os.environ}
    try:
        from minires.blas_kernel import core_name
        kernel = f", OpenBLAS kernel {core_name()}"
    except ImportError:          # an older minires (comparing versions)
        kernel = ""
    return f"{cpu}, {os.cpu_count()} CPUs{kernel}" + (f", {threads}" if threads else "")


def optional_torch(skip=False):
    """The torch module, or None (with a note) when ``skip`` or when it is not installed."""
    if skip:
        return None
    try:
        import torch
    except ImportError:
        print("(torch is not installed: minires only)")
        return None
    return torch


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--variants", action="store_true",
                        help="also time the other layouts / backward strategies")
    parser.add_argument("--no-torch", action="store_true")
    parser.add_argument("--threads", type=int, default=None,
                        help="BLAS / torch threads for both libraries (default: their own)")
    parser.add_argument("--chunk-bytes", type=int, default=None,
                        help="bytes of columns per chunk of the fast conv2d "
                             "(conv_select.set_chunk_bytes)")
    args = parser.parse_args()
    mr.use_speed_settings()              # threads and memory, as the command lines set them
    if args.chunk_bytes:
        conv_select.set_chunk_bytes(args.chunk_bytes)

    torch = optional_torch(args.no_torch)
    if torch and args.threads:
        torch.set_num_threads(args.threads)

    variants = [("minires", FastConv2d)]
    if args.variants:
        variants += [("whole-recompute", Conv2dWholeBatch), ("whole-keep", Conv2dKeepCols),
                     ("reference", Conv2d)]
    versions = f"numpy {np.__version__}"
    if torch:
        versions += f", torch {torch.__version__} ({torch.get_num_threads()} threads)"
    print(f"machine: {machine_description()}; {versions}")
    print(f"conv2d 3x3 padding 1, forward + backward, batch {args.batch}, float32, median of "
          f"{args.repeats} (ms); conv chunk bytes = {conv_select.get_chunk_bytes()}")
    header = f"{'layer':<16}{'C_in->C_out @HxW /stride':<26}{'count':>5}"
    header += "".join(f"{name:>16}" for name, _ in variants)
    if torch:
        header += f"{'torch':>10}{'minires/torch':>15}"
    print(header)

    rng = np.random.default_rng(0)
    totals = dict.fromkeys([name for name, _ in variants] + ["torch"], 0.0)
    kept_bytes = 0
    for name, C, O, HW, stride, count in RESNET20_CONVS:
        x_np = rng.standard_normal((args.batch, C, HW, HW), dtype=np.float32)
        w_np = rng.standard_normal((O, C, 3, 3), dtype=np.float32) * np.float32(0.1)
        OH = (HW + 2 - 3) // stride + 1
        gy_np = rng.standard_normal((args.batch, O, OH, OH), dtype=np.float32)
        kept_bytes += count * args.batch * C * 9 * OH * (HW + 2 if stride == 1 else OH) * 4
        needs_x = name != "conv1"               # the first layer's input is the image
        x = mr.tensor(x_np, requires_grad=needs_x)
        w = mr.tensor(w_np, requires_grad=True)
        times = {key: [] for key in totals}
        if torch:
            tx = torch.from_numpy(x_np.copy()).requires_grad_(needs_x)
            tw = torch.from_numpy(w_np.copy()).requires_grad_(True)
            tgy = torch.from_numpy(gy_np.copy())
        for rep in range(args.repeats + 1):     # round 0 warms up and is dropped
            for vname, cls in variants:
                t = timed(minires_step, cls, x, w, gy_np, stride)
                if rep:
                    times[vname].append(t)
            if torch:
                t = timed(torch_step, torch, tx, tw, tgy, stride)
                if rep:
                    times["torch"].append(t)
        medians = {key: statistics.median(v) * 1e3 for key, v in times.items() if v}
        for key, med in medians.items():
            totals[key] += med * count
        row = f"{name:<16}{f'{C}->{O} @{HW}x{HW} /{stride}':<26}{count:>5}"
        row += "".join(f"{medians[vname]:>16.1f}" for vname, _ in variants)
        if torch:
            row += f"{medians['torch']:>10.1f}{medians['minires'] / medians['torch']:>14.2f}x"
        print(row, flush=True)
    row = f"{'ResNet-20':<16}{'all 19 convs (x count)':<26}{'':>5}"
    row += "".join(f"{totals[vname]:>16.1f}" for vname, _ in variants)
    if torch:
        row += f"{totals['torch']:>10.1f}{totals['minires'] / totals['torch']:>14.2f}x"
    print(row)
    if args.variants:
        print(f"whole-keep holds the columns of all 19 layers until their backward: "
              f"{kept_bytes / 2**20:.0f} MiB at batch {args.batch}")


if __name__ == "__main__":
    main()
