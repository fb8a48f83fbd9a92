"""Fast paths taken for speed, each compared with the plain version it replaces.

- conv2d, stride 1: the backward as a transposed convolution (columns of gy, no col2im)
  equals the backward through the columns of x and col2im, for drawn shapes, groups,
  padding and dilation, with several chunks.
"""

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

import minires as mr
import minires.functional as F
from minires.backend import to_numpy
from minires.functional.conv import Conv2d
from tests.helpers import t64
from tests.test_conv import conv_cases, make_inputs, settings


def _conv_grads(case, device):
    x, w, b = make_inputs(case, device, make=t64)
    y = F.conv2d(x, w, b, **settings(case))
    gy = np.random.default_rng(case["seed"] + 1).standard_normal(y.shape)
    y.backward(mr.tensor(gy, dtype=np.float64, device=device))
    return [to_numpy(t.grad) for t in (x, w, b) if t is not None]


@given(case=conv_cases(max_batch=3, max_groups=3, max_group_channels=3), chunk=st.booleans())
def test_conv2d_transposed_backward_equals_columns_backward(device, monkeypatch, case, chunk):
    case = dict(case, stride=1)
    with monkeypatch.context() as m:
        if chunk:                              # chunks of one image: several chunks
            m.setattr(Conv2d, "CPU_CHUNK_BYTES", 64)
        fast = _conv_grads(case, device)
        m.setattr(Conv2d, "TRANSPOSED_BACKWARD", False)
        plain = _conv_grads(case, device)
    for a, b in zip(plain, fast):
        np.testing.assert_allclose(b, a, rtol=1e-10, atol=1e-10)


def test_conv2d_transposed_backward_is_used_for_stride_1():
    fn = Conv2d(stride=1, padding=1)
    assert fn._transposed_padding(3, 3) == (1, 1)
    assert Conv2d(stride=1, padding=2)._transposed_padding(3, 3) == (0, 0)
    assert Conv2d(stride=1, padding=3)._transposed_padding(3, 3) is None   # falls back
