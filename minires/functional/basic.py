"""Elementwise arithmetic, reductions, shape ops and matmul, each with its backward.

Conventions for every op here:
- ``forward`` and ``backward`` work on raw arrays; ``xp`` is NumPy or CuPy.
- Elementwise ops may return gradients in the broadcast shape: the engine sums
  them back to each input's shape (``autograd.sum_to_shape``).
- ``keeps:`` in each docstring says what backward holds on to.
"""
from __future__ import annotations

import builtins  # this module defines sum, max, min, abs and pow: builtins.sum is Python's
import math
import numbers
from collections import namedtuple

import numpy as np

from ..autograd import Function, is_tensor
from ..backend import DEFAULT_DTYPE, get_array_module


def _as_tensors(*args, op="op"):
    """Lift Python numbers and arrays to constant tensors like the first tensor argument.

    Then the dtype rule (lesson 00: nothing upcasts behind your back):

    - integer and bool operands meeting a floating one take its dtype, as in PyTorch
      (``labels * 0.5`` and ``uint8_images / 255.0`` are float32; NumPy alone would give
      float64);
    - a Python number or NumPy scalar takes the tensor's dtype (``Tensor._constant_like``), so
      ``x * 0.5`` and ``x * np.float64(0.5)`` stay float32;
    - two floating tensors (or a tensor and an array) of different precision are a
      TypeError naming ``op`` and both dtypes. PyTorch and NumPy would promote
      float32 with float64 to float64 silently, doubling memory and time from that op
      on; minires asks for the cast to be written: ``x.to(np.float64)`` (recorded in
      the graph) or ``x.astype(np.float64)`` (a constant copy).
    """
    like = next((a for a in args if is_tensor(a)), None)
    if like is None:
        raise TypeError(f"expected at least one Tensor argument, "
                        f"got {[type(a).__name__ for a in args]}")
    tensors = tuple(a if is_tensor(a) else like._constant_like(a) for a in args)
    floats = [t.dtype for t in tensors if t.dtype.kind == "f"]
    if len(set(floats)) > 1:
        _refuse_mixed_precision(op, args, tensors)
    if floats and len(floats) < len(tensors):
        target = floats[0]
        tensors = tuple(t if t.dtype.kind == "f" else t.astype(target) for t in tensors)
    return tensors


def _refuse_mixed_precision(op, args, tensors):
    """The TypeError for floating operands of different precision, with the way out."""
    def what(a, t):
        return f"a {t.dtype} {'tensor' if is_tensor(a) else type(a).__name__}"

    described = " with ".join(what(a, t) for a, t in zip(args, tensors))
    precisions = sorted({t.dtype for t in tensors if t.dtype.kind == "f"}, key=lambda d: d.itemsize)
    low, high = precisions[0], precisions[-1]
    raise TypeError(f"{op}: cannot combine {described}: minires does not promote one floating "
                    f"precision to another behind your back (PyTorch and NumPy would give "
                    f"{high} silently). Convert one operand explicitly: t.to(np.{high}) or "
                    f"t.to(np.{low}) (recorded in the graph, gradients flow back), or "
                    f"t.astype(...) for a constant copy")


def _normalize_axes(axis, ndim, op):
    """``axis`` (None, int or tuple) as a sorted tuple of non-negative ints."""
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if isinstance(axis, numbers.Integral) else tuple(axis)
    out = []
    for a in axes:
        if not -ndim <= a < ndim:
            raise ValueError(f"{op}: axis {a} is out of range for a tensor with {ndim} dimensions")
        out.append(a % ndim)
    if len(set(out)) != len(out):
        raise ValueError(f"{op}: repeated axis in {axis}")
    return tuple(sorted(out))


def broadcast_shape(op, *shapes, what="shapes"):
    """The shape NumPy broadcasting gives ``shapes``, or a ValueError naming ``op`` and the shapes.

    Two dimensions, aligned from the right, broadcast when they are equal or one is 1.
    Every binary op here checks its operands with it before computing; so do the
    tensor's comparisons and in-place updates (``tensor.py``).
    """
    ndim = builtins.max((len(s) for s in shapes), default=0)
    out = []
    for dims in zip(*((1,) * (ndim - len(s)) + tuple(s) for s in shapes)):
        sizes = {d for d in dims if d != 1}
        if len(sizes) > 1:
            raise ValueError(f"{op}: {what} {' and '.join(str(tuple(s)) for s in shapes)} cannot "
                             f"be broadcast together (aligned from the right, each pair of sizes "
                             f"must be equal or one of them 1)")
        out.append(sizes.pop() if sizes else 1)
    return tuple(out)


