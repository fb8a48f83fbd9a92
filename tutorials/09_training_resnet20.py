# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Lesson 09 — Training ResNet-20 on CIFAR-10
#
# **Goal.** Train the network of the paper two ways — from Python with
# `minires.train.fit`, and from the command line with `python -m minires.train cifar`
# — and learn to read what a run leaves behind: the per-epoch metrics, the curves,
# the checkpoints. Along the way: what the data pipeline does (augmentation), what the
# recipe's learning-rate schedule looks like, and how to watch a run from a callback.
#
# **Budget without fast mode:** ResNet-20 for 3 epochs on the first 10,000 CIFAR-10
# training images (tested on the first 2,000 test images) from Python, then 1 epoch on
# 5,000 images from the command line; measured 4.6-6.9 minutes in four earlier runs on a
# 2-core Intel Xeon (2026-12-05 and -06). That is a short run: the accuracy it reaches is
# far below what the full recipe (`python -m minires.train cifar`, 22 epochs on all 50,000
# images, 47-81 minutes on the 2-core machines measured) is for. Fast mode: 256
# synthetic 8x8 images from Python, and a tiny folder of synthetic images written in the
# official CIFAR-10 binary format for the command line; seconds.

# %%
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
from lesson_utils import (
    FAST,
    fast_or_full,
    has_matplotlib,
    load_data,
    mode_line,
    new_figure,
    out_dir,
    save_figure,
    synthetic_cifar,
)

import minires as mr
from minires.train import Callback, evaluate, fit, recipe_config

OUT = out_dir("09_training_resnet20")
print(mode_line())

# %% [markdown]
# ## 1. The data, and augmentation
#
# `mr.data.load_cifar10()` reads the official binary files (no pickle is ever
# loaded) into uint8 arrays (N, 3, 32, 32). During training every image is shifted
# by up to 4 pixels (zero padding, then a random 32x32 crop) and mirrored with
# probability ½ — the augmentation of the paper. The loader does it for a whole
# batch at once; `random_crop_flip_reference` is the obvious per-image loop it is
# tested against.

# %%
data = load_data(n_train=10_000, n_test=2_000, fast_train=256, fast_test=128)
print(f"training images {data.train.images.shape} {data.train.images.dtype}, "
      f"test images {data.test.images.shape}")

batch = data.train.images[:8]
augmented = mr.data.random_crop_flip(batch, np.random.default_rng(0), padding=4)
reference = mr.data.random_crop_flip_reference(batch, np.random.default_rng(0), padding=4)
assert augmented.shape == batch.shape and augmented.dtype == np.uint8
assert np.array_equal(augmented, reference)

fig = new_figure((10, 2.6))
if fig is not None:
    axes = fig.subplots(2, 8)
    for i in range(8):
        axes[0, i].imshow(batch[i].transpose(1, 2, 0))
        label = data.train.labels[i]
        axes[0, i].set_title(mr.data.CLASSES[label] if not FAST else f"class {label}", fontsize=7)
        axes[1, i].imshow(augmented[i].transpose(1, 2, 0))
    for ax in axes.ravel():
        ax.axis("off")
    axes[1, 0].set_title("augmented", fontsize=7)
save_figure(fig, OUT / "augmentation.png")

# %% [markdown]
# ## 2. The recipe
#
# `recipe_config("fast")` is minires' recipe for a good ResNet-20 in about an hour on
# a CPU: SGD with Nesterov momentum 0.9, batch 128, peak learning rate 0.1 (scaled
# linearly with the batch size: 0.1 x batch / 128), weight decay 5e-4 on the weights
# only, one epoch of linear warm-up from a tenth of the peak, then a cosine decay to
# zero; label smoothing 0.1; after the last epoch the test set is also scored with
# each image averaged with its mirror image (`flip_eval`). We keep the recipe and
# only shrink the budget.

