"""batch_norm (minires/functional/norm.py), training and eval mode.

- backward (x, weight, bias) against finite differences in float64 on every element,
  through the random-projection loss (a plain sum() would hide a wrong backward: the
  gradient of sum(batch_norm(x)) with respect to x is zero);
- forward against a NumPy formula; (N, C, H, W) and (N, C) inputs; with and without affine;
- running statistics over several steps against a NumPy re-implementation of PyTorch's
  update (momentum, unbiased variance), updated IN PLACE, for raw arrays and for tensors;
- float32 end to end; bad input errors that name batch_norm; PyTorch comparison if installed.
"""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import minires as mr
import minires.functional as F
from minires.backend import to_numpy
from tests.helpers import assert_forward, t32, t64


@st.composite
def bn_cases(draw):
    rank = draw(st.sampled_from([2, 4]))
    C = draw(st.integers(1, 3))
    if rank == 4:
        shape = (draw(st.integers(1, 3)), C, draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    else:
        shape = (draw(st.integers(2, 5)), C)
    if shape[0] * int(np.prod(shape[2:])) < 2:  # training needs 2+ values per channel
        shape = (2,) + shape[1:]
    return dict(
        shape=shape,
        affine=draw(st.booleans()),
        momentum=draw(st.sampled_from([0.1, 0.0, 1.0, 0.37])),
        eps=draw(st.sampled_from([1e-5, 1e-3])),
        seed=draw(st.integers(0, 2**31)),
        # the mean relative to the spread: 1 takes the one-pass statistics, 30 the path that
        # centres x first (mean^2 > 8 var, where E[x^2] - mean^2 would cancel)
        offset=draw(st.sampled_from([1.0, 30.0])),
    )


def inputs(case, device, make=t64):
    rng = np.random.default_rng(case["seed"])
    C = case["shape"][1]
    x = make(rng.standard_normal(case["shape"]) * 2 + case["offset"], device)
    w = make(rng.standard_normal(C), device) if case["affine"] else None
    b = make(rng.standard_normal(C), device) if case["affine"] else None
    running = (rng.standard_normal(C), rng.random(C) + 0.5)
    return x, w, b, running


def reference(x, running_mean, running_var, w, b, training, momentum, eps):
    """NumPy float64 batch norm and PyTorch's running-statistics update: (y, new_mean, new_var)."""
    axes = (0,) + tuple(range(2, x.ndim))
    shape = (1, -1) + (1,) * (x.ndim - 2)
    M = x.size // x.shape[1]
    if training:
        mean, var = x.mean(axis=axes), x.var(axis=axes)
        new_mean = (1 - momentum) * running_mean + momentum * mean
        new_var = (1 - momentum) * running_var + momentum * var * M / (M - 1)
    else:
        mean, var = running_mean, running_var
        new_mean, new_var = running_mean, running_var
    y = (x - mean.reshape(shape)) / np.sqrt(var.reshape(shape) + eps)
    if w is not None:
        y = y * w.reshape(shape) + b.reshape(shape)
    return y, new_mean, new_var


@pytest.mark.parametrize("training", [True, False])
@given(case=bn_cases())
def test_batch_norm_backward(device, training, case):
    x, w, b, (rm, rv) = inputs(case, device)
    rm, rv = (mr.tensor(a, dtype=np.float64, device=device).data for a in (rm, rv))

    def fn(*t):
        return F.batch_norm(
            t[0],
            rm,
            rv,
            *t[1:],
            training=training,
            momentum=case["momentum"],
            eps=case["eps"],
        )

    assert mr.gradcheck(fn, *((x,) if w is None else (x, w, b)))


@pytest.mark.parametrize("training", [True, False])
@given(case=bn_cases())
def test_batch_norm_forward(device, training, case):
    x, w, b, (rm, rv) = inputs(case, device, make=t32)
    rm32, rv32 = (mr.tensor(a, dtype=np.float32, device=device).data for a in (rm, rv))
    settings = dict(training=training, momentum=case["momentum"], eps=case["eps"])
    y = F.batch_norm(x, rm32, rv32, w, b, **settings)
    np64 = [None if t is None else t.numpy().astype(np.float64) for t in (x, w, b)]
    ref_rm, ref_rv = (
        rm.astype(np.float32).astype(np.float64),
        rv.astype(np.float32).astype(np.float64),
    )
    expected, new_mean, new_var = reference(np64[0], ref_rm, ref_rv, *np64[1:], **settings)
    assert_forward(y, expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(to_numpy(rm32), new_mean, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(to_numpy(rv32), new_var, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_float32_with_a_mean_far_above_the_spread(device, training):
    """mean 1000, std 1: E[x^2] - mean^2 would lose every digit of the variance in float32
    (1e6 +- 1 at 7 digits). The forward must notice and centre x first; y, the running
    statistics and the gradients then match a float64 computation."""
    rng = np.random.default_rng(0)
    x64 = rng.standard_normal((8, 3, 5, 5)) + 1000.0
    w64, b64, gy64 = rng.standard_normal(3), rng.standard_normal(3), rng.standard_normal(x64.shape)
    out = {}
    for dtype in (np.float32, np.float64):
        x, w, b = (mr.tensor(a, dtype=dtype, device=device, requires_grad=True)
                   for a in (x64, w64, b64))
        rm = mr.tensor(np.full(3, 1000.0), dtype=dtype, device=device).data
        rv = mr.tensor(np.ones(3), dtype=dtype, device=device).data
        y = F.batch_norm(x, rm, rv, w, b, training=training, momentum=0.5)
        (y * mr.tensor(gy64, dtype=dtype, device=device)).sum().backward()
        out[dtype] = [to_numpy(a).astype(np.float64) for a in (y.data, x.grad.data, w.grad.data,
                                                               b.grad.data, rm, rv)]
    for name, a, e in zip(("y", "dx", "dw", "db", "running_mean", "running_var"),
                          out[np.float32], out[np.float64]):
        np.testing.assert_allclose(a, e, rtol=2e-3, atol=2e-3, err_msg=name)


@pytest.mark.parametrize("as_tensor", [False, True])
@pytest.mark.parametrize("shape", [(8, 3, 4, 4), (6, 5)])
def test_running_statistics_follow_pytorch_formula(device, as_tensor, shape):
    """Five training steps, then eval: the running statistics are updated in place, in the
    very arrays passed in (or the tensors' arrays), exactly by PyTorch's formula."""
    rng = np.random.default_rng(12)
    C = shape[1]
    rm_np, rv_np = np.zeros(C, np.float32), np.ones(C, np.float32)
    rm, rv = t32(rm_np, device), t32(rv_np, device)
    arrays = (rm.data, rv.data)
    if not as_tensor:
        rm, rv = arrays
    ref_mean, ref_var = rm_np.astype(np.float64), rv_np.astype(np.float64)
    for step in range(5):
        x_np = (rng.standard_normal(shape) * (step + 1) + step).astype(np.float32)
        F.batch_norm(t32(x_np, device), rm, rv, training=True, momentum=0.2)
        _, ref_mean, ref_var = reference(
            x_np.astype(np.float64), ref_mean, ref_var, None, None, True, 0.2, 1e-5
        )
    assert (rm.data if as_tensor else rm) is arrays[0] and (rv.data if as_tensor else rv) is arrays[
        1
    ]
    assert arrays[0].dtype == arrays[1].dtype == np.float32
    np.testing.assert_allclose(to_numpy(arrays[0]), ref_mean, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(to_numpy(arrays[1]), ref_var, rtol=1e-5, atol=1e-5)
    # eval mode normalises with them and leaves them alone
    x_np = rng.standard_normal(shape).astype(np.float32)
    y = F.batch_norm(t32(x_np, device), rm, rv, training=False)
    expected, _, _ = reference(
        x_np.astype(np.float64), ref_mean, ref_var, None, None, False, 0.2, 1e-5
    )
    assert_forward(y, expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(to_numpy(arrays[0]), ref_mean, rtol=1e-5, atol=1e-5)


def test_training_without_running_statistics(device):
    x_np = np.random.default_rng(13).standard_normal((4, 3, 2, 2))
    x = t64(x_np, device)
    assert mr.gradcheck(lambda t: F.batch_norm(t, None, None, training=True), x)
    expected, _, _ = reference(x_np, np.zeros(3), np.ones(3), None, None, True, 0.1, 1e-5)
    assert_forward(
        F.batch_norm(x, None, None, training=True), expected, dtype=np.float64, rtol=1e-10
    )


def test_batch_norm_output_is_normalised():
    """Training mode: every channel of the output has mean b and standard deviation |w|."""
    rng = np.random.default_rng(14)
    x = t32(rng.standard_normal((16, 3, 5, 5)) * 7 + 3)
    w, b = t32([2.0, -1.0, 0.5]), t32([0.0, 1.0, -2.0])
    y = F.batch_norm(x, None, None, w, b, training=True).numpy()
    np.testing.assert_allclose(y.mean(axis=(0, 2, 3)), [0.0, 1.0, -2.0], atol=1e-5)
    np.testing.assert_allclose(y.std(axis=(0, 2, 3)), [2.0, 1.0, 0.5], rtol=1e-3)


@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_keeps_float32(device, training):
    rng = np.random.default_rng(15)
    x = t32(rng.standard_normal((4, 3, 5, 5)), device, requires_grad=True)
    w, b = (t32(rng.standard_normal(3), device, requires_grad=True) for _ in range(2))
    rm, rv = t32(np.zeros(3), device).data, t32(np.ones(3), device).data
    y = F.batch_norm(x, rm, rv, w, b, training=training)
    (y * y).sum().backward()
    assert y.dtype == np.float32 and rm.dtype == rv.dtype == np.float32
    assert x.grad.dtype == w.grad.dtype == b.grad.dtype == np.float32


def test_sum_of_batch_norm_has_zero_gradient():
    """Why gradcheck projects on a random direction: d sum(bn(x)) / dx is zero (the output
    of each channel always sums to M * b), so a plain sum() could not catch a bad dx."""
    x = t64(np.random.default_rng(16).standard_normal((5, 2, 3, 3)))
    F.batch_norm(x, None, None, training=True).sum().backward()
    np.testing.assert_allclose(x.grad, 0.0, atol=1e-12)


# --- bad input --------------------------------------------------------------------------
def _bn(x_shape=(4, 3, 2, 2), rm=3, rv=3, w=None, b=None, **kw):
    x = t32(np.ones(x_shape))
    mk = lambda n: None if n is None else t32(np.ones(n))  # noqa: E731
    return F.batch_norm(x, mk(rm), mk(rv), mk(w), mk(b), **kw)


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        (
            dict(rm=4, rv=4),
            ValueError,
            r"batch_norm: running_mean must have shape \(3,\) for an input with 3 channels "
            r"\(shape \(4, 3, 2, 2\)\), got \(4,\)",
        ),
        (dict(rv=2), ValueError, r"batch_norm: running_var must have shape \(3,\)"),
        (dict(w=2, b=3), ValueError, r"batch_norm: weight must have shape \(3,\)"),
        (dict(w=3, b=5), ValueError, r"batch_norm: bias must have shape \(3,\)"),
        (
            dict(rm=None, rv=None),
            ValueError,
            r"batch_norm: eval mode .* running_mean and running_var",
        ),
        (dict(rm=3, rv=None, training=True), ValueError, r"batch_norm: give both running_mean"),
        (
            dict(x_shape=(1, 3), training=True),
            ValueError,
            r"batch_norm: training mode needs more than one value per channel",
        ),
        (dict(x_shape=(3,)), ValueError, r"batch_norm: input must be \(N, C\) or \(N, C, H, W\)"),
        (dict(momentum=1.5), ValueError, r"batch_norm: momentum must be a number in \[0, 1\]"),
        (dict(momentum=None), ValueError, r"batch_norm: momentum must be a number"),
        (dict(eps=0), ValueError, r"batch_norm: eps must be a positive number"),
    ],
)
def test_batch_norm_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        _bn(**kwargs)


# --- against PyTorch (skipped where torch is not installed) -------------------------------
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("shape", [(16, 8, 6, 6), (10, 4)])
def test_batch_norm_matches_torch(training, shape):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(17)
    C = shape[1]
    x_np = (rng.standard_normal(shape) * 3 + 2).astype(np.float32)
    w_np, b_np = (
        rng.standard_normal(C).astype(np.float32),
        rng.standard_normal(C).astype(np.float32),
    )
    rm_np, rv_np = (
        rng.standard_normal(C).astype(np.float32),
        (rng.random(C) + 0.5).astype(np.float32),
    )
    tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x_np, w_np, b_np))
    trm, trv = torch.tensor(rm_np), torch.tensor(rv_np)
    ty = torch.nn.functional.batch_norm(tx, trm, trv, tw, tb, training=training, momentum=0.3)
    gy = rng.standard_normal(shape).astype(np.float32)
    ty.backward(torch.tensor(gy))
    x, w, b = (t32(a, requires_grad=True) for a in (x_np, w_np, b_np))
    rm, rv = rm_np.copy(), rv_np.copy()
    y = F.batch_norm(x, rm, rv, w, b, training=training, momentum=0.3)
    y.backward(gy)
    np.testing.assert_allclose(y.numpy(), ty.detach().numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(rm, trm.numpy(), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(rv, trv.numpy(), rtol=1e-6, atol=1e-6)
    for mine, theirs in [(x, tx), (w, tw), (b, tb)]:
        np.testing.assert_allclose(mine.grad, theirs.grad.numpy(), rtol=1e-4, atol=1e-4)


# --- the passes in blocks of images on the pool (parallel.pass_chunks) -------------------------
def _bn_run(x_np, training, parts=(True, True, True)):
    """y, dx, dw, db and the running statistics of one float32 batch_norm call."""
    rng = np.random.default_rng(4)
    C = x_np.shape[1]
    x = t32(x_np, requires_grad=parts[0])
    w = t32(rng.standard_normal(C), requires_grad=parts[1])
    b = t32(rng.standard_normal(C), requires_grad=parts[2])
    rm, rv = rng.standard_normal(C).astype(np.float32), (rng.random(C) + 0.5).astype(np.float32)
    y = F.batch_norm(x, rm, rv, w, b, training=training, momentum=0.3)
    y.backward(np.cos(np.arange(y.numel(), dtype=np.float32)).reshape(y.shape))
    return [y.numpy(), rm, rv] + [None if t.grad is None else to_numpy(t.grad) for t in (x, w, b)]


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("offset", [0.5, 40.0])        # 40: the path that centres x first
@pytest.mark.parametrize("parts", [(True, True, True), (True, False, False), (False, True, True)])
def test_batch_norm_in_blocks_of_images_equals_one_block_and_ignores_threads(training, offset,
                                                                            parts):
    """Many uneven blocks (the last one shorter) give what one block gives, to the rounding of
    the reordered per-channel sums; 2 threads give exactly what 1 thread gives."""
    from minires.functional import parallel
    x_np = np.random.default_rng(3).standard_normal((7, 3, 5, 4)) * 2 + offset
    before_threads = parallel.num_threads()
    previous = parallel.set_pass_chunk_bytes(2 * x_np[0].size * 4)         # 2 images a block
    try:
        parallel.set_num_threads(1)
        serial = _bn_run(x_np, training, parts)
        parallel.set_num_threads(2)
        threaded = _bn_run(x_np, training, parts)
    finally:
        parallel.set_pass_chunk_bytes(previous)
        parallel.set_num_threads(before_threads)
    one_block = _bn_run(x_np, training, parts)
    assert parallel.pass_chunks(x_np.astype(np.float32)) == [(0, 7)]
    for a, b, c in zip(serial, threaded, one_block):
        if c is None:
            assert a is None and b is None
            continue
        np.testing.assert_array_equal(a, b)
        np.testing.assert_allclose(a, c, rtol=1e-5, atol=1e-5)


def test_set_pass_chunk_bytes_returns_the_previous_value_and_rejects_bad_values():
    from minires.functional import parallel
    default = parallel.set_pass_chunk_bytes(1000)
    try:
        assert parallel.pass_chunks(np.zeros((5, 250), np.float32)) == [(0, 1), (1, 2), (2, 3),
                                                                         (3, 4), (4, 5)]
    finally:
        assert parallel.set_pass_chunk_bytes(default) == 1000
    for bad in (0, -1, 1.5, True, "1"):
        with pytest.raises(ValueError, match="set_pass_chunk_bytes: n must be a positive int"):
            parallel.set_pass_chunk_bytes(bad)
