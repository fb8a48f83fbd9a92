"""Small helpers shared by the tests (strategies live in strategies.py)."""
import numpy as np

import minires as mr
from minires.backend import to_numpy


def t64(array, device="cpu", requires_grad=True):
    """A float64 leaf tensor on ``device`` -- what gradcheck wants."""
    return mr.tensor(np.asarray(array, dtype=np.float64), requires_grad=requires_grad,
                     dtype=np.float64, device=device)


def t32(array, device="cpu", requires_grad=False):
    """A float32 leaf tensor on ``device`` -- what forward tests compare with NumPy in float32."""
    return mr.tensor(np.asarray(array, dtype=np.float32), requires_grad=requires_grad,
                     dtype=np.float32, device=device)


def grad_of(t):
    """``t.grad`` as a NumPy array, whatever the backend (CuPy arrays are copied back)."""
    return to_numpy(t.grad)


def away_from(values, points, margin=1e-3):
    """Push values at least ``margin`` away from each kink in ``points`` (e.g. ReLU at 0)."""
    values = np.array(values, dtype=np.float64)
    for p in points:
        close = np.abs(values - p) < margin
        values[close] = p + np.where(values[close] >= p, margin, -margin) * 2
    return values


def assert_forward(out, expected, dtype=np.float32, rtol=1e-6, atol=1e-6):
    """``out`` is a tensor of ``dtype`` holding ``expected`` (a NumPy array), shape included."""
    assert isinstance(out, mr.Tensor), f"expected a Tensor, got {type(out).__name__}"
    expected = np.asarray(expected)
    assert out.dtype == dtype, f"dtype {out.dtype}, expected {dtype} (no hidden upcast)"
    assert out.shape == expected.shape, f"shape {out.shape}, expected {expected.shape}"
    np.testing.assert_allclose(out.numpy(), expected, rtol=rtol, atol=atol)


def raw_backward_dtypes(out):
    """The dtypes the op that made ``out`` returns from its backward for a float32 gradient,
    before the engine casts anything: a float64 here is a hidden upcast (and twice the work)."""
    xp = mr.get_array_module(out.data)
    grads = out.grad_fn.backward(xp.ones(out.shape, dtype=np.float32))
    return {str(g.dtype) for g in grads if g is not None}
