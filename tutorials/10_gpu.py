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
# # Lesson 10 — The GPU: the same code on CuPy
#
# **Goal.** Run everything of the earlier lessons on an NVIDIA GPU without changing a
# line of the ops (the design; this lesson has not yet run on a GPU: see the README):
# move tensors and models with `.to("cuda")`, check that the GPU computes what the CPU
# computes (forward, backward, finite differences), measure the speed-up, and train with
# `fit(..., device="cuda")`.
#
# **Budget without fast mode:** needs an NVIDIA GPU with CuPy
# (`pip install 'minires[cuda12]'` or `'minires[cuda13]'`: match the CuPy package to
# the CUDA version of your driver, which `nvidia-smi` shows; the extras include CuPy's
# CUDA toolkit packages, which CuPy 14 needs). ResNet-20 for 1 epoch on all 50,000 CIFAR-10
# training images (tested on 10,000) on the GPU, plus a timing of one batch on the
# CPU and the GPU; the time depends on the GPU and is printed. Fast mode: 256
# synthetic 8x8 images, seconds. **Without a GPU the lesson says so after section 1
# and stops cleanly.**

# %%
import time

import numpy as np
from lesson_utils import FAST, fast_or_full, load_data, mode_line, new_figure, out_dir, save_figure

import minires as mr
import minires.functional as F
from minires.train import evaluate, fit, recipe_config

OUT = out_dir("10_gpu")
print(mode_line())

# %% [markdown]
# ## 1. How one code path serves two devices
#
# Every op asks its input array which library owns it — `xp =
# mr.get_array_module(x)` is `numpy` for a NumPy array and `cupy` for a CuPy array —
# and then calls `xp.matmul`, `xp.exp` and friends. CuPy implements NumPy's interface
# on the GPU, so the op does not know or care where it runs. Only
# `minires/backend.py` imports CuPy, lazily: `import minires` never pays for it, and a
# machine without a GPU never needs it.
#
# Without a GPU the next cell prints why and stops the lesson (`SystemExit(0)`: a
# script exits cleanly; in a notebook the cell shows "SystemExit: 0" and "Run All"
# stops there).

# %%
GPU = mr.gpu_available()
print("CuPy with a usable CUDA GPU:", GPU)
if not GPU:
    print("No CUDA GPU with CuPy on this machine: the rest of lesson 10 needs one, so it is "
          "skipped here. On a machine with an NVIDIA GPU: pip install 'minires[cuda12]' or "
          "'minires[cuda13]', matching your driver's CUDA version (nvidia-smi), then run this "
          "lesson again.")
    print("lesson 10 skipped: no GPU")
    raise SystemExit(0)

# %% [markdown]
# ## 2. Tensors on the GPU

# %%
rng = np.random.default_rng(0)
x_cpu = mr.tensor(rng.standard_normal((4, 3, 16, 16)).astype(np.float32))
x_gpu = x_cpu.to("cuda")
cp = mr.get_array_module(x_gpu.data)            # the cupy module, without importing it here
print(x_gpu.device, type(x_gpu.data), cp.__name__)
assert x_gpu.device == "cuda" and cp.__name__ == "cupy"
assert np.array_equal(x_gpu.numpy(), x_cpu.numpy())       # .numpy() copies back to the host

# mixing devices is an error that names the op and the devices
try:
    x_cpu + x_gpu
except RuntimeError as err:
    message = str(err)
print(message)
assert "different devices" in message

# %% [markdown]
# ## 3. Same op, same numbers
#
# The GPU computes in float32 too, but adds in a different order (thousands of
# threads), so results are expected to agree to float32 rounding, not bit for bit (the
# GPU tests check exactly this; they have not yet run on a GPU). Finite-difference
# gradient checks run on the GPU in float64 exactly as on the CPU.

# %%
w_cpu = mr.tensor(rng.standard_normal((8, 3, 3, 3)).astype(np.float32), requires_grad=True)
w_gpu = w_cpu.to("cuda")
xg_cpu = mr.tensor(x_cpu.numpy(), requires_grad=True)
xg_gpu = xg_cpu.to("cuda")
y_cpu = F.relu(F.conv2d(xg_cpu, w_cpu, padding=1))
y_gpu = F.relu(F.conv2d(xg_gpu, w_gpu, padding=1))
assert np.allclose(y_cpu.numpy(), y_gpu.numpy(), rtol=1e-4, atol=1e-4)
g = rng.standard_normal(y_cpu.shape).astype(np.float32)
y_cpu.backward(g)
y_gpu.backward(cp.asarray(g))
assert np.allclose(w_cpu.grad, cp.asnumpy(w_gpu.grad), rtol=1e-3, atol=1e-3)
assert np.allclose(xg_cpu.grad, cp.asnumpy(xg_gpu.grad), rtol=1e-3, atol=1e-3)
print("conv2d + relu: forward and backward agree between CPU and GPU")

x64 = mr.tensor(rng.standard_normal((2, 3, 5, 5)), requires_grad=True, device="cuda")
w64 = mr.tensor(rng.standard_normal((4, 3, 3, 3)), requires_grad=True, device="cuda")
assert mr.gradcheck(lambda a, b: F.conv2d(a, b, stride=2, padding=1), x64, w64)
bn_in = mr.tensor(rng.standard_normal((4, 3, 2, 2)), requires_grad=True, device="cuda")
assert mr.gradcheck(lambda a: F.batch_norm(a, None, None, training=True), bn_in)
print("gradcheck passed on the GPU (conv2d, batch_norm)")

