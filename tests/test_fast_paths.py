"""The fast conv2d (minires/functional/conv_fast.py) against the reference (conv.py).

- F.conv2d with "fast" equals F.conv2d with "reference" -- forward and every gradient,
  with and without dx (a first layer), in float64 and float32, with one chunk or one
  image per chunk -- on the same drawn cases (strides, padding, dilation, groups, 1x1).
  Each implementation's own finite-difference check is in tests/test_conv.py.
- Every fast path on its own (including the ones the policy does not pick on this
  machine: the GPU's wide-grid transposed backward, the wide grid for stride 1)
  equals the reference, for every combination of gradients asked for.
- The policy (forward_path / backward_path) picks the paths the module docstring names.
- Chunking: several chunks, an uneven last one, equal one chunk.
- The side-by-side layout's columns equal im2col's.
- conv2d's chunks on a pool of threads (minires/functional/parallel.py) give exactly
  the single-thread result, for 3x3 and 1x1, strides 1 and 2, groups.
"""

import contextlib

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import minires as mr
import minires.functional as F
from minires.backend import to_numpy
from minires.functional import conv_fast as cf
from minires.functional import conv_select, parallel
from minires.functional.conv import im2col
from minires.functional.conv_layouts import SideBySide
from minires.functional.windows import batch_grid_width, conv_settings, is_pointwise
from tests.helpers import conv_inputs, conv_kwargs, conv_results, t64
from tests.strategies import conv_cases, pair


@contextlib.contextmanager
def chunk_bytes(n):
    """Run the block with the fast path's chunk size set to ``n`` bytes (None: unchanged)."""
    previous = conv_select.set_chunk_bytes(n) if n is not None else None
    try:
        yield
    finally:
        if previous is not None:
            conv_select.set_chunk_bytes(previous)


# --- the fast implementation against the reference -------------------------------------
@given(case=conv_cases(max_batch=3, max_groups=3, max_group_channels=3), stride_1=st.booleans(),
       small_chunks=st.booleans(), need_x=st.booleans(),
       dtype=st.sampled_from([np.float64, np.float32]))
def test_fast_conv2d_equals_the_reference(device, case, stride_1, small_chunks, need_x, dtype):
    if stride_1:                       # the stride-1 paths are the ones ResNets use most
        case = dict(case, stride=1)
    with F.conv_implementation("reference"):
        want = conv_results(case, device, dtype, need_x)
    with F.conv_implementation("fast"), chunk_bytes(64 if small_chunks else None):
        got = conv_results(case, device, dtype, need_x)
    tol = 1e-10 if dtype == np.float64 else 1e-4
    assert len(got) == len(want)
    for a, b in zip(want, got):
        assert b.dtype == a.dtype == dtype
        np.testing.assert_allclose(b, a, rtol=tol, atol=tol)


def _applicable_forward_paths(kernel, s, device):
    paths = [cf.forward_grid]
    if is_pointwise(kernel, s.stride, s.padding):
        paths.append(cf.forward_pointwise)
    if device == "cpu" and s.stride == (1, 1) and SideBySide.fits(kernel, s.padding, s.dilation):
        paths += [cf.forward_side_by_side, cf.forward_kernel_rows]
    return paths


def _applicable_backward_paths(kernel, s, device):
    paths = [cf.backward_columns]
    if is_pointwise(kernel, s.stride, s.padding):
        paths.append(cf.backward_pointwise)
    pad_t = cf.transposed_padding(kernel, s.padding, s.dilation)
    if s.stride == (1, 1) and pad_t is not None:
        paths.append(cf.backward_transposed_grid)
        if device == "cpu" and SideBySide.fits(kernel, pad_t, s.dilation):
            paths.append(cf.backward_transposed_side_by_side)
    return paths


@given(case=conv_cases(max_batch=3, max_groups=3, max_group_channels=3),
       stride_1=st.booleans(), small_chunks=st.booleans())
