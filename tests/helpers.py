"""Small helpers shared by the tests (strategies live in strategies.py)."""
import numpy as np

import minires as mr
import minires.functional as F
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


# --- convolutions (the cases come from strategies.conv_cases) ---------------------------------
def conv_kwargs(case):
    """The stride / padding / dilation / groups of a conv case, as conv2d's keywords."""
    return {k: case[k] for k in ("stride", "padding", "dilation", "groups")}


def conv_inputs(case, device="cpu", dtype=np.float64, requires_grad=True, need_x=True):
    """x, weight and bias (None when the case has none) of a conv case, from its seed."""
    rng = np.random.default_rng(case["seed"])
    arrays = [rng.standard_normal(case["x_shape"]), rng.standard_normal(case["w_shape"]) * 0.5]
    arrays.append(rng.standard_normal(case["w_shape"][0]) if case["bias"] else None)
    grads = (requires_grad and need_x, requires_grad, requires_grad)
    return tuple(None if a is None else
                 mr.tensor(a.astype(dtype), requires_grad=g, dtype=dtype, device=device)
                 for a, g in zip(arrays, grads))


def conv_results(case, device="cpu", dtype=np.float64, need_x=True):
    """F.conv2d (the implementation in use) on a conv case: [y, dx, dW, db] as NumPy
    arrays for a fixed drawn gradient of y; dx left out unless need_x, db without bias."""
    x, w, b = conv_inputs(case, device, dtype, need_x=need_x)
    y = F.conv2d(x, w, b, **conv_kwargs(case))
    gy = np.random.default_rng(case["seed"] + 1).standard_normal(y.shape)
    y.backward(mr.tensor(gy.astype(dtype), dtype=dtype, device=device))
    return [y.numpy()] + [to_numpy(t.grad) for t in (x, w, b) if t is not None and t.requires_grad]
