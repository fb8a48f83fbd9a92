"""The peer table: one ResNet-20 training step in minires, PyTorch CPU, mygrad, tinygrad and
DeZero, timed in one process.

    python benchmarks/bench_peers.py                       # all five: about 3-4 minutes on 2 cores
    python benchmarks/bench_peers.py --frameworks minires,torch --rounds 20
    python benchmarks/bench_peers.py --batch 2 --rounds 1  # smoke test: does each one run?
    python benchmarks/bench_peers.py --batch 2 --check     # does each net learn? (3 steps)

What it measures: one training step of the CIFAR ResNet-20 of He et al. (2016) -- a 3x3
conv to 16 channels, three stages of three basic blocks (16, 32, 64 channels; batch norm
in training mode, ReLU, option-A identity shortcuts: stride-2 subsampling and zero-padded
extra channels), global average pool, linear 64 -> 10 -- on one fixed batch of ``--batch``
(128) float32 32x32x3 images: forward, softmax cross-entropy, backward, and one SGD update
with momentum 0.9 (lr 0.1, no weight decay). Each framework builds the net with its own
layers (each initialises it its own way: same architecture and shapes, not the same
weights); a framework whose trainable parameter count is not ResNet-20's (269,722) is
skipped with the reason.

The frameworks take turns, one step each per round (minires, torch, mygrad, ...), so a
noisy neighbour slows all of them alike; each figure is the median over the steps timed.
Warm-up steps (``--warmup``; tinygrad at least 3: its first step compiles every kernel,
its second captures the JIT, about a minute on a CPU) are not timed but reported in the
notes. A slow framework stops being timed once its timed steps add up to
``--max-seconds``, so it gets fewer rounds: the table gives the number of steps behind
each median. Every step returns its loss (a host sync, so tinygrad's queued work is
counted); all steps train on the same batch, so the loss should fall (the notes show the
first and the last).

Threads (``--threads``, default every core this process may use): minires' conv threads
with OpenBLAS on one thread (``mr.use_speed_settings``); torch's intra-op threads;
NumPy's OpenBLAS for mygrad and DeZero (set before each of their steps); tinygrad's
NUM_CPU_THREADS. DeZero 0.0.13 predates NumPy 2: it is imported behind a shim
(``np.int = int``), and since NumPy 2 promotes float32 with the 0-d float64 arrays that
DeZero makes of Python numbers, its ``as_array`` is patched to make them float32 (and its
loss is ``softmax_cross_entropy_simple``: the fused one's gradient is float64 through an
int64 one-hot); the notes say whether float32 held.
mygrad has layer functions but no modules or optimiser (the SGD update is written out
here), its batchnorm keeps no running statistics, and its conv_nd wants (H + 2 pad - 3)
divisible by the stride, so its two stride-2 convs get the top and left zero row and
column by hand (the same windows as torch's). tinygrad's CPU device compiles C with clang
(``apt-get install clang``); the step runs under TinyJit.

The output ends with a Markdown table for benchmarks/RESULTS.md: s/step, the ratios to
minires and to PyTorch (above 1: slower), and the machine (CPU, cores, load average at the
start and the end, thread settings). On a shared machine, re-run when it is quiet: under
load, PyTorch's OpenMP and OpenBLAS threads spin waiting for a busy core and slow down by
several times (``--threads 1`` is the fair comparison then).
"""
from __future__ import annotations

import argparse
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from conv_layers import machine_description

import minires as mr
import minires.functional as F
from minires.functional import parallel

FRAMEWORKS = ("minires", "torch", "mygrad", "tinygrad", "dezero")
WIDTHS = (16, 32, 64)            # channels of the three stages
BLOCKS_PER_STAGE = 3             # ResNet-20: 6n + 2 layers with n = 3
NUM_CLASSES = 10
LR, MOMENTUM = 0.1, 0.9


def block_plan():
    """(in channels, out channels, stride) of ResNet-20's nine basic blocks, in order."""
    cin = WIDTHS[0]
    for stage, cout in enumerate(WIDTHS):
        for i in range(BLOCKS_PER_STAGE):
            yield cin, cout, (2 if stage and not i else 1)
            cin = cout