def test_every_fast_path_equals_the_reference(device, case, stride_1, small_chunks):
    """Each path called directly on arrays, against the reference's y, dx and dW."""
    if stride_1:
        case = dict(case, stride=1)
    x, w, _ = conv_inputs(case, device)
    with F.conv_implementation("reference"):
        y = F.conv2d(x, w, None, **conv_kwargs(case))
    gy = mr.tensor(np.random.default_rng(case["seed"] + 1).standard_normal(y.shape),
                   dtype=np.float64, device=device)
    y.backward(gy)
    want = {"y": y.numpy(), "dx": to_numpy(x.grad), "dW": to_numpy(w.grad)}
    s, kernel = conv_settings(**conv_kwargs(case)), case["w_shape"][2:]
    limit = 64 if small_chunks else None                   # 64 bytes: one image per chunk
    forward, backward = (_applicable_forward_paths(kernel, s, device),
                         _applicable_backward_paths(kernel, s, device))
    assert cf.forward_path(x.data, w.data, s) in forward
    for need_x in (True, False):
        assert cf.backward_path(x.data, w.data, s, need_x) in backward
    for path in forward:
        got = to_numpy(path(x.data, w.data, s, chunk_bytes=limit))
        np.testing.assert_allclose(got, want["y"], rtol=1e-10, atol=1e-10, err_msg=path.__name__)
    for path in backward:
        for need_x, need_w in [(True, True), (True, False), (False, True)]:
            gx, gw = path(gy.data, x.data, w.data, s, need_x, need_w, chunk_bytes=limit)
            for name, got, needed in (("dx", gx, need_x), ("dW", gw, need_w)):
                if not needed:
                    assert got is None, (path.__name__, name)
                    continue
                np.testing.assert_allclose(to_numpy(got), want[name], rtol=1e-10, atol=1e-10,
                                           err_msg=f"{path.__name__} {name}")


def test_the_policy_picks_the_documented_paths():
    x = np.zeros((2, 4, 6, 6))
    w3, w1 = np.zeros((6, 4, 3, 3)), np.zeros((6, 4, 1, 1))
    stride1, stride2 = conv_settings(1, 1), conv_settings(2, 1)
    assert cf.forward_path(x, w3, stride1) is cf.forward_kernel_rows     # 6 output channels
    wide = np.zeros((cf.KERNEL_ROWS_MAX_CHANNELS + 1, 4, 3, 3))
    assert cf.forward_path(x, wide, stride1) is cf.forward_side_by_side
    assert cf.forward_path(x, w3, stride2) is cf.forward_grid
    assert cf.forward_path(x, w1, conv_settings()) is cf.forward_pointwise
    assert cf.forward_path(x, w1, conv_settings(2)) is cf.forward_grid
    assert cf.backward_path(x, w3, stride1, need_x=True) is cf.backward_transposed_side_by_side
    assert cf.backward_path(x, w3, stride1, need_x=False) is cf.backward_columns  # dW alone
    assert cf.backward_path(x, w3, stride2, need_x=True) is cf.backward_columns
    assert cf.backward_path(x, w1, conv_settings(), need_x=False) is cf.backward_pointwise
    # stride 1 as a transposed convolution needs padding <= (K-1)*dilation
    assert cf.transposed_padding((3, 3), (1, 1), (1, 1)) == (1, 1)
    assert cf.transposed_padding((3, 3), (2, 2), (1, 1)) == (0, 0)
    assert cf.transposed_padding((3, 3), (3, 3), (1, 1)) is None
    assert cf.backward_path(x, w3, conv_settings(1, 3), need_x=True) is cf.backward_columns


def test_paths_refuse_settings_they_do_not_handle():
    x, w = np.zeros((1, 2, 5, 5)), np.zeros((2, 2, 3, 3))
    with pytest.raises(ValueError, match="forward_side_by_side: needs stride 1"):
        cf.forward_side_by_side(x, w, conv_settings(2, 1))
    with pytest.raises(ValueError, match="backward_transposed: needs stride 1"):
        cf.backward_transposed_grid(np.zeros((1, 2, 5, 5)), x, w, conv_settings(1, 3))
    with pytest.raises(ValueError, match="forward_pointwise: needs a 1x1 kernel"):
        cf.forward_pointwise(x, w, conv_settings())


