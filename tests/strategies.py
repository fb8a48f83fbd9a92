"""Hypothesis strategies: shapes, broadcasting pairs, axes, index expressions, arrays.

Every strategy keeps sizes small (gradcheck runs two forward passes per input
element) and values moderate, and the ``*_away_from`` / ``distinct_*`` ones keep
inputs off kinks and ties so the finite differences are exact, not flaky.
"""
import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tests.helpers import away_from


def shapes(min_dims=1, max_dims=3, min_side=1, max_side=4):
    return hnp.array_shapes(min_dims=min_dims, max_dims=max_dims, min_side=min_side,
                            max_side=max_side)


def arrays(shape, low=-2.0, high=2.0):
    """float64 arrays with moderate values (finite differences stay exact)."""
    return hnp.arrays(np.float64, shape, elements=st.floats(low, high, allow_nan=False,
                                                             allow_infinity=False, width=64))


def arrays_away_from(shape, points, low=-2.0, high=2.0, margin=0.05):
    """float64 arrays with no element within ``margin`` of any of ``points`` (kinks)."""
    return arrays(shape, low, high).map(lambda a: away_from(a, points, margin))


def nonzero_arrays(shape, low=0.3, high=2.0):
    """float64 arrays with |value| in [low, high] and either sign (divisors, 1/x, |x|)."""
    signs = hnp.arrays(np.float64, shape, elements=st.sampled_from([-1.0, 1.0]))
    return st.tuples(arrays(shape, low, high), signs).map(lambda t: t[0] * t[1])


@st.composite
def distinct_arrays(draw, shape, gap=0.1):
    """float64 arrays whose elements all differ by at least ``gap``: no ties for max/min.

    A random permutation of an evenly spaced grid, plus jitter below gap / 4.
    """
    size = int(np.prod(shape, dtype=np.int64))
    order = np.array(draw(st.permutations(range(size))), dtype=np.float64)
    jitter = draw(arrays((size,), -gap / 4, gap / 4))
    return ((order - size / 2) * gap * 2 + jitter).reshape(shape)


@st.composite
def untied_pair(draw, shape_a, shape_b):
    """Arrays a, b (broadcastable shapes) with |a - b| >= 0.15 everywhere: no ties in maximum.

    a sits on the grid k/2 + 1/4, b on k/2, each with jitter below 0.05.
    """
    def grid(shape, offset):
        k = draw(hnp.arrays(np.int64, shape, elements=st.integers(-4, 4)))
        jitter = draw(arrays(shape, -0.05, 0.05))
        return k / 2 + offset + jitter
    return grid(shape_a, 0.25), grid(shape_b, 0.0)


@st.composite
def broadcasting_pair(draw, max_dims=3, max_side=4):
    """Two shapes that broadcast against each other, in both directions."""
    shape_a, shape_b = draw(hnp.mutually_broadcastable_shapes(
        num_shapes=2, max_dims=max_dims, max_side=max_side)).input_shapes
    return shape_a, shape_b


def matmul_shapes(max_dims=2, max_side=3):
    """Shapes (a, b) for a @ b under NumPy's rules: 1-D operands, 2-D, batched, broadcast."""
    return hnp.mutually_broadcastable_shapes(
        signature=np.matmul.signature, max_dims=max_dims, max_side=max_side).map(
        lambda s: s.input_shapes)


@st.composite
def axes_for(draw, ndim):
    """None, an int or a tuple of distinct axes (negative ones included) for ``ndim`` axes."""
    kind = draw(st.sampled_from(["none", "int", "tuple"]))
    if kind == "none" or ndim == 0:
        return None
    if kind == "int":
        return draw(st.integers(-ndim, ndim - 1))
    picked = draw(st.lists(st.integers(0, ndim - 1), min_size=1, max_size=ndim, unique=True))
    return tuple(a - ndim if draw(st.booleans()) else a for a in picked)