def resnet20_param_count():
    """Trainable parameters: bias-free 3x3 convs, batch norm's scale and shift, linear."""
    count = 3 * WIDTHS[0] * 9 + 2 * WIDTHS[0]                     # stem conv + bn
    for cin, cout, _ in block_plan():
        count += cin * cout * 9 + cout * cout * 9 + 4 * cout     # two convs + two bns
    return count + WIDTHS[-1] * NUM_CLASSES + NUM_CLASSES       # 269,722


def he_normal(rng, shape):
    """He et al. (2015) normal init for a conv weight (out, in, kh, kw), float32."""
    fan_in = int(np.prod(shape[1:]))
    return (rng.standard_normal(shape) * math.sqrt(2.0 / fan_in)).astype(np.float32)


def option_a_padding(cin, cout):
    """Zero channels before and after the input's in an option-A shortcut (as torch pads)."""
    extra = cout - cin
    return extra // 2, extra - extra // 2


@dataclass
class Peer:
    """One framework's net, ready to train: ``step()`` runs one step and returns the loss."""
    name: str
    version: str
    step: Callable[[], float]
    params: int
    warmup: int = 1                                   # at least this many untimed steps
    before: Callable[[], None] = lambda: None         # its thread settings, before each step
    check: Callable[[], str] = lambda: ""             # a note checked after the run
    notes: list = field(default_factory=list)


# --- one builder per framework: the net, its optimiser and a step() closure ------------------
def build_minires(x, y, threads):
    model = mr.models.resnet20(num_classes=NUM_CLASSES, option="A")
    model.train()
    opt = mr.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
    xt = mr.tensor(x)

    def step():
        opt.zero_grad()
        loss = F.cross_entropy(model(xt), y)
        loss.backward()
        opt.step()
        return loss.item()

    def check():
        return float32_note([p.dtype for p in model.parameters()]
                            + [p.grad.dtype for p in model.parameters()])

    return Peer("minires", minires_version(), step,
                params=sum(p.numel() for p in model.parameters()),
                before=lambda: parallel.set_blas_threads(1), check=check)


def build_torch(x, y, threads):
    import torch
    from bench_step import torch_model  # the reference model of bench_step.py

    torch.set_num_threads(threads)
    model = torch_model(torch, "basic", BLOCKS_PER_STAGE, NUM_CLASSES)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
    xt, yt = torch.from_numpy(x.copy()), torch.from_numpy(y.astype(np.int64))

    def step():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(xt), yt)
        loss.backward()
        opt.step()
        return loss.item()

    def check():
        dtypes = [p.dtype for p in model.parameters()] + [p.grad.dtype for p in model.parameters()]
        return float32_note([str(d).replace("torch.", "") for d in dtypes])

    return Peer("PyTorch (CPU)", torch.__version__, step,
                params=sum(p.numel() for p in model.parameters()), check=check,
                notes=[f"{torch.get_num_threads()} intra-op threads"])


def build_mygrad(x, y, threads):
    """mygrad has the layer functions (conv_nd, batchnorm) but no modules or optimiser:
    the parameters are a list of tensors and the SGD update is written out here."""
    import mygrad as mg
    from mygrad.nnet import batchnorm, conv_nd, relu, softmax_crossentropy

    rng = np.random.default_rng(0)
    params = []

    def param(array):
        params.append(mg.tensor(array))
        return params[-1]

    def conv_bn(cin, cout):
        return (param(he_normal(rng, (cout, cin, 3, 3))),
                param(np.ones(cout, np.float32)), param(np.zeros(cout, np.float32)))

    def conv(h, w, stride):
        if stride == 1:
            return conv_nd(h, w, stride=1, padding=1)
        # conv_nd wants (H + 2 pad - 3) divisible by the stride; torch's stride-2 windows
        # never reach the bottom and right padding, so pad the top and left only
        n, c, height, width = h.shape
        h = mg.concatenate([np.zeros((n, c, 1, width), np.float32), h], axis=2)
        h = mg.concatenate([np.zeros((n, c, height + 1, 1), np.float32), h], axis=3)
        return conv_nd(h, w, stride=stride, padding=0)

    def apply(layer, h, stride=1):
        w, gamma, beta = layer
        return batchnorm(conv(h, w, stride), gamma=gamma, beta=beta, eps=1e-5)

    stem = conv_bn(3, WIDTHS[0])
    blocks = [(cin, cout, s, conv_bn(cin, cout), conv_bn(cout, cout))
              for cin, cout, s in block_plan()]
    fc_w = param((rng.standard_normal((WIDTHS[-1], NUM_CLASSES)) / 8).astype(np.float32))
    fc_b = param(np.zeros(NUM_CLASSES, np.float32))

    def shortcut(h, cin, cout, stride):
        if stride == 1 and cin == cout:
            return h
        h = h[:, :, ::stride, ::stride]
        before, after = option_a_padding(cin, cout)
        zeros = [np.zeros((h.shape[0], c, *h.shape[2:]), np.float32) for c in (before, after)]
        return mg.concatenate([zeros[0], h, zeros[1]], axis=1)

    def forward(h):
        h = relu(apply(stem, h))
        for cin, cout, stride, layer1, layer2 in blocks:
            out = apply(layer2, relu(apply(layer1, h, stride)))
            h = relu(out + shortcut(h, cin, cout, stride))
        return mg.matmul(h.mean(axis=(2, 3)), fc_w) + fc_b

    velocity = [np.zeros_like(p.data) for p in params]

    def step():
        loss = softmax_crossentropy(forward(x), y)
        loss.backward()
        for p, v in zip(params, velocity):                # torch's form: v = mu v + g
            v *= MOMENTUM
            v += p.grad
            p.data -= LR * v
        return loss.item()

    def check():
        return float32_note([p.dtype for p in params] + [p.grad.dtype for p in params])

    blas = numpy_blas_settings(threads)
    return Peer("mygrad", package_version("mygrad"), step,
                params=sum(p.size for p in params), before=blas[0], check=check,
                notes=[blas[1], "no batch-norm running stats"])


