"""Ops of minires/functional/basic.py: elementwise, reductions, shape ops, indexing, matmul.

For every op two properties, drawn by Hypothesis and run on each backend (the
``device`` fixture): the backward agrees with central finite differences in
float64 on every input element (``mr.gradcheck``), and the forward agrees with
NumPy in float32, with the dtype kept float32. Then the bad inputs: each must
raise an error that names the op, what it expected and what it got.
"""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import minires as mr
import minires.functional as F
from tests import strategies as S
from tests.helpers import assert_forward, grad_of, raw_backward_dtypes, t32, t64

GRAD_FLAGS = st.sampled_from([(True, True), (True, False), (False, True)])


# --- elementwise binary ops, with broadcasting ------------------------------------------
# name -> (minires op, NumPy reference, how to draw the values)
BINARY = {
    "add": (F.add, np.add, "any"),
    "sub": (F.sub, np.subtract, "any"),
    "mul": (F.mul, np.multiply, "any"),
    "div": (F.div, np.divide, "nonzero_b"),         # keep b away from 0
    "maximum": (F.maximum, np.maximum, "untied"),   # keep a away from b (the kink)
    "minimum": (F.minimum, np.minimum, "untied"),
}


def draw_binary(data, kind, shape_a, shape_b):
    if kind == "untied":
        return data.draw(S.untied_pair(shape_a, shape_b))
    a = data.draw(S.arrays(shape_a))
    b = data.draw(S.nonzero_arrays(shape_b) if kind == "nonzero_b" else S.arrays(shape_b))
    return a, b


@pytest.mark.parametrize("name", sorted(BINARY))
@given(data=st.data())
def test_binary_backward(device, name, data):
    op, _, kind = BINARY[name]
    shape_a, shape_b = data.draw(S.broadcasting_pair())
    a, b = draw_binary(data, kind, shape_a, shape_b)
    grad_a, grad_b = data.draw(GRAD_FLAGS)
    assert mr.gradcheck(op, t64(a, device, grad_a), t64(b, device, grad_b))


@pytest.mark.parametrize("name", sorted(BINARY))
@given(data=st.data())
def test_binary_forward(device, name, data):
    op, reference, kind = BINARY[name]
    shape_a, shape_b = data.draw(S.broadcasting_pair())
    a, b = (v.astype(np.float32) for v in draw_binary(data, kind, shape_a, shape_b))
    assert_forward(op(t32(a, device), t32(b, device)), reference(a, b))


def test_maximum_tie_splits_the_gradient(device):
    a, b = t64([1.0, 2.0, 3.0], device), t64([1.0, 5.0, 0.0], device)
    F.maximum(a, b).sum().backward()
    np.testing.assert_array_equal(grad_of(a), [0.5, 0.0, 1.0])
    np.testing.assert_array_equal(grad_of(b), [0.5, 1.0, 0.0])


def test_operators_and_python_numbers(device):
    """Operators call the ops; Python numbers and NumPy arrays on either side keep float32."""
    a = np.array([[1.0, 2.0], [3.0, 4.0]], dtype=np.float32)
    b = np.array([[0.5, -1.0], [2.0, 0.25]], dtype=np.float32)
    x, y = t32(a, device), t32(b, device)
    cases = [
        (x + y, a + b), (x - y, a - b), (x * y, a * b), (x / y, a / b), (-x, -a),
        (x + 2, a + 2), (2 + x, 2 + a), (x - 2, a - 2), (2 - x, 2 - a), (3 * x, 3 * a),
        (x * 3, a * 3), (x / 2, a / 2), (2 / x, 2 / a), (x ** 2, a ** 2), (x @ y, a @ b),
        (x ** np.float64(2.0), a ** 2), (np.float64(2.0) * x, 2 * a),
    ]
    if device == "cpu":   # a NumPy array on the left defers to the Tensor (__array_priority__)
        cases += [(b + x, b + a), (b - x, b - a), (b * x, b * a), (b / x, b / a), (b @ x, b @ a)]
    for out, expected in cases:
        assert_forward(out, expected)


