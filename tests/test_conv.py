"""conv2d, im2col and col2im (minires/functional/conv.py).

Tests that take the ``implementation`` fixture run once with each conv2d implementation
(``F.use_conv``: "reference", the im2col + matmul + col2im of conv.py, and "fast", the
default, conv_fast.py); tests/test_fast_paths.py compares the two with each other.

- conv2d's backward (x, weight, bias) against finite differences in float64, every
  element, over drawn batch, channels, groups, kernel, stride, padding, dilation and
  input size; depthwise and 1x1 cases explicitly; both implementations;
- both implementations' forward against the naive loop reference ``conv2d_naive``;
- im2col against its definition, and col2im as its adjoint: <col2im(c), x> == <c, im2col(x)>;
- the batch layout (im2col_batch / col2im_batch) against im2col / col2im;
- float32 stays float32; only the gradients asked for are computed;
- the selection (conv_select.py): use_conv / conv_implementation switch and restore, bad
  names refused; conv.py imports nothing of the fast paths;
- bad input raises errors that name conv2d and say what was expected;
- against PyTorch when it is installed (skipped otherwise).
"""

import ast
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given

import minires as mr
import minires.functional as F
from minires.backend import get_array_module, to_numpy
from minires.functional import conv, conv_select
from minires.functional.conv import col2im, conv2d_naive, im2col
from minires.functional.conv_layouts import col2im_batch, im2col_batch
from minires.functional.windows import batch_grid_width
from tests.helpers import assert_forward, conv_inputs, conv_kwargs, t32, t64
from tests.strategies import conv_cases, pair

IMPLEMENTATIONS = ["reference", "fast"]


@pytest.fixture(params=IMPLEMENTATIONS)
def implementation(request):
    """Runs the test with F.conv2d set to each implementation in turn."""
    with F.conv_implementation(request.param):
        yield request.param


@given(case=conv_cases())
def test_conv2d_backward(device, implementation, case):
    x, w, b = conv_inputs(case, device)
    inputs = (x, w) if b is None else (x, w, b)
    assert mr.gradcheck(lambda *t: F.conv2d(*t, **conv_kwargs(case)), *inputs)


@given(case=conv_cases(max_batch=3, max_groups=4, max_group_channels=3))
def test_conv2d_forward_matches_naive(device, implementation, case):
    x, w, b = conv_inputs(case, device, np.float32, requires_grad=False)
    expected = conv2d_naive(
        x.numpy().astype(np.float64),
        w.numpy().astype(np.float64),
        None if b is None else b.numpy(),
        **conv_kwargs(case),
    )
    assert_forward(F.conv2d(x, w, b, **conv_kwargs(case)), expected, rtol=1e-5, atol=1e-5)


def test_conv2d_naive_by_hand():
    """The reference itself, on a case small enough to work out on paper."""
    x = np.arange(16, dtype=np.float64).reshape(1, 1, 4, 4)
    w = np.array([[[[1.0, 0.0], [0.0, -1.0]]]])  # x[i, j] - x[i+1, j+1]
    y = conv2d_naive(x, w, bias=np.array([0.5]), stride=2)
    np.testing.assert_array_equal(y, np.full((1, 1, 2, 2), -5.0 + 0.5))


@pytest.mark.parametrize("stride,padding,dilation", [(1, 1, 1), (2, 1, 1), (1, 2, 2)])
def test_depthwise_conv2d(device, implementation, stride, padding, dilation):
    """groups == channels (each channel its own 3x3 filter), with a channel multiplier of 2."""
    rng = np.random.default_rng(1)
    x, w = (
        t64(rng.standard_normal((2, 3, 5, 5)), device),
        t64(rng.standard_normal((6, 1, 3, 3)), device),
    )
    kw = dict(stride=stride, padding=padding, dilation=dilation, groups=3)
    assert mr.gradcheck(lambda a, b: F.conv2d(a, b, **kw), x, w)
    assert_forward(
        F.conv2d(x, w, **kw),
        conv2d_naive(x.numpy(), w.numpy(), **kw),
        dtype=np.float64,
        rtol=1e-12,
        atol=1e-12,
    )


