"""log_softmax, softmax and the fused, numerically stable cross-entropy loss.

Shapes: logits are (N, C) -- N examples, C classes; targets are N integer labels.
"""
from __future__ import annotations

import numpy as np

from ..autograd import Function, is_tensor
from ..backend import get_array_module, is_cupy_array, to_numpy
from . import cuda_kernels

REDUCTIONS = ("mean", "sum", "none")


def _check_axis(op, axis, x):
    if not -x.ndim <= axis < x.ndim:
        raise ValueError(f"{op}: axis {axis} is out of range for a tensor of shape {x.shape}")


def _log_softmax(x, axis):
    """x - logsumexp(x): subtracting the max first means exp never overflows."""
    xp = get_array_module(x)
    z = x - x.max(axis=axis, keepdims=True)
    return z - xp.log(xp.exp(z).sum(axis=axis, keepdims=True))


class LogSoftmax(Function):
    """y = x - logsumexp(x); dx = gy - softmax(x) * sum(gy). keeps: the output y."""

    def __init__(self, axis=-1):
        super().__init__()
        self.axis = axis

    def forward(self, x):
        _check_axis("log_softmax", self.axis, x)
        y = _log_softmax(x, self.axis)
        self.save_for_backward(y)
        return y

    def backward(self, gy):
        (y,) = self.saved
        xp = get_array_module(gy)
        return (gy - xp.exp(y) * gy.sum(axis=self.axis, keepdims=True),)


class Softmax(Function):
    """y = exp(x) / sum(exp(x)); dx = y * (gy - sum(gy * y)). keeps: the output y."""

    def __init__(self, axis=-1):
        super().__init__()
        self.axis = axis

    def forward(self, x):
        _check_axis("softmax", self.axis, x)
        y = get_array_module(x).exp(_log_softmax(x, self.axis))
        self.save_for_backward(y)
        return y

    def backward(self, gy):
        (y,) = self.saved
        return (y * (gy - (gy * y).sum(axis=self.axis, keepdims=True)),)


class CrossEntropy(Function):
    """Softmax cross-entropy from logits, fused so it is stable for any logit size.

    With label smoothing eps the target distribution is q = (1 - eps) onehot(t) + eps / C,
    the loss per example is -sum_c q_c log p_c, and its gradient is simply
    d loss / d logits = p - q (p = softmax(logits)). keeps: log p (N, C) and q's labels.

    target: the labels, on the logits' device or on the host (NumPy: copied to the device
    after the checks). label_range: (smallest, largest) label when the caller read them on the
    host already (``cross_entropy`` does); otherwise forward reads them from ``target`` -- for
    labels on a GPU, one device-to-host copy that waits for the GPU.
    """

    def __init__(self, target, label_smoothing=0.0, reduction="mean", label_range=None):
        super().__init__()
        if reduction not in REDUCTIONS:
            raise ValueError(f"cross_entropy: unknown reduction {reduction!r}; "
                             f"expected one of {REDUCTIONS}")
        if not 0.0 <= label_smoothing <= 1.0:
            raise ValueError("cross_entropy: label_smoothing must be in [0, 1], "
                             f"got {label_smoothing}")
        self.target, self.eps, self.reduction = target, label_smoothing, reduction
        self.label_range = label_range

    def forward(self, logits):
        xp = get_array_module(logits)
        target = self.target
        if logits.ndim != 2:
            raise ValueError(f"cross_entropy: logits must have shape (N, C), got {logits.shape}")
        N, C = logits.shape
        if target.shape != (N,):
            raise ValueError(f"cross_entropy: target must have shape ({N},) to match logits "
                             f"{logits.shape}, got {target.shape}")
        if not np.issubdtype(target.dtype, np.integer):
            raise TypeError("cross_entropy: target must hold integer class indices, "
                            f"got dtype {target.dtype}")
        if N:
            lo, hi = self.label_range if self.label_range is not None else _label_range(target)
            if lo < 0 or hi >= C:
                raise ValueError(f"cross_entropy: target labels must lie in [0, {C}), "
                                 f"got values from {lo} to {hi}")
        target = xp.asarray(target)                   # host labels go to the device once checked
        logp = _log_softmax(logits, axis=1)                       # (N, C)
        rows = xp.arange(N)
        nll = -logp[rows, target]                                  # (N,)
        loss = (1 - self.eps) * nll - (self.eps / C) * logp.sum(axis=1) if self.eps else nll
        self.save_for_backward(logp, target)
        if self.reduction == "mean":
            return loss.mean()
        if self.reduction == "sum":
            return loss.sum()
        return loss

    def backward(self, gy):
        logp, target = self.saved
        xp = get_array_module(logp)
        if xp is not np:    # CuPy: p - q and the scaling in one kernel (cuda_kernels.py)
            return (cuda_kernels.cross_entropy_backward(logp, target, gy, self.eps,
                                                        self.reduction),)
        N, C = logp.shape
        g = xp.exp(logp)                                           # p, (N, C)
        g -= self.eps / C
        g[xp.arange(N), target] -= 1 - self.eps                    # p - q
        if self.reduction == "mean":
            g *= gy / N
        elif self.reduction == "sum":
            g *= gy
        else:
            g *= gy[:, None]
        return (g,)