def _expand_reduced(g, axes, keepdims):
    """Put reduced axes back (size 1) so ``g`` broadcasts against the input."""
    if not keepdims:
        for a in axes:
            g = get_array_module(g).expand_dims(g, a)
    return g


# --- elementwise arithmetic -------------------------------------------------------
class Add(Function):
    """a + b. keeps: nothing."""

    def forward(self, a, b):
        broadcast_shape("add", a.shape, b.shape)
        return a + b

    def backward(self, gy):
        return gy, gy


class Sub(Function):
    """a - b. keeps: nothing."""

    def forward(self, a, b):
        broadcast_shape("sub", a.shape, b.shape)
        return a - b

    def backward(self, gy):
        return gy, -gy


class Mul(Function):
    """a * b. keeps: a and b."""

    def forward(self, a, b):
        broadcast_shape("mul", a.shape, b.shape)
        self.save_for_backward(a, b)
        return a * b

    def backward(self, gy):
        a, b = self.saved
        return gy * b, gy * a


class Div(Function):
    """a / b. keeps: a and b."""

    def forward(self, a, b):
        broadcast_shape("div", a.shape, b.shape)
        self.save_for_backward(a, b)
        return a / b

    def backward(self, gy):
        a, b = self.saved
        ga = gy / b
        return ga, -ga * a / b


class Cast(Function):
    """x in another floating dtype: the explicit conversion (``x.to(np.float64)``) that the
    dtype rule asks for. The gradient is cast back to x's dtype. keeps: nothing (x's dtype).
    """

    def __init__(self, dtype):
        super().__init__()
        self.dtype = np.dtype(dtype)

    def forward(self, x):
        self.x_dtype = x.dtype
        return x.astype(self.dtype)

    def backward(self, gy):
        return (gy.astype(self.x_dtype),)


class Neg(Function):
    """-x. keeps: nothing."""

    def forward(self, x):
        return -x

    def backward(self, gy):
        return (-gy,)


class Pow(Function):
    """x ** p for a constant exponent p. keeps: x."""

    def __init__(self, exponent):
        super().__init__()
        if not isinstance(exponent, numbers.Real):
            raise TypeError(f"Pow: the exponent must be a Python number, "
                            f"got {type(exponent).__name__}")
        # A NumPy scalar exponent would upcast float32 to float64; a Python number does not.
        self.exponent = int(exponent) if isinstance(exponent, numbers.Integral) else float(exponent)

    def forward(self, x):
        self.save_for_backward(x)
        return x ** self.exponent

    def backward(self, gy):
        (x,) = self.saved
        p = self.exponent
        if p == 0:                  # x ** 0 == 1: zero gradient (p * x ** -1 is nan at x = 0)
            return (gy * 0,)
        return (gy * p * x ** (p - 1),)


class Exp(Function):
    """exp(x). keeps: the output (d exp(x)/dx = exp(x))."""

    def forward(self, x):
        y = get_array_module(x).exp(x)
        self.save_for_backward(y)
        return y

    def backward(self, gy):
        (y,) = self.saved
        return (gy * y,)


class Log(Function):
    """natural log. keeps: x."""

    def forward(self, x):
        self.save_for_backward(x)
        return get_array_module(x).log(x)

    def backward(self, gy):
        (x,) = self.saved
        return (gy / x,)


class Sqrt(Function):
    """sqrt(x). keeps: the output (d sqrt(x)/dx = 1 / (2 sqrt(x)))."""

    def forward(self, x):
        y = get_array_module(x).sqrt(x)
        self.save_for_backward(y)
        return y

    def backward(self, gy):
        (y,) = self.saved
        return (gy / (2 * y),)


class Abs(Function):
    """|x|; the gradient at 0 is 0. keeps: sign(x)."""

    def forward(self, x):
        xp = get_array_module(x)
        self.save_for_backward(xp.sign(x))
        return xp.abs(x)

    def backward(self, gy):
        (sign,) = self.saved
        return (gy * sign,)


class Clip(Function):
    """clip(x, low, high); the gradient flows where low <= x <= high. keeps: that mask."""

    def __init__(self, low=None, high=None):
        super().__init__()
        if low is None and high is None:
            raise ValueError("clip: give at least one of low and high")
        if low is not None and high is not None and low > high:
            raise ValueError(f"clip: low ({low}) must not exceed high ({high})")
        self.low, self.high = low, high

    def forward(self, x):
        xp = get_array_module(x)
        inside = xp.ones(x.shape, dtype=bool)
        if self.low is not None:
            inside &= x >= self.low
        if self.high is not None:
            inside &= x <= self.high
        self.save_for_backward(inside)
        return xp.clip(x, self.low, self.high)

    def backward(self, gy):
        (inside,) = self.saved
        return (gy * inside,)