# %%
config = recipe_config("fast", model="resnet20", epochs=fast_or_full(2, 3),
                       batch_size=fast_or_full(32, 128), prefetch=0, seed=0,
                       augment=fast_or_full(False, True))   # fast mode: 8x8 images, no shifts
for key in ("model", "epochs", "batch_size", "optimizer", "lr", "momentum", "nesterov",
            "weight_decay", "schedule", "warmup_epochs", "label_smoothing", "augment"):
    print(f"  {key:<16} {getattr(config, key)}")

# %% [markdown]
# ## 2b. First, the sanity check: overfit a tiny subset
#
# Before spending an hour, spend a few seconds: a network that cannot drive its
# training error to zero on 64 images has a bug (a wrong label order, a frozen
# parameter, a broken gradient, a learning rate off by 100x). With no augmentation, no
# label smoothing and plenty of steps, ResNet-20 must memorise them.

# %%
tiny = data.train.take(64)
tiny_data = mr.data.CIFAR10(train=tiny, test=tiny)
mr.manual_seed(0)
tiny_model = mr.models.resnet20()
fit(tiny_model, tiny_data, recipe_config("fast", epochs=fast_or_full(30, 40), batch_size=32,
                                         lr=0.05, warmup_epochs=0, label_smoothing=0.0,
                                         augment=False, flip_eval=False, prefetch=0),
    progress=False, verbose=False, handle_signals=False)
tiny_loss, tiny_acc = evaluate(tiny_model, tiny)
print(f"64 training images after {fast_or_full(30, 40)} epochs: accuracy {tiny_acc:.3f}, "
      f"loss {tiny_loss:.4f}")
assert tiny_acc >= 0.95, "the net cannot even memorise 64 images: look for a bug before training"

# %% [markdown]
# ## 3. Training from Python: `fit`
#
# `fit(model, data, config, out=folder)` runs the loop of lessons 02 and 05 — batch,
# forward, loss, backward, optimiser step, schedule step — evaluates on the test set
# after every epoch and writes the run folder. Callbacks hook into the loop; this
# one records the learning rate and the loss of every step. (`fit` refuses to
# overwrite a run folder that holds a checkpoint, so we clear ours first.)

# %%
class StepLog(Callback):
    def __init__(self):
        self.lr, self.loss = [], []

    def on_after_backward(self, trainer):          # gradients are there, the step not yet taken
        self.lr.append(trainer.optimizer.param_groups[0]["lr"])

    def on_step_end(self, trainer, stats):          # the step's numbers: a StepStats
        self.loss.append(stats.loss)


api_run = OUT / "api_run"
shutil.rmtree(api_run, ignore_errors=True)
mr.manual_seed(0)                                  # the initial weights
model = mr.models.resnet20()
log = StepLog()
result = fit(model, data, config, out=api_run, callbacks=[log], progress=False)
print(result.status, "after", result.global_step, "steps")

# %% [markdown]
# ## 4. Reading a run
#
# The run folder holds `config.json` (everything needed to repeat the run),
# `metrics.jsonl` (one JSON line per epoch), `last.npz` and `best.npz` (checkpoints:
# weights, optimiser and schedule state, random-number state), `summary.json` and,
# with matplotlib, `curves.png`.

