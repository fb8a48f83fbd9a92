"""Fast paths taken for speed, each compared with the plain version it replaces.

- conv2d, stride 1: the backward as a transposed convolution (columns of gy, no col2im)
  equals the backward through the columns of x and col2im, for drawn shapes, groups,
  padding and dilation, with several chunks.
- conv2d, stride 1 on the CPU: the chunk's images side by side in one plane
  (SideBySide) equals the wide grid of im2col_batch, and its columns equal im2col's.
- conv2d's chunks on a pool of threads (minires/functional/parallel.py) give exactly
  the single-thread result, for 3x3 and 1x1, strides 1 and 2, groups.
"""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import minires as mr
import minires.functional as F
from minires.backend import to_numpy
from minires.functional import parallel
from minires.functional.conv import Conv2d, im2col
from minires.functional.conv_layouts import SideBySide
from tests.helpers import t64
from tests.test_conv import conv_cases, make_inputs, pair, settings


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


@pytest.mark.parametrize("kernel, stride, groups", [(3, 1, 1), (3, 2, 2), (1, 1, 1), (1, 2, 1)])
def test_conv2d_threads_give_the_same_result(monkeypatch, kernel, stride, groups):
    """conv2d's CPU chunks on 2 threads give exactly what 1 thread gives (forward and all
    three gradients), with several chunks, including an uneven last one."""
    rng = np.random.default_rng(5)
    x_np, w_np = rng.standard_normal((7, 4, 6, 6)), rng.standard_normal((6, 4 // groups, kernel, kernel))
    b_np = rng.standard_normal(6)
    monkeypatch.setattr(Conv2d, "CPU_CHUNK_BYTES", 2000)

    def run():
        x, w, b = t64(x_np, "cpu"), t64(w_np, "cpu"), t64(b_np, "cpu")
        y = F.conv2d(x, w, b, stride=stride, padding=kernel // 2, groups=groups)
        y.backward(mr.tensor(np.cos(np.arange(y.numel())).reshape(y.shape), dtype=np.float64))
        return [y.numpy()] + [to_numpy(t.grad) for t in (x, w, b)]

    before = parallel.num_threads()
    try:
        parallel.set_num_threads(1)
        serial = run()
        parallel.set_num_threads(2)
        threaded = run()
    finally:
        parallel.set_num_threads(before)
    for a, b in zip(serial, threaded):
        np.testing.assert_array_equal(a, b)


def test_set_num_threads_rejects_bad_values():
    with pytest.raises(ValueError, match="set_num_threads: n must be a positive int"):
        parallel.set_num_threads(0)


def test_run_chunks_nested_and_errors():
    """A run_chunks call from inside a chunk runs in order (no deadlock waiting for busy
    helper threads); results come back in chunk order; a chunk's error reaches the caller."""
    before = parallel.num_threads()
    try:
        parallel.set_num_threads(2)
        chunks = [(i, i + 1) for i in range(6)]

        def outer(n0, n1):
            return sum(parallel.run_chunks(lambda a, b: a * 10, chunks)) + n0
        assert parallel.run_chunks(outer, chunks) == [150 + i for i in range(6)]

        def fails(n0, n1):
            if n0 == 3:
                raise ValueError("chunk 3")
            return n0
        with pytest.raises(ValueError, match="chunk 3"):
            parallel.run_chunks(fails, chunks)
    finally:
        parallel.set_num_threads(before)


@given(case=conv_cases(max_batch=3, max_groups=2, max_group_channels=3), chunk=st.booleans())
def test_conv2d_side_by_side_equals_wide_grid(monkeypatch, case, chunk):
    """On the CPU, stride-1 conv2d lays a chunk's images side by side (SideBySide); forward
    and all gradients equal the wide-grid path (SIDE_BY_SIDE = False), with one or several
    chunks, for drawn kernels, padding, dilation and groups."""
    case = dict(case, stride=1)

    def run():
        x, w, b = make_inputs(case, "cpu", make=t64)
        y = F.conv2d(x, w, b, **settings(case))
        gy = np.random.default_rng(case["seed"] + 1).standard_normal(y.shape)
        y.backward(mr.tensor(gy, dtype=np.float64))
        return [y.numpy()] + [to_numpy(t.grad) for t in (x, w, b) if t is not None]

    with monkeypatch.context() as m:
        if chunk:
            m.setattr(Conv2d, "CPU_CHUNK_BYTES", 64)
        fast = run()
        m.setattr(Conv2d, "SIDE_BY_SIDE", False)
        plain = run()
    for a, b in zip(plain, fast):
        np.testing.assert_allclose(b, a, rtol=1e-10, atol=1e-10)


@given(case=conv_cases(max_batch=3, max_groups=1, max_group_channels=3))
def test_side_by_side_columns_match_im2col(case):
    """SideBySide.columns holds im2col's columns (read back through .images); .place puts
    an array on the grid with zeros elsewhere, and .images reads it back."""
    (ph, pw), (dh, dw) = pair(case["padding"]), pair(case["dilation"])
    KH, KW = case["w_shape"][2:]
    if not SideBySide.fits((KH, KW), (ph, pw), (dh, dw)):
        return
    rng = np.random.default_rng(case["seed"])
    x = rng.standard_normal(case["x_shape"])
    N, C, H, W = x.shape
    layout = SideBySide(N, H, W, (KH, KW), (ph, pw), (dh, dw))
    cols = layout.columns(x)
    assert cols.shape == (C * KH * KW, layout.L)
    expected = im2col(x, (KH, KW), 1, (ph, pw), (dh, dw))         # (N, C*KH*KW, OH*OW)
    got = layout.images(cols).reshape(N, C * KH * KW, -1)
    np.testing.assert_array_equal(got, expected)
    a = rng.standard_normal((N, 2, layout.OH, layout.OW))
    grid = layout.place(a, np.full(2 * layout.L + 3, np.nan))
    assert not np.isnan(grid).any()
    np.testing.assert_array_equal(layout.images(grid), a)
    assert np.count_nonzero(grid) == np.count_nonzero(a)
