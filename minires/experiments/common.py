"""What the experiments share: options, data, a small training loop, evaluation, saving results.

Every experiment takes ``--out`` (its result folder), ``--seed``, ``--device``,
``--data-dir`` and ``--tiny``. ``--tiny`` swaps CIFAR-10 for a small synthetic set of
8x8 images (no files needed) and shrinks models and budgets so the whole experiment
runs in seconds: the tests use it, and so can anyone checking that a command works.
Its numbers mean nothing about ResNets.
"""
from __future__ import annotations

import json
import math
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

import minires as mr
from minires import functional as F

# --- options ----------------------------------------------------------------------------------


def add_common_arguments(parser, name):
    parser.add_argument("--out", default=os.path.join("runs", "experiments", name),
                        help="folder for the results (JSON, PNG, weights); created if missing "
                             "(default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed for weights, data order and "
                        "sampling (default: %(default)s)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                        help="where the models run (default: %(default)s)")
    parser.add_argument("--data-dir", default=None, help="CIFAR-10 data root (default: "
                        "$MINIRES_DATA, else ~/.cache/minires)")
    parser.add_argument("--tiny", action="store_true", help="synthetic 8x8 data, tiny models "
                        "(unless named explicitly) and budgets: checks the pipeline in seconds; "
                        "the numbers mean nothing")


def depth_list(text):
    """'20,56' -> [20, 56]."""
    try:
        depths = [int(d) for d in str(text).split(",") if d.strip()]
    except ValueError:
        raise ValueError(f"--depths: expected comma-separated integers like 20,56, got {text!r}") from None
    if not depths:
        raise ValueError("--depths: give at least one depth")
    return depths


def output_folder(path) -> Path:
    """Create the result folder and check that it is writable, before any work starts."""
    folder = Path(path)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".write-test-")
        os.close(fd)
        os.remove(probe)
    except OSError as err:
        raise SystemExit(f"cannot write results to {folder}: {err}") from None
    return folder


# --- saving results --------------------------------------------------------------------------------
def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def save_json(path, obj) -> Path:
    """Write ``obj`` as JSON atomically (temporary file, then ``os.replace``)."""
    path = Path(path)
    text = json.dumps(obj, indent=1, default=_json_default, allow_nan=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text + "\n")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def finish(results, out_dir, name, plot, seconds):
    """The common end of every experiment: record the run time, write results.json and
    NAME.png (when matplotlib is installed) to ``out_dir``, say where; return ``results``."""
    results["seconds"] = seconds
    save_json(out_dir / "results.json", results)
    results["figure"] = save_figure(plot(results), out_dir / f"{name}.png")
    print(f"results in {out_dir}")
    return results


