"""The dtype rule of lesson 00, section 4: nothing upcasts behind your back.

- A Python number or NumPy scalar takes the tensor's dtype: ``x32 * 0.5`` and
  ``x32 * np.float64(0.5)`` stay float32 (NumPy 2 alone gives float64 for the second).
- Integer and bool operands meeting a floating one take its dtype (PyTorch's rule).
- Two floating tensors (or a tensor and an array) of different precision are a
  TypeError that names the op and both dtypes -- where PyTorch and NumPy would give
  float64 silently. The way out is explicit: ``x.to(np.float64)`` / ``x.double()`` /
  ``x.float()`` (recorded in the graph, gradients converted back) or ``x.astype`` (a
  constant copy).
- In place, the tensor keeps its dtype (``x32 += y64`` stays float32, as in PyTorch).
"""
import numpy as np
import pytest

import minires as mr
import minires.functional as F
from minires.functional import basic

from .helpers import grad_of, t32, t64


# --- numbers keep the tensor's dtype ----------------------------------------------------------
@pytest.mark.parametrize("number", [0.5, 2, np.float64(0.5), np.float32(0.5), np.int64(3), True])
def test_numbers_take_the_tensors_dtype(device, number):
    x = t32([1.0, 2.0, 3.0], device)
    for out in (x * number, number * x, x + number, x - number, number - x, x / number,
                F.maximum(x, number), F.minimum(x, number), F.where(x.data > 1, x, number)):
        assert out.dtype == np.float32
    y = t64([1.0, 2.0, 3.0], device, requires_grad=False)
    assert (y * number).dtype == (number * y).dtype == np.float64


def test_integers_meeting_floats_take_the_floats_dtype(device):
    labels = mr.tensor(np.array([0, 1, 2]), device=device)
    images = mr.tensor(np.array([0, 128, 255], dtype=np.uint8), device=device)
    assert (labels * 0.5).dtype == np.float32
    assert (images / 255.0).dtype == np.float32
    assert (labels + t32([1.0, 1.0, 1.0], device)).dtype == np.float32
    assert (labels + t64([1.0, 1.0, 1.0], device)).dtype == np.float64
    assert (t32([1.0, 2.0, 3.0], device) * np.arange(3)).dtype == np.float32   # int array


# --- two precisions: a TypeError naming the op and both dtypes --------------------------------
MIXED_OPS = {
    "add (a + b)": lambda a, b: a + b,
    "sub (a - b)": lambda a, b: a - b,
    "mul (a * b)": lambda a, b: a * b,
    "div (a / b)": lambda a, b: a / b,
    "matmul (a @ b)": lambda a, b: a @ b.reshape(3, 1),
    "maximum": F.maximum,
    "minimum": F.minimum,
    "where": lambda a, b: F.where(np.array([True, False, True]), a, b),
    "concatenate": lambda a, b: F.concatenate([a, b]),
    "stack": lambda a, b: F.stack([a, b]),
    "linear": lambda a, b: F.linear(a.reshape(1, 3), b.reshape(1, 3)),
}


@pytest.mark.parametrize("op", list(MIXED_OPS))
@pytest.mark.parametrize("order", ["float32 first", "float64 first"])
def test_float32_with_float64_is_a_type_error_naming_op_and_dtypes(device, op, order):
    a, b = t32([1.0, 2.0, 3.0], device), t64([4.0, 5.0, 6.0], device)
    if order == "float64 first":
        a, b = b, a
    with pytest.raises(TypeError) as err:
        MIXED_OPS[op](a, b)
    message = str(err.value)
    assert message.startswith(f"{op}: cannot combine a {a.dtype} tensor with a {b.dtype} tensor")
    assert "to(np.float64)" in message and "to(np.float32)" in message
    assert "\n" not in message


def test_a_float64_array_with_a_float32_tensor_is_refused_too():
    x = t32([1.0, 2.0, 3.0])
    with pytest.raises(TypeError, match=r"mul \(a \* b\): cannot combine a float32 tensor with "
                                        r"a float64 ndarray"):
        x * np.ones(3)
    with pytest.raises(TypeError, match="a float64 ndarray with a float32 tensor"):
        F.add(np.ones(3), x)
    assert (x * np.ones(3, dtype=np.float32)).dtype == np.float32


def test_a_float32_layer_refuses_a_float64_input():
    mr.manual_seed(0)
    with pytest.raises(TypeError, match="linear: cannot combine a float64 tensor with a float32"):
        mr.nn.Linear(3, 2)(t64(np.ones((1, 3)), requires_grad=False))
    with pytest.raises(TypeError, match="conv2d: input has dtype float64 but weight has dtype "
                                        "float32"):
        mr.nn.Conv2d(3, 2, 3)(t64(np.ones((1, 3, 4, 4)), requires_grad=False))


