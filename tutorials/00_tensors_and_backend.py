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
# # Lesson 00 — Tensors and the backend (NumPy now, CuPy later)
#
# **Goal.** Meet `minires.Tensor`: a NumPy array plus the few things automatic
# differentiation needs (a `grad`, the op that made it). See the rules that keep a
# network in float32, and the one trick that lets the same code run on a GPU:
# every op asks its array which library owns it (`xp = get_array_module(x)`).
#
# **Budget without fast mode:** no data set; under a second on a CPU. Fast mode
# (`MINIRES_TUTORIAL_FAST=1`) changes nothing in this lesson.
#
# Run it as a script (`python tutorials/00_tensors_and_backend.py`) or open it as a
# notebook (see `tutorials/README.md`) and step through the cells.

# %%
import numpy as np
from lesson_utils import mode_line

import minires as mr
import minires.functional as F

print(mode_line())
print("minires", mr.__version__, "numpy", np.__version__)

# %% [markdown]
# ## 1. Making a tensor
#
# `mr.tensor(data)` copies `data` into a new leaf tensor. The dtype rules are PyTorch's:
# Python floats and lists of floats become **float32** (fast, and enough precision to
# train), Python ints become int64, and an array keeps its dtype — so a **float64**
# array stays float64, which is what gradient checks need (lessons 01–04), and integer
# labels stay integers.

# %%
a = mr.tensor([[1.0, 2.0], [3.0, 4.0]])
b = mr.tensor(np.arange(6).reshape(2, 3))            # integers stay integers (int64)
c = mr.tensor(np.ones((2, 2), dtype=np.float64))     # float64 stays float64
d = mr.tensor([1, 2, 3], dtype=np.float64)           # ask for a dtype explicitly
print(a)
print(a.shape, a.dtype, b.dtype, c.dtype, d.dtype, a.device)

assert a.dtype == np.float32 and b.dtype == np.int64
assert c.dtype == np.float64 and d.dtype == np.float64
assert a.shape == (2, 2) and a.device == "cpu"

# %% [markdown]
# The array lives in `.data`: a plain `numpy.ndarray` on the CPU. `mr.tensor` copies
# (like `torch.tensor`), so changing the source afterwards does not change the tensor.
# `.numpy()` gives the data as a NumPy array wherever it lives (it copies from the GPU).

# %%
source = np.array([1.0, 2.0, 3.0], dtype=np.float32)
t = mr.tensor(source)
source[0] = 100.0
print(type(t.data).__name__, t.data, t.numpy())
assert isinstance(t.data, np.ndarray)
assert t.data[0] == 1.0 and not np.shares_memory(t.data, source)
assert np.array_equal(t.numpy(), [1.0, 2.0, 3.0])

# %% [markdown]
# ## 2. Operations record a graph
#
# Each operator (`+`, `*`, `@`, `.sum()` ...) is one small class in
# `minires/functional/`, a `Function` with a hand-written `forward` and `backward`.
# When an input requires a gradient, the result remembers the function that made it in
# `grad_fn`: following `grad_fn` backwards *is* the computation graph that
# `backward()` walks (lesson 01). Under `mr.no_grad()` nothing is recorded — that is
# how evaluation runs without keeping memory for a backward pass.

# %%
w = mr.tensor([1.0, -2.0, 3.0], requires_grad=True)
y = (w * 2.0 + 1.0).sum()
print(y, "made by", y.grad_fn.name)
with mr.no_grad():
    z = (w * 2.0 + 1.0).sum()
print(z, "grad_fn:", z.grad_fn)

assert y.grad_fn is not None and y.grad_fn.name == "Sum"
assert z.grad_fn is None and not z.requires_grad
assert w.is_leaf and w.grad_fn is None

y.backward()          # d/dw sum(2w + 1) = 2 for every element
print("w.grad =", w.grad)
assert np.array_equal(w.grad, [2.0, 2.0, 2.0])

# %% [markdown]
# ## 3. Broadcasting, forward and backward
#
# Shapes broadcast exactly as in NumPy. In the backward pass the gradient of a
# broadcast input must be *summed* back to the input's shape: a bias of shape `(4,)`
# added to every row of a `(3, 4)` matrix receives the sum of the three rows'
# gradients. The engine does this summing, once, for every op.

# %%
x = mr.tensor(np.arange(12.0).reshape(3, 4), requires_grad=True)
bias = mr.tensor(np.ones(4), requires_grad=True)
out = x + bias
print(out.shape)
assert np.array_equal(out.numpy(), np.arange(12.0).reshape(3, 4) + np.ones(4))
out.sum().backward()
print("bias.grad =", bias.grad)
assert bias.grad.shape == (4,) and np.array_equal(bias.grad, [3.0, 3.0, 3.0, 3.0])
assert x.grad.shape == (3, 4) and np.array_equal(x.grad, np.ones((3, 4)))