def build_tinygrad(x, y, threads):
    os.environ.setdefault("NUM_CPU_THREADS", str(threads))   # read when tinygrad is imported
    os.environ.setdefault("DEV", "CPU")                      # the CPU, even beside a GPU
    from tinygrad import Device, Tensor, TinyJit, dtypes, nn
    from tinygrad.helpers import NUM_CPU_THREADS, Context

    if shutil.which(os.environ.get("CC", "clang")) is None:
        raise RuntimeError("tinygrad's CPU device compiles C with clang, which is not "
                           "installed (apt-get install clang)")

    def conv_bn(cin, cout, stride=1):
        return nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm(cout)

    stem = conv_bn(3, WIDTHS[0])
    blocks = [(cin, cout, s, conv_bn(cin, cout, s), conv_bn(cout, cout))
              for cin, cout, s in block_plan()]
    fc = nn.Linear(WIDTHS[-1], NUM_CLASSES)

    def apply(layer, h):
        conv, bn = layer
        return bn(conv(h))

    def shortcut(h, cin, cout, stride):
        if stride == 1 and cin == cout:
            return h
        before, after = option_a_padding(cin, cout)
        return h[:, :, ::stride, ::stride].pad(((0, 0), (before, after), (0, 0), (0, 0)))

    def forward(h):
        h = apply(stem, h).relu()
        for cin, cout, stride, layer1, layer2 in blocks:
            out = apply(layer2, apply(layer1, h).relu())
            h = (out + shortcut(h, cin, cout, stride)).relu()
        return fc(h.mean(axis=(2, 3)))

    opt = nn.optim.SGD(nn.state.get_parameters([stem, blocks, fc]), lr=LR, momentum=MOMENTUM)
    xt, yt = Tensor(x).realize(), Tensor(y.astype(np.int32)).realize()

    @TinyJit
    def jit_step(xb, yb):
        opt.zero_grad()
        loss = forward(xb).sparse_categorical_crossentropy(yb).backward()
        return loss.realize(*opt.schedule_step())

    def step():
        with Context(TRAINING=1):                  # batch norm in training mode
            return jit_step(xt, yt).item()         # .item() waits for the queued kernels

    def check():
        return float32_note(["float32" if p.dtype == dtypes.float32 else p.dtype
                             for p in opt.params])

    return Peer("tinygrad", package_version("tinygrad"), step,
                params=sum(p.numel() for p in opt.params), warmup=3, check=check,
                notes=[f"device {Device.DEFAULT}, NUM_CPU_THREADS={NUM_CPU_THREADS.value}, "
                       "TinyJit"])


