"""Activations: relu and friends, each a Function with its backward beside it."""
from __future__ import annotations

import math
from functools import partial

import numpy as np

from ..autograd import Function, is_grad_enabled
from ..backend import default_rng, get_array_module
from . import cuda_kernels
from .parallel import pass_chunks, run_chunks


class ReLU(Function):
    """max(x, 0). keeps: the output y, whose sign is the mask (y > 0 exactly where x > 0).
    The next layer keeps y anyway (a convolution keeps its input), so this costs no memory,
    and forward is one pass over x. On the CPU both passes run in blocks of images on
    parallel.py's pool."""

    def forward(self, x):
        xp = get_array_module(x)
        if xp is np:
            y = np.empty_like(x)
            x1, y1 = (x, y) if x.ndim else (x.reshape(1), y.reshape(1))  # blocks of axis 0
            run_chunks(partial(_relu_chunk, x1, y1), pass_chunks(x1))
        else:
            y = xp.maximum(x, 0)                                        # CuPy: one kernel
        if self.needs_input_grad[0] and is_grad_enabled():
            self.save_for_backward(y)
        return y

    def backward(self, gy):
        (y,) = self.saved
        if get_array_module(gy) is not np:    # CuPy: cuda_kernels.py (the same product)
            return (cuda_kernels.relu_backward(gy, y),)
        gx = np.empty_like(gy)
        g1, y1, gx1 = (gy, y, gx) if gy.ndim else (gy.reshape(1), y.reshape(1), gx.reshape(1))
        run_chunks(partial(_relu_backward_chunk, g1, y1, gx1), pass_chunks(g1))
        return (gx,)


def _relu_chunk(x, y, n0, n1):
    np.maximum(x[n0:n1], 0, out=y[n0:n1])       # NaN stays NaN


def _relu_backward_chunk(gy, y, gx, n0, n1):
    np.multiply(gy[n0:n1], y[n0:n1] > 0, out=gx[n0:n1])                 # gy where x > 0, else 0


class LeakyReLU(Function):
    """x where x > 0, else slope * x. keeps: the mask x > 0."""

    def __init__(self, negative_slope=0.01):
        super().__init__()
        self.slope = negative_slope

    def forward(self, x):
        xp = get_array_module(x)
        mask = x > 0
        self.save_for_backward(mask)
        return xp.where(mask, x, x * self.slope)

    def backward(self, gy):
        (mask,) = self.saved
        return (get_array_module(gy).where(mask, gy, gy * self.slope),)


class Sigmoid(Function):
    """1 / (1 + exp(-x)), computed without overflow; d/dx = y (1 - y). keeps: the output."""

    def forward(self, x):
        xp = get_array_module(x)
        y = 0.5 * (xp.tanh(0.5 * x) + 1)          # equal to the logistic, stable for any x
        self.save_for_backward(y)
        return y.astype(x.dtype, copy=False)

    def backward(self, gy):
        (y,) = self.saved
        return (gy * y * (1 - y),)


class Tanh(Function):
    """tanh(x); d/dx = 1 - y^2. keeps: the output."""

    def forward(self, x):
        y = get_array_module(x).tanh(x)
        self.save_for_backward(y)
        return y

    def backward(self, gy):
        (y,) = self.saved
        return (gy * (1 - y * y),)


class GELU(Function):
    """GELU, tanh form: 0.5 x (1 + tanh(u)), u = sqrt(2/pi) (x + 0.044715 x^3).

    This is PyTorch's ``gelu(approximate="tanh")`` (NumPy has no erf for the exact
    form). d/dx = 0.5 (1 + t) + 0.5 x (1 - t^2) du/dx. keeps: x and t = tanh(u).
    """

    C = math.sqrt(2.0 / math.pi)

    def forward(self, x):
        t = get_array_module(x).tanh(self.C * (x + 0.044715 * x ** 3))
        self.save_for_backward(x, t)
        return 0.5 * x * (1 + t)

    def backward(self, gy):
        x, t = self.saved
        du = self.C * (1 + 3 * 0.044715 * x * x)
        return (gy * (0.5 * (1 + t) + 0.5 * x * (1 - t * t) * du),)


class Dropout(Function):
    """Zero each element with probability p and scale the rest by 1/(1-p) (inverted dropout).

    keeps: the scaled mask.
    """

    def __init__(self, p, rng=None):
        super().__init__()
        if not 0 <= p < 1:
            raise ValueError(f"dropout: p must be in [0, 1), got {p}")
        self.p, self.rng = p, rng if rng is not None else default_rng()

    def forward(self, x):
        xp = get_array_module(x)
        keep = self.rng.random(x.shape) >= self.p          # drawn on the CPU: one seeded stream
        mask = xp.asarray(keep, dtype=x.dtype) / (1 - self.p)
        self.save_for_backward(mask)
        return x * mask

    def backward(self, gy):
        (mask,) = self.saved
        return (gy * mask,)


def relu(x):
    """max(x, 0) elementwise, any shape (e.g. (N, C, H, W)); the ResNet nonlinearity.

    Backward keeps the output y (the next layer keeps it anyway) and passes gy where y > 0.
    """
    return ReLU()(x)


def leaky_relu(x, negative_slope=0.01):
    """x where x > 0, else ``negative_slope * x``, elementwise; any shape.

    Backward keeps the mask x > 0.
    """
    return LeakyReLU(negative_slope)(x)


def sigmoid(x):
    """The logistic 1 / (1 + exp(-x)) elementwise, computed so it never overflows.

    Backward keeps the output y and uses dy/dx = y (1 - y).
    """
    return Sigmoid()(x)


def tanh(x):
    """Elementwise hyperbolic tangent; backward keeps the output y (dy/dx = 1 - y**2)."""
    return Tanh()(x)


def gelu(x):
    """GELU in its tanh form: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x**3))).

    Matches PyTorch's ``gelu(approximate="tanh")``; any shape. Backward keeps x and
    the tanh value.
    """
    return GELU()(x)


def dropout(x, p=0.5, training=True, rng=None):
    """Inverted dropout; the identity when not training or p == 0."""
    if not training or p == 0:
        return x
    return Dropout(p, rng)(x)