# %% [markdown]
# ## 4. Staying in float32
#
# A float32 network needs half the memory of a float64 one, and on most hardware it
# runs faster too (how much was not measured here). The
# trap: in NumPy 2 a NumPy *scalar* is strongly typed, so `float32_array *
# np.float64(0.5)` silently becomes float64, while a plain Python float keeps float32.
# minires turns every number you combine with a tensor into the tensor's dtype, and
# its ops are written so that nothing upcasts behind your back.

# %%
x32 = mr.tensor(np.ones(3, dtype=np.float32))
print("tensor * 0.5             ->", (x32 * 0.5).dtype)
print("tensor * np.float64(0.5) ->", (x32 * np.float64(0.5)).dtype)
print("raw array * 0.5          ->", (x32.data * 0.5).dtype)
print("raw array * np.float64   ->", (x32.data * np.float64(0.5)).dtype)
assert (x32 * 0.5).dtype == np.float32
assert (x32 * np.float64(0.5)).dtype == np.float32
assert (x32.data * 0.5).dtype == np.float32
if int(np.__version__.split(".")[0]) >= 2:          # NEP 50: NumPy scalars keep their type
    assert (x32.data * np.float64(0.5)).dtype == np.float64

# %% [markdown]
# ## 5. The backend: one code path for NumPy and CuPy
#
# CuPy is a NumPy look-alike whose arrays live on an NVIDIA GPU. minires never writes
# `np.exp` inside an op; it writes
#
# ```python
# xp = get_array_module(x)     # numpy for a NumPy array, cupy for a CuPy array
# y = xp.exp(x)
# ```
#
# so the same op runs on both. Only `minires/backend.py` imports CuPy, and only when
# something is moved to `"cuda"`. Here is a function written that way; it works on
# whatever array it is given.

# %%
def softplus(x):
    """log(1 + exp(x)), stable for large x, on NumPy or CuPy arrays."""
    xp = mr.get_array_module(x)
    return xp.maximum(x, 0) + xp.log1p(xp.exp(-xp.abs(x)))


v = np.array([-50.0, 0.0, 50.0], dtype=np.float32)
print(mr.get_array_module(v).__name__, softplus(v))
assert mr.get_array_module(v) is np
assert np.allclose(softplus(v), [0.0, np.log(2.0), 50.0])

# %% [markdown]
# A tensor moves between devices with `.to("cuda")` / `.to("cpu")` (lesson 10 does
# this with whole networks). Without a GPU and CuPy, asking for `"cuda"` fails with a
# message that says what to install.

# %%
if mr.gpu_available():
    g = a.to("cuda")
    print(g.device, type(g.data).__module__)
    assert g.device == "cuda" and np.array_equal(g.to("cpu").numpy(), a.numpy())
else:
    try:
        a.to("cuda")
    except RuntimeError as err:
        print("no GPU here:", str(err)[:160], "...")
    else:
        raise AssertionError("moving to cuda without a GPU should raise")

# %% [markdown]
# ## 6. Errors are part of the interface
#
# A wrong shape says which op, what it expected and what it got:

# %%
try:
    mr.tensor(np.ones((2, 3))) @ mr.tensor(np.ones((4, 5)))
except ValueError as err:
    message = str(err)
print(message)
assert "matmul" in message and "(2, 3)" in message and "(4, 5)" in message

try:
    F.conv2d(mr.tensor(np.ones((3, 8, 8))), mr.tensor(np.ones((4, 3, 3, 3))))
except ValueError as err:
    message = str(err)
print(message)
assert "conv2d" in message and "4-D" in message

# %% [markdown]
# ## Try this
#
# 1. Make `mr.tensor(np.arange(3))` and `mr.tensor(np.arange(3.0))`: which dtypes do
#    you get, and why do they differ?
# 2. Add a `(3, 1)` tensor to a `(1, 4)` tensor that both require grad, call
#    `.sum().backward()` and predict the two gradients before printing them.
# 3. Call `y.backward()` twice on the same `y` from section 2. Read the error: what
#    does `retain_graph=True` change, and what happens to `w.grad` the second time?
# 4. Write `sigmoid(x)` in the `xp` style of `softplus` and check it against
#    `F.sigmoid(mr.tensor(x)).numpy()`.

# %%
print("lesson 00 done: every claim above was checked with an assert")
