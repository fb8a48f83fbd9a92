"""log_softmax, softmax and the fused cross_entropy of minires/functional/loss.py.

Gradients by Hypothesis gradcheck in float64 (every logit, every reduction,
with and without label smoothing); forwards against a float64 NumPy reference;
logits of magnitude 1e4 stay finite and exact; bad targets and reductions
raise errors that say what was expected and what was given.
"""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import minires as mr
import minires.functional as F
from tests import strategies as S
from tests.helpers import assert_forward, grad_of, raw_backward_dtypes, t32, t64


def np_log_softmax(x, axis=-1):
    x = np.asarray(x, dtype=np.float64)
    z = x - x.max(axis=axis, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=axis, keepdims=True))


def np_cross_entropy(logits, target, label_smoothing=0.0, reduction="mean"):
    """Reference: the smoothed target distribution q against log p, in float64."""
    logp = np_log_softmax(logits, axis=1)
    n, c = logp.shape
    q = np.full((n, c), label_smoothing / c)
    q[np.arange(n), target] += 1 - label_smoothing
    loss = -(q * logp).sum(axis=1)
    return {"mean": loss.mean(), "sum": loss.sum(), "none": loss}[reduction]


@st.composite
def logits_and_targets(draw, low=-3.0, high=3.0):
    n, c = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    logits = draw(S.arrays((n, c), low, high))
    target = np.array(draw(st.lists(st.integers(0, c - 1), min_size=n, max_size=n)), dtype=np.int64)
    return logits, target


REDUCTION = st.sampled_from(["mean", "sum", "none"])
SMOOTHING = st.sampled_from([0.0, 0.1, 0.5, 1.0])


# --- log_softmax and softmax ------------------------------------------------------------
@pytest.mark.parametrize("name", ["log_softmax", "softmax"])
@given(data=st.data())
def test_softmax_family_backward(device, name, data):
    shape = data.draw(S.shapes(min_dims=1, max_dims=3))
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    x = data.draw(S.arrays(shape, -4.0, 4.0))
    op = getattr(F, name)
    assert mr.gradcheck(lambda t: op(t, axis), t64(x, device))


@pytest.mark.parametrize("name", ["log_softmax", "softmax"])
@given(data=st.data())
def test_softmax_family_forward(device, name, data):
    shape = data.draw(S.shapes(min_dims=1, max_dims=3))
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    x = data.draw(S.arrays(shape, -20.0, 20.0)).astype(np.float32)
    expected = np_log_softmax(x, axis)
    if name == "softmax":
        expected = np.exp(expected)
    assert_forward(getattr(F, name)(t32(x, device), axis), expected, rtol=1e-5, atol=1e-6)


def test_softmax_family_with_huge_logits(device):
    x = np.array([[1e4, -1e4, 0.0], [-1e4, -1e4 + 1, -1e4 + 2]], dtype=np.float32)
    with np.errstate(over="raise", divide="raise", invalid="raise"):
        logp = F.log_softmax(t32(x, device))
        p = F.softmax(t32(x, device))
    assert_forward(logp, np_log_softmax(x), rtol=1e-5, atol=1e-5)
    assert_forward(p, np.exp(np_log_softmax(x)), rtol=1e-5, atol=1e-7)


# --- cross_entropy ------------------------------------------------------------------------
@given(data=st.data())
def test_cross_entropy_backward(device, data):
    logits, target = data.draw(logits_and_targets())
    smoothing, reduction = data.draw(SMOOTHING), data.draw(REDUCTION)
    assert mr.gradcheck(lambda t: F.cross_entropy(t, target, smoothing, reduction),
                        t64(logits, device))


@given(data=st.data())
def test_cross_entropy_forward(device, data):
    logits, target = data.draw(logits_and_targets(-10.0, 10.0))
    smoothing, reduction = data.draw(SMOOTHING), data.draw(REDUCTION)
    logits = logits.astype(np.float32)
    target_in = data.draw(st.sampled_from(["array", "tensor", "list"]))
    target_arg = {"array": target, "list": target.tolist(),
                  "tensor": mr.tensor(target, dtype=np.int64, device=device)}[target_in]
    out = F.cross_entropy(t32(logits, device), target_arg, label_smoothing=smoothing,
                          reduction=reduction)
    assert_forward(out, np_cross_entropy(logits, target, smoothing, reduction),
                   rtol=1e-5, atol=1e-5)


