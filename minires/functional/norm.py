"""Batch normalisation, training and eval mode, with the closed-form backward.

Shapes: x is (N, C, H, W) or (N, C) (any (N, C, ...) works): statistics are per
channel C, over the M = N*H*W values of that channel. Internally x is viewed as
(N, C, L) with L = H*W (L = 1 for (N, C)), so one code path serves every rank.
"""
from __future__ import annotations

import numbers

import numpy as np

from ..autograd import Function, is_tensor
from ..backend import device_of, get_array_module
from . import cuda_kernels


def _per_channel(v):
    """A (C,) array as (1, C, 1): broadcasts against x viewed as (N, C, L)."""
    return v.reshape(1, -1, 1)


class BatchNorm(Function):
    """y = weight * (x - mean) / sqrt(var + eps) + bias, per channel.

    training=True: mean and var are the batch's (biased variance), and the running
    statistics are updated in place exactly as PyTorch does:
        running_mean = (1 - momentum) * running_mean + momentum * mean
        running_var  = (1 - momentum) * running_var  + momentum * var * M / (M - 1)   (unbiased)
    training=False: mean and var are the running statistics; y is an affine map of x.

    keeps: x (alive in the graph anyway, so saving it costs no memory -- x_hat is
    recomputed from it in backward), the per-channel mean and 1/sqrt(var + eps), and
    the weight.
    """

    def __init__(self, running_mean=None, running_var=None, training=False, momentum=0.1, eps=1e-5):
        super().__init__()
        op = "batch_norm"
        self.running_mean = running_mean.data if is_tensor(running_mean) else running_mean
        self.running_var = running_var.data if is_tensor(running_var) else running_var
        if (self.running_mean is None) != (self.running_var is None):
            raise ValueError(f"{op}: give both running_mean and running_var, or neither")
        if not training and self.running_mean is None:
            raise ValueError(f"{op}: eval mode (training=False) normalises with the running "
                             f"statistics, so running_mean and running_var are required")
        if (isinstance(momentum, bool) or not isinstance(momentum, numbers.Real)
                or not 0 <= momentum <= 1):
            raise ValueError(f"{op}: momentum must be a number in [0, 1], got {momentum!r}")
        if isinstance(eps, bool) or not isinstance(eps, numbers.Real) or eps <= 0:
            raise ValueError(f"{op}: eps must be a positive number, got {eps!r}")
        self.training, self.momentum, self.eps = bool(training), float(momentum), float(eps)

    def _check(self, x, weight, bias):
        op = "batch_norm"
        if x.ndim < 2:
            raise ValueError(f"{op}: input must be (N, C) or (N, C, H, W), "
                             f"got shape {tuple(x.shape)}")
        C = x.shape[1]
        for name, a in (("weight", weight), ("bias", bias),
                        ("running_mean", self.running_mean), ("running_var", self.running_var)):
            if a is None:
                continue
            if tuple(a.shape) != (C,):
                raise ValueError(f"{op}: {name} must have shape ({C},) for an input with {C} "
                                 f"channels (shape {tuple(x.shape)}), got {tuple(a.shape)}")
            if device_of(a) != device_of(x):
                raise RuntimeError(f"{op}: {name} is on {device_of(a)} but the input is on "
                                   f"{device_of(x)}; move them to one device")
        M = x.size // C
        if self.training and M < 2:
            raise ValueError(f"{op}: training mode needs more than one value per channel to "
                             f"compute a batch variance, got input shape {tuple(x.shape)}")
        return M

    def forward(self, x, weight, bias):
        xp = get_array_module(x)
        M = self._check(x, weight, bias)
        # CuPy: the same math in fused kernels (cuda_kernels.py)
        if get_array_module(x) is not np:
            y, mean, invstd = cuda_kernels.batch_norm_forward(
                x, weight, bias, self.running_mean, self.running_var, self.training,
                self.momentum, self.eps)
            self.save_for_backward(x, mean, invstd, weight)
            return y
        N, C = x.shape[:2]
        x3 = x.reshape(N, C, -1)                                        # (N, C, L), L = H*W
        self.centre_first = False
        xc = None
        if self.training:
            # Two reading passes for the statistics: sum(x) and sum(x^2), each one einsum that
            # multiplies and adds as it reads (3x faster than .mean, no (N, C, L) temporary).
            # var = E[x^2] - mean^2 loses digits when mean^2 >> var (the two terms cancel); then,
            # and only then, the variance is taken again from x - mean (ratio 8: at most 3 bits),
            # and y is made from x - mean as well.
            mean = xp.einsum("ncl->c", x3) / M                          # (C,)
            var = xp.maximum(xp.einsum("ncl,ncl->c", x3, x3) / M - mean * mean, 0)  # (C,) biased
            if bool((mean * mean > 8 * var).any()):
                self.centre_first = True                                # backward centres too
                xc = x3 - _per_channel(mean)                            # (N, C, L)
                var = xp.einsum("ncl,ncl->c", xc, xc) / M
            if self.running_mean is not None:
                m = self.momentum
                self.running_mean *= 1 - m
                self.running_mean += m * mean
                self.running_var *= 1 - m
                self.running_var += (m * M / (M - 1)) * var             # unbiased, as PyTorch
            invstd = 1 / xp.sqrt(var + self.eps)                        # (C,) 1/sigma
        else:
            mean = self.running_mean.astype(x.dtype, copy=False)
            invstd = 1 / xp.sqrt(self.running_var.astype(x.dtype, copy=False) + self.eps)
        # y = x * scale + shift per channel: an affine map, two passes over memory
        scale = invstd if weight is None else invstd * weight           # (C,) w / sigma
        if xc is None:
            shift = -mean * scale if bias is None else bias - mean * scale  # (C,)
            y3 = x3 * _per_channel(scale)                               # (N, C, L)
        else:                                                           # y from x - mean
            shift = bias                                                # (C,) or None
            y3 = xc
            y3 *= _per_channel(scale)
        if shift is not None:
            y3 += _per_channel(shift)
        self.save_for_backward(x, mean, invstd, weight)
        return y3.reshape(x.shape)

    # Backward, training mode. Per channel, with M values, mu = mean(x),
    # sigma = sqrt(var + eps), x_hat = (x - mu) / sigma and y = w * x_hat + b:
    #   db = sum(gy),   dw = sum(gy * x_hat),   and dL/dx_hat = w * gy.
    # x_hat_j depends on every x_i of its channel (through mu and sigma):
    #   d x_hat_j / d x_i = (delta_ij - 1/M - x_hat_i * x_hat_j / M) / sigma
    # (d mu / d x_i = 1/M and d sigma / d x_i = x_hat_i / M). Summing over j:
    #   dx_i = (w / sigma) * (gy_i - mean(gy) - x_hat_i * mean(gy * x_hat))
    # The same two sums, sum(gy) and sum(gy * x_hat), give db, dw and dx: they are
    # computed once, each in a single pass (einsum multiplies and adds as it reads,
    # no (N, C, L) temporary). Eval mode: mu and sigma are constants, so
    #   dx = (w / sigma) * gy, and dw, db as above.
    def backward(self, gy):
        x, mean, invstd, weight = self.saved
        # CuPy: the same math in fused kernels (cuda_kernels.py)
        if get_array_module(gy) is not np:
            return cuda_kernels.batch_norm_backward(gy, x, mean, invstd, weight, self.training,
                                                    self.needs_input_grad)
        xp = get_array_module(gy)
        need_x, need_w, need_b = self.needs_input_grad
        N, C = x.shape[:2]
        M = x.size // C
        gy3 = gy.reshape(N, C, -1)                                      # (N, C, L)
        scale = invstd if weight is None else invstd * weight           # (C,) w / sigma
        sum_gy = xp.einsum("ncl->c", gy3) if (need_b or need_x) else None  # (C,) faster than .sum
        x3 = x.reshape(N, C, -1)                                        # (N, C, L)
        if need_w or (need_x and self.training):
            if self.centre_first:        # forward found mean^2 >> var: centre x before the sum
                sum_gy_xhat = xp.einsum("ncl,ncl->c", gy3, x3 - _per_channel(mean)) * invstd
            else:                        # sum(gy (x - mean)) = sum(gy x) - mean sum(gy), one pass
                sum_gy_ = sum_gy if sum_gy is not None else xp.einsum("ncl->c", gy3)
                sum_gy_xhat = (xp.einsum("ncl,ncl->c", gy3, x3) - mean * sum_gy_) * invstd
        gx = None
        if need_x:
            if self.training:
                # dx = scale * (gy - mean(gy) - x_hat * mean(gy x_hat)), with x_hat written out
                # as (x - mean) * invstd: scale * (gy + x * k1 + k0), k1 and k0 per channel.
                # Four passes and no temporary: x * k1 into a new buffer, + k0, + gy, * scale.
                k1 = -invstd * sum_gy_xhat / M                          # (C,)
                k0 = -mean * k1 - sum_gy / M                            # (C,)
                gx = x3 * _per_channel(k1)                              # (N, C, L)
                gx += _per_channel(k0)
                gx += gy3
                gx *= _per_channel(scale)
            else:
                gx = gy3 * _per_channel(scale)
            gx = gx.reshape(x.shape)
        gw = sum_gy_xhat if need_w else None
        gb = sum_gy if need_b else None
        return gx, gw, gb


def batch_norm(x, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1,
               eps=1e-5):
    """Batch normalisation over (N, C, H, W) or (N, C), like ``torch.nn.functional.batch_norm``.

    ``running_mean`` / ``running_var``: (C,) arrays or tensors, updated IN PLACE when
    ``training`` (may be None then); used for normalising when not training.
    ``weight`` / ``bias``: (C,) tensors or None (no affine transform).
    """
    return BatchNorm(running_mean, running_var, training, momentum, eps)(x, weight, bias)


__all__ = ["BatchNorm", "batch_norm"]
