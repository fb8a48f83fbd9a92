"""Layers: modules that hold parameters/buffers and call one op of ``minires.functional``.

Constructor signatures, defaults, reprs and parameter names are PyTorch's
(``Conv2d(3, 16, kernel_size=3, padding=1, bias=False)`` has ``weight`` and no
``bias``; ``BatchNorm2d`` has ``weight``, ``bias`` and the buffers
``running_mean``, ``running_var``, ``num_batches_tracked``), so code and
state_dicts move between the two. Default initialisation is PyTorch's too
(Conv2d/Linear: U(-1/sqrt(fan_in), 1/sqrt(fan_in)); BatchNorm: weight 1, bias 0);
ResNet builders then re-initialise with Kaiming normal (see ``minires.models``).
"""
from __future__ import annotations

import math
import numbers

import numpy as np

from .. import functional as F
from ..backend import DEFAULT_DTYPE
from ..functional.windows import as_int_pair
from ..tensor import Tensor
from . import init
from .module import Module, Parameter


def _check_tensor(x, layer):
    if not isinstance(x, Tensor):
        raise TypeError(f"{layer}: expected a minires Tensor as input, got {type(x).__name__} "
                        f"(wrap arrays with minires.tensor(...))")


def _check_floating(x, layer):
    """Refuse integer inputs (uint8 images): computing on raw 0..255 values is a silent bug."""
    if not np.issubdtype(x.dtype, np.floating):
        raise TypeError(f"{layer}: expected a floating-point input (float32, or float64 for "
                        f"gradient checks), got dtype {x.dtype}. Convert and scale images first, "
                        f"e.g. minires.data.transforms.normalize(images) (uint8 NCHW -> "
                        f"normalised float32) or x.astype(np.float32) / 255")


def _zeros(shape, dtype=DEFAULT_DTYPE):
    return np.zeros(shape, dtype=dtype)


def _check_positive_ints(layer, **sizes):
    """Raise ValueError naming the first of ``sizes`` that is not a positive int."""
    for arg, value in sizes.items():
        if not isinstance(value, numbers.Integral) or value <= 0:
            raise ValueError(f"{layer}: {arg} must be a positive int, got {value!r}")


def _add_weight_and_bias(module, weight_shape, bias):
    """Register ``weight`` (``weight_shape``) and ``bias`` (one per output, the first axis),
    or a declared but absent bias when ``bias`` is False: zeros until ``reset_parameters``."""
    module.weight = Parameter(_zeros(weight_shape))
    if bias:
        module.bias = Parameter(_zeros((weight_shape[0],)))
    else:
        module.register_parameter("bias", None)


def _reset_weight_and_bias(module):
    """PyTorch's default for Conv2d and Linear: weight and bias from
    U(-1/sqrt(fan_in), 1/sqrt(fan_in)), fan_in = the inputs one output sees."""
    # kaiming_uniform_ with a=sqrt(5) is exactly U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
    init.kaiming_uniform_(module.weight, a=math.sqrt(5))
    if module.bias is not None:
        fan_in, _ = init.calculate_fan_in_and_fan_out(module.weight)
        bound = 1 / math.sqrt(fan_in)
        init.uniform_(module.bias, -bound, bound)


