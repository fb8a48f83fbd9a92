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
# # Lesson 01 — Autograd by hand
#
# **Goal.** Understand what `loss.backward()` does: the forward pass records a graph
# of `Function`s; backward visits each of them once, in reverse topological order,
# and applies the chain rule. You will compute a gradient with pencil-and-paper
# arithmetic, walk the graph yourself, write a new op (forward *and* backward), and
# prove it right — or wrong — with `minires.gradcheck`.
#
# **Budget without fast mode:** no data set; under a second on a CPU. Fast mode
# changes nothing here.

# %%
import numpy as np
from lesson_utils import mode_line, new_figure, out_dir, save_figure

import minires as mr
from minires import Function

OUT = out_dir("01_autograd_by_hand")
print(mode_line())

# %% [markdown]
# ## 1. The chain rule, by hand
#
# Take two numbers and a small formula:
#
# $$ u = a b, \qquad v = u + e^{b}, \qquad L = v \cdot a $$
#
# Backward goes from $L$ to the inputs, multiplying local derivatives:
#
# * $\partial L/\partial v = a$ and $\partial L / \partial a$ gets a *direct* share $v$;
# * $\partial L/\partial u = \partial L/\partial v \cdot 1$;
# * $b$ is used twice (in $u$ and in $e^b$), so its gradient is the **sum** of both
#   paths:
#   $\partial L/\partial b = \partial L/\partial u \cdot a + \partial L/\partial v \cdot e^b$;
# * $a$ is also used twice: $\partial L/\partial a = v + \partial L/\partial u \cdot b$.

# %%
a = mr.tensor(1.5, dtype=np.float64, requires_grad=True)
b = mr.tensor(-0.5, dtype=np.float64, requires_grad=True)
u = a * b
v = u + b.exp()
L = v * a
L.backward()

# the same numbers, by hand
A, B = 1.5, -0.5
U = A * B
V = U + np.exp(B)
dL_dv = A
dL_du = dL_dv * 1.0
dL_db = dL_du * A + dL_dv * np.exp(B)
dL_da = V + dL_du * B
print(f"autograd: dL/da = {a.grad:.6f}, dL/db = {b.grad:.6f}")
print(f"by hand:  dL/da = {dL_da:.6f}, dL/db = {dL_db:.6f}")
assert np.isclose(a.grad, dL_da) and np.isclose(b.grad, dL_db)

# %% [markdown]
# ## 2. The graph and its topological order
#
# Every result tensor keeps `grad_fn`, the `Function` that made it; every function
# keeps its `inputs`. Following these links from `L` gives the whole graph. Backward
# may run a function only when *all* the functions that consumed its outputs have
# passed their gradient down — otherwise the gradient of a tensor used twice would be
# incomplete. An order with that property is a (reverse) topological order. The
# engine in `minires/autograd.py` uses Kahn's algorithm; here is the same idea in a
# few lines, applied to the graph of section 1.

# %%
def functions_of(root):
    """Every Function reachable from tensor ``root``, and who consumes whose output."""
    consumers = {root.grad_fn: []}
    stack = [root.grad_fn]
    while stack:
        fn = stack.pop()
        for x in fn.inputs:
            parent = None if x is None else x.grad_fn
            if parent is None:
                continue                      # a leaf (an input or a weight)
            if parent not in consumers:
                consumers[parent] = []
                stack.append(parent)
            consumers[parent].append(fn)
    return consumers


def backward_order(root):
    """Kahn's algorithm: a function is ready once all its consumers are done."""
    consumers = functions_of(root)
    waiting = {fn: len(c) for fn, c in consumers.items()}
    ready, order = [root.grad_fn], []
    while ready:
        fn = ready.pop()
        order.append(fn)
        for x in fn.inputs:
            parent = None if x is None else x.grad_fn
            if parent is not None:
                waiting[parent] -= 1
                if waiting[parent] == 0:
                    ready.append(parent)
    return order, consumers


a = mr.tensor(1.5, dtype=np.float64, requires_grad=True)
b = mr.tensor(-0.5, dtype=np.float64, requires_grad=True)
L = ((a * b) + b.exp()) * a
order, consumers = backward_order(L)
print(" -> ".join(fn.name for fn in order))
position = {fn: i for i, fn in enumerate(order)}
assert len(order) == len(consumers) == 4                  # Mul, Add, Exp, Mul: each once
assert all(position[c] < position[fn] for fn, cs in consumers.items() for c in cs)

# %% [markdown]
# Each function's backward runs **exactly once**, however many times its output is
# used. Let us count: a tiny op that doubles its input and counts its backward calls,
# whose output is then used three times.

