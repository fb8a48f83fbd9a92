"""Activations of minires/functional/activation.py: relu, leaky_relu, sigmoid, tanh, gelu, dropout.

Each: Hypothesis gradcheck in float64 on every element (kept away from the kink
at 0 where there is one) and the forward against a direct formula in float32,
on each backend. Dropout's mask comes from a seeded generator, so gradcheck can
re-seed it on every call and see the same mask each time.
"""
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import minires as mr
import minires.functional as F
from tests import strategies as S
from tests.helpers import assert_forward, grad_of, raw_backward_dtypes, t32, t64


def np_sigmoid(x):
    return 1 / (1 + np.exp(-x))


def np_gelu_tanh(x):
    return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))


# name -> (minires op, reference formula, values for a shape)
ACTIVATIONS = {
    "relu": (F.relu, lambda a: np.maximum(a, 0), lambda s: S.arrays_away_from(s, [0.0])),
    "leaky_relu": (F.leaky_relu, lambda a: np.where(a > 0, a, 0.01 * a),
                   lambda s: S.arrays_away_from(s, [0.0])),
    "leaky_relu_0.2": (lambda x: F.leaky_relu(x, 0.2), lambda a: np.where(a > 0, a, 0.2 * a),
                       lambda s: S.arrays_away_from(s, [0.0])),
    "sigmoid": (F.sigmoid, np_sigmoid, lambda s: S.arrays(s, -6.0, 6.0)),
    "tanh": (F.tanh, np.tanh, lambda s: S.arrays(s, -3.0, 3.0)),
    "gelu": (F.gelu, np_gelu_tanh, lambda s: S.arrays(s, -4.0, 4.0)),
}


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
@given(data=st.data())
def test_activation_backward(device, name, data):
    op, _, values = ACTIVATIONS[name]
    x = data.draw(values(data.draw(S.shapes(min_dims=0))))
    assert mr.gradcheck(op, t64(x, device))


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
@given(data=st.data())
def test_activation_forward(device, name, data):
    op, reference, values = ACTIVATIONS[name]
    x = data.draw(values(data.draw(S.shapes(min_dims=0)))).astype(np.float32)
    expected = reference(x.astype(np.float64))
    assert_forward(op(t32(x, device)), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", sorted(ACTIVATIONS) + ["dropout"])
def test_backward_keeps_float32(device, name):
    x = t32([-1.5, 0.5, 2.0], device, requires_grad=True)
    op = (lambda t: F.dropout(t, 0.5)) if name == "dropout" else ACTIVATIONS[name][0]
    out = op(x)
    assert out.dtype == np.float32 and raw_backward_dtypes(out) == {"float32"}


def test_sigmoid_is_stable_for_huge_inputs(device):
    x = np.array([-1e4, -80.0, 0.0, 80.0, 1e4], dtype=np.float32)
    with np.errstate(over="raise", divide="raise", invalid="raise"):  # no overflow warning either
        y = F.sigmoid(t32(x, device))
    assert_forward(y, [0.0, np_sigmoid(-80.0), 0.5, 1.0, 1.0], rtol=1e-6, atol=1e-30)


def test_gelu_is_close_to_the_exact_erf_form(device):
    """The tanh form is an approximation of x * Phi(x): within 1e-3 of the erf form."""
    x = np.linspace(-5, 5, 101)
    exact = np.array([0.5 * v * (1 + math.erf(v / math.sqrt(2))) for v in x])
    np.testing.assert_allclose(F.gelu(t64(x, device, False)).numpy(), exact, atol=1e-3)


def test_relu_gradient_is_the_forward_mask(device):
    x = t64([-2.0, -0.5, 0.5, 3.0], device)
    F.relu(x).backward(np.array([1.0, 2.0, 3.0, 4.0]))
    np.testing.assert_array_equal(grad_of(x), [0, 0, 3, 4])


def test_relu_of_a_scalar_and_of_an_empty_batch(device):
    x = t64(-3.0, device)
    y = F.relu(x)
    y.backward()
    assert y.item() == 0.0 and grad_of(x) == 0.0
    e = t64(np.zeros((0, 4)), device)
    F.relu(e).sum().backward()
    assert grad_of(e).shape == (0, 4)


def test_relu_in_blocks_of_images_on_two_threads_equals_one_block():
    from minires.functional import parallel
    x_np = np.random.default_rng(6).standard_normal((9, 3, 4, 4))
    gy = np.cos(np.arange(x_np.size)).reshape(x_np.shape)

    def run():
        x = t64(x_np, "cpu")
        y = F.relu(x)
        y.backward(gy)
        return y.numpy(), grad_of(x)

    one_block = run()
    before_threads = parallel.num_threads()
    previous = parallel.set_pass_chunk_bytes(2 * 3 * 16 * 8)              # 2 images a block
    try:
        parallel.set_num_threads(2)
        blocks = run()
    finally:
        parallel.set_pass_chunk_bytes(previous)
        parallel.set_num_threads(before_threads)
    for a, b in zip(one_block, blocks):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(one_block[1], np.where(x_np > 0, gy, 0))


# --- dropout ---------------------------------------------------------------------------
@given(data=st.data())
def test_dropout_backward_with_a_reseeded_generator(device, data):
    x = data.draw(S.arrays(data.draw(S.shapes(min_dims=1))))
    p = data.draw(st.sampled_from([0.1, 0.5, 0.8]))
    seed = data.draw(st.integers(0, 2 ** 16))
    # a fresh generator with the same seed on every call: gradcheck's forwards all see one mask
    assert mr.gradcheck(lambda t: F.dropout(t, p, rng=np.random.default_rng(seed)), t64(x, device))


def test_dropout_forward_is_mask_times_scale(device):
    p, shape = 0.3, (50, 40)
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    y = F.dropout(t32(x, device), p, rng=np.random.default_rng(7))
    keep = np.random.default_rng(7).random(shape) >= p      # the documented mask
    assert_forward(y, np.where(keep, x / np.float32(1 - p), 0), rtol=1e-6)
    assert abs(keep.mean() - (1 - p)) < 0.05


def test_dropout_same_seed_same_mask_other_seed_other_mask(device):
    x = t32(np.ones((8, 16)), device)
    a = F.dropout(x, 0.5, rng=np.random.default_rng(3)).numpy()
    b = F.dropout(x, 0.5, rng=np.random.default_rng(3)).numpy()
    c = F.dropout(x, 0.5, rng=np.random.default_rng(4)).numpy()
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    mr.manual_seed(11)                                        # the default generator too
    d = F.dropout(x, 0.5).numpy()
    mr.manual_seed(11)
    np.testing.assert_array_equal(d, F.dropout(x, 0.5).numpy())


def test_dropout_gradient_uses_the_same_mask(device):
    x = t32(np.ones((6, 7)), device, requires_grad=True)
    y = F.dropout(x, 0.4, rng=np.random.default_rng(5))
    y.sum().backward()
    np.testing.assert_allclose(grad_of(x), y.numpy())   # ones * mask both ways


def test_dropout_identity_when_not_training_or_p_zero(device):
    x = t32(np.arange(6.0), device)
    assert F.dropout(x, 0.5, training=False) is x
    assert F.dropout(x, 0.0) is x


@pytest.mark.parametrize("p", [-0.1, 1.0, 1.5])
def test_dropout_rejects_bad_p(device, p):
    with pytest.raises(ValueError, match=r"dropout: p must be in \[0, 1\), got"):
        F.dropout(t32(np.ones(3), device), p)
