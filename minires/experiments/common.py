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
from types import SimpleNamespace

import numpy as np

import minires as mr
from minires.train import (Callback, NonFiniteLossError, TrainConfig,
                           evaluate,    # (loss, accuracy), batch norm folded: the one evaluator
                           fit)

# --- options ----------------------------------------------------------------------------------


def add_common_arguments(parser, name):
    parser.add_argument("--out", default=None,
                        help="folder for the results (JSON, PNG, weights); it must be new or "
                             "empty unless --resume (default: a new folder runs/experiments/"
                             f"{name}[-2, -3, ...]; with --tiny runs/experiments/tiny/{name}[-k])")
    parser.add_argument("--resume", action="store_true",
                        help="continue the unfinished run in --out: what it finished is kept, "
                             "the rest is computed")
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
    bad = [d for d in depths if d < 8 or (d - 2) % 6]
    if bad:
        raise ValueError(f"--depths: each depth must be 6n+2 with n >= 1 (8, 14, 20, 32, 44, 56, "
                         f"110, ...), got {bad[0]}")
    return depths


def seed_list(text, default):
    """'10,11,12' -> [10, 11, 12]; None -> [default]."""
    if text is None:
        return [default]
    try:
        seeds = [int(x) for x in str(text).split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"--seeds: expected comma-separated integers like 10,11,12, got "
                         f"{text!r}") from None
    if not seeds or any(x < 0 for x in seeds) or len(set(seeds)) != len(seeds):
        raise ValueError(f"--seeds: expected distinct non-negative integers, got {text!r}")
    return seeds


DEFAULT_ROOT = Path("runs") / "experiments"


def output_folder(args) -> Path:
    """The result folder, created and checked writable before any work starts.

    Nothing is ever overwritten: without ``--out`` a new folder is chosen
    (``runs/experiments/NAME``, then ``NAME-2``, ...; ``--tiny`` runs go under
    ``runs/experiments/tiny/`` so they never land beside real results); an ``--out`` that
    already holds files is refused unless ``--resume`` asks to continue what is there.
    """
    name = getattr(args, "experiment", "experiment")
    if args.out is None:
        root = DEFAULT_ROOT / "tiny" if args.tiny else DEFAULT_ROOT
        folder, k = root / name, 1
        while folder.exists() and any(folder.iterdir()) and not args.resume:
            k += 1
            folder = root / f"{name}-{k}"
    else:
        folder = Path(args.out)
        if folder.is_file():
            raise SystemExit(f"{name}: --out {folder} is a file; give a folder")
        if folder.is_dir() and any(folder.iterdir()) and not args.resume:
            raise SystemExit(f"{name}: {folder} already holds results; choose a new --out, or add "
                             f"--resume to continue the run that is there")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".write-test-")
        os.close(fd)
        os.remove(probe)
    except OSError as err:
        raise SystemExit(f"{name}: cannot write results to {folder}: {err.strerror or err}") from None
    args.out = str(folder)
    return folder


def finished_results(args):
    """With ``--resume``, the results of a run in ``--out`` that already finished, else None."""
    if not getattr(args, "resume", False) or args.out is None:
        return None
    path = Path(args.out) / "results.json"
    if path.is_file():
        saved = json.loads(path.read_text())
        if saved.get("complete"):
            print(f"{saved.get('experiment')}: already finished in {args.out}; kept")
            return saved
    return None


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
    text = json.dumps(obj, indent=1, default=_json_default, allow_nan=True) + "\n"
    return mr.files.write_atomically(path, lambda f: f.write(text.encode("utf-8")),
                                          what="results")


def finish(results, out_dir, name, plot, seconds):
    """The common end of every experiment: record the run time, write results.json and
    NAME.png (when matplotlib is installed) to ``out_dir``, say where; return ``results``."""
    results["seconds"] = seconds
    results["complete"] = True
    save_json(out_dir / "results.json", results)
    results["figure"] = draw(plot, results, out_dir / f"{name}.png")
    print(f"results in {out_dir}")
    return results


