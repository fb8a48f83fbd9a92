"""Hypothesis strategies: shapes, broadcasting pairs, axes, index expressions, arrays."""
import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp


def shapes(min_dims=1, max_dims=3, min_side=1, max_side=4):
    return hnp.array_shapes(min_dims=min_dims, max_dims=max_dims, min_side=min_side, max_side=max_side)


def arrays(shape, low=-2.0, high=2.0):
    """float64 arrays with moderate values (finite differences stay exact)."""
    return hnp.arrays(np.float64, shape, elements=st.floats(low, high, allow_nan=False,
                                                             allow_infinity=False, width=64))


@st.composite
def broadcasting_pair(draw, max_dims=3, max_side=4):
    """Two shapes that broadcast against each other, in both directions."""
    shape_a, shape_b = draw(hnp.mutually_broadcastable_shapes(
        num_shapes=2, max_dims=max_dims, max_side=max_side)).input_shapes
    return shape_a, shape_b


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