def test_where_backward_and_forward(device):
    rng = np.random.default_rng(0)
    for cond_shape, a_shape, b_shape in [((3, 4), (3, 4), (3, 4)), ((4,), (3, 1), ()),
                                         ((2, 1, 4), (3, 4), (2, 3, 1))]:
        cond = rng.random(cond_shape) > 0.5
        a, b = rng.standard_normal(a_shape), rng.standard_normal(b_shape)
        for c in (cond, mr.tensor(cond, dtype=bool, device=device)):
            assert mr.gradcheck(lambda p, q, c=c: F.where(c, p, q), t64(a, device), t64(b, device))
            assert_forward(F.where(c, t32(a, device), t32(b, device)),
                           np.where(cond, a.astype(np.float32), b.astype(np.float32)))


@given(data=st.data())
def test_where_property(device, data):
    shape_c, shape_a, shape_b = data.draw(S.hnp.mutually_broadcastable_shapes(
        num_shapes=3, max_dims=3, max_side=3)).input_shapes
    cond = data.draw(S.hnp.arrays(np.bool_, shape_c))
    a, b = data.draw(S.arrays(shape_a)), data.draw(S.arrays(shape_b))
    assert mr.gradcheck(lambda p, q: F.where(cond, p, q), t64(a, device), t64(b, device))
    assert_forward(F.where(cond, t32(a, device), t32(b, device)),
                   np.where(cond, a.astype(np.float32), b.astype(np.float32)))


# --- elementwise unary ops ------------------------------------------------------------
# name -> (minires op, NumPy reference, values strategy for a shape)
UNARY = {
    "neg": (F.neg, np.negative, S.arrays),
    "exp": (F.exp, np.exp, S.arrays),
    "log": (F.log, np.log, lambda s: S.arrays(s, 0.1, 3.0)),
    "sqrt": (F.sqrt, np.sqrt, lambda s: S.arrays(s, 0.1, 3.0)),
    "abs": (F.abs, np.abs, S.nonzero_arrays),
    "pow_2": (lambda x: x ** 2, lambda a: a ** 2, S.arrays),
    "pow_3": (lambda x: F.pow(x, 3), lambda a: a ** 3, S.arrays),
    "pow_-1": (lambda x: x ** -1, lambda a: a ** -1, S.nonzero_arrays),
    "pow_0.5": (lambda x: x ** 0.5, np.sqrt, lambda s: S.arrays(s, 0.1, 3.0)),
    "pow_1.5": (lambda x: x ** 1.5, lambda a: a ** 1.5, lambda s: S.arrays(s, 0.1, 3.0)),
    "clip": (lambda x: F.clip(x, -0.5, 1.0), lambda a: np.clip(a, -0.5, 1.0),
             lambda s: S.arrays_away_from(s, [-0.5, 1.0])),
    "clip_low": (lambda x: F.clip(x, low=0.2), lambda a: np.maximum(a, np.float32(0.2)),
                 lambda s: S.arrays_away_from(s, [0.2])),
    "clip_high": (lambda x: x.clip(high=-0.3), lambda a: np.minimum(a, np.float32(-0.3)),
                  lambda s: S.arrays_away_from(s, [-0.3])),
}


@pytest.mark.parametrize("name", sorted(UNARY))
@given(data=st.data())
def test_unary_backward(device, name, data):
    op, _, values = UNARY[name]
    x = data.draw(values(data.draw(S.shapes(min_dims=0))))
    assert mr.gradcheck(op, t64(x, device))


@pytest.mark.parametrize("name", sorted(UNARY))
@given(data=st.data())
def test_unary_forward(device, name, data):
    op, reference, values = UNARY[name]
    x = data.draw(values(data.draw(S.shapes(min_dims=0)))).astype(np.float32)
    assert_forward(op(t32(x, device)), reference(x), rtol=2e-6)


