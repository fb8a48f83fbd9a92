"""Check a hand-written backward against central finite differences.

The loss is a random projection of the output, ``L = sum(f(x) * r)``, not a plain
``sum``: the gradient of ``sum(batch_norm(x))`` is zero whatever the backward does,
so ``sum`` would let a wrong backward pass. Every input element is perturbed:
dL/dx_i ~ (L(x + eps e_i) - L(x - eps e_i)) / (2 eps), in float64 where the
truncation error is ~eps^2 and the rounding error ~1e-16 / eps.
"""
from __future__ import annotations

import numpy as np

from .autograd import is_tensor, no_grad
from .backend import get_array_module, to_numpy


class GradcheckError(AssertionError):
    """The analytic and numeric gradients disagree (the message says where and by how much)."""


def _outputs(out):
    outs = out if isinstance(out, (tuple, list)) else (out,)
    return [o for o in outs if is_tensor(o)]


def _projected_loss(fn, inputs, directions):
    """sum over outputs of sum(out * r) as a Python float (no graph recorded)."""
    with no_grad():
        outs = _outputs(fn(*inputs))
    return sum(float((o.data * r).sum()) for o, r in zip(outs, directions))


def gradcheck(fn, *inputs, eps=1e-6, atol=1e-5, rtol=1e-3, seed=0):
    """Return True if ``fn``'s backward matches finite differences for every input that
    requires grad; otherwise raise ``GradcheckError`` naming the worst element.

    ``inputs`` are tensors; those with ``requires_grad=True`` are checked and must be
    float64. ``fn(*inputs)`` returns a tensor or a tuple of tensors.
    """
    checked = [i for i, x in enumerate(inputs) if is_tensor(x) and x.requires_grad]
    if not checked:
        raise ValueError("gradcheck: no input has requires_grad=True, so there is nothing to check")
    for i in checked:
        if inputs[i].dtype != np.float64:
            raise ValueError(f"gradcheck: input {i} has dtype {inputs[i].dtype}; finite "
                             f"differences are only exact enough in float64 (make it with "
                             f"dtype=numpy.float64)")
        inputs[i].grad = None

    outs = _outputs(fn(*inputs))
    if not outs:
        raise ValueError("gradcheck: fn returned no tensor")
    rng = np.random.default_rng(seed)
    directions = []
    for o in outs:
        xp = get_array_module(o.data)
        directions.append(xp.asarray(rng.standard_normal(o.shape)))
    loss = None
    for o, r in zip(outs, directions):
        if o.requires_grad:
            term = (o * r).sum()          # r becomes a constant tensor
            loss = term if loss is None else loss + term
    if loss is None:
        raise ValueError("gradcheck: no output of fn depends on an input that requires grad")
    loss.backward()

    for i in checked:
        x = inputs[i]
        analytic = to_numpy(x.grad) if x.grad is not None else np.zeros(x.shape)
        numeric = np.zeros(x.shape)
        for idx in np.ndindex(*x.shape):   # x.data is perturbed in place, then restored
            orig = float(x.data[idx])
            x.data[idx] = orig + eps
            plus = _projected_loss(fn, inputs, directions)
            x.data[idx] = orig - eps
            minus = _projected_loss(fn, inputs, directions)
            x.data[idx] = orig
            numeric[idx] = (plus - minus) / (2 * eps)
        tol = atol + rtol * np.abs(numeric)
        excess = np.abs(analytic - numeric) - tol
        if (excess > 0).any():
            worst = np.unravel_index(np.argmax(excess), x.shape)
            bad = int((excess > 0).sum())
            a, n = analytic[worst], numeric[worst]
            raise GradcheckError(
                f"gradcheck failed for input {i} (shape {x.shape}): {bad} of {x.data.size} "
                f"elements disagree.\n  worst element at index {tuple(int(j) for j in worst)}: "
                f"analytic {a:.6g}, numeric {n:.6g}, |difference| {abs(a - n):.3g} > tolerance "
                f"{tol[worst]:.3g} (atol {atol:g} + rtol {rtol:g} * |numeric|)")
    return True


__all__ = ["GradcheckError", "gradcheck"]