class Conv2d(Module):
    """2-D convolution over (N, C_in, H, W) with a weight of shape (C_out, C_in / groups, KH, KW).

    ``F.conv2d`` does the work, with one of two implementations of the same arithmetic
    (im2col + one matrix product per group), chosen for the whole program in
    minires/functional/conv_select.py. By default the "fast" one runs (conv_fast.py:
    chunks, threads, Winograd for wide 3x3 layers, CUDA kernels on a GPU); the
    "reference" one is lesson 03's ``Conv2d`` in conv.py. Switch with
    ``F.use_conv("reference")`` (it returns the previous choice) or, for one block,
    ``with F.conv_implementation("reference"): ...``; ``F.conv_in_use()`` says which runs.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
                 groups=1, bias=True, padding_mode="zeros"):
        super().__init__()
        name = "Conv2d"
        _check_positive_ints(name, in_channels=in_channels, out_channels=out_channels,
                             groups=groups)
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"{name}: groups={groups} must divide both in_channels={in_channels} "
                             f"and out_channels={out_channels}")
        if padding_mode != "zeros":
            raise ValueError(f"{name}: only padding_mode='zeros' is supported, "
                             f"got {padding_mode!r}")
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.groups = groups
        self.kernel_size = as_int_pair(kernel_size, "kernel_size", name, 1)
        self.stride = as_int_pair(stride, "stride", name, 1)
        self.padding = as_int_pair(padding, "padding", name, 0)
        self.dilation = as_int_pair(dilation, "dilation", name, 1)
        self.padding_mode = padding_mode
        KH, KW = self.kernel_size
        _add_weight_and_bias(self, (out_channels, in_channels // groups, KH, KW), bias)
        self.reset_parameters()

    def reset_parameters(self):
        """Re-draw the weight and bias with PyTorch's default: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).

        fan_in = C_in / groups * KH * KW. The ResNet builders overwrite the weight with
        Kaiming normal afterwards.
        """
        _reset_weight_and_bias(self)

    def extra_repr(self):
        """The settings shown in the repr: channels, kernel size, stride, then any padding,
        dilation, groups or ``bias=False`` that differ from the defaults."""
        s = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, " \
            f"stride={self.stride}"
        if self.padding != (0, 0):
            s += f", padding={self.padding}"
        if self.dilation != (1, 1):
            s += f", dilation={self.dilation}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        return s

    def forward(self, x):
        """Convolve x (N, C_in, H, W) -> (N, C_out, OH, OW) (``F.conv2d``).

        Raises ValueError when x is not 4-D with C_in channels.
        """
        layer = f"Conv2d({self.extra_repr()})"
        _check_tensor(x, layer)
        _check_floating(x, layer)
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"{layer}: expected an input of shape (N, {self.in_channels}, H, W), "
                             f"got shape {tuple(x.shape)}")
        return F.conv2d(x, self.weight, self.bias, stride=self.stride, padding=self.padding,
                        dilation=self.dilation, groups=self.groups)


class Linear(Module):
    """y = x @ weight.T + bias, weight (out_features, in_features)."""

    def __init__(self, in_features, out_features, bias=True):
        super().__init__()
        _check_positive_ints("Linear", in_features=in_features, out_features=out_features)
        self.in_features, self.out_features = int(in_features), int(out_features)
        _add_weight_and_bias(self, (out_features, in_features), bias)
        self.reset_parameters()

    def reset_parameters(self):
        """Re-draw weight and bias from U(-1/sqrt(in_features), 1/sqrt(in_features)).

        That is PyTorch's default initialisation of a fully connected layer.
        """
        _reset_weight_and_bias(self)        # fan_in = in_features

    def extra_repr(self):
        """The settings shown in the repr: in_features, out_features, bias."""
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}")

    def forward(self, x):
        """Map x (N, in_features) to (N, out_features); any leading axes are kept."""
        layer = f"Linear({self.extra_repr()})"
        _check_tensor(x, layer)
        _check_floating(x, layer)
        if x.ndim < 1 or x.shape[-1] != self.in_features:
            raise ValueError(f"{layer}: expected an input whose last axis has {self.in_features} "
                             f"features, got shape {tuple(x.shape)}")
        return F.linear(x, self.weight, self.bias)


class _BatchNorm(Module):
    """Shared by BatchNorm1d/2d: parameters weight (gamma) and bias (beta), buffers
    running_mean, running_var, num_batches_tracked.

    Training mode normalises with the batch's statistics and updates the running
    ones (``momentum``; ``momentum=None`` means a cumulative average, as in
    PyTorch); evaluation mode uses the running statistics.

    ``num_batches_tracked`` is a 0-d int64 NumPy array on the host, also when the module
    is on the GPU (``_host_buffers``): counting a batch is then a Python-side add, not a
    kernel launch per layer and step, and the cumulative average reads the count without
    waiting for the GPU. It goes into state_dicts and checkpoints as on the CPU.
    """

    _host_buffers = ("num_batches_tracked",)

    _expected = ""       # shapes accepted, for error messages

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True):
        super().__init__()
        name = type(self).__name__
        _check_positive_ints(name, num_features=num_features)
        if momentum is not None and not 0 <= momentum <= 1:
            raise ValueError(f"{name}: momentum must be in [0, 1] or None, got {momentum}")
        self.num_features, self.eps, self.momentum = int(num_features), eps, momentum
        self.affine, self.track_running_stats = affine, track_running_stats
        if affine:
            self.weight = Parameter(np.ones(num_features, dtype=DEFAULT_DTYPE))
            self.bias = Parameter(_zeros(num_features))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        if track_running_stats:
            self.register_buffer("running_mean", Tensor(_zeros(num_features)))
            self.register_buffer("running_var", Tensor(np.ones(num_features, dtype=DEFAULT_DTYPE)))
            self.register_buffer("num_batches_tracked", Tensor(np.zeros((), dtype=np.int64)))
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)

    def reset_running_stats(self):
        """Reset running_mean to 0, running_var to 1 and num_batches_tracked to 0 (when tracked)."""
        if self.track_running_stats:
            self.running_mean.data[...] = 0
            self.running_var.data[...] = 1
            self.num_batches_tracked.data[...] = 0

    def reset_parameters(self):
        """Reset the running statistics, and weight to 1 and bias to 0 (when affine)."""
        self.reset_running_stats()
        if self.affine:
            init.ones_(self.weight)
            init.zeros_(self.bias)

    def extra_repr(self):
        """The settings shown in the repr: num_features, eps, momentum, affine and
        track_running_stats."""
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
                f"affine={self.affine}, track_running_stats={self.track_running_stats}")

    def _check_input(self, x):
        layer = f"{type(self).__name__}({self.extra_repr()})"
        _check_tensor(x, layer)
        if x.ndim not in self._ndims or x.shape[1] != self.num_features:
            raise ValueError(f"{layer}: expected an input of shape {self._expected}, got shape "
                             f"{tuple(x.shape)}")

    def forward(self, x):
        """Normalise x per channel; returns a tensor of x's shape.

        In training mode the batch's own mean and variance are used and folded into
        the running statistics (when tracked); in eval mode the running statistics are
        used (the batch's, when none are tracked).
        """
        self._check_input(x)
        momentum = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats:
            self.num_batches_tracked.data += 1
            if self.momentum is None:      # cumulative moving average
                momentum = 1.0 / float(self.num_batches_tracked.item())
        use_batch_stats = self.training or not self.track_running_stats
        return self._normalise(x, use_batch_stats, momentum)

    def _normalise(self, x, training, momentum):
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                            training=training, momentum=momentum, eps=self.eps)


class BatchNorm2d(_BatchNorm):
    """Batch norm over (N, C, H, W): statistics per channel, over N, H and W."""

    _ndims = (4,)

    @property
    def _expected(self):
        return f"(N, {self.num_features}, H, W)"


class BatchNorm1d(_BatchNorm):
    """Batch norm over (N, C) or (N, C, L): statistics per feature, over N (and L)."""

    _ndims = (2, 3)

    @property
    def _expected(self):
        return f"(N, {self.num_features}) or (N, {self.num_features}, L)"

    def _normalise(self, x, training, momentum):
        if x.ndim == 3:
            N, C, L = x.shape
            x4 = x.reshape(N, C, L, 1)                                  # (N, C, L, 1)
            return super()._normalise(x4, training, momentum).reshape(N, C, L)
        return super()._normalise(x, training, momentum)


class ReLU(Module):
    """max(x, 0). ``inplace`` is accepted for PyTorch compatibility; minires never overwrites
    its input (the graph may still need it)."""

    def __init__(self, inplace=False):
        super().__init__()
        self.inplace = inplace

    def extra_repr(self):
        """The settings shown in the repr: ``inplace=True`` when it was given, else nothing."""
        return "inplace=True" if self.inplace else ""

    def forward(self, x):
        """max(x, 0) elementwise, same shape as x (``F.relu``)."""
        return F.relu(x)


class MaxPool2d(Module):
    """Max over KH x KW windows; the gradient goes to the arg-max of each window."""

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, return_indices=False,
                 ceil_mode=False):
        super().__init__()
        if dilation != 1 or return_indices or ceil_mode:
            raise ValueError("MaxPool2d: minires supports dilation=1, return_indices=False and "
                             f"ceil_mode=False only, got dilation={dilation}, "
                             f"return_indices={return_indices}, ceil_mode={ceil_mode}")
        self.kernel_size = kernel_size
        self.stride = kernel_size if stride is None else stride
        self.padding, self.dilation, self.ceil_mode = padding, dilation, ceil_mode

    def extra_repr(self):
        """The settings shown in the repr: kernel_size, stride, padding, dilation, ceil_mode."""
        return (f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
                f"dilation={self.dilation}, ceil_mode={self.ceil_mode}")

    def forward(self, x):
        """Max-pool x (N, C, H, W) -> (N, C, OH, OW) (``F.max_pool2d``)."""
        _check_tensor(x, f"MaxPool2d({self.extra_repr()})")
        return F.max_pool2d(x, self.kernel_size, self.stride, self.padding)


class AvgPool2d(Module):
    """Mean over KH x KW windows (zero padding counts in the mean, PyTorch's default)."""

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
                 divisor_override=None):
        super().__init__()
        if ceil_mode or not count_include_pad or divisor_override is not None:
            raise ValueError("AvgPool2d: minires supports ceil_mode=False, count_include_pad=True "
                             "and divisor_override=None only")
        self.kernel_size = kernel_size
        self.stride = kernel_size if stride is None else stride
        self.padding = padding

    def extra_repr(self):
        """The settings shown in the repr: kernel_size, stride, padding."""
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"

    def forward(self, x):
        """Average-pool x (N, C, H, W) -> (N, C, OH, OW) (``F.avg_pool2d``)."""
        _check_tensor(x, f"AvgPool2d({self.extra_repr()})")
        return F.avg_pool2d(x, self.kernel_size, self.stride, self.padding)


class AdaptiveAvgPool2d(Module):
    """Average-pool to a fixed (OH, OW); ``AdaptiveAvgPool2d(1)`` is global average pooling."""

    def __init__(self, output_size):
        super().__init__()
        self.output_size = as_int_pair(output_size, "output_size", "AdaptiveAvgPool2d", 1)

    def extra_repr(self):
        """The settings shown in the repr: output_size."""
        return f"output_size={self.output_size}"

    def forward(self, x):
        """Average-pool x (N, C, H, W) -> (N, C, *output_size) (``F.adaptive_avg_pool2d``)."""
        _check_tensor(x, f"AdaptiveAvgPool2d({self.extra_repr()})")
        return F.adaptive_avg_pool2d(x, self.output_size)


class Flatten(Module):
    """Merge axes start_dim..end_dim: (N, C, H, W) -> (N, C*H*W) by default."""

    def __init__(self, start_dim=1, end_dim=-1):
        super().__init__()
        self.start_dim, self.end_dim = start_dim, end_dim

    def extra_repr(self):
        """The settings shown in the repr: start_dim, end_dim."""
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"

    def forward(self, x):
        """Reshape x, merging axes start_dim..end_dim into one (e.g. (N, C, H, W) -> (N, C*H*W))."""
        _check_tensor(x, f"Flatten({self.extra_repr()})")
        shape = tuple(x.shape)
        nd = max(len(shape), 1)
        start, end = self.start_dim % nd, self.end_dim % nd
        if start > end:
            raise ValueError(f"Flatten: start_dim {self.start_dim} comes after end_dim "
                             f"{self.end_dim} for an input of shape {shape}")
        return x.reshape(*shape[:start], -1, *shape[end + 1:])


class Identity(Module):
    """Returns its input unchanged (a placeholder: e.g. the shortcut of a block whose shapes
    match)."""

    def __init__(self, *args, **kwargs):
        super().__init__()

    def forward(self, x):
        """Return x itself."""
        return x


class Dropout(Module):
    """Inverted dropout in training mode (zero with probability p, scale by 1/(1-p)); identity
    in eval."""

    def __init__(self, p=0.5, inplace=False):
        super().__init__()
        if not 0 <= p < 1:
            raise ValueError(f"Dropout: p must be in [0, 1), got {p}")
        self.p, self.inplace = p, inplace

    def extra_repr(self):
        """The settings shown in the repr: p, inplace."""
        return f"p={self.p}, inplace={self.inplace}"

    def forward(self, x):
        """Inverted dropout of x in training mode (``F.dropout``); x itself in eval mode."""
        return F.dropout(x, self.p, training=self.training)


__all__ = ["Conv2d", "Linear", "BatchNorm1d", "BatchNorm2d", "ReLU", "MaxPool2d", "AvgPool2d",
           "AdaptiveAvgPool2d", "Flatten", "Identity", "Dropout"]
