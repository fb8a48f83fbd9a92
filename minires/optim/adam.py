"""Adam and AdamW.

Per step t = 1, 2, ... for a parameter p with gradient grad (PyTorch's formulation):

    g = grad + weight_decay * p                        (Adam: L2 decay through the gradient)
    p = p * (1 - lr * weight_decay)                    (AdamW instead: decoupled decay)
    m = beta1 * m + (1 - beta1) * g                    (first moment)
    v = beta2 * v + (1 - beta2) * g * g                (second moment)
    p -= lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)

The bias corrections 1 - beta^t undo the zero start of m and v. All arrays are updated
in place in the parameter's dtype.
"""
from __future__ import annotations

import math

from ..backend import get_array_module
from .optimizer import Optimizer


class Adam(Optimizer):
    """Adam(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0).

    State per parameter: ``step`` (an int), ``exp_avg`` (m) and ``exp_avg_sq`` (v).
    """

    decoupled = False

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(params, {"lr": lr, "betas": tuple(betas), "eps": eps,
                                  "weight_decay": weight_decay})

    def _check_group(self, group):
        super()._check_group(group)
        b1, b2 = group["betas"]
        if not (0.0 <= b1 < 1.0 and 0.0 <= b2 < 1.0):
            raise ValueError(f"{type(self).__name__}: betas must lie in [0, 1), got "
                             f"{group['betas']}")
        if group["eps"] <= 0:
            raise ValueError(f"{type(self).__name__}: eps must be > 0, got {group['eps']}")

    def _update(self, p, grad, state, group):
        xp = get_array_module(p.data)
        lr, eps, wd = float(group["lr"]), float(group["eps"]), float(group["weight_decay"])
        b1, b2 = (float(b) for b in group["betas"])
        if "exp_avg" not in state:
            state["step"] = 0
            state["exp_avg"] = xp.zeros_like(p.data)
            state["exp_avg_sq"] = xp.zeros_like(p.data)
        state["step"] = t = int(state["step"]) + 1
        m, v = state["exp_avg"], state["exp_avg_sq"]

        g = grad
        if wd and self.decoupled:
            p.data *= 1.0 - lr * wd
        elif wd:
            g = p.data * wd
            g += grad

        tmp = g * (1.0 - b1)
        m *= b1
        m += tmp                                  # m = b1 m + (1 - b1) g
        xp.multiply(g, g, out=tmp)
        tmp *= 1.0 - b2
        v *= b2
        v += tmp                                  # v = b2 v + (1 - b2) g^2

        step_size = lr / (1.0 - b1 ** t)
        xp.sqrt(v, out=tmp)
        tmp /= math.sqrt(1.0 - b2 ** t)
        tmp += eps                                # denom = sqrt(v / (1 - b2^t)) + eps
        xp.divide(m, tmp, out=tmp)
        tmp *= step_size
        p.data -= tmp


class AdamW(Adam):
    """AdamW(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01): decoupled decay."""

    decoupled = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
