"""Batch normalisation, training and eval mode, with the closed-form backward.

Shapes: x is (N, C, H, W) or (N, C) (any (N, C, ...) works): statistics are per
channel C, over the M = N*H*W values of that channel. Internally x is viewed as
(N, C, L) with L = H*W (L = 1 for (N, C)), so one code path serves every rank.
"""
from __future__ import annotations

import numbers
from functools import partial

import numpy as np

from ..autograd import Function, is_tensor
from ..backend import device_of, get_array_module
from . import cuda_kernels
from .parallel import pass_chunks, run_chunks, sum_in_chunk_order


def _per_channel(v):
    """A (C,) array as (1, C, 1): broadcasts against x viewed as (N, C, L)."""
    return v.reshape(1, -1, 1)


# --- the passes over the activations, one block of images at a time -------------------
# On the CPU each pass runs in blocks of images on parallel.py's pool (``pass_chunks``), so
# every core works (each pass still goes over the whole batch before the next begins).
# Per-channel sums are added in block order: the result does not depend on the threads.
def _channel_sums(a3, b3, chunks):
    """Per channel, over (N, L): sum(a) and sum(a * b), (C,) each. einsum multiplies and adds
    as it reads: one pass each, 3x faster than .sum, no (N, C, L) temporary."""
    parts = run_chunks(partial(_sums_chunk, a3, b3), chunks)
    C = a3.shape[1]
    return tuple(sum_in_chunk_order(part, (C,), a3.dtype, np) for part in zip(*parts))


def _sums_chunk(a3, b3, n0, n1):
    return np.einsum("ncl->c", a3[n0:n1]), np.einsum("ncl,ncl->c", a3[n0:n1], b3[n0:n1])


def _affine_chunk(x3, scale, shift, out, n0, n1):
    """out = x * scale + shift per channel (shift None: no shift), images n0..n1; two passes."""
    o = out[n0:n1]
    np.multiply(x3[n0:n1], _per_channel(scale), out=o)
    if shift is not None:
        o += _per_channel(shift)


def _input_gradient_chunk(gy3, x3, k1, k0, scale, gx, n0, n1):
    """Training dx = scale * (gy + x * k1 + k0) per channel, images n0..n1: four passes, no
    temporary."""
    g = gx[n0:n1]
    np.multiply(x3[n0:n1], _per_channel(k1), out=g)
    g += _per_channel(k0)
    g += gy3[n0:n1]
    g *= _per_channel(scale)


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
        chunks = pass_chunks(x3)                # blocks of images, on the pool (parallel.py)
        self.centre_first = False
        xc = None
        if self.training:
            # Two reading passes for the statistics: sum(x) and sum(x^2), each one einsum that
            # multiplies and adds as it reads (3x faster than .mean, no (N, C, L) temporary).
            # var = E[x^2] - mean^2 loses digits when mean^2 >> var (the two terms cancel); then,
            # and only then, the variance is taken again from x - mean (ratio 8: at most 3 bits),
            # and y is made from x - mean as well.
            sum_x, sum_xx = _channel_sums(x3, x3, chunks)               # (C,) each
            mean = sum_x / M                                            # (C,)
            var = xp.maximum(sum_xx / M - mean * mean, 0)               # (C,) biased
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
            y3 = xp.empty_like(x3)                                      # (N, C, L)
            run_chunks(partial(_affine_chunk, x3, scale, shift, y3), chunks)
        else:                                                           # y from x - mean
            y3 = xc
            y3 *= _per_channel(scale)
            if bias is not None:
                y3 += _per_channel(bias)
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
        x3 = x.reshape(N, C, -1)                                        # (N, C, L)
        chunks = pass_chunks(gy3)                # blocks of images, on the pool (parallel.py)
        scale = invstd if weight is None else invstd * weight           # (C,) w / sigma
        sum_gy = sum_gy_xhat = None
        if need_w or need_b or (need_x and self.training):
            if self.centre_first:        # forward found mean^2 >> var: centre x before the sum
                sum_gy, sum_gy_xc = _channel_sums(gy3, x3 - _per_channel(mean), chunks)
            else:                        # sum(gy (x - mean)) = sum(gy x) - mean sum(gy)
                sum_gy, sum_gy_x = _channel_sums(gy3, x3, chunks)       # (C,) each
                sum_gy_xc = sum_gy_x - mean * sum_gy
            sum_gy_xhat = sum_gy_xc * invstd                            # (C,)
        gx = None
        if need_x:
            gx = xp.empty_like(gy3)                                     # (N, C, L)
            if self.training:
                # dx = scale * (gy - mean(gy) - x_hat * mean(gy x_hat)), with x_hat written out
                # as (x - mean) * invstd: scale * (gy + x * k1 + k0), k1 and k0 per channel.
                k1 = -invstd * sum_gy_xhat / M                          # (C,)
                k0 = -mean * k1 - sum_gy / M                            # (C,)
                run_chunks(partial(_input_gradient_chunk, gy3, x3, k1, k0, scale, gx), chunks)
            else:                                                       # dx = scale * gy
                run_chunks(partial(_affine_chunk, gy3, scale, None, gx), chunks)
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