def new_figure(figsize=(10, 4)):
    """A matplotlib Figure (no pyplot), or None when matplotlib is not installed."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return None
    return Figure(figsize=figsize, layout="constrained")


def draw(plot, results, path):
    """``plot(results)`` (a function that fills a ``new_figure()``) saved as PNG; returns the
    path, or None with a note when matplotlib is not installed (then ``plot`` is not called,
    so experiments' plot functions need no check of their own)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return save_figure(None, path)
    return save_figure(plot(results), path)


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


def load_splits(args, limit_train=None, limit_test=None, input_size=None, balanced=False):
    """(train, test) Splits: CIFAR-10 (first ``limit`` examples), or synthetic with ``--tiny``.

    ``input_size`` (16, 8, ...) average-pools every image to that size (see ``pool_images``);
    ``balanced`` takes the training images as a class-balanced subset (``balanced_subset``)
    instead of the first ``limit_train``.
    """
    if args.tiny:
        train, test = (synthetic_split(limit_train or 256, seed=args.seed + 1),
                       synthetic_split(limit_test or 128, seed=args.seed + 2))
    else:
        from minires.data import DataError, load_cifar10
        try:
            data = load_cifar10(args.data_dir, download=False)
        except DataError as err:
            raise SystemExit(f"{args.argv[0] if getattr(args, 'argv', None) else 'experiments'}: "
                             f"{err}") from None
        train = (balanced_subset(data.train, limit_train) if balanced
                 else data.train.take(limit_train))
        test = data.test.take(limit_test)
    if input_size and input_size != train.images.shape[-1]:
        train, test = pool_split(train, input_size), pool_split(test, input_size)
    return train, test


def balanced_subset(split, n):
    """A fixed class-balanced subset: the first ``n // classes`` images of every class, in the
    order they have in ``split`` (the same images whatever the seed). All images when n is None."""
    if n is None or n >= len(split):
        return split
    from minires.data import Split
    classes = np.unique(split.labels)
    per_class = n // len(classes)
    if per_class < 1:
        raise ValueError(f"balanced_subset: need at least {len(classes)} images (one per class), "
                         f"got {n}")
    keep = np.sort(np.concatenate([np.flatnonzero(split.labels == c)[:per_class]
                                   for c in classes]))
    return Split(split.images[keep], split.labels[keep])


def pool_images(images, size):
    """Average-pool uint8 images (N, C, H, W) to (N, C, size, size), rounded back to uint8.

    H and W must be multiples of ``size``: CIFAR's 32x32 to 16x16 averages each 2x2 patch,
    which keeps the objects recognisable and makes every convolution 4x cheaper.
    """
    N, C, H, W = images.shape
    if H % size or W % size:
        raise ValueError(f"pool_images: {H}x{W} images cannot be pooled to {size}x{size} "
                         f"(need a divisor of both)")
    fh, fw = H // size, W // size
    blocks = images.reshape(N, C, size, fh, size, fw)              # (N, C, OH, fh, OW, fw)
    pooled = blocks.mean(axis=(3, 5), dtype=np.float32)            # (N, C, OH, OW)
    return np.rint(pooled).astype(np.uint8)


def pool_split(split, size):
    from minires.data import Split
    return Split(pool_images(split.images, size), split.labels)


def loader(split, batch_size, shuffle=False, augment=False, seed=0, drop_last=False):
    from minires.data import DataLoader
    return DataLoader(split.images, split.labels, batch_size=batch_size, shuffle=shuffle,
                      augment=augment, seed=seed, drop_last=drop_last)


def first_batch(split, n):
    """The first ``n`` examples, normalised: (x float32 (n, 3, H, W), y int64 (n,))."""
    return next(iter(loader(split.take(n), batch_size=n)))


# --- models ----------------------------------------------------------------------------------
# A net of the experiments is a model of minires.models plus how its weights start:
#   "paper"  He et al.: Kaiming-normal convolutions, every BN scale 1 (torchvision's init)
#   "zero"   residual nets: each branch's last BN scale 0, so every block starts as its
#            shortcut (zero_init_residual; Goyal et al. 2017, as Fixup and SkipInit do by
#            other means) -- named "resnet56-zero"
#   "dirac"  plain nets: each 3x3 convolution of the blocks starts as the identity plus
#            0.1x its Kaiming-normal draw (DiracNets' starting point, without their
#            reparameterisation) -- named "plain56-dirac"
INITS = {"paper": "He et al.'s (Kaiming-normal, BN scale 1)",
         "zero": "residual branches zero-initialised (last BN scale 0)",
         "dirac": "each block conv the identity (Dirac) + 0.1x Kaiming noise"}
DIRAC_NOISE = 0.1


def split_net_name(name):
    """'resnet56-zero' -> ('resnet56', 'zero'); 'plain20' -> ('plain20', 'paper')."""
    model, _, init = name.partition("-")
    init = init or "paper"
    if init not in INITS:
        raise ValueError(f"unknown initialisation {init!r} in net name {name!r}; expected one of "
                         f"{', '.join(INITS)}")
    if (init == "zero" and not model.startswith("resnet")) or \
            (init == "dirac" and not model.startswith("plain")):
        raise ValueError(f"{name}: '{init}' initialisation is for "
                         f"{'residual' if init == 'zero' else 'plain'} nets only")
    return model, init


def describe_net(name):
    """'resnet56-zero' -> ('resnet', 56, 'zero'): family, depth and initialisation of a net
    of the degradation family (plainD / resnetD, with an optional -init suffix)."""
    model, init = split_net_name(name)
    family = model.rstrip("0123456789")
    return family, int(model[len(family):]), init


def net_name(model, init="paper"):
    """The inverse of ``split_net_name``."""
    return model if init == "paper" else f"{model}-{init}"


def dirac_init_(model, noise=DIRAC_NOISE):
    """Start every 3x3 convolution inside the blocks as the identity plus ``noise`` times its
    current (Kaiming-normal) weights; the stem and the fc keep theirs. Returns the model."""
    from minires.inspect import residual_blocks
    from minires.nn import init
    for _, block in residual_blocks(model):
        for m in block.modules():
            if isinstance(m, mr.nn.Conv2d) and m.weight.shape[-1] == 3:
                kaiming = m.weight.data.copy()
                init.dirac_(m.weight)
                m.weight.data += noise * kaiming
    return model


def build(name, seed, device="cpu"):
    """The net ``name`` ('resnet56', 'resnet56-zero', 'plain56-dirac', any model of
    ``minires.models``) with weights drawn after ``manual_seed(seed)``."""
    model_name, init = split_net_name(name)
    mr.manual_seed(seed)
    model = mr.models.get_model(model_name, **({"zero_init_residual": True} if init == "zero"
                                                 else {}))
    if init == "dirac":
        dirac_init_(model)
    return model.to(device)


def initial_net(name, seed, calibration_x, device="cpu"):
    """The untrained net ``name`` as ``build`` gives it, with every BN's running statistics
    calibrated on ``calibration_x`` (a batch of training images), in eval mode.

    An untrained net's running statistics are mean 0 and variance 1, so in eval mode BN does
    not normalise: every measurement of an untrained net in eval mode must calibrate first.
    """
    return calibrate_batch_norm(build(name, seed, device), [mr.tensor(calibration_x,
                                                                      device=device)])


def save_weights(model, path, meta=None):
    return mr.checkpoint.save(path, model, meta=meta or {})


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


def observe(model, x, hooks, device="cpu"):
    """One forward pass of ``x`` in eval mode, without a graph, with forward ``hooks``
    ([(module, fn)]) attached for its duration; the model's mode is restored."""
    handles = [module.register_forward_hook(fn) for module, fn in hooks]
    was_training = model.training
    model.eval()
    try:
        with mr.no_grad():
            model(mr.tensor(x, device=device))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)


