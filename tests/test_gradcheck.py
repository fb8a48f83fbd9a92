"""mr.gradcheck (minires/gradcheck.py): it passes correct backwards and catches wrong ones.

A checker that cannot fail proves nothing, so most tests here feed it a
deliberately wrong backward and check that it fails, and that its message names
the input, the element, the analytic and numeric values and the tolerance.
"""
import re

import numpy as np
import pytest

import minires as mr
import minires.functional as F
from minires.autograd import Function
from tests.helpers import grad_of, t64


class Square(Function):
    """x^2 with a configurable bug: ``factor`` replaces the 2 of 2x; ``poke`` adds to one
    element."""

    def __init__(self, factor=2.0, poke=None):
        super().__init__()
        self.factor, self.poke = factor, poke

    def forward(self, x):
        self.save_for_backward(x)
        return x * x

    def backward(self, gy):
        (x,) = self.saved
        gx = gy * self.factor * x
        if self.poke is not None:
            gx = gx.copy()
            gx[self.poke] += 0.5
        return (gx,)


class CenterRows(Function):
    """y = x - mean of its row. Correct backward: gy - row mean of gy.

    ``bug="global"`` subtracts the mean over the whole array and ``bug="zero"``
    returns zeros. Both agree with the true gradient when the upstream gradient is
    constant -- the gradient of ``sum(y)`` is 0 -- so a plain ``sum()`` loss passes them.
    """

    def __init__(self, bug=None):
        super().__init__()
        self.bug = bug

    def forward(self, x):
        return x - x.mean(axis=1, keepdims=True)

    def backward(self, gy):
        if self.bug == "global":
            return (gy - gy.mean(),)
        if self.bug == "zero":
            return (gy * 0,)
        return (gy - gy.mean(axis=1, keepdims=True),)


def sum_loss_check(fn, x, eps=1e-6):
    """What a checker with L = sum(fn(x)) would conclude: True when it sees no error."""
    x.grad = None
    fn(x).sum().backward()
    analytic = grad_of(x)
    numeric = np.zeros(x.shape)
    for idx in np.ndindex(*x.shape):
        orig = float(x.data[idx])
        x.data[idx] = orig + eps
        plus = float(fn(x).sum().numpy())
        x.data[idx] = orig - eps
        minus = float(fn(x).sum().numpy())
        x.data[idx] = orig
        numeric[idx] = (plus - minus) / (2 * eps)
    return np.allclose(analytic, numeric, atol=1e-5)


def test_passes_correct_backwards(device):
    rng = np.random.default_rng(0)
    x = t64(rng.standard_normal((3, 4)), device)
    assert mr.gradcheck(lambda t: Square()(t), x) is True
    assert mr.gradcheck(lambda t: CenterRows()(t), x) is True
    assert mr.gradcheck(F.tanh, x) is True
    w = t64(rng.standard_normal((2, 4)), device)
    assert mr.gradcheck(F.linear, x, w, None) is True     # None stands for an absent bias


def test_catches_a_wrong_backward_and_says_where(device):
    x = t64(np.arange(1.0, 7.0).reshape(2, 3), device)
    with pytest.raises(mr.GradcheckError) as err:
        mr.gradcheck(lambda t: Square(factor=3.0)(t), x)
    message = str(err.value)
    assert "gradcheck failed for input 0 (shape (2, 3)): 6 of 6 elements disagree" in message
    assert re.search(r"worst element at index \(\d, \d\): analytic -?[\d.e+-]+, "
                     r"numeric -?[\d.e+-]+, \|difference\| [\d.e+-]+ > tolerance [\d.e+-]+ "
                     r"\(atol 1e-05 \+ rtol 0.001 \* \|numeric\|\)", message), message
    np.testing.assert_array_equal(x.numpy(), np.arange(1.0, 7.0).reshape(2, 3))   # restored


def test_names_the_input_and_the_single_wrong_element(device):
    rng = np.random.default_rng(1)
    a, b = t64(rng.standard_normal((2, 3)), device), t64(rng.uniform(1, 2, (3, 4)), device)
    with pytest.raises(mr.GradcheckError, match=r"(?s)input 1 \(shape \(3, 4\)\): 1 of 12 elements "
                                                r"disagree.*index \(2, 1\)") as err:
        mr.gradcheck(lambda p, q: p @ Square(poke=(2, 1))(q), a, b)
    # the analytic value in the message is the numeric one plus the poke
    analytic, numeric = map(float, re.search(r"analytic (\S+), numeric (\S+),",
                                             str(err.value)).groups())
    assert analytic - numeric == pytest.approx(0.5, abs=1e-4)


def test_catches_a_bug_in_the_second_output(device):
    class TwoOutputs(Function):
        def forward(self, x):
            return x * 2, x * 3

        def backward(self, g1, g2):
            return (g1 * 2 + g2 * 2,)       # should be g2 * 3

    x = t64([1.0, -2.0, 0.5], device)
    with pytest.raises(mr.GradcheckError, match="input 0"):
        mr.gradcheck(lambda t: TwoOutputs()(t), x)


@pytest.mark.parametrize("bug", ["global", "zero"])
def test_random_projection_catches_what_a_sum_loss_misses(device, bug):
    x = t64(np.random.default_rng(2).standard_normal((3, 4)), device)
    assert sum_loss_check(lambda t: CenterRows(bug)(t), x)       # a sum() loss sees nothing
    with pytest.raises(mr.GradcheckError, match="input 0"):
        mr.gradcheck(lambda t: CenterRows(bug)(t), x)


def test_refuses_float32_inputs(device):
    x = mr.tensor(np.ones(3, dtype=np.float32), requires_grad=True, device=device)
    with pytest.raises(ValueError, match=r"gradcheck: input 0 has dtype float32; "
                                         r"finite differences are only exact enough in float64"):
        mr.gradcheck(F.tanh, x)


def test_refuses_when_nothing_requires_grad(device):
    with pytest.raises(ValueError, match="gradcheck: no input has requires_grad=True"):
        mr.gradcheck(F.tanh, t64([1.0], device, requires_grad=False))


def test_works_on_non_contiguous_inputs():
    data = np.arange(1.0, 7.0).reshape(2, 3).T            # a transposed view: not C-contiguous
    x = mr.Tensor(data, requires_grad=True)
    assert not x.data.flags.c_contiguous
    assert mr.gradcheck(lambda t: t * t, x)
    with pytest.raises(mr.GradcheckError):
        mr.gradcheck(lambda t: Square(factor=1.0)(t), x)
