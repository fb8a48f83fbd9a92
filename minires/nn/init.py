"""Weight initialisers, in place, PyTorch's names (``kaiming_normal_``, ``xavier_uniform_`` ...).

Each fills ``tensor.data`` in place and returns the tensor. Random numbers come
from ``minires.backend.default_rng()`` (so ``mr.manual_seed(0)`` makes a model's
initial weights repeatable) or from a ``numpy.random.Generator`` passed as
``generator=``. They are drawn on the CPU in the tensor's dtype (float32 draws
cost half of float64 ones, which matters for a 60M-parameter ResNet-152) and
then moved to its device: the same seed gives the same weights on CPU and GPU.

Fans, for a weight of shape (C_out, C_in, KH, KW) (a Linear weight is (out, in)):
    fan_in  = C_in  * KH * KW   (inputs feeding one output)
    fan_out = C_out * KH * KW   (outputs one input feeds)

Kaiming / He (He et al. 2015): keep the variance of activations (fan_in) or of
gradients (fan_out) constant through ReLU layers: std = gain / sqrt(fan) with
gain = sqrt(2) for ReLU. Xavier / Glorot (2010): std = gain * sqrt(2 / (fan_in + fan_out)).
A uniform distribution U(-b, b) has std b / sqrt(3), so b = sqrt(3) * std.
"""
from __future__ import annotations

import math

import numpy as np

from ..backend import default_rng, get_array_module


def calculate_gain(nonlinearity, param=None):
    """The factor that keeps activations' variance for ``nonlinearity`` (as torch.nn.init)."""
    linear = ("linear", "conv1d", "conv2d", "conv3d", "conv_transpose2d", "sigmoid")
    if nonlinearity in linear:
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        slope = 0.01 if param is None else param
        return math.sqrt(2.0 / (1 + slope ** 2))
    if nonlinearity == "selu":
        return 3.0 / 4
    raise ValueError(f"calculate_gain: unsupported nonlinearity {nonlinearity!r}; expected one of "
                     f"{linear + ('tanh', 'relu', 'leaky_relu', 'selu')}")


def calculate_fan_in_and_fan_out(tensor):
    """(fan_in, fan_out) of a weight of shape (out, in, *kernel)."""
    shape = tensor.shape
    if len(shape) < 2:
        raise ValueError(f"fan in and fan out need a weight with at least 2 dimensions, got shape "
                         f"{tuple(shape)}")
    receptive = int(np.prod(shape[2:])) if len(shape) > 2 else 1    # KH * KW
    return shape[1] * receptive, shape[0] * receptive


def _fill(tensor, values):
    """Write NumPy ``values`` into ``tensor.data`` (its dtype, its device), in place."""
    xp = get_array_module(tensor.data)
    tensor.data[...] = xp.asarray(values.astype(tensor.dtype, copy=False))
    return tensor


def _draw_dtype(tensor):
    return np.float32 if tensor.dtype == np.float32 else np.float64


def _uniform(tensor, a, b, generator):
    """U(a, b) samples shaped like ``tensor``, drawn in its dtype."""
    rng = generator if generator is not None else default_rng()
    u = rng.random(tensor.shape, dtype=_draw_dtype(tensor))       # U(0, 1)
    return u * (b - a) + a


def _normal(tensor, mean, std, generator):
    """N(mean, std^2) samples shaped like ``tensor``, drawn in its dtype."""
    rng = generator if generator is not None else default_rng()
    z = rng.standard_normal(tensor.shape, dtype=_draw_dtype(tensor))
    return z * std + mean


def uniform_(tensor, a=0.0, b=1.0, generator=None):
    return _fill(tensor, _uniform(tensor, a, b, generator))


def normal_(tensor, mean=0.0, std=1.0, generator=None):
    return _fill(tensor, _normal(tensor, mean, std, generator))


def constant_(tensor, value):
    tensor.data[...] = value
    return tensor


def zeros_(tensor):
    return constant_(tensor, 0)


def ones_(tensor):
    return constant_(tensor, 1)


def _kaiming_std(tensor, a, mode, nonlinearity):
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"kaiming init: mode must be 'fan_in' or 'fan_out', got {mode!r}")
    fan_in, fan_out = calculate_fan_in_and_fan_out(tensor)
    fan = fan_in if mode == "fan_in" else fan_out
    return calculate_gain(nonlinearity, a) / math.sqrt(fan)


def kaiming_normal_(tensor, a=0.0, mode="fan_in", nonlinearity="leaky_relu", generator=None):
    """N(0, std^2) with std = gain / sqrt(fan); ``mode="fan_out"`` is what ResNets use for convs."""
    std = _kaiming_std(tensor, a, mode, nonlinearity)
    return _fill(tensor, _normal(tensor, 0.0, std, generator))


def kaiming_uniform_(tensor, a=0.0, mode="fan_in", nonlinearity="leaky_relu", generator=None):
    """U(-b, b) with b = sqrt(3) * gain / sqrt(fan)."""
    bound = math.sqrt(3.0) * _kaiming_std(tensor, a, mode, nonlinearity)
    return _fill(tensor, _uniform(tensor, -bound, bound, generator))


def xavier_uniform_(tensor, gain=1.0, generator=None):
    """U(-b, b) with b = gain * sqrt(6 / (fan_in + fan_out))."""
    fan_in, fan_out = calculate_fan_in_and_fan_out(tensor)
    bound = gain * math.sqrt(6.0 / (fan_in + fan_out))
    return _fill(tensor, _uniform(tensor, -bound, bound, generator))


def xavier_normal_(tensor, gain=1.0, generator=None):
    """N(0, std^2) with std = gain * sqrt(2 / (fan_in + fan_out))."""
    fan_in, fan_out = calculate_fan_in_and_fan_out(tensor)
    std = gain * math.sqrt(2.0 / (fan_in + fan_out))
    return _fill(tensor, _normal(tensor, 0.0, std, generator))


def dirac_(tensor):
    """The identity as a convolution (PyTorch's ``dirac_``, one group): weight (O, I, KH, KW)
    gets 1 at the kernel centre of [o, o] for o < min(O, I), 0 elsewhere.

    A stride-1 'same' convolution with it returns its input (the first min(O, I) channels;
    the others are 0). DiracNets (Zagoruyko & Komodakis 2017) start from it.
    """
    shape = tensor.shape
    if len(shape) != 4 or shape[2] % 2 == 0 or shape[3] % 2 == 0:
        raise ValueError(f"dirac_: needs a conv weight (O, I, KH, KW) with odd KH and KW, got "
                         f"shape {tuple(shape)}")
    O, I, KH, KW = shape
    values = np.zeros(shape)                                  # (O, I, KH, KW)
    k = np.arange(min(O, I))
    values[k, k, KH // 2, KW // 2] = 1.0
    return _fill(tensor, values)


__all__ = ["calculate_gain", "calculate_fan_in_and_fan_out", "uniform_", "normal_", "constant_",
           "zeros_", "ones_", "kaiming_normal_", "kaiming_uniform_", "xavier_uniform_",
           "xavier_normal_", "dirac_"]