# --- chunks -------------------------------------------------------------------------------
def test_set_chunk_bytes_returns_the_previous_value_and_rejects_bad_values():
    default = conv_select.get_chunk_bytes()
    assert conv_select.set_chunk_bytes(1000) == default
    try:
        assert conv_select.get_chunk_bytes() == 1000
        assert parallel.batch_chunks(5, 400, np) == [(0, 2), (2, 4), (4, 5)]
        assert parallel.batch_chunks(5, 400, np, chunk_bytes=10) == [(n, n + 1) for n in range(5)]
        assert parallel.batch_chunks(0, 400, np) == []
    finally:
        assert conv_select.set_chunk_bytes(default) == 1000
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="set_chunk_bytes: n must be a positive int"):
            conv_select.set_chunk_bytes(bad)
    assert conv_select.get_chunk_bytes() == default


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("groups", [1, 2])
def test_chunked_conv2d_equals_one_chunk(device, groups, stride):
    """Forward and all three gradients do not depend on how the batch is chunked
    (chunks of 2 images of a batch of 5 leave an uneven last chunk); stride 1 plans with
    the wide grid, stride 2 with the plain one."""
    rng = np.random.default_rng(3)
    x_np, w_np = rng.standard_normal((5, 4, 6, 6)), rng.standard_normal((6, 4 // groups, 3, 3))
    OH = 6 // stride
    b_np, gy = rng.standard_normal(6), rng.standard_normal((5, 6, OH, OH))
    Wq = batch_grid_width(6, OH, (stride, stride), (1, 1))
    assert Wq == (8 if stride == 1 else 3)
    per_image = 4 * 9 * OH * Wq * 8  # C*KH*KW * OH*Wq * float64 bytes
    assert parallel.batch_chunks(5, per_image, np, chunk_bytes=1 << 40) == [(0, 5)]
    assert parallel.batch_chunks(5, per_image, np, chunk_bytes=2 * per_image) == \
        [(0, 2), (2, 4), (4, 5)]

    def run():
        x, w, b = t64(x_np, device), t64(w_np, device), t64(b_np, device)
        y = F.conv2d(x, w, b, stride=stride, padding=1, groups=groups)
        y.backward(mr.tensor(gy, dtype=np.float64, device=device))
        return [y.numpy()] + [to_numpy(t.grad) for t in (x, w, b)]

    with chunk_bytes(1 << 40):
        whole = run()
    with chunk_bytes(2 * per_image):
        chunked = run()
    for a, b in zip(whole, chunked):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


# --- threads ------------------------------------------------------------------------------
@pytest.mark.parametrize("kernel, stride, groups", [(3, 1, 1), (3, 2, 2), (1, 1, 1), (1, 2, 1)])
def test_conv2d_threads_give_the_same_result(kernel, stride, groups):
    """conv2d's CPU chunks on 2 threads give exactly what 1 thread gives (forward and all
    three gradients), with several chunks, including an uneven last one."""
    rng = np.random.default_rng(5)
    x_np = rng.standard_normal((7, 4, 6, 6))
    w_np = rng.standard_normal((6, 4 // groups, kernel, kernel))
    b_np = rng.standard_normal(6)

    def run():
        x, w, b = t64(x_np, "cpu"), t64(w_np, "cpu"), t64(b_np, "cpu")
        y = F.conv2d(x, w, b, stride=stride, padding=kernel // 2, groups=groups)
        y.backward(mr.tensor(np.cos(np.arange(y.numel())).reshape(y.shape), dtype=np.float64))
        return [y.numpy()] + [to_numpy(t.grad) for t in (x, w, b)]

    before = parallel.num_threads()
    try:
        with chunk_bytes(2000):
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


# --- the side-by-side layout ----------------------------------------------------------------
@given(case=conv_cases(max_batch=3, max_groups=1, max_group_channels=3))
def test_side_by_side_columns_match_im2col(case):
    """The window kernel_row(kh) of SideBySide.shifted_planes' row (c, kw) holds im2col's row
    (c, kh, kw) (read back through .images), as does .columns' row (c, kh, kw);
    add_kernel_rows sums those windows; .place puts an array on the grid with zeros
    elsewhere, and .images reads it back."""
    (ph, pw), (dh, dw) = pair(case["padding"]), pair(case["dilation"])
    KH, KW = case["w_shape"][2:]
    if not SideBySide.fits((KH, KW), (ph, pw), (dh, dw)):
        return
    rng = np.random.default_rng(case["seed"])
    x = rng.standard_normal(case["x_shape"])
    N, C, H, W = x.shape
    layout = SideBySide(N, H, W, (KH, KW), (ph, pw), (dh, dw))
    planes = layout.shifted_planes(x).reshape(C, KW, -1)               # (C, KW, Hp*Wb)
    cols = np.stack([planes[:, :, layout.kernel_row(kh)] for kh in range(KH)], axis=1)
    assert cols.shape == (C, KH, KW, layout.L)
    np.testing.assert_array_equal(layout.columns(x), cols.reshape(C * KH * KW, layout.L))
    expected = im2col(x, (KH, KW), 1, (ph, pw), (dh, dw))         # (N, C*KH*KW, OH*OW)
    got = layout.images(cols.reshape(C * KH * KW, layout.L)).reshape(N, C * KH * KW, -1)
    np.testing.assert_array_equal(got, expected)
    z = rng.standard_normal((2, KH, 3, planes.shape[2]))             # (G, KH, R, Hp*Wb)
    want = np.zeros((2, 3, layout.L))
    for kh in range(KH):
        want += z[:, kh, :, kh * dh * layout.Wb:kh * dh * layout.Wb + layout.L]
    np.testing.assert_allclose(layout.add_kernel_rows(z), want, rtol=1e-12, atol=1e-12)
    a = rng.standard_normal((N, 2, layout.OH, layout.OW))
    grid = layout.place(a, np.full(2 * layout.L + 3, np.nan))
    assert not np.isnan(grid).any()
    np.testing.assert_array_equal(layout.images(grid), a)
    assert np.count_nonzero(grid) == np.count_nonzero(a)