def build_dezero(x, y, threads):
    """DeZero's layers, behind the NumPy-2 shims described at the top."""
    shims = dezero_numpy2_shims()
    import dezero
    import dezero.functions as DF
    import dezero.layers as L

    class PadChannels(dezero.Function):
        """Zero channels before and after the input's (DeZero has no pad or concat)."""

        def __init__(self, before, after):
            self.before, self.after = before, after

        def forward(self, h):
            return np.pad(h, ((0, 0), (self.before, self.after), (0, 0), (0, 0)))

        def backward(self, gy):
            return gy[:, self.before:gy.shape[1] - self.after]

    net = dezero.Layer()                   # holds the layers: params(), cleargrads()

    def conv_bn(name, cin, cout, stride=1):
        setattr(net, name + "_conv", L.Conv2d(cout, 3, stride, 1, nobias=True, in_channels=cin))
        setattr(net, name + "_bn", L.BatchNorm())
        return getattr(net, name + "_conv"), getattr(net, name + "_bn")

    def apply(layer, h):
        conv, bn = layer
        return bn(conv(h))

    stem = conv_bn("stem", 3, WIDTHS[0])
    blocks = [(cin, cout, s, conv_bn(f"b{i}a", cin, cout, s), conv_bn(f"b{i}b", cout, cout))
              for i, (cin, cout, s) in enumerate(block_plan())]
    net.fc = L.Linear(NUM_CLASSES, in_size=WIDTHS[-1])

    def shortcut(h, cin, cout, stride):
        if stride == 1 and cin == cout:
            return h
        return PadChannels(*option_a_padding(cin, cout))(h[:, :, ::stride, ::stride])

    def forward(h):
        h = DF.relu(apply(stem, h))
        for cin, cout, stride, layer1, layer2 in blocks:
            out = apply(layer2, DF.relu(apply(layer1, h)))
            h = DF.relu(out + shortcut(h, cin, cout, stride))
        h = DF.average_pooling(h, h.shape[2])
        return net.fc(DF.reshape(h, (h.shape[0], -1)))

    with dezero.test_mode(), dezero.no_grad():
        forward(x[:1])                     # batch norm makes its parameters on first use
    for p in net.params():      # DeZero's init scales by a float64 NumPy scalar: float64
        p.data = p.data.astype(np.float32)                  # under NumPy 2
    trainable = [p for p in net.params() if p.name not in ("avg_mean", "avg_var")]
    opt = dezero.optimizers.MomentumSGD(lr=LR, momentum=MOMENTUM).setup(net)

    def step():
        net.cleargrads()
        loss = DF.softmax_cross_entropy_simple(forward(x), y)
        loss.backward()
        opt.update()
        return float(loss.data)

    def check():
        return float32_note([p.data.dtype for p in trainable]
                            + [p.grad.data.dtype for p in trainable])

    blas = numpy_blas_settings(threads)
    return Peer("DeZero", package_version("dezero"), step,
                params=sum(p.data.size for p in trainable), before=blas[0], check=check,
                notes=[blas[1], shims])


BUILDERS = {"minires": build_minires, "torch": build_torch, "mygrad": build_mygrad,
            "tinygrad": build_tinygrad, "dezero": build_dezero}


# --- helpers --------------------------------------------------------------------------------
def dezero_numpy2_shims():
    """What DeZero 0.0.13 needs on NumPy 2; returns the note that says so."""
    done = []
    if "int" not in np.__dict__:
        np.int = int                       # dezero.transforms' default argument
        done.append("np.int = int")
    import dezero.core

    if not getattr(dezero.core.as_array, "float32_shim", False):
        as_array = dezero.core.as_array

        def as_array_float32(x, array_module=np):
            """Python numbers become float32 0-d arrays (float64 ones promote under NumPy 2)."""
            if isinstance(x, (int, float)) and not isinstance(x, bool):
                return array_module.asarray(x, dtype=np.float32)
            return as_array(x, array_module)

        as_array_float32.float32_shim = True
        dezero.core.as_array = as_array_float32
        done.append("as_array -> float32")
    return "NumPy-2 shims: " + (", ".join(done) or "already applied")


def numpy_blas_settings(threads):
    """(before, note): set NumPy's OpenBLAS to ``threads`` before each step of a NumPy peer
    (minires keeps it at one thread for its own steps)."""
    if not parallel.set_blas_threads(1):            # (one: what minires runs under)
        return (lambda: None), "NumPy's BLAS (not OpenBLAS) as it is"
    return (lambda: parallel.set_blas_threads(threads)), f"NumPy's OpenBLAS on {threads} threads"