class Maximum(Function):
    """Elementwise max(a, b); a tie sends half the gradient each way. keeps: the two masks."""

    def forward(self, a, b):
        broadcast_shape("maximum", a.shape, b.shape)
        xp = get_array_module(a, b)
        a_wins = (a > b) + 0.5 * (a == b)
        self.save_for_backward(a_wins.astype(xp.result_type(a, b)))
        return xp.maximum(a, b)

    def backward(self, gy):
        (a_wins,) = self.saved
        return gy * a_wins, gy * (1 - a_wins)


class Where(Function):
    """where(condition, a, b): a where condition holds, else b. keeps: the condition."""

    def __init__(self, condition):
        super().__init__()
        self.condition = condition

    def forward(self, a, b):
        xp = get_array_module(a, b)
        cond = xp.asarray(self.condition, dtype=bool)
        broadcast_shape("where", cond.shape, a.shape, b.shape, what="condition, a and b shapes")
        self.save_for_backward(cond)
        return xp.where(cond, a, b)

    def backward(self, gy):
        (cond,) = self.saved
        return gy * cond, gy * ~cond


class Fork(Function):
    """Hand the same input to ``n`` paths: returns ``n`` tensors equal to x.

    A residual block forks its input into the residual branch and the shortcut.
    Forward copies nothing; backward adds the paths' gradients -- that sum is the
    "gradient highway" of a ResNet. Because each path gets its own tensor, a hook
    on each one (``Tensor.register_hook``) sees exactly the gradient that path sends
    back, which is how ``minires.inspect`` tells the skip from the branch. keeps: nothing.
    """

    def __init__(self, n=2):
        super().__init__()
        self.n = n

    def forward(self, x):
        return (x,) * self.n

    def backward(self, *grads):
        total = grads[0]
        for g in grads[1:]:
            total = total + g
        return (total,)


# --- matrix product -----------------------------------------------------------------
class MatMul(Function):
    """a @ b with NumPy's rules: 1-D operands are promoted, leading dims broadcast.

    For 2-D: d(a@b)/da = gy @ b.T and d(a@b)/db = a.T @ gy; batched, ``.T`` swaps
    the last two axes and the engine sums broadcast batch dims. keeps: a and b.
    """

    def forward(self, a, b):
        if a.ndim == 0 or b.ndim == 0:
            raise ValueError("matmul: operands must have at least 1 dimension, got a scalar")
        k_a = a.shape[-1]
        k_b = b.shape[-2] if b.ndim > 1 else b.shape[0]
        if k_a != k_b:
            raise ValueError(f"matmul: inner dimensions differ: a has shape {a.shape}, "
                             f"b has shape {b.shape} ({k_a} != {k_b})")
        broadcast_shape("matmul", a.shape[:-2], b.shape[:-2],
                          what=f"batch dimensions of a {a.shape} and b {b.shape}:")
        self.save_for_backward(a, b)
        return get_array_module(a, b).matmul(a, b)

    def backward(self, gy):
        a, b = self.saved
        xp = get_array_module(gy)
        a2 = a[None, :] if a.ndim == 1 else a       # (1, K)
        b2 = b[:, None] if b.ndim == 1 else b       # (K, 1)
        g2 = gy                                      # put back the axes matmul dropped:
        if a.ndim == 1:
            g2 = xp.expand_dims(g2, g2.ndim - (b.ndim > 1))   # (..., 1, M)
        if b.ndim == 1:
            g2 = xp.expand_dims(g2, g2.ndim)                  # (..., N, 1)
        ga = xp.matmul(g2, xp.swapaxes(b2, -1, -2))
        gb = xp.matmul(xp.swapaxes(a2, -1, -2), g2)
        if a.ndim == 1:
            ga = ga[..., 0, :]
        if b.ndim == 1:
            gb = gb[..., :, 0]
        return ga, gb


class Linear(Function):
    """y = x @ w.T + b, the fully connected layer (x: (N, in), w: (out, in), b: (out,)).

    dx = gy @ w, dw = gy.T @ x, db = sum of gy over the batch. keeps: x and w.
    """

    def forward(self, x, w, b):
        if w.ndim != 2:
            raise ValueError(f"linear: weight must be 2-D (out, in), got shape {w.shape}")
        if x.ndim == 0:
            raise ValueError("linear: input must have at least 1 dimension (..., in), got a scalar")
        if x.shape[-1] != w.shape[1]:
            raise ValueError(f"linear: input has {x.shape[-1]} features (shape {x.shape}) but the "
                             f"weight expects {w.shape[1]} (weight shape {w.shape})")
        if b is not None and b.shape != (w.shape[0],):
            raise ValueError(f"linear: bias must have shape ({w.shape[0]},), got {b.shape}")
        self.save_for_backward(x, w)
        y = x @ w.T
        return y + b if b is not None else y

    def backward(self, gy):
        x, w = self.saved
        x2 = x.reshape(-1, x.shape[-1])                 # (N*, in)
        g2 = gy.reshape(-1, gy.shape[-1])               # (N*, out)
        gx = gy @ w if self.needs_input_grad[0] else None
        gw = g2.T @ x2 if self.needs_input_grad[1] else None
        gb = g2.sum(axis=0) if self.needs_input_grad[2] else None
        return gx, gw, gb


