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
# # Lesson 05 — The degradation problem
#
# **Goal.** Train two *plain* convolutional networks (no skip connections) that differ
# only in depth, with the same data, order, recipe and number of steps, and compare
# their **training** loss. He et al. (2015, Figure 1 and 6) found that the deeper
# plain network ends with the *higher* training error: not overfitting (that would
# show on the test set, not the training set) but a failure of optimisation. Then
# prove that this is not a lack of capacity: we build, by hand, a deep plain network
# that computes *exactly* what the trained shallow one computes.
#
# **Budget without fast mode:** plain20 and plain56 (the CIFAR layouts of the paper),
# 3 epochs each on the first 5,000 CIFAR-10 training images, batch 128, no
# augmentation; the training loss is then measured on 1,000 of those images. About
# 3–5 minutes on an idle 2-core CPU (plain56 costs ~3x plain20). Fast mode: plain8
# and plain20 on 256 synthetic 8x8 images for 2 epochs, seconds.
#
# What this run can and cannot show: a few hundred steps is far less than the
# paper's 64,000 iterations. The lesson computes the comparison and *prints what it
# measured*, whichever way it goes.

# %%
import time

import numpy as np
from lesson_utils import FAST, fast_or_full, load_data, mode_line, new_figure, out_dir, save_figure

import minires as mr
import minires.functional as F

OUT = out_dir("05_degradation_problem")
print(mode_line())

SHALLOW, DEEP = fast_or_full(("plain8", "plain20"), ("plain20", "plain56"))
EPOCHS = fast_or_full(2, 3)
BATCH = fast_or_full(32, 128)
data = load_data(n_train=5000, n_test=1000, fast_train=256, fast_test=128)
print(f"{SHALLOW} vs {DEEP}: {EPOCHS} epochs of {len(data.train)} images, batch {BATCH}")

# %% [markdown]
# ## 1. Two plain networks
#
# `plainD` has the layout of the CIFAR ResNet of depth D = 6n + 2 — a 3x3 stem, three
# stages of n blocks of two 3x3 conv + batch-norm + ReLU layers on 32x32, 16x16 and
# 8x8 maps, global average pooling and a linear classifier — but its blocks have no
# shortcut: `out = relu(bn2(conv2(relu(bn1(conv1(x))))))`.

# %%
mr.manual_seed(0)
models = {SHALLOW: mr.models.get_model(SHALLOW)}
mr.manual_seed(0)
models[DEEP] = mr.models.get_model(DEEP)
for name, m in models.items():
    convs = sum(1 for mod in m.modules() if isinstance(mod, mr.nn.Conv2d))
    print(f"{name}: {convs} conv layers + 1 linear, {m.num_parameters():,} parameters")
    assert convs + 1 == int(name[len("plain"):])          # depth = weighted layers
    assert not any(getattr(b, "shortcut", False) for _, b in mr.inspect.residual_blocks(m))

# %% [markdown]
# ## 2. The training loop
#
# The loop of lesson 02, with what a real recipe adds: SGD with momentum, weight decay
# on the weights (not on batch-norm scales and biases), and a learning rate that
# warms up linearly and then decays along a cosine. Both networks see the same batches
# in the same order (the loader's order is a function of its seed and the epoch).