def test_cross_entropy_equals_nll_of_log_softmax(device):
    rng = np.random.default_rng(0)
    logits, target = rng.standard_normal((6, 4)), rng.integers(0, 4, 6)
    x = t64(logits, device)
    composed = -(F.log_softmax(x)[np.arange(6), target]).mean()
    fused = F.cross_entropy(x, target)
    np.testing.assert_allclose(fused.numpy(), composed.numpy(), rtol=1e-12)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_cross_entropy_logits_of_magnitude_1e4(device, reduction, smoothing):
    """Finite and equal to the float64 reference, forward and gradient (p - q), in float32."""
    logits = np.array([[1e4, -1e4, 0.0, 5e3],
                       [-1e4, -1e4 + 3, -1e4 + 1, -1e4],
                       [2.0, 1e4, 1e4 - 1, -3.0]], dtype=np.float32)
    target = np.array([1, 2, 0])
    x = t32(logits, device, requires_grad=True)
    with np.errstate(over="raise", divide="raise", invalid="raise"):
        loss = F.cross_entropy(x, target, label_smoothing=smoothing, reduction=reduction)
        weight = np.ones(3, dtype=np.float32) if reduction == "none" else None
        loss.backward(weight)
    expected = np_cross_entropy(logits, target, smoothing, reduction)
    assert np.isfinite(loss.numpy()).all()
    assert_forward(loss, expected, rtol=1e-5, atol=1e-3)
    p = np.exp(np_log_softmax(logits, axis=1))
    q = np.full((3, 4), smoothing / 4)
    q[np.arange(3), target] += 1 - smoothing
    grad = (p - q) / (3 if reduction == "mean" else 1)
    assert x.grad.dtype == np.float32
    np.testing.assert_allclose(grad_of(x), grad, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_keeps_float32(device, reduction):
    x = t32(np.ones((2, 3)), device, requires_grad=True)
    loss = F.cross_entropy(x, [0, 2], label_smoothing=0.1, reduction=reduction)
    assert loss.dtype == np.float32 and loss.shape == ((2,) if reduction == "none" else ())
    assert raw_backward_dtypes(loss) == {"float32"}
    for op in (F.log_softmax, F.softmax):
        out = op(x)
        assert out.dtype == np.float32 and raw_backward_dtypes(out) == {"float32"}


# --- bad input ----------------------------------------------------------------------------
def test_softmax_family_bad_axis(device):
    for name in ("log_softmax", "softmax"):
        with pytest.raises(ValueError, match=rf"{name}: axis 2 is out of range for a tensor of "
                                             rf"shape \(3, 4\)"):
            getattr(F, name)(t32(np.zeros((3, 4)), device), axis=2)


def test_cross_entropy_bad_inputs(device):
    logits = t32(np.zeros((3, 4)), device)
    with pytest.raises(ValueError,
                       match=r"cross_entropy: unknown reduction 'avg'; expected one of"):
        F.cross_entropy(logits, [0, 1, 2], reduction="avg")
    with pytest.raises(ValueError, match=r"cross_entropy: target labels must lie in \[0, 4\), "
                                         r"got values from 0 to 4"):
        F.cross_entropy(logits, [0, 4, 1])
    with pytest.raises(ValueError, match=r"cross_entropy: target labels must lie in \[0, 4\), "
                                         r"got values from -1 to 2"):
        F.cross_entropy(logits, [-1, 2, 1])
    with pytest.raises(ValueError, match=r"cross_entropy: target must have shape \(3,\) to match "
                                         r"logits \(3, 4\), got \(2,\)"):
        F.cross_entropy(logits, [0, 1])
    with pytest.raises(ValueError, match=r"target must have shape \(3,\) .* got \(3, 4\)"):
        F.cross_entropy(logits, np.zeros((3, 4), dtype=np.int64))   # one-hot is not accepted
    with pytest.raises(TypeError, match="cross_entropy: target must hold integer class indices, "
                                        "got dtype float"):
        F.cross_entropy(logits, np.array([0.0, 1.0, 2.0]))
    with pytest.raises(ValueError,
                       match=r"cross_entropy: logits must have shape \(N, C\), got \(4,\)"):
        F.cross_entropy(t32(np.zeros(4), device), [1])
    with pytest.raises(ValueError,
                       match=r"cross_entropy: label_smoothing must be in \[0, 1\], got 1.5"):
        F.cross_entropy(logits, [0, 1, 2], label_smoothing=1.5)