def new_figure(figsize=(10, 4)):
    """A matplotlib Figure (no pyplot), or None when matplotlib is not installed."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return None
    return Figure(figsize=figsize, layout="constrained")


def save_figure(fig, path, dpi=120):
    """Save ``fig`` as PNG; returns the path, or None (with a note) when there is no figure."""
    if fig is None:
        print(f"matplotlib is not installed: {Path(path).name} not drawn (pip install matplotlib)")
        return None
    fig.savefig(os.fspath(path), dpi=dpi)
    return Path(path)


def environment(args) -> dict:
    """Where and how the numbers were made, stored next to them."""
    return {"minires": mr.__version__, "numpy": np.__version__, "python": platform.python_version(),
            "machine": platform.machine(), "cpus": os.cpu_count(), "device": args.device,
            "command": "python -m minires.experiments " + " ".join(getattr(args, "argv", []))}


class Timer:
    def __init__(self):
        self.start = time.perf_counter()

    @property
    def seconds(self):
        return time.perf_counter() - self.start


# --- data ----------------------------------------------------------------------------------------
def synthetic_split(n, size=8, classes=10, seed=0, templates_seed=1234):
    """A learnable stand-in for CIFAR-10: uint8 images (n, 3, size, size) and labels (n,).

    Each class has a fixed random template; an image is its class template plus noise,
    so a small network can learn it in a few steps. The templates depend only on
    ``templates_seed``, so a training and a test split made with different ``seed``s
    share them.
    """
    from minires.data import Split
    templates = np.random.default_rng(templates_seed).uniform(40, 215, (classes, 3, size, size))
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    noise = rng.normal(0, 40, (n, 3, size, size))
    images = np.clip(templates[labels] + noise, 0, 255).astype(np.uint8)
    return Split(images, labels.astype(np.int64))


def load_splits(args, limit_train=None, limit_test=None):
    """(train, test) Splits: CIFAR-10 (first ``limit`` examples), or synthetic with ``--tiny``."""
    if args.tiny:
        return (synthetic_split(limit_train or 256, seed=args.seed + 1),
                synthetic_split(limit_test or 128, seed=args.seed + 2))
    from minires.data import load_cifar10
    data = load_cifar10(args.data_dir, download=False)
    return data.train.take(limit_train), data.test.take(limit_test)


def loader(split, batch_size, shuffle=False, augment=False, seed=0):
    from minires.data import DataLoader
    return DataLoader(split.images, split.labels, batch_size=batch_size, shuffle=shuffle,
                      augment=augment, seed=seed)


def first_batch(split, n):
    """The first ``n`` examples, normalised: (x float32 (n, 3, H, W), y int64 (n,))."""
    return next(iter(loader(split.take(n), batch_size=n)))


# --- models ----------------------------------------------------------------------------------
def build(name, seed, device="cpu"):
    """``minires.models.get_model(name)`` with weights drawn after ``manual_seed(seed)``."""
    mr.manual_seed(seed)
    return mr.models.get_model(name).to(device)


def save_weights(model, path, meta=None):
    return mr.checkpoint.save(path, model, meta=meta or {})


def load_weights(model, path):
    """Load a model's weights from a checkpoint (``python -m minires.train`` or an experiment)."""
    mr.checkpoint.restore(path, model)
    return model


def calibrate_batch_norm(model, x_batches):
    """Set every BN's running statistics to the average over ``x_batches`` (train-mode passes).

    Leaves the model in eval mode, so that afterwards each example goes through a fixed
    function (no dependence on the rest of the batch) with statistics that describe the data.
    """
    bns = [m for m in model.modules() if isinstance(m, mr.nn.BatchNorm2d)]
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None          # cumulative average over the calibration batches
    model.train()
    with mr.no_grad():
        for x in x_batches:
            model(x)
    for m, momentum in zip(bns, momenta):
        m.momentum = momentum
    model.eval()
    return model


# --- training and evaluation ------------------------------------------------------------------
def evaluate(model, split, batch_size=500, device="cpu"):
    """(error rate, mean loss) on ``split`` in eval mode; the model's mode is restored."""
    was_training = model.training
    model.eval()
    wrong, total_loss, n = 0, 0.0, 0
    try:
        with mr.no_grad():
            for x, y in loader(split, batch_size):
                out = model(mr.tensor(x, device=device))
                total_loss += float(F.cross_entropy(out, y, reduction="sum").item())
                wrong += int((mr.backend.to_numpy(out.data).argmax(axis=1) != y).sum())
                n += len(y)
    finally:
        model.train(was_training)
    return wrong / max(n, 1), total_loss / max(n, 1)