# --- reductions -----------------------------------------------------------------
class Sum(Function):
    """sum over ``axis``. keeps: nothing (only the input shape)."""

    def __init__(self, axis=None, keepdims=False):
        super().__init__()
        self.axis, self.keepdims = axis, keepdims

    def forward(self, x):
        self.axes = _normalize_axes(self.axis, x.ndim, "sum")
        self.x_shape = x.shape
        return x.sum(axis=self.axes, keepdims=self.keepdims)

    def backward(self, gy):
        g = _expand_reduced(gy, self.axes, self.keepdims)
        return (get_array_module(gy).broadcast_to(g, self.x_shape),)


class Mean(Function):
    """mean over ``axis``. keeps: nothing (only the input shape)."""

    def __init__(self, axis=None, keepdims=False):
        super().__init__()
        self.axis, self.keepdims = axis, keepdims

    def forward(self, x):
        self.axes = _normalize_axes(self.axis, x.ndim, "mean")
        self.x_shape = x.shape
        self.count = 1
        for a in self.axes:
            self.count *= x.shape[a]
        if self.count == 0:
            raise ValueError(f"mean: cannot average over an empty axis of a tensor of shape "
                             f"{x.shape}")
        return x.mean(axis=self.axes, keepdims=self.keepdims)

    def backward(self, gy):
        g = _expand_reduced(gy, self.axes, self.keepdims) / self.count
        return (get_array_module(gy).broadcast_to(g, self.x_shape),)


class _Extreme(Function):
    """max / min over ``axis``; tied extremes share the gradient equally. keeps: the arg-mask."""

    reduce = None   # "max" or "min"

    def __init__(self, axis=None, keepdims=False):
        super().__init__()
        self.axis, self.keepdims = axis, keepdims

    def forward(self, x):
        if x.size == 0:
            raise ValueError(f"{self.reduce}: cannot reduce an empty tensor of shape {x.shape}")
        self.axes = _normalize_axes(self.axis, x.ndim, self.reduce)
        y = getattr(x, self.reduce)(axis=self.axes, keepdims=True)
        hit = (x == y)
        mask = hit / hit.sum(axis=self.axes, keepdims=True)
        self.save_for_backward(mask.astype(x.dtype))
        return y if self.keepdims else y.squeeze(axis=self.axes)

    def backward(self, gy):
        (mask,) = self.saved
        return (_expand_reduced(gy, self.axes, self.keepdims) * mask,)


class Max(_Extreme):
    reduce = "max"


class Min(_Extreme):
    reduce = "min"


# --- shape ops ------------------------------------------------------------------
class Reshape(Function):
    """View the same elements in a new shape. keeps: nothing (only the input shape)."""

    def __init__(self, shape):
        super().__init__()
        self.shape = shape

    def forward(self, x):
        self.x_shape = x.shape
        try:
            return x.reshape(self.shape)
        except ValueError:
            raise ValueError(f"reshape: cannot reshape a tensor of shape {x.shape} "
                             f"({x.size} elements) into shape {tuple(self.shape)}") from None

    def backward(self, gy):
        return (gy.reshape(self.x_shape),)


class Transpose(Function):
    """Permute the axes (reverse them when ``axes`` is None). keeps: nothing."""

    def __init__(self, axes=None):
        super().__init__()
        self.axes = axes

    def forward(self, x):
        axes = tuple(reversed(range(x.ndim))) if self.axes is None else tuple(self.axes)
        if sorted(a % x.ndim if -x.ndim <= a < x.ndim else a for a in axes) != list(range(x.ndim)):
            raise ValueError(f"transpose: axes {axes} are not a permutation of the "
                             f"{x.ndim} axes of a tensor of shape {x.shape}")
        self.perm = tuple(a % x.ndim for a in axes)
        return x.transpose(self.perm)

    def backward(self, gy):
        inverse = [0] * len(self.perm)
        for i, p in enumerate(self.perm):
            inverse[p] = i
        return (gy.transpose(inverse),)


def _is_basic_index(index):
    parts = index if isinstance(index, tuple) else (index,)
    return all(isinstance(p, (numbers.Integral, slice)) or p is None or p is Ellipsis
               for p in parts)