# %% [markdown]
# ## 4. A whole network
#
# `model.to("cuda")` moves every parameter and buffer in place. Two copies of ResNet-20
# with the same weights, one per device, should give the same logits and gradients; the
# cell below checks it when a GPU is there.

# %%
mr.manual_seed(0)
net_cpu = mr.models.resnet20()
mr.manual_seed(0)
net_gpu = mr.models.resnet20().to("cuda")
xb = rng.standard_normal((16, 3, 32, 32)).astype(np.float32)
yb = rng.integers(0, 10, 16)
loss_cpu = F.cross_entropy(net_cpu(mr.tensor(xb)), yb)
loss_gpu = F.cross_entropy(net_gpu(mr.tensor(xb, device="cuda")), cp.asarray(yb))
loss_cpu.backward()
loss_gpu.backward()
print(f"loss on the CPU {loss_cpu.item():.6f}, on the GPU {loss_gpu.item():.6f}")
assert np.isclose(loss_cpu.item(), loss_gpu.item(), rtol=1e-4)
for (name, p_cpu), p_gpu in zip(net_cpu.named_parameters(), net_gpu.parameters()):
    diff = np.linalg.norm(p_cpu.grad - cp.asnumpy(p_gpu.grad))
    assert diff <= 5e-3 * np.linalg.norm(p_cpu.grad) + 1e-6, name
print("every parameter's gradient agrees (relative difference < 0.5%)")

# %% [markdown]
# ## 5. How much faster?
#
# GPU calls return before the work is done (they are queued), so a fair timing waits
# for the GPU to finish: `cp.cuda.Device().synchronize()`. The first calls also
# compile CuPy's kernels; we warm up first. Timings are reported, not asserted.

# %%
def step_time(net, x, y, device, repeats):
    def one():
        net.zero_grad()
        F.cross_entropy(net(mr.tensor(x, device=device)), y).backward()
    one()                                                 # warm-up
    if device == "cuda":
        cp.cuda.Device().synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        one()
    if device == "cuda":
        cp.cuda.Device().synchronize()
    return (time.perf_counter() - start) / repeats


batch = fast_or_full(32, 128)
xt = rng.standard_normal((batch, 3, 32, 32)).astype(np.float32)
yt = rng.integers(0, 10, batch)
t_cpu = step_time(net_cpu, xt, yt, "cpu", 1)
t_gpu = step_time(net_gpu, xt, cp.asarray(yt), "cuda", fast_or_full(3, 10))
print(f"ResNet-20, forward+backward of {batch} images: CPU {t_cpu * 1e3:.0f} ms, GPU "
      f"{t_gpu * 1e3:.1f} ms ({t_cpu / t_gpu:.0f}x in this run)")

# %% [markdown]
# ## 6. Training on the GPU
#
# `fit` moves the model to `config.device` and each batch as it comes from the loader
# (the data pipeline stays on the CPU, preparing the next batch in a background thread
# while the GPU computes).

# %%
data = load_data(n_train=None, n_test=None, fast_train=256, fast_test=128)
config = recipe_config("fast", model="resnet20", epochs=1, batch_size=fast_or_full(32, 128),
                       device="cuda", seed=0)
mr.manual_seed(0)
model = mr.models.resnet20()
result = fit(model, data, config, out=None, progress=False)
row = result.history[-1]
print(f"1 epoch on {len(data.train)} images on the GPU: {row['epoch_time']:.1f}s "
      f"({row['img_per_s']:.0f} images/s), test accuracy {100 * row['test_acc']:.1f}%"
      + (" (fast mode: synthetic data)" if FAST else ""))
assert result.status == "completed" and model.conv1.weight.device == "cuda"

# back to the CPU: the same weights give the same evaluation
loss_gpu_eval, acc_gpu = evaluate(model, data.test, device="cuda")
model.to("cpu")
loss_cpu_eval, acc_cpu = evaluate(model, data.test, device="cpu")
print(f"test accuracy evaluated on the GPU {100 * acc_gpu:.2f}%, on the CPU {100 * acc_cpu:.2f}%")
assert np.isclose(loss_gpu_eval, loss_cpu_eval, rtol=1e-3)

fig = new_figure((5, 3))
if fig is not None:
    ax = fig.subplots()
    ax.bar(["CPU", "GPU"], [t_cpu * 1e3, t_gpu * 1e3], color=["C0", "C2"])
    ax.set(ylabel=f"ms per step (batch {batch})", title="ResNet-20 forward + backward")
save_figure(fig, OUT / "cpu_vs_gpu.png")

# %% [markdown]
# ## Try this
#
# 1. Time batches of 32, 128 and 512 on both devices. Where does the GPU's advantage
#    grow, and why (how busy are its thousands of cores with 32 images)?
# 2. Train the full recipe on the GPU:
#    `python -m minires.train cifar --device cuda` (and `--recipe paper --model
#    resnet110` for the paper's deepest CIFAR network).
# 3. Look at `minires/functional/conv.py`: which code path does the GPU take that the
#    CPU does not (chunking only makes sense on the CPU)?
# 4. Run `python -m pytest tests -m gpu`: the same tests, on the GPU.

# %%
print("lesson 10 done: CPU/GPU agreement and GPU gradchecks were asserted; speed is reported")