def train(model, train_split, test_split, *, epochs, batch_size=128, lr=0.1, momentum=0.9,
          weight_decay=1e-4, warmup_frac=0.05, augment=True, seed=0, device="cpu", log_every=20,
          eval_every_epoch=True, label=""):
    """SGD with momentum, linear warm-up then cosine decay; the same recipe for every model.

    Returns a history: ``steps`` (iteration numbers), ``train_error`` (the error on the last
    ``log_every`` training batches as they were trained on, like He et al.'s thin curves),
    ``train_loss``, and per epoch ``test_error``/``test_loss``. Stops with a clear error if
    the loss becomes NaN or infinite (recorded as ``diverged``).
    """
    data = loader(train_split, batch_size, shuffle=True, augment=augment, seed=seed)
    steps_total = max(1, epochs * len(data))
    opt = mr.optim.SGD(mr.optim.split_weight_decay(model, weight_decay), lr=lr, momentum=momentum)
    sched = mr.optim.Warmup(opt, int(warmup_frac * steps_total),
                            schedule=mr.optim.CosineAnnealingLR(opt, steps_total))
    hist = {"steps": [], "train_error": [], "train_loss": [], "epoch_steps": [], "test_error": [],
            "test_loss": [], "diverged": False, "steps_total": steps_total}
    step, wrong, seen, loss_sum = 0, 0, 0, 0.0
    clock = Timer()
    model.train()
    for epoch in range(epochs):
        for x, y in data.epoch(epoch):
            out = model(mr.tensor(x, device=device))
            loss = F.cross_entropy(out, y)
            value = float(loss.item())
            if not math.isfinite(value):
                hist["diverged"] = True
                print(f"{label}: loss became {value} at step {step}; stopping this model")
                return hist
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            wrong += int((mr.backend.to_numpy(out.data).argmax(axis=1) != y).sum())
            seen += len(y)
            loss_sum += value * len(y)
            if step % log_every == 0 or step == steps_total:
                hist["steps"].append(step)
                hist["train_error"].append(wrong / seen)
                hist["train_loss"].append(loss_sum / seen)
                print(f"{label} step {step}/{steps_total}  train error {wrong / seen:.3f}  "
                      f"loss {loss_sum / seen:.3f}  {clock.seconds:.0f}s", flush=True)
                wrong, seen, loss_sum = 0, 0, 0.0
        if eval_every_epoch and test_split is not None:
            err, tloss = evaluate(model, test_split, device=device)
            hist["epoch_steps"].append(step)
            hist["test_error"].append(err)
            hist["test_loss"].append(tloss)
            print(f"{label} epoch {epoch + 1}/{epochs}  test error {err:.3f}", flush=True)
    hist["seconds"] = clock.seconds
    return hist


# --- the shared recipe of degradation / layer-responses ---------------------------------------------
def add_training_arguments(parser, epochs, limit_train, limit_test=2000):
    parser.add_argument("--epochs", type=int, default=epochs, help="training epochs per model "
                        "(default: %(default)s)")
    parser.add_argument("--limit-train", type=int, default=limit_train, help="train on the first "
                        "N training images (default: %(default)s; 50000 = all)")
    parser.add_argument("--limit-test", type=int, default=limit_test, help="test on the first N "
                        "test images (default: %(default)s; 10000 = all)")
    parser.add_argument("--batch-size", type=int, default=128, help="(default: %(default)s)")
    parser.add_argument("--lr", type=float, default=0.1, help="peak learning rate of SGD with "
                        "momentum 0.9, weight decay 1e-4, warm-up then cosine (default: %(default)s)")
    parser.add_argument("--log-every", type=int, default=10, help="record the training error "
                        "every N iterations (default: %(default)s)")


def trained_model(name, args, out_dir, train_split, test_split, from_dir=None):
    """``name`` trained with the shared recipe (weights saved to ``out_dir/NAME.npz``), or loaded
    from ``from_dir/NAME.npz`` when given.

    Returns (model, history or None, a note saying where the weights came from).
    """
    model = build(name, args.seed, args.device)
    if from_dir:
        path = Path(from_dir) / f"{name}.npz"
        if not path.is_file():
            raise SystemExit(f"--from {from_dir}: no {path.name} there (train it with the "
                             f"degradation experiment, or drop --from)")
        load_weights(model, path)
        return model, None, f"checkpoint {path}"
    epochs = 1 if args.tiny else args.epochs
    hist = train(model, train_split, test_split, epochs=epochs,
                 batch_size=min(args.batch_size, 32) if args.tiny else args.batch_size, lr=args.lr,
                 seed=args.seed, device=args.device, log_every=2 if args.tiny else args.log_every,
                 label=name)
    save_weights(model, out_dir / f"{name}.npz", meta={"epochs": epochs, "recipe": "experiments"})
    return model, hist, f"trained here: {epochs} epochs on {len(train_split)} images"