def test_pow_zero_has_a_zero_gradient_everywhere(device):
    x = t64([0.0, 2.0, -1.0], device)
    (x ** 0).sum().backward()
    np.testing.assert_array_equal(grad_of(x), [0.0, 0.0, 0.0])


def test_tensor_methods_match_functions(device):
    a = np.array([[0.5, 1.5], [2.0, 3.0]], dtype=np.float32)
    x = t32(a, device)
    for method, function in [(x.exp(), np.exp(a)), (x.log(), np.log(a)), (x.sqrt(), np.sqrt(a)),
                             (x.abs(), np.abs(a)), (x.clip(1.0, 2.5), np.clip(a, 1.0, 2.5)),
                             (x.T, a.T), (x.permute(1, 0), a.T), (x.flatten(), a.reshape(-1))]:
        assert_forward(method, function)


# --- matrix product and linear ----------------------------------------------------------
@given(data=st.data())
def test_matmul_backward(device, data):
    shape_a, shape_b = data.draw(S.matmul_shapes())
    a, b = data.draw(S.arrays(shape_a)), data.draw(S.arrays(shape_b))
    grad_a, grad_b = data.draw(GRAD_FLAGS)
    assert mr.gradcheck(F.matmul, t64(a, device, grad_a), t64(b, device, grad_b))


@given(data=st.data())
def test_matmul_forward(device, data):
    shape_a, shape_b = data.draw(S.matmul_shapes())
    a = data.draw(S.arrays(shape_a)).astype(np.float32)
    b = data.draw(S.arrays(shape_b)).astype(np.float32)
    assert_forward(t32(a, device) @ t32(b, device), a @ b, rtol=1e-5, atol=1e-5)


# Every case of NumPy's matmul rules, spelled out (the property test draws among these).
MATMUL_CASES = [((3,), (3,)), ((3,), (3, 2)), ((2, 3), (3,)), ((2, 3), (3, 4)),
                ((2, 2, 3), (3, 4)), ((3,), (2, 3, 4)), ((2, 3, 4), (4,)),
                ((2, 1, 2, 3), (3, 3, 2)), ((1, 2, 3), (2, 3, 2))]


@pytest.mark.parametrize("shape_a, shape_b", MATMUL_CASES)
def test_matmul_every_rank(device, shape_a, shape_b):
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal(shape_a), rng.standard_normal(shape_b)
    assert mr.gradcheck(F.matmul, t64(a, device), t64(b, device))
    assert_forward(t32(a, device) @ t32(b, device), a.astype(np.float32) @ b.astype(np.float32),
                   rtol=1e-5, atol=1e-5)


@given(data=st.data())
def test_linear_backward_and_forward(device, data):
    lead = data.draw(S.shapes(min_dims=0, max_dims=2, max_side=3))
    n_in, n_out = data.draw(st.integers(1, 4)), data.draw(st.integers(1, 4))
    x = data.draw(S.arrays(lead + (n_in,)))
    w = data.draw(S.arrays((n_out, n_in)))
    b = data.draw(st.none() | S.arrays((n_out,)))
    bias64 = None if b is None else t64(b, device)
    assert mr.gradcheck(F.linear, t64(x, device), t64(w, device), bias64)
    x32, w32 = x.astype(np.float32), w.astype(np.float32)
    expected = x32 @ w32.T + (0 if b is None else b.astype(np.float32))
    bias32 = None if b is None else t32(b, device)
    assert_forward(F.linear(t32(x32, device), t32(w32, device), bias32), expected,
                   rtol=1e-5, atol=1e-5)


# --- reductions ---------------------------------------------------------------------------
REDUCTIONS = {
    "sum": (F.sum, np.sum, S.arrays),
    "mean": (F.mean, np.mean, S.arrays),
    "max": (F.max, np.max, S.distinct_arrays),   # distinct values: no ties, so no kink
    "min": (F.min, np.min, S.distinct_arrays),
}