class GetItem(Function):
    """x[index] for slices, ints and integer/boolean arrays.

    The backward scatters the gradient into zeros. With an integer array an index
    may repeat (``x[[0, 0, 1]]``): then its gradients must add up, which plain
    assignment would not do, so advanced indexes scatter with ``xp.add.at``.
    keeps: nothing (only the index and the input shape).
    """

    def __init__(self, index):
        super().__init__()
        self.index = index

    def forward(self, x):
        self.x_shape, self.x_dtype = x.shape, x.dtype
        try:
            return x[self.index]
        except IndexError as err:
            raise IndexError(f"getitem: {err} (tensor of shape {x.shape})") from None

    def backward(self, gy):
        xp = get_array_module(gy)
        gx = xp.zeros(self.x_shape, dtype=gy.dtype)
        if _is_basic_index(self.index):
            gx[self.index] = gy
        else:
            xp.add.at(gx, self.index, gy)
        return (gx,)


class Concatenate(Function):
    """Join tensors along an existing axis. keeps: nothing (only the split points)."""

    def __init__(self, axis=0):
        super().__init__()
        self.axis = axis

    def forward(self, *xs):
        xp = get_array_module(*xs)
        ndim = xs[0].ndim
        if not -ndim <= self.axis < ndim:
            raise ValueError(f"concatenate: axis {self.axis} is out of range for tensors with "
                             f"{ndim} dimensions (shapes {[x.shape for x in xs]})")
        if builtins.any(x.ndim != ndim for x in xs):
            raise ValueError(f"concatenate: shapes {[x.shape for x in xs]} do not all have the "
                             f"same number of dimensions")
        self.sizes = [x.shape[self.axis] for x in xs]
        try:
            return xp.concatenate(xs, axis=self.axis)
        except ValueError as err:
            raise ValueError(f"concatenate: shapes {[x.shape for x in xs]} do not fit along "
                             f"axis {self.axis}: {err}") from None

    def backward(self, gy):
        xp = get_array_module(gy)
        bounds = [builtins.sum(self.sizes[:i + 1]) for i in range(len(self.sizes) - 1)]
        return tuple(xp.split(gy, bounds, axis=self.axis))


class Stack(Function):
    """Join same-shape tensors along a new axis. keeps: nothing."""

    def __init__(self, axis=0):
        super().__init__()
        self.axis = axis

    def forward(self, *xs):
        shapes = {x.shape for x in xs}
        if len(shapes) > 1:
            raise ValueError(f"stack: all tensors must have the same shape, "
                             f"got {[x.shape for x in xs]}")
        ndim = xs[0].ndim + 1
        if not -ndim <= self.axis < ndim:
            raise ValueError(f"stack: axis {self.axis} is out of range for stacking tensors of "
                             f"shape {xs[0].shape} (the result has {ndim} dimensions)")
        return get_array_module(*xs).stack(xs, axis=self.axis)

    def backward(self, gy):
        xp = get_array_module(gy)
        return tuple(xp.take(gy, i, axis=self.axis) for i in range(gy.shape[self.axis]))


def _pad_pairs(pad_width, ndim):
    """``pad_width`` as ``numpy.pad`` reads it -- n, (n,), (before, after) or one pair per
    axis -- spelled out as ``ndim`` (before, after) pairs; None when it is none of these."""
    width = np.asarray(pad_width)
    if width.dtype.kind not in "iu" or width.ndim > 2:
        return None
    try:
        width = np.broadcast_to(width, (ndim, 2))
    except ValueError:
        return None
    if (width < 0).any():
        return None
    return [(int(before), int(after)) for before, after in width]


class Pad(Function):
    """Constant padding; ``pad_width`` as in ``numpy.pad``. keeps: nothing (only the slices)."""

    def __init__(self, pad_width, value=0.0):
        super().__init__()
        self.pad_width, self.value = pad_width, value

    def forward(self, x):
        xp = get_array_module(x)
        width = _pad_pairs(self.pad_width, x.ndim)
        if width is None:
            raise ValueError(f"pad: pad_width {self.pad_width} does not give a non-negative "
                             f"integer (before, after) pair for each of the {x.ndim} axes of "
                             f"shape {x.shape} (give an int, one (before, after) pair, or one "
                             f"pair per axis)")
        self.crop = tuple(slice(b, b + n) for (b, _), n in zip(width, x.shape))
        return xp.pad(x, width, mode="constant", constant_values=self.value)

    def backward(self, gy):
        return (gy[self.crop],)


# --- the functional surface ------------------------------------------------------
def add(a, b):
    """Elementwise a + b with NumPy broadcasting; returns a new tensor.

    One of a, b may be a Python number or an array (lifted to a constant tensor).
    The gradient passes through unchanged to both inputs; backward keeps nothing.
    """
    return Add()(*_as_tensors(a, b, op="add (a + b)"))