def float32_note(dtypes):
    """The note on the dtypes of a net's parameters and gradients after its steps."""
    found = sorted({str(d) for d in dtypes})
    return "float32 held" if found == ["float32"] else f"float32 did NOT hold: {found}"


def package_version(name):
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version(name)
    except PackageNotFoundError:
        return "?"


def minires_version():
    root = os.path.join(os.path.dirname(__file__), "..")
    try:
        commit = subprocess.run(["git", "-C", root, "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return mr.__version__ + (f" ({commit})" if commit else "")


def load_average():
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:  # pragma: no cover
        return "?"


def available_cores():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover
        return os.cpu_count() or 1


def first_line(error):
    text = f"{type(error).__name__}: {error}".strip()
    return text.splitlines()[0][:200]


def fixed_batch(batch, size=32, seed=0):
    """One batch of standard-normal float32 images (N, 3, size, size) and integer labels."""
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((batch, 3, size, size), dtype=np.float32),
            rng.integers(0, NUM_CLASSES, batch))


def build(name, x, y, threads):
    """The framework's Peer, or a one-line reason why it is skipped."""
    try:
        peer = BUILDERS[name](x, y, threads)
    except ImportError as e:
        return f"not installed ({first_line(e)})"
    except Exception as e:                 # noqa: BLE001 -- a peer that fails is reported
        return f"could not build: {first_line(e)}"
    if peer.params != resnet20_param_count():
        return (f"{peer.params:,} parameters, not ResNet-20's {resnet20_param_count():,}: "
                "a different net")
    return peer


def check_learns(peer, steps=3):
    """The losses of ``steps`` steps on the fixed batch, and whether they are finite and
    fall (the last below the first)."""
    peer.before()
    losses = [peer.step() for _ in range(steps)]
    ok = all(math.isfinite(v) for v in losses) and losses[-1] < losses[0]
    return losses, ok


# --- the benchmark --------------------------------------------------------------------------
def warm_up(peer, count):
    """Run the untimed steps; returns (steps, seconds, losses)."""
    n = max(count, peer.warmup)
    peer.before()
    t0 = time.perf_counter()
    losses = [peer.step() for _ in range(n)]
    return n, time.perf_counter() - t0, losses


def time_rounds(peers, rounds, max_seconds, log=False):
    """Round-robin: each round, one timed step of each peer whose timed steps so far add up to
    less than ``max_seconds`` (``log``: print each round). Returns ({name: step seconds},
    {name: losses})."""
    times = {p.name: [] for p in peers}
    losses = {p.name: [] for p in peers}
    for r in range(rounds):
        timed = []
        for peer in peers:
            if times[peer.name] and sum(times[peer.name]) >= max_seconds:
                continue
            peer.before()
            t0 = time.perf_counter()
            loss = peer.step()
            times[peer.name].append(time.perf_counter() - t0)
            losses[peer.name].append(loss)
            timed.append(f"{peer.name} {times[peer.name][-1]:.3f} s")
        if log and timed:
            print(f"round {r + 1}/{rounds}: {', '.join(timed)}", flush=True)
    return times, losses


def table(peers, skipped, medians, counts):
    base = medians.get("minires")
    torch_s = medians.get("PyTorch (CPU)")
    rows = ["| framework | version | s/step (median) | steps timed | ratio to minires "
            "| ratio to PyTorch | notes |",
            "|---|---|---:|---:|---:|---:|---|"]
    for p in peers:
        s = medians[p.name]
        ratio_m = f"{s / base:.2f}" if base else "-"
        ratio_t = f"{s / torch_s:.2f}" if torch_s else "-"
        rows.append(f"| {p.name} | {p.version} | {s:.3f} | {counts[p.name]} | {ratio_m} "
                    f"| {ratio_t} | {'; '.join(n for n in p.notes if n)} |")
    for name, reason in skipped.items():
        rows.append(f"| {name} | - | - | 0 | - | - | skipped: {reason} |")
    return "\n".join(rows)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=10,
                        help="round-robin rounds of one timed step per framework")
    parser.add_argument("--frameworks", default=",".join(FRAMEWORKS),
                        help=f"comma-separated, from {','.join(FRAMEWORKS)}")
    parser.add_argument("--max-seconds", type=float, default=20.0,
                        help="stop timing a framework once its timed steps add up to this")
    parser.add_argument("--warmup", type=int, default=1,
                        help="untimed steps per framework (tinygrad: at least 3)")
    parser.add_argument("--threads", type=int, default=None,
                        help="threads for every framework (default: every core available)")
    parser.add_argument("--check", action="store_true",
                        help="instead of timing: 3 steps each, the loss must be finite and fall")
    args = parser.parse_args(argv)
    names = [n.strip().lower() for n in args.frameworks.split(",") if n.strip()]
    unknown = sorted(set(names) - set(FRAMEWORKS))
    if unknown:
        parser.error(f"--frameworks: unknown {unknown}; choose from {','.join(FRAMEWORKS)}")
    args.frameworks = names
    return args