# %%
class Double(Function):
    """y = 2x. keeps: nothing."""
    calls = 0

    def forward(self, x):
        return 2 * x

    def backward(self, gy):
        Double.calls += 1
        return (2 * gy,)


x = mr.tensor(3.0, dtype=np.float64, requires_grad=True)
y = Double()(x)
z = y * y + y            # y used three times: dz/dy = 2y + 1 = 13
z.backward()
print("backward calls of Double:", Double.calls, "  x.grad =", x.grad)
assert Double.calls == 1
assert x.grad == 2 * (2 * 6.0 + 1)          # dz/dx = dz/dy * dy/dx = 13 * 2

# %% [markdown]
# ## 3. Write a new op: `Sin`
#
# minires has no `sin`. An op is a class with `forward` and `backward` on raw arrays
# (NumPy or CuPy). `forward` saves what `backward` needs; `backward` receives the
# gradient of the output and returns one gradient per input:
#
# $$ y = \sin x \quad\Rightarrow\quad
#    \frac{\partial L}{\partial x} = \frac{\partial L}{\partial y}\cos x $$

# %%
class Sin(Function):
    """y = sin(x). keeps: x."""

    def forward(self, x):
        self.save_for_backward(x)
        return mr.get_array_module(x).sin(x)

    def backward(self, gy):
        (x,) = self.saved
        return (gy * mr.get_array_module(x).cos(x),)


def sin(x):
    return Sin()(x)


grid = mr.tensor(np.linspace(-np.pi, np.pi, 41), requires_grad=True)
sin(grid).sum().backward()
assert np.allclose(grid.grad, np.cos(grid.numpy()))

fig = new_figure((6, 3))
if fig is not None:
    ax = fig.subplots()
    ax.plot(grid.numpy(), np.sin(grid.numpy()), label="sin x")
    ax.plot(grid.numpy(), grid.grad, "o", ms=3, label="autograd: d/dx sum(sin x)")
    ax.plot(grid.numpy(), np.cos(grid.numpy()), lw=0.8, label="cos x")
    ax.legend()
save_figure(fig, OUT / "sin_gradient.png")

# %% [markdown]
# ## 4. Checking a backward pass: `mr.gradcheck`
#
# A hand-written backward is easy to get wrong, so every op in minires is checked
# against **central finite differences** in float64:
#
# $$ \frac{\partial L}{\partial x_i} \approx
#    \frac{L(x + \epsilon e_i) - L(x - \epsilon e_i)}{2\epsilon} $$
#
# for *every* element $x_i$, with the loss $L = \sum_j f(x)_j\, r_j$ for a random
# direction $r$ (lesson 04 shows why a plain `sum` is not enough). `gradcheck` returns
# True, or raises `GradcheckError` naming the worst element.

# %%
x = mr.tensor(np.random.default_rng(0).standard_normal((3, 4)), requires_grad=True)
assert x.dtype == np.float64
assert mr.gradcheck(sin, x)
assert mr.gradcheck(lambda t: sin(t) * t.exp(), x)       # composed with other ops
print("gradcheck passed for Sin")


class WrongSin(Sin):
    """A classic slip: the derivative of sin written as sin."""

    def backward(self, gy):
        (x,) = self.saved
        return (gy * mr.get_array_module(x).sin(x),)


try:
    mr.gradcheck(lambda t: WrongSin()(t), x)
except mr.GradcheckError as err:
    caught = err
    print(err)
else:
    caught = None
assert caught is not None, "gradcheck must reject the wrong backward"

# %% [markdown]
# ## 5. Gradients accumulate
#
# `backward()` *adds* into `.grad` (so a tensor used in two losses gets both
# gradients). That is why a training step clears the gradients first
# (`optimizer.zero_grad()`).

# %%
w = mr.tensor([1.0, 2.0], requires_grad=True)
(w * w).sum().backward()
first = w.grad.copy()
(w * w).sum().backward()
print("after one backward:", first, " after two:", w.grad)
assert np.array_equal(w.grad, 2 * first)
w.zero_grad()
assert w.grad is None

# %% [markdown]
# ## Try this
#
# 1. Write `Cos`, `Tanh` or `Softplus` as a `Function` and `gradcheck` it.
# 2. Break `Sin.backward` in a subtler way — forget the minus sign of a `Cos`, or
#    return `gy * cos(x) * 1.001` — and see which tolerance catches it
#    (`mr.gradcheck(..., rtol=..., atol=...)`).
# 3. Run `gradcheck` with a float32 input: read the error and explain why finite
#    differences need float64.
# 4. Print `backward_order` for `L = (x * x).exp().sum()` and for a graph of your own
#    with a tensor used three times.

# %%
print("lesson 01 done: every claim above was checked with an assert")
