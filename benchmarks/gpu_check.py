"""One command that checks minires on a GPU: tests, step time against PyTorch, a short training run.

    bash benchmarks/gpu_check.sh --require-gpu   # on the GPU machine (at most --budget s, 450)
    python benchmarks/gpu_check.py --dry-run     # every stage in a tiny CPU configuration (~20 s)

Stages, each with its own time limit, run whatever happened before (the summary table
is printed last, and written with every log to --out-dir, default $OUT when set):

  1. gpu tests    ``python -m pytest -m gpu -q``: the GPU variants of every test
                  (tests parametrised over the backend; see tests/conftest.py).
  2. step time    one ResNet-20 training step (batch 128, SGD momentum/nesterov/wd, cross
                  entropy), minires on CuPy against PyTorch CUDA eager, in this one process,
                  alternating minires/torch, synchronising the device around each step;
                  medians. PyTorch twice: as it comes (cuDNN, TF32 convolutions allowed) and
                  in strict float32 (TF32 off), which is what minires computes. Before the
                  timing, the same weights are loaded into both and one step's loss and
                  gradients are compared (TF32 off).
  3. data         the CIFAR-10 JPEG archive brought along (.gpu_data/cifar10-jpeg.tar.gz,
                  git-ignored) converted to the official binary layout, the same bytes
                  ../shared/data/make_cifar10_bin.py writes (JPEGs decoded with Pillow, or
                  torchvision when Pillow is missing).
  4. training     ``python -m minires.train cifar --device cuda`` (the fast recipe) for as many
                  epochs as the remaining budget allows (from the measured step time), then
                  the last checkpoint evaluated on the CPU (``--eval-only --device cpu``):
                  checkpoints must load without a GPU.

--dry-run (automatic when no GPU is usable) runs the same code on the CPU with tiny
sizes -- batch 2, a few synthetic JPEGs, one short epoch -- so the script itself is
tested (tests/test_cuda_kernels.py runs it); its numbers mean nothing.
"""
from __future__ import annotations

import argparse
import importlib.util
import io
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
# minires needs tqdm at run time; a machine without it (and without internet) can be given a
# copy of the pure-Python package in .gpu_data/pylib/tqdm, used only when tqdm is missing
FALLBACK_LIB = ROOT / ".gpu_data" / "pylib"
if importlib.util.find_spec("tqdm") is None and (FALLBACK_LIB / "tqdm").is_dir():
    sys.path.append(str(FALLBACK_LIB))
    os.environ["PYTHONPATH"] = os.pathsep.join(
        filter(None, [os.environ.get("PYTHONPATH"), str(FALLBACK_LIB)]))

import minires as mr
import minires.functional as F
from minires import backend

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
DEFAULT_ARCHIVE = ROOT / ".gpu_data" / "cifar10-jpeg.tar.gz"


class Stage:
    """One row of the summary: name, status (ok / FAILED / skipped / ...), the key numbers."""

    def __init__(self, name):
        self.name, self.status, self.notes, self.seconds = name, "not run", [], 0.0
        self.data = {}

    def note(self, text):
        self.notes.append(text)
        print(f"  [{self.name}] {text}", flush=True)


def say(text):
    print(text, flush=True)


# --- 1. the GPU tests -----------------------------------------------------------------------------
# the test files that exercise the GPU paths (the others' GPU variants add little)
GPU_TEST_FILES = ["tests/test_cuda_kernels.py", "tests/test_conv.py", "tests/test_norm.py",
                  "tests/test_loss.py", "tests/test_activation.py", "tests/test_backend.py",
                  "tests/test_blocks.py", "tests/test_kernel_compile.py"]


def _has_plugin(module):
    return importlib.util.find_spec(module) is not None