def model_names(text, default):
    """'plain56,resnet56' (or the default when None) -> ['plain56', 'resnet56']."""
    return [n.strip() for n in (text or default).split(",") if n.strip()]


# --- training and evaluation ------------------------------------------------------------------
class _IterationLog(Callback):
    """He et al.'s thin curves: the training error and loss of the last ``log_every``
    iterations as they were trained on, with the rate; and per epoch the test error."""

    def __init__(self, hist, log_every, label):
        self.hist, self.log_every, self.label = hist, log_every, label
        self.clock = Timer()
        self.window = {"wrong": 0, "seen": 0, "loss_sum": 0.0}
        self.before = {"correct": 0, "seen": 0}

    def on_step_end(self, trainer, loss):
        p, before, w = trainer.partial, self.before, self.window
        if trainer.batch == 1:                       # an epoch's first step: counts restarted
            before = {"correct": 0, "seen": 0}
        n = p["seen"] - before["seen"]
        w["wrong"] += n - (p["correct"] - before["correct"])
        w["seen"] += n
        w["loss_sum"] += loss * n
        self.before = {"correct": p["correct"], "seen": p["seen"]}
        step = trainer.global_step
        if step % self.log_every == 0 or step == trainer.total_steps:
            h = self.hist
            h["steps"].append(step)
            h["train_error"].append(w["wrong"] / w["seen"])
            h["train_loss"].append(w["loss_sum"] / w["seen"])
            h["lr"].append(trainer.last_lr)
            print(f"{self.label} step {step}/{trainer.total_steps}  train error "
                  f"{w['wrong'] / w['seen']:.3f}  loss {w['loss_sum'] / w['seen']:.3f}  "
                  f"{self.clock.seconds:.0f}s", flush=True)
            self.window = {"wrong": 0, "seen": 0, "loss_sum": 0.0}

    def on_epoch_end(self, trainer, metrics):
        if "test_acc" in metrics:
            h = self.hist
            h["epoch_steps"].append(metrics["step"])
            h["test_error"].append(1.0 - metrics["test_acc"])
            h["test_loss"].append(metrics["test_loss"])
            print(f"{self.label} epoch {metrics['epoch']}  test error "
                  f"{1.0 - metrics['test_acc']:.3f}", flush=True)


