"""Utilities that act on a model's parameters, as in ``torch.nn.utils``.

``clip_grad_norm_(parameters, max_norm)`` rescales the gradients so that their
joint norm is at most ``max_norm`` -- the usual guard against exploding gradients.
"""
from __future__ import annotations

import math
import numbers

import numpy as np

from ..backend import DEFAULT_DTYPE, device_of, get_array_module
from ..tensor import Tensor


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


__all__ = ["clip_grad_norm_"]