def gpu_test_command(args):
    """pytest on the GPU variants: in parallel (-n 8) and with per-test timeouts when the
    plugins are there (pytest-xdist, pytest-timeout), limited to GPU_TEST_FILES."""
    cmd = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider",
           "--durations=15"]
    if _has_plugin("xdist") and not args.dry_run:
        cmd += ["-n", str(args.test_workers)]
    if _has_plugin("pytest_timeout"):
        cmd += ["--timeout", "120"]
    if args.dry_run:   # just the plumbing: this file's GPU variants (skipped on the CPU)
        return cmd + ["tests/test_cuda_kernels.py", "-k", "not dry_run"]
    return cmd + GPU_TEST_FILES


def run_gpu_tests(stage, args, out_dir):
    cmd = gpu_test_command(args)
    say(f"$ {' '.join(cmd)}")
    try:
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True,
                              timeout=args.tests_timeout, check=False)
        output, code = proc.stdout + proc.stderr, proc.returncode
    except subprocess.TimeoutExpired as err:
        output = (err.stdout or b"").decode(errors="replace") if isinstance(err.stdout, bytes) \
            else (err.stdout or "")
        code = None
    (out_dir / "gpu_tests.log").write_text(output)
    tail = [line for line in output.strip().splitlines() if line.strip()]
    summary = tail[-1] if tail else "(no output)"
    say("\n".join(tail[-25:]))
    if code is None:
        stage.status = f"TIMEOUT after {args.tests_timeout} s"
    elif code in (0, 5):          # 5: nothing collected/selected
        stage.status = "ok"
    else:
        stage.status = "FAILED"
    for word in ("passed", "failed", "skipped", "error", "errors"):
        match = re.search(rf"(\d+) {word}\b", summary)
        if match:
            stage.data[word] = int(match.group(1))
    stage.note(summary)


