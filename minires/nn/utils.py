"""Utilities that act on a model's parameters, as in ``torch.nn.utils``.

``clip_grad_norm_(parameters, max_norm)`` rescales the gradients so that their
joint norm is at most ``max_norm`` -- the usual guard against exploding gradients.

``fuse_conv_bn(model)`` returns a copy of ``model`` for inference in which every batch
norm that directly follows a convolution is folded into that convolution's weight and
bias -- the same logits for one pass over memory less per batch norm.
"""
from __future__ import annotations

import copy
import math
import numbers

import numpy as np

from ..autograd import no_grad
from ..backend import DEFAULT_DTYPE, device_of, get_array_module
from ..tensor import Tensor
from .layers import BatchNorm2d, Conv2d
from .module import Module, Parameter


def clip_grad_norm_(parameters, max_norm, norm_type=2.0, error_if_nonfinite=False):
    """Scale the gradients of ``parameters`` in place so that their total norm is at most
    ``max_norm``; return the total norm before clipping, as a 0-d tensor (like PyTorch).

    ``parameters``: one tensor or an iterable of them (``model.parameters()``); those
    without a gradient are skipped. The total norm is the ``norm_type``-norm of all
    gradients seen as one vector (``float("inf")``: the largest absolute value). The
    scale is ``max_norm / (total + 1e-6)``, applied only when it is below 1.
    ``error_if_nonfinite=True`` raises if the total norm is nan or inf.
    """
    params = [parameters] if hasattr(parameters, "grad") else list(parameters)
    for p in params:
        if not hasattr(p, "grad"):
            raise TypeError(f"clip_grad_norm_: expected tensors (parameters), got "
                            f"{type(p).__name__}")
    if not isinstance(max_norm, numbers.Real) or isinstance(max_norm, bool) or not max_norm >= 0:
        raise ValueError(f"clip_grad_norm_: max_norm must be a number >= 0, got {max_norm!r}")
    if (not isinstance(norm_type, numbers.Real) or isinstance(norm_type, bool)
            or not norm_type > 0):
        raise ValueError(f"clip_grad_norm_: norm_type must be a number > 0 or float('inf'), got "
                         f"{norm_type!r}")
    norm_type = float(norm_type)
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return Tensor(np.zeros((), dtype=DEFAULT_DTYPE))
    devices = sorted({device_of(g) for g in grads})
    if len(devices) > 1:
        raise RuntimeError(f"clip_grad_norm_: the gradients are on different devices "
                           f"({' and '.join(devices)}); move the parameters to one device first")
    xp = get_array_module(grads[0])
    # The norm of the per-gradient norms is the norm of all gradients as one vector.
    norms = [xp.linalg.norm(g.ravel(), ord=norm_type) for g in grads if g.size]
    total = (xp.linalg.norm(xp.stack(norms), ord=norm_type) if norms
             else xp.zeros((), dtype=grads[0].dtype))
    total_value = float(total)
    if error_if_nonfinite and not math.isfinite(total_value):
        raise RuntimeError(f"clip_grad_norm_: the total norm of order {norm_type} of the "
                           f"gradients is {total_value}, so it cannot be clipped; pass "
                           f"error_if_nonfinite=False to scale by it anyway")
    scale = max_norm / (total_value + 1e-6)
    if scale < 1.0 or math.isnan(scale):
        for g in grads:
            g *= g.dtype.type(scale)
    return Tensor(xp.asarray(total))


# --- folding batch norm into the convolution before it ------------------------------------
# In eval mode a batch norm is an affine map per channel o, with the running statistics:
#     bn(z)[o] = gamma[o] * (z[o] - mu[o]) / sigma[o] + beta[o],   sigma = sqrt(var + eps)
# and when z = conv(x) = W * x + b, the two compose into one convolution:
#     bn(conv(x))[o] = (W[o] * s[o]) * x + (b[o] - mu[o]) * s[o] + beta[o],   s = gamma / sigma
# so W' = W * s (each output filter scaled) and b' = (b - mu) * s + beta. Nothing else in
# the network changes. Which batch norm follows which convolution is read off one forward
# pass (the batch norm's input is the convolution's output tensor itself), not guessed
# from names, and the fused copy is checked against the original on that pass.
class FoldedBatchNorm(Module):
    """What ``fuse_conv_bn`` leaves where a batch norm was: the identity in eval mode.

    Its statistics now live in the convolution named ``into``; training the fused copy
    would train without batch norm, so train mode raises instead.
    """

    def __init__(self, into: str):
        super().__init__()
        self.into = into

    def extra_repr(self):
        """The convolution this batch norm was folded into."""
        return f"folded into {self.into!r}"

    def forward(self, x):
        """x itself (eval mode); a RuntimeError in train mode."""
        if self.training:
            raise RuntimeError(f"FoldedBatchNorm: this batch norm was folded into {self.into!r} "
                               f"by fuse_conv_bn, which makes a copy for inference only; train the "
                               f"original model (or call .eval() on this copy)")
        return x