# %%
def train(model, split, epochs, batch_size, lr=0.1, seed=0):
    loader = mr.data.DataLoader(split.images, split.labels, batch_size=batch_size, shuffle=True,
                                seed=seed)
    steps = epochs * len(loader)
    opt = mr.optim.SGD(mr.optim.split_weight_decay(model, 5e-4), lr=lr, momentum=0.9)
    sched = mr.optim.Warmup(opt, max(1, steps // 10),
                            schedule=mr.optim.CosineAnnealingLR(opt, steps))
    model.train()
    losses = []
    for epoch in range(epochs):
        for x, y in loader.epoch(epoch):
            loss = F.cross_entropy(model(mr.tensor(x)), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            losses.append(loss.item())
    return losses


def evaluate(model, split, batch_size=250):
    """Mean loss and error rate in evaluation mode (running batch-norm statistics)."""
    model.eval()
    total, wrong = 0.0, 0
    with mr.no_grad():
        for x, y in mr.data.DataLoader(split.images, split.labels, batch_size=batch_size):
            out = model(mr.tensor(x))
            total += F.cross_entropy(out, y, reduction="sum").item()
            wrong += int((out.numpy().argmax(axis=1) != y).sum())
    model.train()
    return total / len(split), wrong / len(split)


history, seconds = {}, {}
for name, model in models.items():
    start = time.perf_counter()
    history[name] = train(model, data.train, EPOCHS, BATCH)
    seconds[name] = time.perf_counter() - start
    print(f"{name}: {len(history[name])} steps in {seconds[name]:.0f}s, "
          f"last batch loss {history[name][-1]:.3f}")
    assert all(np.isfinite(history[name])), f"{name} diverged"

# %% [markdown]
# ## 3. Which one trained better?
#
# Two measures of the *training* loss: the mean batch loss over the last epoch (what
# the optimiser saw, in training mode) and the loss on a fixed set of training images
# in evaluation mode after training. The claim is computed from the first; the
# sentence below is printed from the measured numbers.

# %%
probe = data.train.take(fast_or_full(256, 1000))
steps_per_epoch = len(history[SHALLOW]) // EPOCHS
results = {}
for name, model in models.items():
    last_epoch = float(np.mean(history[name][-steps_per_epoch:]))
    eval_loss, eval_err = evaluate(model, probe)
    test_loss, test_err = evaluate(model, data.test)
    results[name] = {"last_epoch": last_epoch, "eval_loss": eval_loss, "eval_err": eval_err,
                     "test_err": test_err}
    print(f"{name:>8}: training loss (last epoch) {last_epoch:.3f} | eval mode on {len(probe)} "
          f"training images: loss {eval_loss:.3f}, error {100 * eval_err:.1f}% | test error "
          f"{100 * test_err:.1f}%")

deeper_worse = results[DEEP]["last_epoch"] > results[SHALLOW]["last_epoch"]
agree = deeper_worse == (results[DEEP]["eval_loss"] > results[SHALLOW]["eval_loss"])
if deeper_worse:
    verdict = (f"In this run the deeper {DEEP} ended with the HIGHER training loss "
               f"({results[DEEP]['last_epoch']:.3f} vs {results[SHALLOW]['last_epoch']:.3f} "
               f"for {SHALLOW}): the degradation problem.")
else:
    verdict = (f"In this run the deeper {DEEP} did NOT end with a higher training loss "
               f"({results[DEEP]['last_epoch']:.3f} vs {results[SHALLOW]['last_epoch']:.3f} "
               f"for {SHALLOW}): the degradation problem did not show with this budget and "
               f"seed. Try more epochs, more images or another seed.")
verdict += ("" if agree else " (The evaluation-mode loss on the fixed training images points "
            "the other way: with so little training the two measures can disagree.)")
if FAST:
    verdict += " Fast mode: tiny synthetic data, so this says nothing about ResNets."
print(verdict)

fig = new_figure((8, 4))
if fig is not None:
    ax = fig.subplots()
    for name, losses in history.items():
        smooth = np.convolve(losses, np.ones(5) / 5, mode="valid") if len(losses) > 5 else losses
        ax.plot(smooth, label=f"{name} (last epoch {results[name]['last_epoch']:.3f})")
    ax.set(xlabel="iteration", ylabel="training loss (5-step mean)",
           title=f"plain networks, {len(data.train)} images, {EPOCHS} epochs")
    ax.legend()
save_figure(fig, OUT / "training_loss.png")

# %% [markdown]
# ## 4. The deeper network *could* do at least as well
#
# Here is the argument of the paper, as code. Take the trained shallow network. Build
# the deep one so that its first blocks in each stage are copies of the shallow
# network's blocks, and every extra block computes the **identity**:
#
# * a 3x3 convolution whose kernel is 1 at the centre of channel c → c and 0 elsewhere
#   passes its input through;
# * batch norm in evaluation mode with running mean 0, running variance 1, scale
#   $\sqrt{1+\epsilon}$ and shift 0 passes its input through;
# * a ReLU passes its input through, because the block's input is the output of a
#   ReLU (non-negative).
#
# The deep network then computes exactly the same function. So a deep plain network
# with the shallow one's training loss *exists*; if SGD ends higher, the problem is
# finding it — optimisation — not capacity.

# %%
def make_identity(block):
    C = block.conv1.out_channels
    kernel = np.zeros((C, C, 3, 3), dtype=np.float32)
    kernel[np.arange(C), np.arange(C), 1, 1] = 1.0
    for conv, bn in ((block.conv1, block.bn1), (block.conv2, block.bn2)):
        conv.weight.data[...] = kernel
        bn.running_mean.data[...] = 0.0
        bn.running_var.data[...] = 1.0
        bn.weight.data[...] = np.sqrt(1.0 + bn.eps)
        bn.bias.data[...] = 0.0


shallow = models[SHALLOW]
mr.manual_seed(1)
deep_copy = mr.models.get_model(DEEP)
for name in ("conv1", "bn1", "fc"):
    getattr(deep_copy, name).load_state_dict(getattr(shallow, name).state_dict())
for stage in ("layer1", "layer2", "layer3"):
    src, dst = getattr(shallow, stage), getattr(deep_copy, stage)
    for i in range(len(dst)):
        if i < len(src):
            dst[i].load_state_dict(src[i].state_dict())
        else:
            make_identity(dst[i])

shallow.eval()
deep_copy.eval()
x_probe, _ = next(iter(mr.data.DataLoader(probe.images, probe.labels, batch_size=64)))
with mr.no_grad():
    out_shallow = shallow(mr.tensor(x_probe)).numpy()
    out_deep = deep_copy(mr.tensor(x_probe)).numpy()
print(f"{DEEP} built from {SHALLOW} + identity blocks: largest difference of the logits "
      f"{np.abs(out_shallow - out_deep).max():.2e}")
assert np.allclose(out_shallow, out_deep, atol=1e-4)
constructed_loss, _ = evaluate(deep_copy, probe)
print(f"its training loss (eval mode): {constructed_loss:.3f}, the same as {SHALLOW}'s "
      f"{results[SHALLOW]['eval_loss']:.3f}; {DEEP} trained by SGD reached "
      f"{results[DEEP]['eval_loss']:.3f}")
assert np.isclose(constructed_loss, results[SHALLOW]["eval_loss"], rtol=1e-4, atol=1e-5)

# %% [markdown]
# Residual networks turn this construction into the *default*: a residual block
# computes `relu(x + F(x))`, so setting its branch $F$ to zero — which weight decay and
# small initial weights push towards — gives the identity without any special
# kernel. Lesson 06 builds that block and looks at what it does to the gradient.
#
# ## Try this
#
# 1. Train `resnet20` and `resnet56` with the same budget (change `SHALLOW`, `DEEP`).
#    Does the deeper *residual* network train worse?
# 2. Run the experiment of the paper at a larger budget from the command line:
#    `python -m minires.experiments degradation --epochs 10 --limit-train 20000`
#    (`--tiny` checks it in seconds).
# 3. Turn the learning rate down to 0.02. Does the gap between the plain networks
#    change?
# 4. In section 4, perturb one identity kernel slightly and watch the logits move.

# %%
print("lesson 05 done: the construction of section 4 is asserted; the training outcome is "
      "reported as measured")