# --- 2. step time: minires/CuPy against PyTorch ---------------------------------------------------
def torch_resnet20(torch):
    """He et al.'s CIFAR ResNet-20 (option A shortcuts) in torch.nn, minires' parameter names."""
    tnn = torch.nn

    class Block(tnn.Module):
        def __init__(self, inplanes, planes, stride):
            super().__init__()
            self.conv1 = tnn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
            self.bn1 = tnn.BatchNorm2d(planes)
            self.conv2 = tnn.Conv2d(planes, planes, 3, 1, 1, bias=False)
            self.bn2 = tnn.BatchNorm2d(planes)
            self.stride, self.extra = stride, planes - inplanes

        def forward(self, x):
            out = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
            skip = x[:, :, ::self.stride, ::self.stride]
            if self.extra:          # option A: zero-padded channels
                skip = tnn.functional.pad(skip, (0, 0, 0, 0, self.extra // 2,
                                                 self.extra - self.extra // 2))
            return torch.relu(out + skip)

    class ResNet20(tnn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = tnn.Conv2d(3, 16, 3, 1, 1, bias=False)
            self.bn1 = tnn.BatchNorm2d(16)
            inplanes = 16
            for i, planes in enumerate((16, 32, 64)):
                blocks = []
                for j in range(3):
                    blocks.append(Block(inplanes, planes, 2 if i and not j else 1))
                    inplanes = planes
                setattr(self, f"layer{i + 1}", tnn.Sequential(*blocks))
            self.fc = tnn.Linear(64, 10)

        def forward(self, x):
            x = torch.relu(self.bn1(self.conv1(x)))
            x = self.layer3(self.layer2(self.layer1(x)))
            return self.fc(x.mean(dim=(2, 3)))

    return ResNet20()


def _synchronizer(device, torch):
    if device == "cuda":
        cp = backend.get_cupy()
        return (lambda: cp.cuda.get_current_stream().synchronize()), torch.cuda.synchronize
    return (lambda: None), (lambda: None)


def _median_ms(times):
    return 1000 * statistics.median(times)


def run_step_time(stage, args, device):
    try:
        import torch
    except ImportError:
        stage.status = "skipped"
        stage.note("PyTorch is not installed: no baseline")
        return
    B = args.batch
    tdev = "cuda" if device == "cuda" else "cpu"
    if args.dry_run:
        torch.set_num_threads(1)          # small CPU shared with others: no thread spinning
    sync_mr, sync_torch = _synchronizer(device, torch)
    rng = np.random.default_rng(0)
    x_np = rng.standard_normal((B, 3, 32, 32)).astype(np.float32)
    y_np = rng.integers(0, 10, B)

    mr.manual_seed(0)
    model = mr.models.resnet20().to(device)
    opt = mr.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)
    x, y = mr.tensor(x_np, device=device), backend.to_device(y_np, device)
    tmodel = torch_resnet20(torch).to(tdev)
    tmodel.load_state_dict({k: torch.from_numpy(backend.to_numpy(v).copy())
                            for k, v in model.state_dict().items()})
    topt = torch.optim.SGD(tmodel.parameters(), lr=0.1, momentum=0.9, nesterov=True,
                           weight_decay=5e-4)
    tx, ty = torch.from_numpy(x_np).to(tdev), torch.from_numpy(y_np).to(tdev)

    # the same step, the same weights: loss and gradients agree? (strict float32 on both sides)
    tf32 = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    start = time.perf_counter()
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    sync_mr()
    stage.data["first_step_s"] = time.perf_counter() - start       # includes kernel compilation
    tloss = torch.nn.functional.cross_entropy(tmodel(tx), ty)
    tloss.backward()
    grads = dict(model.named_parameters())
    worst = 0.0
    for name, p in tmodel.named_parameters():
        ours = backend.to_numpy(grads[name].grad)
        theirs = p.grad.detach().cpu().numpy()
        worst = max(worst, float(np.abs(ours - theirs).max() / (np.abs(theirs).max() + 1e-12)))
    stage.data["loss_diff"] = abs(float(loss.item()) - float(tloss.item()))
    stage.data["grad_rel_err"] = worst
    stage.note(f"same weights, one step: loss {float(loss.item()):.6f} vs torch "
               f"{float(tloss.item()):.6f}; worst gradient error {worst:.2e} (relative to the "
               f"largest gradient entry of each parameter); first minires step "
               f"{stage.data['first_step_s']:.1f} s (kernel compilation included)")
    agree = stage.data["loss_diff"] < 1e-3 and worst < 1e-2

    def mr_step():
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()

    def torch_step():
        topt.zero_grad()
        torch.nn.functional.cross_entropy(tmodel(tx), ty).backward()
        topt.step()

    def timed(step, sync):
        sync()
        start = time.perf_counter()
        step()
        sync()
        return time.perf_counter() - start

    for _ in range(args.warmup):
        timed(mr_step, sync_mr)
        timed(torch_step, sync_torch)
    times = {"minires": [], "torch_fp32": [], "torch_default": []}
    for _ in range(args.repeats):                                  # alternating
        times["minires"].append(timed(mr_step, sync_mr))
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
        times["torch_fp32"].append(timed(torch_step, sync_torch))
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32
        times["torch_default"].append(timed(torch_step, sync_torch))
    ms = {k: _median_ms(v) for k, v in times.items()}
    stage.data.update({f"{k}_ms": v for k, v in ms.items()})
    ratio = ms["minires"] / ms["torch_default"]
    stage.data["ratio_vs_torch_default"] = ratio
    stage.data["ratio_vs_torch_fp32"] = ms["minires"] / ms["torch_fp32"]

    # where minires' step time goes (synchronised phases; medians)
    phases = {"forward+loss": [], "backward": [], "optimizer": []}
    for _ in range(max(2, args.repeats // 4)):
        opt.zero_grad()
        sync_mr()
        t0 = time.perf_counter()
        loss = F.cross_entropy(model(x), y)
        sync_mr()
        t1 = time.perf_counter()
        loss.backward()
        sync_mr()
        t2 = time.perf_counter()
        opt.step()
        sync_mr()
        t3 = time.perf_counter()
        for key, dt in zip(phases, (t1 - t0, t2 - t1, t3 - t2)):
            phases[key].append(dt)
    stage.data["phases_ms"] = {k: _median_ms(v) for k, v in phases.items()}
    stage.note(f"batch {B}, median of {args.repeats}: minires {ms['minires']:.2f} ms, torch "
               f"(default, TF32 allowed) {ms['torch_default']:.2f} ms, torch (strict fp32) "
               f"{ms['torch_fp32']:.2f} ms; minires / torch default = {ratio:.2f}x "
               f"(target <= 2x)")
    stage.note("minires phases: " + ", ".join(f"{k} {v:.2f} ms"
                                              for k, v in stage.data["phases_ms"].items()))
    stage.status = "ok" if agree else "FAILED (minires and torch disagree)"
    if agree and ratio > 2:
        stage.status = "ok, above the 2x target"


# --- 3. data --------------------------------------------------------------------------------------
def _decoder():
    """(name, bytes -> (32, 32, 3) uint8): Pillow, else torchvision, else None."""
    try:
        from PIL import Image

        return "Pillow", lambda b: np.asarray(Image.open(io.BytesIO(b)).convert("RGB"),
                                              dtype=np.uint8)
    except ImportError:
        pass
    try:
        import torch
        from torchvision.io import ImageReadMode, decode_jpeg

        def decode(b):
            data = torch.frombuffer(bytearray(b), dtype=torch.uint8)
            return decode_jpeg(data, mode=ImageReadMode.RGB).permute(1, 2, 0).numpy()

        return "torchvision", decode
    except ImportError:
        return None, None


def convert_archive(archive, dest, decode):
    """The JPEG archive -> dest/cifar-10-batches-bin/, as ../shared/data/make_cifar10_bin.py does.

    Members split/class/name.jpg; each split sorted by member name, then shuffled with
    default_rng(2009); records are a label byte and the R, G, B planes; 5 training files.
    """
    images = {"train": [], "test": []}
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar:
            if not member.isfile() or not member.name.endswith(".jpg"):
                continue
            split, cls, _ = member.name.split("/")
            pixels = decode(tar.extractfile(member).read())
            images[split].append((member.name, CLASSES.index(cls), pixels))
    folder = Path(dest) / "cifar-10-batches-bin"
    folder.mkdir(parents=True, exist_ok=True)
    counts = {}
    for split, items in images.items():
        items.sort(key=lambda t: t[0])
        labels = np.array([t[1] for t in items], dtype=np.uint8)
        pixels = np.stack([t[2] for t in items])                       # N, 32, 32, 3
        order = np.random.default_rng(2009).permutation(len(items))
        labels, pixels = labels[order], pixels[order]
        planes = pixels.transpose(0, 3, 1, 2).reshape(len(labels), 3072)  # N, R|G|B
        records = np.concatenate([labels[:, None], planes], axis=1)
        counts[split] = len(labels)
        if split == "test":
            (folder / "test_batch.bin").write_bytes(records.tobytes())
        else:
            for i, part in enumerate(np.array_split(records, 5)):
                (folder / f"data_batch_{i + 1}.bin").write_bytes(part.tobytes())
    (folder / "batches.meta.txt").write_text("\n".join(CLASSES) + "\n")
    return counts


def make_tiny_archive(path, per_class=(5, 1)):
    """A CIFAR-shaped JPEG archive with a few random images per class (for --dry-run)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    with tarfile.open(path, "w:gz") as tar:
        for split, n in zip(("train", "test"), per_class):
            for c, cls in enumerate(CLASSES):
                for k in range(n):
                    buf = io.BytesIO()
                    Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(
                        buf, format="JPEG", quality=75)
                    info = tarfile.TarInfo(f"{split}/{cls}/{c:02d}_{k:05d}.jpg")
                    info.size = len(buf.getvalue())
                    tar.addfile(info, io.BytesIO(buf.getvalue()))


def run_data(stage, args, work):
    name, decode = _decoder()
    archive = Path(args.archive)
    if args.dry_run and name == "Pillow":
        archive = work / "tiny-cifar10-jpeg.tar.gz"
        make_tiny_archive(archive)
    elif args.dry_run:              # no JPEG encoder here: random images straight to binary
        folder = work / "data" / "cifar-10-batches-bin"
        folder.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(0)
        for file in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
            records = rng.integers(0, 256, (10, 3073), dtype=np.uint8)
            records[:, 0] %= 10
            (folder / file).write_bytes(records.tobytes())
        stage.status = "ok (no Pillow: synthetic binary files, conversion not exercised)"
        stage.note(stage.status)
        return work / "data"
    if not archive.exists():
        stage.status = "FAILED"
        stage.note(f"no archive at {archive}: copy ../shared/data/cifar10-jpeg.tar.gz to "
                   f".gpu_data/ and carry .gpu_data along")
        return None
    if decode is None:
        stage.status = "FAILED"
        stage.note("neither Pillow nor torchvision is installed: cannot decode the JPEGs "
                   "(pip install pillow)")
        return None
    start = time.perf_counter()
    counts = convert_archive(archive, work / "data", decode)
    stage.status = "ok"
    stage.note(f"{archive.name} -> {work / 'data'} with {name}: {counts['train']} train, "
               f"{counts['test']} test images in {time.perf_counter() - start:.1f} s")
    return work / "data"


# --- 4. training ----------------------------------------------------------------------------------
def _epochs_for(budget_s, step_ms, train_images, batch):
    """Epochs that fit in budget_s: steps at the measured speed, +35% for data and evaluation."""
    if not step_ms:
        return 3
    per_epoch = train_images / batch * step_ms / 1000 * 1.35
    return int(max(1, min(30, budget_s // max(per_epoch, 1e-9))))


def run_training(stage, args, device, data_dir, step_ms, deadline, out_dir):
    run = Path(args.work_dir) / "run"
    shutil.rmtree(run, ignore_errors=True)
    budget = max(30.0, deadline - time.monotonic() - 25)                # keep time for the summary
    train_images = args.limit_train or 50000
    epochs = args.epochs or _epochs_for(budget, step_ms, train_images, args.train_batch)
    cmd = [sys.executable, "-m", "minires.train", "cifar", "--device", device, "--data-dir",
           str(data_dir), "--no-download", "--epochs", str(epochs), "--batch-size",
           str(args.train_batch), "--out", str(run), "--no-progress"]
    if args.limit_train:
        cmd += ["--limit-train", str(args.limit_train)]
    if args.limit_test:
        cmd += ["--limit-test", str(args.limit_test)]
    say(f"$ {' '.join(cmd)}    (budget {budget:.0f} s)")
    start = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    try:
        output, _ = proc.communicate(timeout=budget)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGINT)               # train saves last.npz and stops cleanly
        try:
            output, _ = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            output, _ = proc.communicate()
        stage.note(f"stopped at the time budget ({budget:.0f} s)")
    elapsed = time.monotonic() - start
    (out_dir / "train.log").write_text(output)
    say("\n".join(output.strip().splitlines()[-15:]))
    rows = []
    if (run / "metrics.jsonl").exists():
        rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        shutil.copy(run / "metrics.jsonl", out_dir / "metrics.jsonl")
    if not rows:
        stage.status = f"FAILED (exit {proc.returncode}, no finished epoch)"
        return run
    last = rows[-1]
    stage.data.update(epochs=len(rows), test_acc=last["test_acc"],
                      epoch_time_s=statistics.median(r["epoch_time"] for r in rows),
                      img_per_s=statistics.median(r["img_per_s"] for r in rows), wall_s=elapsed)
    stage.status = "ok" if proc.returncode == 0 else f"partial (exit {proc.returncode})"
    stage.note(f"{len(rows)}/{epochs} epochs in {elapsed:.0f} s: test acc "
               + ", ".join(f"{100 * r['test_acc']:.2f}%" for r in rows)
               + f"; median epoch {stage.data['epoch_time_s']:.1f} s "
               f"({stage.data['img_per_s']:.0f} img/s)")
    return run


def run_cpu_eval(stage, args, run, data_dir, out_dir):
    """The last checkpoint evaluated on the CPU: it must load without a GPU."""
    ckpt = run / "last.npz"
    if not ckpt.exists():
        stage.status = "skipped"
        stage.note("no checkpoint")
        return
    cmd = [sys.executable, "-m", "minires.train", "cifar", "--eval-only", str(ckpt), "--device",
           "cpu", "--data-dir", str(data_dir), "--no-download", "--limit-test",
           str(args.eval_images)]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}                  # no GPU for this one
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, env=env,
                          check=False)
    (out_dir / "cpu_eval.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        stage.status = "FAILED"
        stage.note((proc.stdout + proc.stderr).strip().splitlines()[-1:])
        return
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    stage.status = "ok"
    stage.data.update(test_acc=result["test_acc"], test_examples=result["test_examples"])
    stage.note(f"{ckpt.name} on the CPU: test acc {100 * result['test_acc']:.2f}% on "
               f"{result['test_examples']} images")


# --- main -----------------------------------------------------------------------------------------
def environment(device):
    info = {"python": platform.python_version(), "numpy": np.__version__,
            "machine": platform.node(), "device": device}
    if device == "cuda":
        cp = backend.get_cupy()
        info["cupy"] = cp.__version__
        props = cp.cuda.runtime.getDeviceProperties(0)
        info["gpu"] = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
    try:
        import torch
        info["torch"] = torch.__version__
    except ImportError:
        info["torch"] = None
    return info


def print_summary(stages, info, total):
    say("\n" + "=" * 100)
    say(f"SUMMARY  ({total:.0f} s; " + ", ".join(f"{k} {v}" for k, v in info.items()) + ")")
    say("=" * 100)
    say(f"{'stage':<16}{'status':<36}{'seconds':>8}  key numbers")
    for s in stages:
        keys = {k: v for k, v in s.data.items() if not isinstance(v, dict)}
        numbers = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                            for k, v in keys.items())
        say(f"{s.name:<16}{s.status:<36}{s.seconds:>8.1f}  {numbers}")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dry-run", action="store_true",
                   help="tiny CPU configuration of every stage (automatic without a GPU)")
    p.add_argument("--budget", type=float, default=450,
                   help="seconds for the whole check (default 450: under 8 minutes)")
    p.add_argument("--archive", default=str(DEFAULT_ARCHIVE), help="CIFAR-10 JPEG archive")
    p.add_argument("--work-dir", help="scratch folder (default: a temporary folder)")
    p.add_argument("--out-dir", default=os.environ.get("OUT"),
                   help="logs and summary.json (default $OUT, else the work folder)")
    p.add_argument("--skip", default="", help="comma-separated stages to skip: tests,step,train")
    p.add_argument("--epochs", type=int, help="training epochs (default: what fits the budget)")
    p.add_argument("--tests-timeout", type=float,
                   help="seconds for the GPU tests (default 240; dry run 120)")
    p.add_argument("--require-gpu", action="store_true",
                   help="fail at once (exit 3) when CuPy sees no GPU, instead of a CPU dry run")
    p.add_argument("--test-workers", type=int, default=8,
                   help="pytest-xdist workers for the GPU tests (default 8)")
    p.add_argument("--cpu-eval", action="store_true",
                   help="also evaluate the checkpoint on the CPU here (default: only in a dry "
                        "run; on a GPU lease the checkpoint comes back in --out-dir instead)")
    args = p.parse_args(argv)
    args.auto_dry_run = False
    if not args.dry_run and not backend.gpu_available():
        if args.require_gpu:
            say("--require-gpu: CuPy sees no usable GPU here; nothing was run")
            raise SystemExit(3)
        args.dry_run = args.auto_dry_run = True
    if args.dry_run:
        args.batch, args.repeats, args.warmup = 2, 2, 1
        args.train_batch, args.limit_train, args.limit_test = 16, 32, 16
        args.tests_timeout, args.eval_images = args.tests_timeout or 120, 16
        args.epochs = args.epochs or 1
    else:
        args.batch, args.repeats, args.warmup = 128, 20, 3
        args.train_batch, args.limit_train, args.limit_test = 128, None, None
        args.tests_timeout, args.eval_images = args.tests_timeout or 240, 1000
    return args


def main(argv=None):
    args = parse_args(argv)
    started = time.monotonic()
    deadline = started + args.budget
    device = "cpu" if args.dry_run else "cuda"
    args.work_dir = args.work_dir or tempfile.mkdtemp(prefix="minires-gpu-check-")
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    out_dir = Path(args.out_dir) if args.out_dir else work
    out_dir.mkdir(parents=True, exist_ok=True)
    if args.auto_dry_run:
        say("no usable GPU (CuPy + CUDA): running the dry run on the CPU instead")
    info = environment(device)
    dry = " (DRY RUN on the CPU: the numbers mean nothing)" if args.dry_run else ""
    say(f"minires GPU check{dry}: {info}")
    skip = set(filter(None, args.skip.split(",")))
    stages = {name: Stage(name) for name in ("gpu tests", "step time", "data", "training",
                                             "cpu eval")}

    summary_lock = threading.Lock()             # the data stage runs in a thread

    def write_summary():
        """summary.json after every stage: a run killed at its time limit still reports."""
        with summary_lock:
            _write_summary()

    def _write_summary():
        summary = {"environment": info, "dry_run": args.dry_run,
                   "seconds": time.monotonic() - started,
                   "stages": {s.name: {"status": s.status, "seconds": s.seconds,
                                       "notes": s.notes, **s.data} for s in stages.values()}}
        (out_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")

    def attempt(stage, fn, *fargs):
        say(f"\n--- {stage.name} " + "-" * 60)
        start = time.monotonic()
        try:
            return fn(stage, *fargs)
        except Exception as err:  # noqa: BLE001 -- a broken stage must not hide the others' results
            stage.status = f"FAILED ({type(err).__name__})"
            stage.note(f"{type(err).__name__}: {err}")
            import traceback
            traceback.print_exc()
        finally:
            stage.seconds = time.monotonic() - start
            write_summary()

    # JPEG decoding (CPU) overlaps the GPU tests: a thread, since Pillow releases the GIL
    data_future = None
    if "train" not in skip:
        from concurrent.futures import ThreadPoolExecutor
        pool = ThreadPoolExecutor(1)
        data_future = pool.submit(attempt, stages["data"], run_data, args, work)
        pool.shutdown(wait=False)
    if "tests" not in skip:
        attempt(stages["gpu tests"], run_gpu_tests, args, out_dir)
    if "step" not in skip:
        attempt(stages["step time"], run_step_time, args, device)
    step_ms = stages["step time"].data.get("minires_ms")
    if args.dry_run:
        step_ms = None
    if data_future is not None:
        data_dir = data_future.result()
        if data_dir is not None:
            run = attempt(stages["training"], run_training, args, device, data_dir, step_ms,
                          deadline, out_dir)
            if run is not None:
                for name in ("last.npz", "best.npz"):           # the checkpoint comes back
                    if (run / name).exists():
                        shutil.copy(run / name, out_dir / name)
                if args.dry_run or args.cpu_eval:
                    attempt(stages["cpu eval"], run_cpu_eval, args, run, data_dir, out_dir)
                else:
                    stages["cpu eval"].status = "to do on the CPU machine"
                    stages["cpu eval"].note("python -m minires.train cifar --eval-only "
                                            "OUT/last.npz --device cpu (the checkpoint is in OUT)")
    cache = os.environ.get("CUPY_CACHE_DIR")
    if cache and Path(cache).is_dir() and not args.dry_run:          # compiled kernels come back
        shutil.copytree(cache, out_dir / "cupy-cache", dirs_exist_ok=True)
    total = time.monotonic() - started
    write_summary()
    print_summary(stages.values(), info, total)
    failed = [s.name for s in stages.values() if s.status.startswith(("FAILED", "TIMEOUT"))]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