def _label_range(target):
    """(smallest, largest) label as Python ints: on the host for NumPy labels; for labels on a
    GPU both come back in one copy (one wait for the GPU, not two)."""
    if is_cupy_array(target):
        lo, hi = to_numpy(get_array_module(target).stack((target.min(), target.max())))
        return int(lo), int(hi)
    return int(target.min()), int(target.max())


def _one_axis(op, axis, dim):
    """``axis`` (NumPy's name) or ``dim`` (PyTorch's), not both."""
    if dim is None:
        return axis
    if axis is not None:
        raise TypeError(f"{op}: got both axis={axis!r} and dim={dim!r}; they are one argument "
                        f"(NumPy's and PyTorch's spelling), give only one")
    return dim


def log_softmax(x, axis=None, *, dim=None):
    """log(softmax(x)) along ``axis`` (default -1; ``dim=`` as in PyTorch), computed stably
    as x - logsumexp(x).

    For logits (N, K) and the default axis -1 this gives (N, K) log-probabilities.
    Backward keeps the output.
    """
    axis = _one_axis("log_softmax", axis, dim)
    return LogSoftmax(-1 if axis is None else axis)(x)


def softmax(x, axis=None, *, dim=None):
    """exp(x) / sum(exp(x)) along ``axis`` (default -1; ``dim=`` as in PyTorch): logits
    (N, K) -> probabilities (N, K).

    The max is subtracted first so exp never overflows. Backward keeps the output.
    """
    axis = _one_axis("softmax", axis, dim)
    return Softmax(-1 if axis is None else axis)(x)


def cross_entropy(logits, target, label_smoothing=0.0, reduction="mean"):
    """Mean (or summed, or per-example) softmax cross-entropy of integer targets.

    ``logits`` (N, C); ``target`` N class indices in [0, C): an integer tensor
    (``mr.tensor(labels)`` keeps int64), a NumPy/CuPy array or a list.

    Labels given on the host are checked there (the range [0, C)) before they are copied to
    the logits' device, so a step on a GPU does not wait for the check; labels already on the
    GPU are checked there, at the cost of one wait.
    """
    target = target.data if is_tensor(target) else target
    label_range = None
    if not is_cupy_array(target):
        target = np.asarray(target)
        if target.ndim == 1 and target.size and np.issubdtype(target.dtype, np.integer):
            label_range = int(target.min()), int(target.max())
    elif get_array_module(logits.data) is np:
        raise TypeError("cross_entropy: the target is on the GPU (CuPy) but the logits are on "
                        "the CPU; move them to one device")
    return CrossEntropy(target, label_smoothing, reduction, label_range)(logits)