@pytest.mark.parametrize("stride", [1, 2])
def test_pointwise_conv2d(device, implementation, stride):
    """1x1 convolutions: stride 1 uses the reshape shortcut, stride 2 the general path."""
    rng = np.random.default_rng(2)
    x, w, b = (t64(rng.standard_normal(s), device) for s in [(2, 4, 3, 5), (6, 4, 1, 1), (6,)])
    assert mr.gradcheck(lambda *t: F.conv2d(*t, stride=stride), x, w, b)
    assert_forward(
        F.conv2d(x, w, b, stride=stride),
        conv2d_naive(x.numpy(), w.numpy(), b.numpy(), stride=stride),
        dtype=np.float64,
        rtol=1e-12,
        atol=1e-12,
    )


def test_pointwise_im2col_is_a_view():
    x = np.random.default_rng(0).standard_normal((2, 3, 4, 5)).astype(np.float32)
    cols = im2col(x, 1)
    assert cols.shape == (2, 3, 20) and np.shares_memory(cols, x)
    np.testing.assert_array_equal(col2im(cols, x.shape, 1), x)


@given(case=conv_cases(max_groups=1, max_group_channels=3))
def test_im2col_matches_definition(device, case):
    """cols[n, (c, kh, kw), (i, j)] == x_pad[n, c, i*sh + kh*dh, j*sw + kw*dw]."""
    x = np.random.default_rng(case["seed"]).standard_normal(case["x_shape"])
    N, C, H, W = x.shape
    KH, KW = case["w_shape"][2:]
    (sh, sw), (ph, pw), (dh, dw) = (pair(case[k]) for k in ("stride", "padding", "dilation"))
    x_device = mr.tensor(x, dtype=np.float64, device=device).data
    cols = to_numpy(im2col(x_device, (KH, KW), case["stride"], case["padding"], case["dilation"]))
    OH = (H + 2 * ph - dh * (KH - 1) - 1) // sh + 1
    OW = (W + 2 * pw - dw * (KW - 1) - 1) // sw + 1
    assert cols.shape == (N, C * KH * KW, OH * OW)
    x_pad = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    expected = np.empty_like(cols)
    for c in range(C):
        for kh in range(KH):
            for kw in range(KW):
                for i in range(OH):
                    for j in range(OW):
                        expected[:, (c * KH + kh) * KW + kw, i * OW + j] = x_pad[
                            :, c, i * sh + kh * dh, j * sw + kw * dw
                        ]
    np.testing.assert_array_equal(cols, expected)


@given(case=conv_cases(max_batch=3, max_groups=1, max_group_channels=3))
def test_col2im_is_the_adjoint_of_im2col(device, case):
    """<col2im(c), x> == <c, im2col(x)> for random x and c: col2im is im2col's transpose."""
    rng = np.random.default_rng(case["seed"])
    kernel = case["w_shape"][2:]
    args = (kernel, case["stride"], case["padding"], case["dilation"])
    x = mr.tensor(rng.standard_normal(case["x_shape"]), dtype=np.float64, device=device).data
    cols_x = im2col(x, *args)
    c = mr.tensor(rng.standard_normal(cols_x.shape), dtype=np.float64, device=device).data
    back = col2im(c, x.shape, *args)
    assert back.shape == x.shape
    lhs, rhs = float((back * x).sum()), float((c * cols_x).sum())
    assert lhs == pytest.approx(rhs, rel=1e-10, abs=1e-10)