def sub(a, b):
    """Elementwise a - b with NumPy broadcasting; a or b may be a number or an array.

    Backward sends gy to a and -gy to b and keeps nothing.
    """
    return Sub()(*_as_tensors(a, b, op="sub (a - b)"))


def mul(a, b):
    """Elementwise a * b with NumPy broadcasting; a or b may be a number or an array.

    Backward keeps a and b: da = gy * b, db = gy * a.
    """
    return Mul()(*_as_tensors(a, b, op="mul (a * b)"))


def div(a, b):
    """Elementwise a / b with NumPy broadcasting; a or b may be a number or an array.

    Backward keeps a and b: da = gy / b, db = -gy * a / b**2. Two integer operands
    give float32, as in PyTorch (true division).
    """
    a, b = _as_tensors(a, b, op="div (a / b)")
    if a.dtype.kind != "f" and b.dtype.kind != "f":
        a, b = a.astype(DEFAULT_DTYPE), b.astype(DEFAULT_DTYPE)
    return Div()(a, b)


def cast(x, dtype):
    """x converted to ``dtype``: recorded in the graph for a floating ``dtype`` (the gradient
    is converted back to x's dtype), a constant copy for an integer or bool one (no gradient
    crosses it, as in PyTorch); x itself when it already has ``dtype``. ``x.to(dtype)``
    calls this.
    """
    dtype = np.dtype(dtype)
    if x.dtype == dtype:
        return x
    if dtype.kind != "f":
        return x.astype(dtype)
    return Cast(dtype)(x)


def neg(x):
    """Elementwise -x, same shape as x; backward keeps nothing."""
    return Neg()(x)


def pow(x, exponent):  # noqa: A001 - mirrors torch.pow
    """Elementwise x ** exponent for a constant Python number ``exponent``.

    The gradient is exponent * x ** (exponent - 1) (zero for exponent 0); backward
    keeps x.
    """
    return Pow(exponent)(x)


def exp(x):
    """Elementwise e ** x, same shape as x; backward keeps the output (d exp(x)/dx = exp(x))."""
    return Exp()(x)


def log(x):
    """Elementwise natural logarithm, same shape as x; backward keeps x (d log(x)/dx = 1/x)."""
    return Log()(x)


def sqrt(x):
    """Elementwise square root, same shape as x; backward keeps the output (1 / (2 sqrt(x)))."""
    return Sqrt()(x)


def abs(x):  # noqa: A001 - mirrors torch.abs
    """Elementwise |x|, same shape as x; the gradient is sign(x) (0 at x = 0), kept by backward."""
    return Abs()(x)


def clip(x, low=None, high=None):
    """Clamp x to [low, high] elementwise (either bound may be None, not both).

    The gradient flows only where low <= x <= high; backward keeps that boolean mask.
    """
    return Clip(low, high)(x)


def maximum(a, b):
    """Elementwise max(a, b) with NumPy broadcasting; a or b may be a number or an array.

    The gradient goes to the larger input; on a tie each gets half. Backward keeps
    the mask of where a wins.
    """
    return Maximum()(*_as_tensors(a, b, op="maximum"))


def minimum(a, b):
    """Elementwise min(a, b) with NumPy broadcasting, computed as -maximum(-a, -b).

    The gradient goes to the smaller input; on a tie each gets half.
    """
    a, b = _as_tensors(a, b, op="minimum")
    return -maximum(-a, -b)     # min(a, b) = -max(-a, -b)


def where(condition, a, b):
    """Pick a where ``condition`` is true, else b; the three broadcast together.

    ``condition`` is a boolean array or tensor and gets no gradient; a or b may be a
    number or an array. Backward keeps the condition and routes gy to a or b by it.
    """
    if is_tensor(condition):
        condition = condition.data
    return Where(condition)(*_as_tensors(a, b, op="where"))


def fork(x, n=2):
    """``n`` tensors equal to ``x`` whose gradients add up in backward (see ``Fork``)."""
    return Fork(n)(x)


def matmul(a, b):
    """Matrix product a @ b with NumPy's rules: (M, K) @ (K, P) -> (M, P).

    1-D operands are promoted to a row / column and the extra axis is dropped again,
    and leading (batch) axes broadcast. Backward keeps a and b:
    da = gy @ b.T, db = a.T @ gy (``.T`` swapping the last two axes).
    """
    return MatMul()(*_as_tensors(a, b, op="matmul (a @ b)"))


