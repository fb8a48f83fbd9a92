"""Stochastic gradient descent with momentum, Nesterov momentum and weight decay.

The update, in PyTorch's formulation (so hyperparameters carry over unchanged), for a
parameter p with gradient grad, per step:

    g   = grad + weight_decay * p              (L2 weight decay, added to the gradient)
    buf = g                                    (first step)
    buf = momentum * buf + (1 - dampening) * g (later steps)
    d   = g + momentum * buf   if nesterov  else  buf
    p  -= lr * d

Everything happens in place on ``p.data`` and the momentum buffer, in the parameter's
dtype (Python-float settings never upcast a float32 array), with at most two
temporary arrays per parameter. On a GPU (CuPy) the same update is one fused kernel per
parameter (``cuda_kernels.sgd_update``), rounded as here.
"""
from __future__ import annotations

import numpy as np

from ..backend import get_array_module
from ..functional import cuda_kernels
from .optimizer import Optimizer


class SGD(Optimizer):
    """SGD(params, lr, momentum=0, dampening=0, weight_decay=0, nesterov=False).

    State per parameter: ``momentum_buffer`` (when momentum > 0).
    """

    def __init__(self, params, lr, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False):
        super().__init__(params, {"lr": lr, "momentum": momentum, "dampening": dampening,
                                  "weight_decay": weight_decay, "nesterov": nesterov})

    def _check_group(self, group):
        super()._check_group(group)
        if group["momentum"] < 0:
            raise ValueError(f"SGD: momentum must be >= 0, got {group['momentum']}")
        if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
            raise ValueError(f"SGD: nesterov needs momentum > 0 and dampening 0, got momentum="
                             f"{group['momentum']}, dampening={group['dampening']}")

    def _update(self, p, grad, state, group):
        lr, momentum = float(group["lr"]), float(group["momentum"])
        dampening, wd = float(group["dampening"]), float(group["weight_decay"])
        if get_array_module(p.data) is not np:   # CuPy: the whole update in one kernel
            buf, first = state.get("momentum_buffer"), False
            if momentum and buf is None:
                buf = state["momentum_buffer"] = get_array_module(p.data).empty_like(p.data)
                first = True
            cuda_kernels.sgd_update(p.data, grad, buf if momentum else None, lr, momentum,
                                    dampening, wd, bool(group["nesterov"]), first)
            return
        owned = False                      # True when g is a temporary we may overwrite
        g = grad
        if wd:
            g = p.data * wd                # g = grad + wd * p
            g += grad
            owned = True
        if momentum:
            buf = state.get("momentum_buffer")
            if buf is None:
                buf = state["momentum_buffer"] = g.copy()
            else:
                buf *= momentum            # buf = momentum * buf + (1 - dampening) * g
                if dampening:
                    buf += (1.0 - dampening) * g
                else:
                    buf += g
            if group["nesterov"]:          # d = g + momentum * buf
                if owned:
                    g += momentum * buf
                else:
                    g = buf * momentum
                    g += grad
                    owned = True
            else:                          # d = buf
                g, owned = buf, False
        if owned:
            g *= lr
            p.data -= g
        else:
            p.data -= lr * g