@st.composite
def basic_index(draw, shape):
    """A tuple of ints and slices (steps included) valid for ``shape``."""
    return draw(hnp.basic_indices(shape, min_dims=0, allow_newaxis=False, allow_ellipsis=True))


@st.composite
def integer_array_index(draw, length, max_len=6):
    """An integer index array into an axis of ``length``, with repeats (tests add-at)."""
    return np.array(draw(st.lists(st.integers(-length, length - 1), min_size=1, max_size=max_len)))


@st.composite
def index_expressions(draw, shape):
    """Any index ``x[index]`` supports, for a tensor of ``shape`` (at least 1-D):

    basic (ints, slices with steps, ellipsis), an integer array on the first axis
    (repeats and negative entries included), two broadcasting integer arrays, a
    slice mixed with an integer array, ellipsis then an integer array, a boolean
    mask of the whole shape and a boolean mask of the first axis.
    """
    kinds = ["basic", "int_array", "mixed", "ellipsis_array", "bool_full", "bool_axis0"]
    if len(shape) >= 2:
        kinds.append("two_arrays")
    kind = draw(st.sampled_from(kinds))
    if kind == "basic":
        return draw(basic_index(shape))
    if kind == "int_array":
        return draw(integer_array_index(shape[0]))
    if kind == "two_arrays":
        n = draw(st.integers(1, 4))
        rows = np.array(draw(st.lists(st.integers(0, shape[0] - 1), min_size=n, max_size=n)))
        cols = np.array(draw(st.lists(st.integers(0, shape[1] - 1), min_size=n, max_size=n)))
        return rows, cols
    if kind == "mixed":
        start = draw(st.integers(0, shape[0] - 1))
        step = draw(st.sampled_from([1, 2, -1]))
        rest = (draw(integer_array_index(shape[1])),) if len(shape) >= 2 else ()
        return (slice(start, None, step),) + rest
    if kind == "ellipsis_array":
        return Ellipsis, draw(integer_array_index(shape[-1]))
    if kind == "bool_full":
        return draw(hnp.arrays(np.bool_, shape))
    return draw(hnp.arrays(np.bool_, (shape[0],)))


def pair(v):
    """A convolution setting given as an int or as (h, w), as the pair (h, w)."""
    return (v, v) if isinstance(v, int) else tuple(v)


@st.composite
def conv_cases(draw, max_batch=2, max_groups=3, max_group_channels=2, max_kernel=3):
    """Settings and shapes of a small convolution whose kernel fits its padded input.

    stride / padding / dilation come as an int or as an (h, w) pair. The input size
    does not depend on the stride, so a test may replace it (``dict(case, stride=1)``).
    """
    G = draw(st.integers(1, max_groups))
    Cg, Og = draw(st.integers(1, max_group_channels)), draw(st.integers(1, max_group_channels))
    KH, KW = draw(st.integers(1, max_kernel)), draw(st.integers(1, max_kernel))

    def int_or_pair(low, high):
        return draw(st.one_of(st.integers(low, high),
                              st.tuples(st.integers(low, high), st.integers(low, high))))

    stride, padding, dilation = int_or_pair(1, 2), int_or_pair(0, 2), int_or_pair(1, 2)
    (ph, pw), (dh, dw) = pair(padding), pair(dilation)
    span_h, span_w = dh * (KH - 1) + 1, dw * (KW - 1) + 1
    H = draw(st.integers(max(1, span_h - 2 * ph), max(1, span_h - 2 * ph) + 3))
    W = draw(st.integers(max(1, span_w - 2 * pw), max(1, span_w - 2 * pw) + 3))
    N = draw(st.integers(1, max_batch))
    return dict(x_shape=(N, G * Cg, H, W), w_shape=(G * Og, Cg, KH, KW), stride=stride,
                padding=padding, dilation=dilation, groups=G, bias=draw(st.booleans()),
                seed=draw(st.integers(0, 2**31)))