def linear(x, weight, bias=None):
    """The fully connected layer: x @ weight.T + bias.

    x: (N, in_features), or any leading axes (..., in_features); weight:
    (out_features, in_features); bias: (out_features,) or None. Returns
    (N, out_features). Backward keeps x and weight. Floating operands of different
    precision are a TypeError, as for ``matmul`` (see ``_as_tensors``).
    """
    operands = [t for t in (x, weight, bias) if t is not None]
    if len({t.dtype for t in operands if is_tensor(t) and t.dtype.kind == "f"}) > 1:
        _refuse_mixed_precision("linear", operands, operands)
    return Linear()(x, weight, bias)


def _axis_args(op, axis, keepdims, dim, keepdim):
    """NumPy's ``axis``/``keepdims`` or PyTorch's ``dim``/``keepdim`` (one spelling per argument).

    Returns ``(axis, keepdims, torch_spelling)``; ``keepdims`` is False unless given.
    """
    if axis is not None and dim is not None:
        raise TypeError(f"{op}: got both axis={axis!r} and dim={dim!r}; they are one argument "
                        f"(NumPy's and PyTorch's spelling), give only one")
    if keepdims is not None and keepdim is not None:
        raise TypeError(f"{op}: got both keepdims={keepdims!r} and keepdim={keepdim!r}; they are "
                        f"one argument (NumPy's and PyTorch's spelling), give only one")
    keep = keepdim if keepdim is not None else keepdims
    return (axis if dim is None else dim), bool(keep), dim is not None


# What ``max(x, dim=d)`` / ``min(x, dim=d)`` return, as ``torch.max(x, d)`` does.
ValuesIndices = namedtuple("ValuesIndices", ["values", "indices"])


def _with_indices(op, x, values, dim, keepdim):
    """``(values, indices)`` for PyTorch's ``max/min(x, dim)``: indices int64, outside the graph."""
    if not isinstance(dim, numbers.Integral) or isinstance(dim, bool):
        raise TypeError(f"{op}: dim= takes one int (then, as in PyTorch, the result is "
                        f"(values, indices)); got {dim!r}. To reduce several axes, give axis=")
    idx = getattr(x.data, "arg" + op)(axis=dim).astype(np.int64)
    if keepdim:
        idx = get_array_module(idx).expand_dims(idx, dim)
    return ValuesIndices(values, x._wrap_output(idx, None))


def sum(x, axis=None, keepdims=None, *, dim=None, keepdim=None):  # noqa: A001 - mirrors numpy.sum
    """Sum of x over ``axis`` (None: all axes; an int or a tuple of ints).

    ``keepdims`` (default False) keeps the reduced axes with size 1. PyTorch's
    spelling ``dim``/``keepdim`` is accepted too (giving both spellings is a
    TypeError). Backward keeps only the input shape and broadcasts gy back over it.
    """
    axis, keepdims, _ = _axis_args("sum", axis, keepdims, dim, keepdim)
    return Sum(axis, keepdims)(x)


def mean(x, axis=None, keepdims=None, *, dim=None, keepdim=None):
    """Mean of x over ``axis`` (None: all axes; an int or a tuple of ints).

    ``keepdims`` (default False) keeps the reduced axes with size 1; ``dim``/``keepdim``
    are accepted as in ``sum``. Backward keeps only the input shape: each input
    element gets gy / (number of elements averaged).
    """
    axis, keepdims, _ = _axis_args("mean", axis, keepdims, dim, keepdim)
    return Mean(axis, keepdims)(x)


def max(x, axis=None, keepdims=None, *, dim=None, keepdim=None):  # noqa: A001 - mirrors numpy.max
    """Maximum of x over ``axis`` (None: all axes; an int or a tuple of ints): the values.

    With PyTorch's ``dim=`` (one int) the result is ``(values, indices)``, as
    ``torch.max(x, dim)`` gives it (fields ``.values``, ``.indices``; the indices are
    an int64 tensor outside the graph). The gradient goes to the element(s) that
    held the maximum; tied maxima share it equally. Backward keeps that mask. For
    the elementwise max of two tensors see ``maximum``.
    """
    axis, keepdims, torch_spelling = _axis_args("max", axis, keepdims, dim, keepdim)
    values = Max(axis, keepdims)(x)
    return _with_indices("max", x, values, axis, keepdims) if torch_spelling else values


def min(x, axis=None, keepdims=None, *, dim=None, keepdim=None):  # noqa: A001 - mirrors numpy.min
    """Minimum of x over ``axis`` (None: all axes; an int or a tuple of ints): the values.

    With ``dim=`` (one int) the result is ``(values, indices)``, as for ``max``. The
    gradient goes to the element(s) that held the minimum; tied minima share it
    equally. Backward keeps that mask. For the elementwise min of two tensors see
    ``minimum``.
    """
    axis, keepdims, torch_spelling = _axis_args("min", axis, keepdims, dim, keepdim)
    values = Min(axis, keepdims)(x)
    return _with_indices("min", x, values, axis, keepdims) if torch_spelling else values