def _conv_bn_pairs(model, example):
    """[(conv name, bn name)] for each BatchNorm2d whose input is a Conv2d's output tensor."""
    names = {id(m): name for name, m in model.named_modules()}
    outputs, pairs, handles = {}, [], []

    def after_conv(module, inputs, output):
        outputs[id(output)] = (output, names[id(module)])   # the tensor too: ids stay unique

    def before_bn(module, inputs):
        source = outputs.get(id(inputs[0]))
        if source is not None and source[0] is inputs[0]:
            pairs.append((source[1], names[id(module)]))

    for m in model.modules():
        if isinstance(m, Conv2d):
            handles.append(m.register_forward_hook(after_conv))
        elif isinstance(m, BatchNorm2d):
            handles.append(m.register_forward_pre_hook(before_bn))
    try:
        with no_grad():
            reference = model(example)
    finally:
        for h in handles:
            h.remove()
    return pairs, reference


def _fold(conv, bn):
    """W' = W * s and b' = (b - mu) * s + beta with s = gamma / sqrt(var + eps), in float64."""
    xp = get_array_module(conv.weight.data)
    dtype = conv.weight.dtype
    mu = bn.running_mean.data.astype(xp.float64)
    s = 1.0 / xp.sqrt(bn.running_var.data.astype(xp.float64) + bn.eps)   # (C_out,) 1/sigma
    if bn.weight is not None:
        s = s * bn.weight.data.astype(xp.float64)
    b = -mu if conv.bias is None else conv.bias.data.astype(xp.float64) - mu
    b = b * s + (0.0 if bn.bias is None else bn.bias.data.astype(xp.float64))
    w = conv.weight.data.astype(xp.float64) * s.reshape(-1, 1, 1, 1)  # (C_out, C_in/G, KH, KW)
    conv.weight = Parameter(w.astype(dtype))
    conv.bias = Parameter(b.astype(dtype))


def _example_input(model):
    """A small random batch (2, C_in, 32, 32) for the first convolution's C_in."""
    conv = next((m for m in model.modules() if isinstance(m, Conv2d)), None)
    if conv is None:
        return None
    rng = np.random.default_rng(0)                  # its own generator: no global state touched
    x = rng.standard_normal((2, conv.in_channels, 32, 32))
    xp = get_array_module(conv.weight.data)
    return Tensor(xp.asarray(x.astype(conv.weight.dtype)))


def fuse_conv_bn(model, example=None):
    """A copy of ``model`` for inference, each batch norm that follows a convolution folded
    into it (``W' = W * gamma / sigma``, ``b' = (b - mu) * gamma / sigma + beta``).

    ``model`` itself is not changed. The copy is in eval mode and gives the same logits
    (float64: to about 1e-12 relative; float32: to rounding); its folded batch norms are
    ``FoldedBatchNorm`` modules, which refuse train mode. Which batch norm follows which
    convolution is found by running ``example`` (default: two random 32x32 images with
    the first convolution's channels; pass a batch of your own for other input sizes)
    and the copy is checked against the original on it. Batch norms that do not directly
    follow a convolution (pre-activation blocks' first one) stay as they are.
    """
    if not isinstance(model, Module):
        raise TypeError(f"fuse_conv_bn: expected a minires Module, got {type(model).__name__}")
    # the copy is for inference: its parameters get no .grad (mapped to None, not copied)
    no_grads = {id(p.grad): None for p in model.parameters() if p.grad is not None}
    fused = copy.deepcopy(model, no_grads).eval()
    if example is None:
        example = _example_input(fused)
        if example is None:
            return fused                            # no convolution: nothing to fold
    elif not isinstance(example, Tensor):
        example = Tensor(example)
    try:
        pairs, reference = _conv_bn_pairs(fused, example)
    except Exception as err:
        raise ValueError(f"fuse_conv_bn: running the model on the example input of shape "
                         f"{tuple(example.shape)} failed ({type(err).__name__}: {err}); pass "
                         f"example=a batch the model accepts") from err
    modules = dict(fused.named_modules())
    for conv_name, bn_name in pairs:
        bn = modules[bn_name]
        if not bn.track_running_stats:
            continue                                # batch statistics even in eval: not affine
        _fold(modules[conv_name], bn)
        parent, _, attr = bn_name.rpartition(".")
        setattr(modules[parent] if parent else fused, attr, FoldedBatchNorm(conv_name).eval())
    _check_same_logits(fused, example, reference)
    return fused


def _check_same_logits(fused, example, reference):
    """Raise if the fused copy's output differs from the original's beyond rounding (a
    convolution whose output also feeds something besides its batch norm)."""
    with no_grad():
        out = fused(example)
    xp = get_array_module(out.data)
    a, b = reference.data.astype(xp.float64), out.data.astype(xp.float64)
    scale = max(float(xp.abs(a).max()), 1e-30) if a.size else 1.0
    worst = float(xp.abs(a - b).max()) / scale if a.size else 0.0
    limit = 1e-9 if reference.dtype == np.float64 else 1e-3
    if not worst <= limit:
        raise RuntimeError(f"fuse_conv_bn: the fused copy's output differs from the model's by "
                           f"{worst:.3g} (relative; limit {limit:g}): a convolution's output "
                           f"probably also feeds something besides the batch norm after it, so "
                           f"folding is not valid for this model")


__all__ = ["FoldedBatchNorm", "clip_grad_norm_", "fuse_conv_bn"]