def main(argv=None):
    args = parse_args(argv)
    threads = args.threads or available_cores()
    load_start = load_average()
    speed = mr.use_speed_settings(threads)
    x, y = fixed_batch(args.batch)
    print(f"ResNet-20 ({resnet20_param_count():,} parameters) training step: batch {args.batch}"
          f", float32, 32x32x3, softmax cross-entropy, SGD lr {LR} momentum {MOMENTUM}",
          flush=True)

    peers, skipped = [], {}
    for name in args.frameworks:
        found = build(name, x, y, threads)
        if isinstance(found, str):
            print(f"skipping {name}: {found}", flush=True)
            skipped[name] = found
        else:
            print(f"{found.name} {found.version}: {found.params:,} parameters", flush=True)
            peers.append(found)

    if args.check:
        failed = []
        for peer in peers:
            losses, ok = check_learns(peer)
            print(f"check {peer.name}: losses {', '.join(f'{v:.4f}' for v in losses)} -> "
                  f"{'finite and falling' if ok else 'FAILED'} {peer.check()}", flush=True)
            if not ok:
                failed.append(peer.name)
        return 1 if failed else 0

    first_losses = {}
    for peer in list(peers):
        if peer.warmup > 1:
            print(f"warming up {peer.name}: {max(args.warmup, peer.warmup)} steps "
                  "(kernel compile and JIT capture, about a minute on a CPU) ...", flush=True)
        try:
            n, seconds, losses = warm_up(peer, args.warmup)
        except Exception as e:             # noqa: BLE001
            traceback.print_exc()
            print(f"skipping {peer.name}: its warm-up failed: {first_line(e)}", flush=True)
            skipped[peer.name] = f"warm-up failed: {first_line(e)}"
            peers.remove(peer)
            continue
        first_losses[peer.name] = losses[0]
        what = " (kernel compile, JIT capture)" if peer.warmup > 1 else ""
        peer.notes.insert(0, f"warm-up {n} step{'s' * (n > 1)} {seconds:.1f} s{what}")
        print(f"{peer.name}: warm-up {n} step{'s' * (n > 1)}, {seconds:.1f} s", flush=True)

    times, losses = time_rounds(peers, args.rounds, args.max_seconds, log=True)
    medians = {p.name: statistics.median(times[p.name]) for p in peers}
    counts = {p.name: len(times[p.name]) for p in peers}
    for peer in peers:
        last = losses[peer.name][-1]
        fine = all(math.isfinite(v) for v in losses[peer.name])
        peer.notes.append(f"loss {first_losses[peer.name]:.3f} -> {last:.3f}"
                          + ("" if fine else " (NOT FINITE)"))
        peer.notes.append(peer.check())

    print()
    print(f"ResNet-20 training step, batch {args.batch}, float32, 32x32; median s/step over "
          f"{args.rounds} alternating rounds (at most {args.max_seconds:g} s of timed steps "
          "per framework); ratios: s/step over minires' and over PyTorch's (above 1: slower)")
    print()
    print(f"- machine: {machine_description()}; Python {platform.python_version()}, "
          f"NumPy {np.__version__}")
    print(f"- load average (1, 5, 15 min): {load_start} at the start, {load_average()} at "
          "the end")
    print(f"- threads: {threads}; minires {speed['threads']}; see each row's notes")
    print()
    print(table(peers, skipped, medians, counts))
    return 0


if __name__ == "__main__":
    try:                                     # the OpenBLAS kernel the command lines run
        from minires.blas_kernel import rerun_with_fastest_kernel
        rerun_with_fastest_kernel()
    except ImportError:                      # an older minires (comparing versions)
        pass
    sys.exit(main())