@given(case=conv_cases(max_batch=3, max_groups=1, max_group_channels=3))
def test_batch_columns_match_im2col(device, case):
    """im2col_batch holds im2col's columns side by side, channel-major, on the grid of width
    Wq (on the CPU the wide grid for stride 1; on the GPU always OW); col2im_batch, given
    zeros in the cut-off columns, equals col2im. A too-big reused ``out`` buffer gives the
    same columns."""
    rng = np.random.default_rng(case["seed"])
    args = (case["w_shape"][2:], case["stride"], case["padding"], case["dilation"])
    x = mr.tensor(rng.standard_normal(case["x_shape"]), dtype=np.float64, device=device).data
    N, _, H, W = x.shape
    plain = to_numpy(im2col(x, *args))  # (N, K, OH*OW)
    K = plain.shape[1]
    (sh, sw), (ph, pw), (dh, dw) = (pair(case[k]) for k in ("stride", "padding", "dilation"))
    KH, KW = case["w_shape"][2:]
    OH = (H + 2 * ph - dh * (KH - 1) - 1) // sh + 1
    OW = (W + 2 * pw - dw * (KW - 1) - 1) // sw + 1
    xp = get_array_module(x)
    Wq = W + 2 * pw if (sh, sw) == (1, 1) and xp is np else OW
    assert batch_grid_width(W, OW, (sh, sw), (ph, pw), xp) == Wq

    batch = to_numpy(im2col_batch(x, *args))
    assert batch.shape == (K, N * OH * Wq)
    on_grid = batch.reshape(K, N, OH, Wq)[..., :OW]
    np.testing.assert_array_equal(on_grid, plain.reshape(N, K, OH, OW).transpose(1, 0, 2, 3))
    buffer = mr.tensor(np.full(batch.size + 7, np.nan), dtype=np.float64, device=device).data
    np.testing.assert_array_equal(to_numpy(im2col_batch(x, *args, out=buffer)), batch)

    c = rng.standard_normal(plain.shape)  # (N, K, OH*OW)
    c_batch = np.zeros((K, N, OH, Wq))
    c_batch[..., :OW] = c.reshape(N, K, OH, OW).transpose(1, 0, 2, 3)

    def on_device(a):
        return mr.tensor(a, dtype=np.float64, device=device).data

    back_plain = to_numpy(col2im(on_device(c), x.shape, *args))
    back_batch = to_numpy(col2im_batch(on_device(c_batch.reshape(K, -1)), x.shape, *args))
    np.testing.assert_allclose(back_batch, back_plain, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kwargs", [{"padding": 1}, {"stride": 2}, {}])
def test_conv2d_empty_batch(implementation, kwargs):
    x, w = t64(np.zeros((0, 3, 5, 5))), t64(np.ones((4, 3, 3, 3)))
    y = F.conv2d(x, w, **kwargs)
    assert y.shape[:2] == (0, 4)
    y.sum().backward()
    assert x.grad.shape == x.shape and not w.grad.any()


def test_conv2d_keeps_float32(device, implementation):
    rng = np.random.default_rng(4)
    x = t32(rng.standard_normal((2, 3, 5, 5)), device, requires_grad=True)
    w = t32(rng.standard_normal((4, 3, 3, 3)), device, requires_grad=True)
    b = t32(rng.standard_normal(4), device, requires_grad=True)
    y = F.conv2d(x, w, b, padding=1)
    (y * y).sum().backward()
    assert y.dtype == np.float32
    assert x.grad.dtype == w.grad.dtype == b.grad.dtype == np.float32


def test_conv2d_computes_only_the_gradients_asked_for(device, implementation):
    rng = np.random.default_rng(5)
    x_np, w_np = rng.standard_normal((2, 2, 4, 4)), rng.standard_normal((3, 2, 3, 3))
    gy = mr.tensor(rng.standard_normal((2, 3, 2, 2)), dtype=np.float64, device=device)
    full_x, full_w = t64(x_np, device), t64(w_np, device)
    F.conv2d(full_x, full_w).backward(gy)
    for x_grad, w_grad in [(True, False), (False, True)]:
        x, w = t64(x_np, device, requires_grad=x_grad), t64(w_np, device, requires_grad=w_grad)
        F.conv2d(x, w).backward(gy)
        assert (x.grad is not None) == x_grad and (w.grad is not None) == w_grad
        if x_grad:
            np.testing.assert_allclose(to_numpy(x.grad), to_numpy(full_x.grad))
        if w_grad:
            np.testing.assert_allclose(to_numpy(w.grad), to_numpy(full_w.grad))


# --- choosing the implementation ---------------------------------------------------------
def test_use_conv_switches_returns_the_previous_choice_and_refuses_bad_names():
    assert F.conv_in_use() == "fast"                                  # the default
    x, w = t64(np.ones((1, 2, 4, 4))), t64(np.ones((3, 2, 3, 3)))
    assert F.use_conv("reference") == "fast"
    try:
        assert F.conv_in_use() == "reference"
        assert F.conv2d(x, w).grad_fn.name == "Conv2d"                # the reference Function
    finally:
        assert F.use_conv("fast") == "reference"
    assert F.conv2d(x, w).grad_fn.name == "FastConv2d"
    with pytest.raises(ValueError, match=r"use_conv: expected one of \['fast', 'reference'\], "
                                         r"got 'im2col'"):
        F.use_conv("im2col")
    assert F.conv_in_use() == "fast"


def test_conv_implementation_restores_the_choice_even_after_an_error():
    with F.conv_implementation("reference") as name:
        assert name == F.conv_in_use() == "reference"
        with F.conv_implementation("fast"):
            assert F.conv_in_use() == "fast"
        assert F.conv_in_use() == "reference"
    assert F.conv_in_use() == "fast"
    with pytest.raises(RuntimeError, match="inside"), F.conv_implementation("reference"):
        raise RuntimeError("inside")
    assert F.conv_in_use() == "fast"


def test_nn_conv2d_runs_the_chosen_implementation():
    layer = mr.nn.Conv2d(2, 3, 3, padding=1)
    x = t32(np.ones((1, 2, 4, 4)), requires_grad=True)
    with F.conv_implementation("reference"):
        assert layer(x).grad_fn.name == "Conv2d"
    assert layer(x).grad_fn.name == "FastConv2d"



def test_the_reference_imports_nothing_of_the_fast_paths():
    """conv.py, the code lesson 03 teaches, stands on its own: the choice between it and
    the fast path lives above both (conv_select.py), and nothing fast is imported here."""
    tree = ast.parse(Path(conv.__file__).read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            names.update((node.module or "").split("."))
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update(part for alias in node.names for part in alias.name.split("."))
    fast = {"conv_fast", "conv_layouts", "conv_select", "cuda_kernels", "parallel", "winograd"}
    assert not names & fast, sorted(names & fast)
    assert F.conv2d is conv_select.conv2d and F.use_conv is conv_select.use_conv
    for knob in ("use_winograd", "set_chunk_bytes", "get_chunk_bytes"):
        assert callable(getattr(conv_select, knob)), knob

# --- bad input --------------------------------------------------------------------------
def _x(shape=(2, 4, 6, 6)):
    return t32(np.zeros(shape))


@pytest.mark.parametrize(
    "x_shape,w_shape,kwargs,match",
    [
        (
            (2, 3, 6, 6),
            (8, 4, 3, 3),
            {},
            r"conv2d: input has 3 channels but weight expects 4 \(groups=1",
        ),
        (
            (2, 4, 6, 6),
            (8, 1, 3, 3),
            {"groups": 2},
            r"conv2d: input has 4 channels but weight expects 2 "
            r"\(groups=2",
        ),
        (
            (2, 4, 6, 6),
            (6, 1, 3, 3),
            {"groups": 3},
            r"conv2d: groups=3 does not divide the 4 input channels",
        ),
        (
            (2, 4, 6, 6),
            (5, 2, 3, 3),
            {"groups": 2},
            r"conv2d: groups=2 does not divide the 5 output channels",
        ),
        ((2, 4, 3, 3), (8, 4, 5, 5), {}, r"conv2d: kernel 5x5 is larger than the padded input 3x3"),
        (
            (2, 4, 3, 3),
            (8, 4, 5, 5),
            {"padding": 1, "dilation": 2},
            r"conv2d: kernel 5x5 \(dilation 2x2 stretches it to 9x9\) is larger than the "
            r"padded input 5x5",
        ),
        (
            (4, 6, 6),
            (8, 4, 3, 3),
            {},
            r"conv2d: input must be 4-D \(N, C, H, W\), got shape \(4, 6, 6\)"
            r".*add a batch axis",
        ),
        ((2, 4, 6, 6), (8, 4, 3), {}, r"conv2d: weight \(C_out, C_in/groups, KH, KW\) must be 4-D"),
    ],
)
def test_conv2d_shape_errors(implementation, x_shape, w_shape, kwargs, match):
    with pytest.raises(ValueError, match=match):
        F.conv2d(_x(x_shape), t32(np.zeros(w_shape)), **kwargs)


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        ({"stride": 0}, ValueError, r"conv2d: stride must be >= 1, got 0"),
        ({"stride": (1, 0)}, ValueError, r"conv2d: stride must be >= 1, got \(1, 0\)"),
        ({"padding": -1}, ValueError, r"conv2d: padding must be >= 0, got -1"),
        ({"dilation": 0}, ValueError, r"conv2d: dilation must be >= 1"),
        ({"stride": 1.5}, TypeError, r"conv2d: stride must be an int or a pair of ints, got 1.5"),
        ({"padding": (1, 1, 1)}, TypeError, r"conv2d: padding must be an int or a pair of ints"),
        (
            {"padding": "same"},
            TypeError,
            r"conv2d: padding must be an int or a pair of ints, got 'same'",
        ),
        ({"groups": 0}, ValueError, r"conv2d: groups must be a positive int, got 0"),
    ],
)
def test_conv2d_bad_settings(implementation, kwargs, error, match):
    with pytest.raises(error, match=match):
        F.conv2d(_x(), t32(np.zeros((8, 4, 3, 3))), **kwargs)