def train(model, train_split, test_split, *, epochs=None, steps=None, batch_size=128, lr=0.1,
          momentum=0.9, nesterov=False, weight_decay=1e-4, warmup_frac=0.05, milestones=None,
          augment=True, crop_padding=4, decay_bn_bias=False, seed=0, device="cpu", log_every=20,
          eval_every_epoch=True, label=""):
    """SGD with momentum and one schedule for every model, through ``minires.train.fit``;
    returns the history.

    The budget is ``epochs`` passes over ``train_split`` or, when ``steps`` is given, that
    many iterations (the last epoch is cut short; batches are always full with ``steps``).
    The schedule is a linear warm-up over ``warmup_frac`` of the budget then cosine decay to
    zero, or, with ``milestones`` (fractions of the budget), He et al.'s constant rate divided
    by 10 at each milestone. Weight decay skips BN and bias parameters unless
    ``decay_bn_bias`` (He et al. decay everything). ``augment`` is a random crop after
    ``crop_padding`` zero pixels of padding, and a horizontal flip.

    The history holds ``steps`` (iteration numbers), ``train_error`` (the error on the last
    ``log_every`` training batches as they were trained on, like He et al.'s thin curves),
    ``train_loss``, ``lr``, and per epoch ``test_error``/``test_loss``. A NaN or infinite loss
    stops this model and is recorded as ``diverged``.
    """
    if (epochs is None) == (steps is None):
        raise ValueError("train: give exactly one of epochs and steps")
    drop_last = steps is not None and len(train_split) >= batch_size
    per_epoch = (len(train_split) // batch_size if drop_last
                 else math.ceil(len(train_split) / batch_size))
    steps_total = max(1, steps if steps is not None else epochs * per_epoch)
    schedule = dict(schedule="step", milestones=[int(f * steps_total) for f in milestones],
                    warmup_steps=0) if milestones else \
        dict(schedule="cosine", warmup_steps=int(warmup_frac * steps_total))
    config = TrainConfig(epochs=epochs, max_steps=steps, batch_size=batch_size, lr=lr,
                         momentum=momentum, nesterov=nesterov, weight_decay=weight_decay,
                         decay_bn_bias=decay_bn_bias, augment=augment, crop_padding=crop_padding,
                         drop_last=drop_last, seed=seed, device=device, prefetch=0, **schedule)
    hist = {"steps": [], "train_error": [], "train_loss": [], "lr": [], "epoch_steps": [],
            "test_error": [], "test_loss": [], "diverged": False, "steps_total": steps_total}
    log = _IterationLog(hist, log_every, label)
    data = SimpleNamespace(train=train_split, test=test_split if eval_every_epoch else None)
    try:
        fit(model, data, config, callbacks=[log], progress=False, verbose=False,
            handle_signals=False)
    except NonFiniteLossError as err:
        hist["diverged"] = True
        print(f"{label}: {str(err).split(';')[0]}; stopping this model")
    hist["seconds"] = log.clock.seconds
    return hist


# --- training nets here when no --from is given (layer-responses) ------------------------------
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


def trained_model(name, args, out_dir, train_split, test_split):
    """``name`` trained with the shared recipe (weights saved to ``out_dir/NAME.npz``).

    Returns (model, history, a note saying where the weights came from).
    """
    model = build(name, args.seed, args.device)
    epochs = 1 if args.tiny else args.epochs
    hist = train(model, train_split, test_split, epochs=epochs,
                 batch_size=min(args.batch_size, 32) if args.tiny else args.batch_size, lr=args.lr,
                 seed=args.seed, device=args.device, log_every=2 if args.tiny else args.log_every,
                 label=name)
    save_weights(model, out_dir / f"{name}.npz",
                 meta={"model": name, "seed": args.seed, "epochs": epochs, "recipe": "experiments",
                       "data": {"input_size": int(train_split.images.shape[-1])}})
    return model, hist, f"trained here: {epochs} epochs on {len(train_split)} images"