# --- the explicit way: to(dtype), double(), float(), astype ------------------------------------
def test_to_dtype_converts_in_the_graph_and_the_gradient_comes_back_converted(device):
    x = t32([1.0, 2.0, 3.0], device, requires_grad=True)
    y = t64([0.5, -1.0, 2.0], device, requires_grad=True)
    out = x.to(np.float64) * y
    assert out.dtype == np.float64 and out.grad_fn is not None
    out.sum().backward()
    assert x.grad.dtype == np.float32 and y.grad.dtype == np.float64
    np.testing.assert_array_equal(grad_of(x), np.float32([0.5, -1.0, 2.0]))
    np.testing.assert_array_equal(grad_of(y), [1.0, 2.0, 3.0])

    y.grad = None
    down = (x * y.to(np.float32)).sum()                   # or the other way round
    assert down.dtype == np.float32
    down.backward()
    assert y.grad.dtype == np.float64
    np.testing.assert_array_equal(grad_of(y), [1.0, 2.0, 3.0])


def test_the_spellings_of_a_conversion(device):
    x = t32([1.0, 2.0], device, requires_grad=True)
    assert x.to(np.float32) is x and x.to(dtype=np.float32) is x and x.to(device) is x
    for y in (x.double(), x.to(np.float64), x.to(dtype=np.float64), x.to(device, np.float64)):
        assert y.dtype == np.float64 and y.device == device and y.grad_fn is not None
    assert x.double().float().dtype == np.float32
    constant = x.astype(np.float64)                       # a copy outside the graph
    assert constant.dtype == np.float64 and constant.grad_fn is None
    assert not constant.requires_grad
    labels = x.to(np.int64)                               # an integer copy carries no gradient
    assert labels.dtype == np.int64 and not labels.requires_grad
    with pytest.raises(TypeError, match="two dtypes"):
        x.to(np.float64, np.float32)
    with pytest.raises(TypeError, match="booleans, integers or floating-point"):
        x.to(np.complex128)


def test_cast_is_a_function_with_a_backward():
    x = t64([1.0, -2.0, 3.0])
    out = basic.cast(x, np.float32)
    assert out.dtype == np.float32 and out.grad_fn.name == "Cast"
    (out * out).sum().backward()
    assert x.grad.dtype == np.float64
    np.testing.assert_allclose(x.grad, [2.0, -4.0, 6.0])


# --- in place and comparisons keep working --------------------------------------------------------
def test_in_place_keeps_the_tensors_dtype(device):
    x = t32([1.0, 2.0, 3.0], device)
    x += t64([0.5, 0.5, 0.5], device, requires_grad=False)     # stored as float32, as in PyTorch
    assert x.dtype == np.float32
    np.testing.assert_array_equal(x.numpy(), np.float32([1.5, 2.5, 3.5]))


def test_comparisons_across_precisions_are_allowed(device):
    x, y = t32([1.0, 2.0], device), t64([1.0, 3.0], device, requires_grad=False)
    assert (x == y).numpy().tolist() == [True, False]
    assert (x < y).numpy().tolist() == [False, True]


def test_lesson_00_claim(device):
    """What lesson 00 prints and asserts, and the other half of its promise."""
    x32 = mr.tensor(np.ones(3, dtype=np.float32), device=device)
    assert (x32 * 0.5).dtype == np.float32
    assert (x32 * np.float64(0.5)).dtype == np.float32
    with pytest.raises(TypeError):
        x32 * mr.tensor(np.ones(3), device=device)
    assert (x32.to(np.float64) * mr.tensor(np.ones(3), device=device)).dtype == np.float64


# --- the cast's backward, proven on every element -----------------------------------------------
from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.extra.numpy import array_shapes  # noqa: E402


@given(shape=array_shapes(min_dims=1, max_dims=3, max_side=4), seed=st.integers(0, 2**16))
def test_cast_backward_is_the_projection_cast_back(shape, seed):
    """Through the random-projection loss L = sum(r * cast(x)): the cast is the identity on
    values, so dL/dx = r in x's dtype, on every element. float64 -> float64 is checked
    against central finite differences too (float32's rounding would swamp them)."""
    rng = np.random.default_rng(seed)
    x = mr.tensor(rng.normal(size=shape), requires_grad=True, dtype=np.float64)
    r = rng.normal(size=shape)
    (x.to(np.float32) * mr.tensor(r.astype(np.float32))).sum().backward()
    assert x.grad.dtype == np.float64
    np.testing.assert_allclose(x.grad, r.astype(np.float32), rtol=0, atol=0)
    assert mr.gradcheck(lambda a: a.to(np.float64) * mr.tensor(r), x)