def test_conv2d_bad_bias_and_dtype(implementation):
    w = t32(np.zeros((8, 4, 3, 3)))
    with pytest.raises(
        ValueError,
        match=r"conv2d: bias must have shape \(8,\) for 8 output channels, "
        r"got \(4,\)",
    ):
        F.conv2d(_x(), w, t32(np.zeros(4)))
    with pytest.raises(
        TypeError, match=r"conv2d: input has dtype float32 but weight has dtype float64"
    ):
        F.conv2d(_x(), t64(np.zeros((8, 4, 3, 3))))


def test_col2im_checks_the_column_shape():
    with pytest.raises(ValueError, match=r"col2im: cols must have shape \(1, 18, 16\)"):
        col2im(np.zeros((1, 18, 15)), (1, 2, 4, 4), 3, padding=1)


# --- against PyTorch (skipped where torch is not installed) -------------------------------
@pytest.mark.parametrize(
    "x_shape,w_shape,kwargs",
    [
        ((4, 16, 8, 8), (32, 16, 3, 3), dict(stride=2, padding=1)),
        (
            (3, 8, 9, 7),
            (8, 2, 3, 3),
            dict(stride=(1, 2), padding=(2, 1), dilation=(2, 1), groups=4),
        ),
        ((2, 6, 7, 7), (6, 1, 3, 3), dict(padding=1, groups=6)),
        ((2, 16, 8, 8), (8, 16, 1, 1), dict()),
    ],
)
def test_conv2d_matches_torch(implementation, x_shape, w_shape, kwargs):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(6)
    x_np = rng.standard_normal(x_shape).astype(np.float32)
    w_np = (rng.standard_normal(w_shape) * 0.3).astype(np.float32)
    b_np = rng.standard_normal(w_shape[0]).astype(np.float32)
    tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x_np, w_np, b_np))
    ty = torch.nn.functional.conv2d(tx, tw, tb, **kwargs)
    gy = rng.standard_normal(tuple(ty.shape)).astype(np.float32)
    ty.backward(torch.tensor(gy))
    x, w, b = (t32(a, requires_grad=True) for a in (x_np, w_np, b_np))
    y = F.conv2d(x, w, b, **kwargs)
    y.backward(gy)
    np.testing.assert_allclose(y.numpy(), ty.detach().numpy(), rtol=1e-4, atol=1e-4)
    for mine, theirs in [(x, tx), (w, tw), (b, tb)]:
        assert mine.grad.dtype == np.float32
        np.testing.assert_allclose(mine.grad, theirs.grad.numpy(), rtol=1e-4, atol=1e-3)