# --- trained nets from an earlier run ---------------------------------------------------------------
def _seed_folders(source):
    """The ``seed-S`` folders of a degradation run (or of ``all``'s), by seed number."""
    folders = [*source.glob("seed-*"), *source.glob("degradation/seed-*")]
    numbered = [(int(p.name[5:]), p) for p in folders if p.is_dir() and p.name[5:].isdigit()]
    return [p for _, p in sorted(numbered)]


def nets_from(source, names, device="cpu", seed=None):
    """{name: (model in eval mode, metadata, path)} for every net in ``names``, from one place.

    ``source`` is a folder of a degradation run (``NAME.npz`` there or in its ``seed-*``
    folders) or, for one name, a checkpoint file (``python -m minires.train``'s
    ``best.npz``). In a run folder every net comes from the *same* seed: ``seed`` when given,
    else the lowest seed whose folder holds all of them -- nets of different seeds are never
    mixed. The metadata says how each net was trained and how it started: ``data.input_size``
    (8 or 16 for the laptop degradation nets, 32 for a CIFAR run) and ``init``.
    """
    source = Path(source)
    if source.is_file():
        if len(names) != 1:
            raise SystemExit(f"--from {source}: a checkpoint file holds one net, but {len(names)} "
                             f"were asked for ({', '.join(names)}); give a degradation run folder")
        return {names[0]: _load_net(source, names[0], device)}
    if not source.is_dir():
        raise SystemExit(f"--from {source}: no such folder or checkpoint file")
    folders = [source, *_seed_folders(source)]
    if seed is not None:
        folders = [f for f in folders[1:] if f.name == f"seed-{seed}"]
    folder = next((f for f in folders if all((f / f"{n}.npz").is_file() for n in names)), None)
    if folder is None:
        absent = [n for n in names if not any((f / f"{n}.npz").is_file() for f in folders)]
        if absent:
            raise SystemExit(f"--from {source}: no {', '.join(n + '.npz' for n in absent)} there "
                             f"or in its {'seed-' + str(seed) if seed is not None else 'seed-*'} "
                             f"folder(s) (expected a degradation run that trained "
                             f"{'it' if len(absent) == 1 else 'them'})")
        raise SystemExit(f"--from {source}: no one seed-* folder there holds all of "
                         f"{', '.join(n + '.npz' for n in names)}: nets of different seeds are "
                         f"not compared")
    return {n: _load_net(folder / f"{n}.npz", n, device) for n in names}


def net_from(source, name=None, device="cpu"):
    """One trained net: ``nets_from(source, [name])[name]`` (``name`` may be None for a
    checkpoint file: the net it names)."""
    if name is None:
        return _load_net(Path(source), None, device)
    return nets_from(source, [name], device)[name]


def _load_net(path, name, device):
    if not Path(path).is_file():
        raise SystemExit(f"--from {path}: no such checkpoint file")
    ckpt = mr.checkpoint.load(path)
    meta = ckpt.meta or {}
    saved = meta.get("model") or (meta.get("config") or {}).get("model")
    if saved is None:
        raise SystemExit(f"--from {path}: the checkpoint does not say which model it holds")
    # how its weights started: "init" (or the older flag zero_init_residual)
    init = meta.get("init") or ("zero" if meta.get("zero_init_residual") else "paper")
    full = net_name(saved, init)
    older = "init" not in meta              # written before nets were named by their init
    if name is not None and name != full and not (older and name == saved):
        raise SystemExit(f"--from {path}: holds {full}, but {name} was asked for")
    model = mr.models.get_model(saved).to(device)
    mr.checkpoint.restore(ckpt, model)
    model.eval()
    # a checkpoint that does not say its input size was trained on the images as they come
    meta = {**meta, "model": saved, "init": init, "net": full,
            "data": meta.get("data", {"input_size": None})}
    return model, meta, Path(path)


def input_size_of(loaded):
    """The one input size the loaded nets (``{name: net_from(...)}``) were trained at, or None
    when nothing was loaded; refuses nets of different sizes."""
    sizes = {meta["data"]["input_size"] for _, meta, _ in loaded.values()} - {None}
    if len(sizes) > 1:
        raise SystemExit(f"--from: the nets were trained on different input sizes {sorted(sizes)}; "
                         f"compare nets of one run")
    return sizes.pop() if sizes else None