# %%
steps_per_epoch = -(-len(data.train) // config.batch_size)
assert result.status == "completed"
assert result.global_step == config.epochs * steps_per_epoch == len(log.loss)
for name in ("config.json", "metrics.jsonl", "last.npz", "best.npz", "summary.json"):
    assert (api_run / name).is_file(), name
assert (api_run / "curves.png").is_file() == has_matplotlib()
rows = [json.loads(line) for line in (api_run / "metrics.jsonl").read_text().splitlines()]
assert rows == result.history and len(rows) == config.epochs

print(f"{'epoch':>5} {'train loss':>10} {'train acc':>9} {'test loss':>9} {'test acc':>8} "
      f"{'lr':>8} {'img/s':>6}")
for r in rows:
    print(f"{r['epoch']:>5} {r['train_loss']:>10.3f} {100 * r['train_acc']:>8.1f}% "
          f"{r['test_loss']:>9.3f} {100 * r['test_acc']:>7.1f}% {r['lr']:>8.4f} "
          f"{r['img_per_s']:>6.0f}")
best = max(r["test_acc"] for r in rows)
assert result.best["acc"] == best
assert result.best["epoch"] == next(r["epoch"] for r in rows if r["test_acc"] == best)

# %% [markdown]
# What to look for:
#
# * **train loss** includes label smoothing (its floor is above 0) and is averaged
#   over the epoch while the weights change; **test loss** is measured at the end of
#   the epoch in evaluation mode (batch norm with running statistics, no augmentation).
# * **train acc** is on augmented images, so early on it can be *below* test accuracy.
# * the gap between train and test accuracy late in training is overfitting.
#
# The last row must match a fresh evaluation of the final weights — the same function
# `fit` uses, on the same test images:

# %%
test_loss, test_acc = evaluate(model, data.test, batch_size=max(config.batch_size, 256))
print(f"evaluate(): test loss {test_loss:.4f}, accuracy {100 * test_acc:.2f}%")
assert test_acc == rows[-1]["test_acc"] and np.isclose(test_loss, rows[-1]["test_loss"])
verdict = "above" if test_acc > 0.1 else "not above"
print(f"After {config.epochs} epochs on {len(data.train)} images the test accuracy is "
      f"{100 * test_acc:.1f}%, {verdict} chance (10%)."
      + (" Fast mode: synthetic data, so this checks the code only." if FAST else ""))

# %% [markdown]
# The recipe's learning rate, step by step, as the callback saw it: a linear warm-up
# from a tenth of the peak over the first epoch, then a cosine decay.

# %%
assert np.isclose(log.lr[0], 0.1 * config.lr)
assert max(log.lr) <= config.lr * (1 + 1e-9) and log.lr[-1] < max(log.lr)
fig = new_figure((9, 3))
if fig is not None:
    ax1, ax2 = fig.subplots(1, 2)
    ax1.plot(log.lr)
    ax1.set(xlabel="step", ylabel="learning rate", title="warm-up + cosine")
    ax2.plot(log.loss, lw=0.7)
    ax2.set(xlabel="step", ylabel="batch loss", title="training loss per step")
save_figure(fig, OUT / "schedule_and_loss.png")
if has_matplotlib():
    print(f"figure: {api_run / 'curves.png'} (written by fit)")

# %% [markdown]
# Per class, on the test set (the rows of a confusion matrix are the true classes):

# %%
model.eval()
with mr.no_grad():
    pred = np.concatenate([model(mr.tensor(x)).numpy().argmax(axis=1) for x, _ in
                           mr.data.DataLoader(data.test.images, data.test.labels, batch_size=256)])
confusion = np.zeros((10, 10), dtype=int)
np.add.at(confusion, (data.test.labels, pred), 1)
assert confusion.sum() == len(data.test) and np.trace(confusion) / len(data.test) == test_acc
for k in range(10):
    n_k = confusion[k].sum()
    name = mr.data.CLASSES[k] if not FAST else f"class {k}"
    print(f"  {name:<11} {100 * confusion[k, k] / max(n_k, 1):5.1f}% of {n_k}")

# %% [markdown]
# ## 5. The command line
#
# The same training from a shell: `python -m minires.train cifar` with the recipe's
# defaults, every option overriding one setting. `--limit-train` / `--limit-test`
# shrink the data, `--out` names the run folder, `--no-download` refuses to fetch the
# data. Afterwards `--eval-only CHECKPOINT` evaluates a checkpoint.
#
# In fast mode the command reads a tiny folder of synthetic images that we write in
# the official binary layout: five training files and one test file, each a sequence
# of 3,073-byte records — one label byte, then 1,024 red, 1,024 green and 1,024 blue
# pixel bytes, row by row.

# %%
def write_cifar_binary(root, per_file=32):
    folder = Path(root) / "cifar-10-batches-bin"
    folder.mkdir(parents=True, exist_ok=True)
    names = [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]
    for seed, name in enumerate(names):
        split = synthetic_cifar(per_file, 1, size=32, seed=seed).train
        records = np.concatenate([split.labels.astype(np.uint8)[:, None],
                                  split.images.reshape(per_file, -1)], axis=1)   # (n, 3073)
        records.tofile(folder / name)
    return Path(root)


if FAST:
    data_dir = write_cifar_binary(OUT / "tiny_cifar")
    limit_train, limit_test, epochs, batch_size = 64, 32, 1, 32
else:
    data_dir = None                                # ~/.cache/minires or $MINIRES_DATA
    limit_train, limit_test, epochs, batch_size = 5000, 2000, 1, 128

cli_run = OUT / "cli_run"
shutil.rmtree(cli_run, ignore_errors=True)
command = [sys.executable, "-m", "minires.train", "cifar", "--model", "resnet20",
           "--epochs", str(epochs), "--batch-size", str(batch_size),
           "--limit-train", str(limit_train), "--limit-test", str(limit_test),
           "--out", str(cli_run), "--no-download", "--no-progress", "--seed", "0"]
if data_dir is not None:
    command += ["--data-dir", str(data_dir)]
print("$ python", " ".join(command[1:]))

# the child process must import the same minires as this notebook
package_root = str(Path(mr.__file__).resolve().parent.parent)
env = dict(os.environ, PYTHONPATH=os.pathsep.join(
    [package_root] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
print(done.stdout[-2000:], done.stderr[-2000:])
assert done.returncode == 0, f"the command failed with exit status {done.returncode}"

cli_rows = [json.loads(line) for line in (cli_run / "metrics.jsonl").read_text().splitlines()]
saved = json.loads((cli_run / "config.json").read_text())
assert len(cli_rows) == epochs and saved["limit_train"] == limit_train
print(f"command line: {cli_rows[-1]['epoch']} epoch, test accuracy "
      f"{100 * cli_rows[-1]['test_acc']:.1f}% on {limit_test} images")

# %% [markdown]
# `--eval-only` loads the best checkpoint into a fresh model and evaluates it. The
# weights are the ones that produced the run's last test accuracy, and evaluation is
# deterministic on the CPU, so the numbers agree (up to one image, which is the
# tolerance we allow for a different BLAS thread schedule in the new process).

# %%
evaluated = subprocess.run(
    [sys.executable, "-m", "minires.train", "cifar", "--eval-only", str(cli_run / "best.npz"),
     "--limit-test", str(limit_test), "--no-download"]
    + (["--data-dir", str(data_dir)] if data_dir is not None else []),
    env=env, capture_output=True, text=True, check=False)
assert evaluated.returncode == 0, evaluated.stderr[-2000:]
report = json.loads(evaluated.stdout.strip().splitlines()[-1])
print(report)
assert abs(report["test_acc"] - cli_rows[-1]["test_acc"]) <= 1 / limit_test + 1e-12

# %% [markdown]
# ## Try this
#
# 1. Run the real recipe: `python -m minires.train cifar` (about an hour on 2 cores;
#    `--threads 2` if your BLAS uses too many). Stop it with Ctrl-C and continue with
#    `--resume runs/<run>/last.npz`: resuming is exact, the weights end bit for bit
#    as in an uninterrupted run.
# 2. Check that claim yourself, small: `fit` 2 epochs in one go; then 1 epoch, and
#    `fit(..., epochs=2, resume=run/"last.npz")`; compare every array of the two
#    models' `state_dict()` with `np.array_equal`.
# 3. Add `--inspect-every 20` to the command: the run folder gets `gradflow.jsonl`
#    and a heat map of per-layer gradient norms over training (lesson 06's tool,
#    during training).
# 4. Train `plain20` with the same command and compare the curves with ResNet-20's.

# %%
print("lesson 09 done: the run files, metrics, evaluation and schedule were asserted; "
      "accuracies are reported as measured")