def argmax(x, axis=None, keepdims=None, *, dim=None, keepdim=None):
    """Indices of the maxima of x over ``axis`` (one int; None: of the flattened tensor), an
    int64 tensor outside the graph; ``dim``/``keepdim`` accepted, as in ``sum``."""
    axis, keepdims, _ = _axis_args("argmax", axis, keepdims, dim, keepdim)
    if axis is not None and not isinstance(axis, numbers.Integral):
        raise TypeError(f"argmax: axis must be one int or None, got {axis!r}")
    if axis is not None and not -x.ndim <= axis < x.ndim:
        raise ValueError(f"argmax: axis {axis} is out of range for a tensor of shape "
                         f"{tuple(x.shape)}")
    xp = get_array_module(x.data)
    idx = xp.asarray(x.data.argmax(axis=axis)).astype(np.int64)
    if keepdims:
        idx = idx.reshape((1,) * x.ndim) if axis is None else xp.expand_dims(idx, axis)
    return x._wrap_output(idx, None)


def reshape(x, *shape):
    """The same elements in a new shape: ``reshape(x, 2, 3)`` or ``reshape(x, (2, 3))``.

    One size may be -1 (inferred), as in NumPy. Backward reshapes gy back to
    x's shape and keeps nothing else.
    """
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    return Reshape(shape)(x)


def transpose(x, *axes):
    """``transpose(x)`` / ``transpose(x, None)`` reverse the axes; else give a permutation,
    as separate ints or one tuple, like ``numpy.transpose``."""
    if len(axes) == 1 and (axes[0] is None or isinstance(axes[0], (tuple, list))):
        axes = () if axes[0] is None else tuple(axes[0])
    return Transpose(axes or None)(x)


permute = transpose


def flatten(x, start_dim=0, end_dim=-1):
    """Merge axes ``start_dim``..``end_dim`` into one, as ``torch.flatten``.

    By default all of them: (N, C, H, W) -> (N*C*H*W,), and a 0-d tensor becomes
    shape (1,). ``flatten(x, 1)`` keeps the batch axis, (N, C, H, W) -> (N, C*H*W),
    which is what ``nn.Flatten()`` does. A reshape: backward keeps nothing.
    """
    shape = tuple(x.shape)
    if not shape:
        return reshape(x, 1)
    n = len(shape)
    for name, d in (("start_dim", start_dim), ("end_dim", end_dim)):
        if not isinstance(d, numbers.Integral) or isinstance(d, bool):
            raise TypeError(f"flatten: {name} must be an int, got {d!r}")
        if not -n <= d < n:
            raise ValueError(f"flatten: {name}={d} is out of range for a tensor of shape {shape} "
                             f"(expected a dim in [{-n}, {n - 1}])")
    start, end = start_dim % n, end_dim % n
    if start > end:
        raise ValueError(f"flatten: start_dim={start_dim} comes after end_dim={end_dim} for a "
                         f"tensor of shape {shape}")
    return reshape(x, shape[:start] + (math.prod(shape[start:end + 1]),) + shape[end + 1:])


def getitem(x, index):
    """x[index], as in NumPy: ints, slices, None, Ellipsis, integer or boolean arrays.

    ``index`` may also be a tensor (its values are used; it gets no gradient).
    Backward scatters gy into zeros of x's shape; repeated integer indexes add up.
    """
    if is_tensor(index):
        index = index.data
    elif isinstance(index, tuple):
        index = tuple(i.data if is_tensor(i) else i for i in index)
    return GetItem(index)(x)


def concatenate(tensors, axis=0):
    """Join a sequence of tensors along an existing ``axis``; the other sizes must match.

    E.g. two (N, C1, H, W) and (N, C2, H, W) along axis 1 give (N, C1 + C2, H, W).
    Backward splits gy at the same points and keeps nothing else.
    """
    return Concatenate(axis)(*_as_tensors(*tensors, op="concatenate"))


def stack(tensors, axis=0):
    """Join a sequence of same-shape tensors along a new ``axis``.

    E.g. k tensors of shape (N, C) along axis 0 give (k, N, C). Backward takes
    gy apart along that axis and keeps nothing.
    """
    return Stack(axis)(*_as_tensors(*tensors, op="stack"))


def pad(x, pad_width, value=0.0):
    """Pad x with the constant ``value``; ``pad_width`` as in ``numpy.pad``.

    ``pad_width``: an int, one (before, after) pair, or one pair per axis, e.g.
    ``((0, 0), (0, 0), (1, 1), (1, 1))`` pads H and W of (N, C, H, W) by one.
    Backward crops gy back to x's shape.
    """
    return Pad(pad_width, value)(x)