@pytest.mark.parametrize("name", sorted(REDUCTIONS))
@given(data=st.data())
def test_reduction_backward(device, name, data):
    op, _, values = REDUCTIONS[name]
    shape = data.draw(S.shapes(min_dims=0))
    x = data.draw(values(shape))
    axis, keepdims = data.draw(S.axes_for(len(shape))), data.draw(st.booleans())
    assert mr.gradcheck(lambda t: op(t, axis, keepdims), t64(x, device))


@pytest.mark.parametrize("name", sorted(REDUCTIONS))
@given(data=st.data())
def test_reduction_forward(device, name, data):
    op, reference, values = REDUCTIONS[name]
    shape = data.draw(S.shapes(min_dims=0))
    x = data.draw(values(shape)).astype(np.float32)
    axis, keepdims = data.draw(S.axes_for(len(shape))), data.draw(st.booleans())
    expected = reference(x, axis=axis, keepdims=keepdims)
    assert_forward(op(t32(x, device), axis, keepdims), expected, rtol=1e-5)
    method = getattr(t32(x, device), name)(axis=axis, keepdims=keepdims)
    assert_forward(method, expected, rtol=1e-5)


@pytest.mark.parametrize("name", ["max", "min"])
def test_extreme_ties_share_the_gradient(device, name):
    x = t64([[1.0, 3.0, 3.0], [-2.0, -2.0, 0.0]], device)
    getattr(x, name)(axis=1).sum().backward()
    expected = ([[0, 0.5, 0.5], [0, 0, 1]] if name == "max" else [[1, 0, 0], [0.5, 0.5, 0]])
    np.testing.assert_array_equal(grad_of(x), expected)


