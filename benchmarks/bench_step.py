"""A whole training step (and eval throughput), minires against PyTorch CPU, in one process.

    python benchmarks/bench_step.py                       # resnet20, resnet56,
                                                          # preact_resnet29 (bottleneck)
    python benchmarks/bench_step.py --models resnet20 --repeats 9
    python benchmarks/bench_step.py --no-torch            # minires only

One training step = zero_grad, forward, cross-entropy, backward, SGD (momentum 0.9,
weight decay 5e-4, lr 0.1), batch 128 of float32 32x32x3 images. The two libraries run
alternately (minires, torch, minires, ...), so a noisy neighbour slows both alike; each
figure is the median of ``--repeats`` timed steps after a warm-up. Eval throughput is
images per second of ``model.eval()`` forward passes under no_grad (torch.no_grad()) of a
batch of ``--eval-batch`` images (256); "fused" is what ``minires.train.evaluate`` runs: the
model with batch norm folded into the convolutions (``minires.nn.utils.fuse_conv_bn``,
folded once, outside the timing). The eval ratio is minires' (fused) images/s over torch's
(1.00 = as fast; above 1: minires faster).

The PyTorch models are written here with the same layouts as minires.models (CIFAR
BasicBlock with option-A shortcuts; pre-activation bottlenecks with a bare 1x1
projection on the raw input): same shapes and FLOPs, not the same weights.
The machine's load average is printed with the figures: on a shared 2-core machine,
re-run when it is quiet. Under load, multi-threaded PyTorch (OpenMP) and OpenBLAS spin
while waiting for a busy core and slow down by several times (PyTorch ResNet-20 measured
3.5 s per step on 2 threads vs 0.9 s on 1 thread at a load of 3); ``--num-threads 1`` gives
a fair comparison then.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from conv_layers import machine_description, optional_torch

import minires as mr
import minires.functional as F

try:
    from minires.functional import parallel
except ImportError:          # an older minires (comparing versions): no CPU threads of its own
    parallel = None

# name -> (minires builder, torch builder arguments)
MODELS = {
    "resnet20": (lambda: mr.models.resnet20(), ("basic", 3)),
    "resnet56": (lambda: mr.models.resnet56(), ("basic", 9)),
    "preact_resnet29": (lambda: mr.models.preact_resnet(29, bottleneck=True),
                        ("preact_bottleneck", 3)),
}


def load_average():
    try:
        return os.getloadavg()[0]
    except OSError:  # pragma: no cover
        return float("nan")


# --- the PyTorch counterparts ------------------------------------------------------------
def torch_model(torch, kind, n, num_classes=10):
    nn = torch.nn

    class ShortcutA(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.extra, self.stride = cout - cin, stride

        def forward(self, x):
            x = x[:, :, ::self.stride, ::self.stride]
            b = self.extra // 2
            return nn.functional.pad(x, (0, 0, 0, 0, b, self.extra - b))

    class Basic(nn.Module):
        expansion = 1

        def __init__(self, cin, planes, stride):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(planes)
            self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(planes)
            self.short = (nn.Identity() if stride == 1 and cin == planes
                          else ShortcutA(cin, planes, stride))

        def forward(self, x):
            out = torch.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            return torch.relu(out + self.short(x))

    class PreActBottleneck(nn.Module):
        expansion = 4

        def __init__(self, cin, planes, stride):
            super().__init__()
            out = planes * 4
            self.bn1, self.conv1 = nn.BatchNorm2d(cin), nn.Conv2d(cin, planes, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(planes)
            self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
            self.bn3, self.conv3 = nn.BatchNorm2d(planes), nn.Conv2d(planes, out, 1, bias=False)
            self.short = (nn.Identity() if stride == 1 and cin == out
                          else nn.Conv2d(cin, out, 1, stride, bias=False))

        def forward(self, x):
            o = self.conv1(torch.relu(self.bn1(x)))
            o = self.conv2(torch.relu(self.bn2(o)))
            o = self.conv3(torch.relu(self.bn3(o)))
            return o + self.short(x)

    block = Basic if kind == "basic" else PreActBottleneck
    preact = kind != "basic"
    layers = [nn.Conv2d(3, 16, 3, 1, 1, bias=False)]
    if not preact:
        layers += [nn.BatchNorm2d(16), nn.ReLU()]
    cin = 16
    for i, planes in enumerate((16, 32, 64)):
        for j in range(n):
            layers.append(block(cin, planes, 2 if (i and not j) else 1))
            cin = planes * block.expansion
    if preact:
        layers += [nn.BatchNorm2d(cin), nn.ReLU()]
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, num_classes)]
    return nn.Sequential(*layers)


# --- one step of each -----------------------------------------------------------------------
def make_minires(name, x_np, y_np, x_eval_np):
    model = MODELS[name][0]()
    model.train()
    opt = mr.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    x, x_eval = mr.tensor(x_np), mr.tensor(x_eval_np)

    def step():
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y_np)
        loss.backward()
        opt.step()

    def infer():
        model.eval()
        with mr.no_grad():
            model(x_eval)
        model.train()

    fuse = getattr(mr.nn.utils, "fuse_conv_bn", None)     # absent in older trees
    fused = None if fuse is None else fuse(model.eval())
    model.train()

    def infer_fused():
        with mr.no_grad():
            fused(x_eval)
    return step, infer, (infer_fused if fused is not None else None)


def make_torch(torch, name, x_np, y_np, x_eval_np):
    model = torch_model(torch, *MODELS[name][1])
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    x, y = torch.from_numpy(x_np.copy()), torch.from_numpy(y_np.astype(np.int64))
    x_eval = torch.from_numpy(x_eval_np.copy())

    def step():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()

    def infer():
        model.eval()
        with torch.no_grad():
            model(x_eval)
        model.train()
    return step, infer, None


def timed_with_blas_threads(fn):
    """``fn`` timed with minires' conv pool on one thread and OpenBLAS threading each GEMM
    over every core instead (set before, put back after, outside the timing)."""
    workers = parallel.num_threads()
    parallel.set_num_threads(1)
    parallel.set_blas_threads(os.cpu_count() or 1)
    try:
        return timed(fn)
    finally:
        parallel.set_blas_threads(1)
        parallel.set_num_threads(workers)


def timed(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--eval-batch", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-torch", action="store_true")
    parser.add_argument("--no-eval", action="store_true")
    parser.add_argument("--eval-blas-threads", action="store_true",
                        help="also time the fused eval with OpenBLAS threading each GEMM over "
                             "every core and minires' pool on one thread")
    parser.add_argument("--num-threads", type=int, default=None,
                        help="threads for both libraries (minires' CPU threads with BLAS on "
                             "one thread, torch's intra-op threads); 1 is the fair choice on "
                             "a loaded machine")
    args = parser.parse_args()
    mr.use_speed_settings()              # threads and memory, as the command lines set them
    torch = optional_torch(args.no_torch)
    if args.num_threads:
        if parallel:
            parallel.set_num_threads(args.num_threads)
            parallel.set_blas_threads(1)
        if torch:
            torch.set_num_threads(args.num_threads)
    threads = parallel.num_threads() if parallel else "no"
    versions = f"numpy {np.__version__}, minires {threads} CPU threads"
    if torch:
        versions += f", torch {torch.__version__} ({torch.get_num_threads()} threads)"
    print(f"machine: {machine_description()}; {versions}")
    print(f"training step (SGD momentum 0.9, wd 5e-4), batch {args.batch}, float32, median of "
          f"{args.repeats}; eval: images/s of forward under no_grad, batch {args.eval_batch}")
    print(f"{'model':<18}{'minires s':>11}{'torch s':>10}{'ratio':>8}{'minires img/s':>15}"
          f"{'fused img/s':>13}{'torch img/s':>13}{'eval ratio':>12}{'load':>7}")
    rng = np.random.default_rng(0)
    x_np = rng.standard_normal((args.batch, 3, 32, 32), dtype=np.float32)
    y_np = rng.integers(0, 10, args.batch)
    x_eval_np = rng.standard_normal((args.eval_batch, 3, 32, 32), dtype=np.float32)
    for name in args.models:
        load0 = load_average()
        libs = {"minires": make_minires(name, x_np, y_np, x_eval_np)}
        if torch:
            libs["torch"] = make_torch(torch, name, x_np, y_np, x_eval_np)
        steps = {k: [] for k in libs}
        evals = {k: [] for k in [*libs, "fused"]}
        blas_eval = args.eval_blas_threads and parallel is not None and not args.no_eval
        if blas_eval:
            evals["fused, BLAS threads"] = []
        for rep in range(args.repeats + 1):          # round 0 warms up and is dropped
            for lib, (step, infer, infer_fused) in libs.items():
                t = timed(step)
                te = None if args.no_eval else timed(infer)
                tf = None if args.no_eval or infer_fused is None else timed(infer_fused)
                tb = None
                if blas_eval and lib == "minires" and infer_fused is not None:
                    tb = timed_with_blas_threads(infer_fused)
                if rep:
                    steps[lib].append(t)
                    if te is not None:
                        evals[lib].append(te)
                    if tf is not None:
                        evals["fused"].append(tf)
                    if tb is not None:
                        evals["fused, BLAS threads"].append(tb)
        med = {k: statistics.median(v) for k, v in steps.items()}
        ips = {k: args.eval_batch / statistics.median(v) for k, v in evals.items() if v}
        load = max(load0, load_average())
        row = f"{name:<18}{med['minires']:>11.3f}"
        row += (f"{med['torch']:>10.3f}{med['minires'] / med['torch']:>7.2f}x" if torch
                else f"{'':>18}")
        best = ips.get("fused", ips.get("minires"))
        row += f"{ips['minires']:>15.0f}" if "minires" in ips else f"{'':>15}"
        row += f"{ips['fused']:>13.0f}" if "fused" in ips else f"{'-':>13}"
        row += (f"{ips['torch']:>13.0f}{best / ips['torch']:>12.2f}" if "torch" in ips
                else f"{'':>25}")
        print(row + f"{load:>7.2f}", flush=True)
        if "fused, BLAS threads" in ips and "torch" in ips:
            b = ips["fused, BLAS threads"]
            print(f"{'':<18}fused eval with minires' pool on 1 thread and OpenBLAS on "
                  f"{os.cpu_count()}: {b:.0f} img/s, {b / ips['torch']:.2f}x torch's", flush=True)


if __name__ == "__main__":
    try:                                     # the OpenBLAS kernel the command lines run
        from minires.blas_kernel import rerun_with_fastest_kernel
        rerun_with_fastest_kernel()
    except ImportError:                      # an older minires (comparing versions)
        pass
    main()