# --- shape ops ---------------------------------------------------------------------------
@st.composite
def reshape_targets(draw, shape):
    size = int(np.prod(shape, dtype=np.int64))
    divisor = draw(st.sampled_from([d for d in range(1, size + 1) if size % d == 0]))
    return draw(st.sampled_from([(size,), (-1,), tuple(reversed(shape)), (1,) + shape,
                                 shape + (1,), (divisor, -1), (-1, divisor),
                                 (divisor, size // divisor)]))


@given(data=st.data())
def test_reshape(device, data):
    shape = data.draw(S.shapes(min_dims=0))
    target = data.draw(reshape_targets(shape))
    x = data.draw(S.arrays(shape))
    assert mr.gradcheck(lambda t: t.reshape(target), t64(x, device))
    assert mr.gradcheck(lambda t: F.reshape(t, *target), t64(x, device))
    x32 = x.astype(np.float32)
    assert_forward(t32(x32, device).reshape(*target), x32.reshape(target), rtol=0, atol=0)


@given(data=st.data())
def test_transpose_and_permute(device, data):
    shape = data.draw(S.shapes(min_dims=0, max_dims=4, max_side=3))
    perm = data.draw(st.permutations(range(len(shape))))
    axes = data.draw(st.sampled_from([None, tuple(perm), tuple(p - len(shape) for p in perm)]))
    x = data.draw(S.arrays(shape))
    fn = (lambda t: t.transpose()) if axes is None else (lambda t: t.permute(*axes))
    assert mr.gradcheck(fn, t64(x, device))
    assert mr.gradcheck(lambda t: F.transpose(t, axes), t64(x, device))
    x32 = x.astype(np.float32)
    assert_forward(fn(t32(x32, device)), np.transpose(x32, axes), rtol=0, atol=0)


@pytest.mark.parametrize("axes", [(1, 2, 0), (2, 0, 1), (-1, 0, -2), (3, 0, 1, 2), (1, 3, 0, 2)])
def test_transpose_non_involutions(device, axes):
    """Permutations that are not their own inverse (the backward must invert them)."""
    x = np.random.default_rng(3).standard_normal((2, 3, 4, 5)[:len(axes)])
    assert mr.gradcheck(lambda t: t.transpose(*axes), t64(x, device))
    assert_forward(t32(x, device).permute(axes), np.transpose(x, axes).astype(np.float32))


@given(data=st.data())
def test_flatten(device, data):
    shape = data.draw(S.shapes(min_dims=1, max_dims=4, max_side=3))
    start = data.draw(st.integers(-len(shape), len(shape) - 1))
    x = data.draw(S.arrays(shape))
    assert mr.gradcheck(lambda t: F.flatten(t, start), t64(x, device))
    expected = x.reshape(shape[:start % len(shape)] + (-1,)).astype(np.float32)
    assert_forward(F.flatten(t32(x, device), start), expected, rtol=0, atol=0)
    assert F.flatten(t32(np.zeros((2, 3, 4, 5)), device)).shape == (120,)   # default: all, as torch
    assert F.flatten(t32(np.zeros((2, 3, 4, 5)), device), 1).shape == (2, 60)


@given(data=st.data())
def test_getitem(device, data):
    shape = data.draw(S.shapes(min_dims=1, max_dims=3))
    index = data.draw(S.index_expressions(shape))
    x = data.draw(S.arrays(shape))
    assert mr.gradcheck(lambda t: t[index], t64(x, device))
    x32 = x.astype(np.float32)
    assert_forward(t32(x32, device)[index], x32[index], rtol=0, atol=0)


def test_getitem_repeated_indices_add_up(device):
    x = t64([10.0, 20.0, 30.0], device)
    x[np.array([0, 0, 2, -3, 0])].sum().backward()      # -3 is 0 again
    np.testing.assert_array_equal(grad_of(x), [4.0, 0.0, 1.0])


def test_getitem_with_tensor_indices(device):
    a = np.arange(12.0).reshape(3, 4)
    x = t32(a, device)
    assert_forward(x[x > 5.0], a[a > 5].astype(np.float32))
    idx = mr.tensor(np.array([2, 0]), dtype=np.int64, device=device)
    assert_forward(x[idx], a[[2, 0]].astype(np.float32))
    assert_forward(x[idx, 1:], a[[2, 0], 1:].astype(np.float32))


@given(data=st.data())
def test_concatenate(device, data):
    base = data.draw(S.shapes(max_dims=3, max_side=3))
    axis = data.draw(st.integers(-len(base), len(base) - 1))
    sizes = data.draw(st.lists(st.integers(1, 3), min_size=1, max_size=3))
    shapes = [base[:axis % len(base)] + (s,) + base[axis % len(base) + 1:] for s in sizes]
    xs = [data.draw(S.arrays(s)) for s in shapes]
    assert mr.gradcheck(lambda *ts: F.concatenate(ts, axis), *(t64(x, device) for x in xs))
    xs32 = [x.astype(np.float32) for x in xs]
    assert_forward(F.concatenate([t32(x, device) for x in xs32], axis),
                   np.concatenate(xs32, axis), rtol=0, atol=0)


@given(data=st.data())
def test_stack(device, data):
    shape = data.draw(S.shapes(min_dims=0, max_dims=3, max_side=3))
    axis = data.draw(st.integers(-len(shape) - 1, len(shape)))
    xs = [data.draw(S.arrays(shape)) for _ in range(data.draw(st.integers(1, 3)))]
    assert mr.gradcheck(lambda *ts: F.stack(ts, axis), *(t64(x, device) for x in xs))
    xs32 = [x.astype(np.float32) for x in xs]
    assert_forward(F.stack([t32(x, device) for x in xs32], axis), np.stack(xs32, axis),
                   rtol=0, atol=0)


@given(data=st.data())
def test_pad(device, data):
    shape = data.draw(S.shapes(min_dims=1, max_dims=3, max_side=3))
    ndim = len(shape)
    pair = st.tuples(st.integers(0, 2), st.integers(0, 2))
    width = data.draw(st.one_of(st.integers(0, 2),                   # every side
                                pair,                                # (before, after) everywhere
                                st.lists(pair, min_size=ndim, max_size=ndim).map(tuple)))
    value = data.draw(st.sampled_from([0.0, -1.5]))
    x = data.draw(S.arrays(shape))
    assert mr.gradcheck(lambda t: F.pad(t, width, value), t64(x, device))
    x32 = x.astype(np.float32)
    assert_forward(F.pad(t32(x32, device), width, value),
                   np.pad(x32, width, constant_values=value), rtol=0, atol=0)


@given(data=st.data())
def test_fork(device, data):
    shape = data.draw(S.shapes(min_dims=0))
    n = data.draw(st.integers(2, 3))
    x = data.draw(S.arrays(shape))
    weights = [data.draw(S.arrays(shape)) for _ in range(n)]
    # Each branch is scaled differently, so the backward must add n different gradients.
    assert mr.gradcheck(lambda t: tuple(b * w for b, w in zip(F.fork(t, n), weights)),
                        t64(x, device))
    branches = F.fork(t32(x, device), n)
    assert len(branches) == n
    for b in branches:
        assert_forward(b, x.astype(np.float32), rtol=0, atol=0)


# --- float32 end to end -----------------------------------------------------------------------
FLOAT32_CASES = {
    "add": lambda a, b: a + b, "sub": lambda a, b: a - b, "mul": lambda a, b: a * b,
    "div": lambda a, b: a / b, "neg": lambda a, b: -a, "pow": lambda a, b: a ** 1.5,
    "pow_np": lambda a, b: a ** np.float64(2.0), "exp": lambda a, b: a.exp(),
    "log": lambda a, b: a.log(), "sqrt": lambda a, b: a.sqrt(), "abs": lambda a, b: a.abs(),
    "clip": lambda a, b: a.clip(0.5, 1.5), "maximum": F.maximum,
    "where": lambda a, b: F.where(np.array([True, False, True]), a, b),
    "matmul": lambda a, b: a[:, None] @ b[None, :], "sum": lambda a, b: a.sum(),
    "mean": lambda a, b: a.mean(), "max": lambda a, b: a.max(), "min": lambda a, b: a.min(),
    "reshape": lambda a, b: a.reshape(3, 1), "transpose": lambda a, b: a[None].T,
    "getitem": lambda a, b: a[[0, 0, 2]], "concatenate": lambda a, b: F.concatenate([a, b]),
    "stack": lambda a, b: F.stack([a, b]), "pad": lambda a, b: F.pad(a, 1),
    "linear": lambda a, b: F.linear(a[None], b[None], b[:1]),
}


@pytest.mark.parametrize("name", sorted(FLOAT32_CASES))
def test_backward_keeps_float32(device, name):
    a = t32([0.7, 1.2, 2.0], device, requires_grad=True)
    b = t32([1.1, 0.4, 1.6], device, requires_grad=True)
    out = FLOAT32_CASES[name](a, b)
    assert out.dtype == np.float32
    assert raw_backward_dtypes(out) == {"float32"}


# --- bad input: each error names the op, what it expected and what it got ---------------------
def test_broadcast_mismatch_names_op_and_shapes(device):
    a, b = t32(np.ones((2, 3)), device), t32(np.ones(4), device)
    for op, name in [(F.add, "add"), (F.sub, "sub"), (F.mul, "mul"), (F.div, "div"),
                     (F.maximum, "maximum")]:
        with pytest.raises(ValueError, match=rf"{name}.*\(2, 3\).*\(4,\).*broadcast"):
            op(a, b)
    with pytest.raises(ValueError, match=r"add.*\(2, 3\).*\(4,\)"):
        a + b
    with pytest.raises(ValueError, match=r"where.*\(2, 3\).*\(4,\)"):
        F.where(np.ones((2, 3), dtype=bool), a, b)


def test_matmul_shape_errors(device):
    with pytest.raises(ValueError, match=r"matmul: inner dimensions differ.*\(2, 3\).*\(4, 5\)"):
        t32(np.ones((2, 3)), device) @ t32(np.ones((4, 5)), device)
    with pytest.raises(ValueError, match=r"matmul: inner dimensions differ.*\(3,\).*\(2,\)"):
        t32(np.ones(3), device) @ t32(np.ones(2), device)
    with pytest.raises(ValueError, match=r"matmul: batch dimensions.*\(2, 3, 4\).*\(5, 4, 2\)"):
        t32(np.ones((2, 3, 4)), device) @ t32(np.ones((5, 4, 2)), device)
    with pytest.raises(ValueError, match="matmul: operands must have at least 1 dimension"):
        F.matmul(t32(2.0, device), t32(np.ones(2), device))


def test_linear_shape_errors(device):
    x = t32(np.ones((2, 3)), device)
    with pytest.raises(ValueError, match=r"linear: input has 3 features.*expects 4"):
        F.linear(x, t32(np.ones((5, 4)), device))
    with pytest.raises(ValueError, match=r"linear: bias must have shape \(5,\), got \(3,\)"):
        F.linear(x, t32(np.ones((5, 3)), device), t32(np.ones(3), device))
    with pytest.raises(ValueError,
                       match=r"linear: weight must be 2-D \(out, in\), got shape \(3,\)"):
        F.linear(x, t32(np.ones(3), device))


def test_shape_op_errors(device):
    x = t32(np.ones((2, 3)), device)
    with pytest.raises(ValueError,
                       match=r"reshape: cannot reshape .*\(2, 3\) \(6 elements\).*\(4,\)"):
        x.reshape(4)
    with pytest.raises(ValueError, match=r"transpose: axes \(0, 0\) are not a permutation"):
        x.transpose(0, 0)
    with pytest.raises(ValueError, match=r"sum: axis 2 is out of range .* 2 dimensions"):
        x.sum(axis=2)
    with pytest.raises(ValueError, match=r"mean: repeated axis"):
        x.mean(axis=(1, -1))
    with pytest.raises(ValueError, match=r"max: cannot reduce an empty tensor"):
        t32(np.ones((0, 3)), device).max()
    with pytest.raises(ValueError, match=r"concatenate: shapes \[\(2, 3\), \(3, 2\)\]"):
        F.concatenate([x, t32(np.ones((3, 2)), device)], axis=0)
    with pytest.raises(ValueError, match=r"concatenate: axis 2 is out of range"):
        F.concatenate([x, x], axis=2)
    with pytest.raises(ValueError, match=r"stack: all tensors must have the same shape"):
        F.stack([x, t32(np.ones((3, 2)), device)])
    with pytest.raises(ValueError, match=r"stack: axis 3 is out of range .*\(2, 3\)"):
        F.stack([x, x], axis=3)
    with pytest.raises(ValueError, match=r"pad: pad_width .* for each of the 2 axes"):
        F.pad(x, ((1, 1), (1, 1), (1, 1)))
    with pytest.raises(ValueError, match=r"pad: pad_width .* non-negative"):
        F.pad(x, -1)
    with pytest.raises(IndexError, match=r"getitem: .*shape \(2, 3\)"):
        x[5]


def test_elementwise_argument_errors(device):
    x = t32(np.ones(3), device)
    with pytest.raises(TypeError, match="Pow: the exponent must be a Python number, got Tensor"):
        x ** x
    with pytest.raises(ValueError, match=r"clip: low \(2.0\) must not exceed high \(1.0\)"):
        x.clip(2.0, 1.0)
    with pytest.raises(ValueError, match="clip: give at least one of low and high"):
        x.clip()
    with pytest.raises(TypeError, match="Exp: expected Tensor inputs, got .*ndarray"):
        F.exp(np.ones(3))
