"""The GPU kernels of minires/functional/cuda_kernels.py against the portable code.

Every test runs on two backends (the ``kernels`` fixture):
  "cuda"          the real CuPy kernels on a GPU (marked gpu; skipped without one);
  "cpu-emulation" the SAME kernel sources, compiled as plain C++ with g++ and called
                  through ctypes, one loop iteration per GPU thread, with NumPy arrays
                  (tests/kernel_emulation.py; skipped without a C++ compiler).
The emulation follows CuPy's kernel conventions (``i`` is the output element's index,
``raw`` arrays are indexed by hand, other arrays are broadcast and bound to element ``i``,
type placeholders take the arrays' dtypes, Python scalars are cast to them). So on a
machine without a GPU the index arithmetic, the layouts, the formulas and the Python
wrappers are all checked; what only the "cuda" run checks is CuPy itself (its compiler
and its calling conventions).

The reference is always the portable NumPy path (conv.im2col ..., the Functions'
forward/backward on NumPy arrays), on random inputs, with float32 tolerances.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minires import backend
from minires.functional import conv, conv_layouts, windows
from minires.functional import cuda_kernels as ck
from minires.functional.activation import ReLU
from minires.functional.loss import CrossEntropy
from minires.functional.norm import BatchNorm
from tests.kernel_emulation import emulated_cupy

ROOT = Path(__file__).resolve().parent.parent

# --- the backends ---------------------------------------------------------------------------------
class Backend:
    def __init__(self, name, to, back):
        self.name, self.to, self.back = name, to, back


@pytest.fixture(params=["cpu-emulation", pytest.param("cuda", marks=pytest.mark.gpu)])
def kernels(request, monkeypatch):
    if request.param == "cuda":
        if not backend.gpu_available():
            pytest.skip("no CUDA GPU with CuPy on this machine; GPU variant skipped")
        return Backend("cuda", lambda a: backend.to_device(a, "cuda"), backend.to_numpy)
    if shutil.which("g++") is None:
        pytest.skip("no g++ on this machine: the CPU emulation of the kernels needs it")
    monkeypatch.setattr(ck, "_KERNELS", {})              # every kernel built anew, emulated:
    monkeypatch.setattr(ck, "get_cupy", emulated_cupy)   # the per-geometry ones included
    return Backend("cpu-emulation", np.array, np.asarray)


def _rng(seed):
    return np.random.default_rng(seed)


# --- im2col / col2im ------------------------------------------------------------------------------
@st.composite
def conv_geometry(draw):
    """(x shape, kernel, stride, padding, dilation) where the kernel fits the padded input."""
    N, C = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    KH, KW = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    sh, sw = draw(st.integers(1, 3)), draw(st.integers(1, 2))
    ph, pw = draw(st.integers(0, 2)), draw(st.integers(0, 2))
    dh, dw = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    H = draw(st.integers(max(1, dh * (KH - 1) + 1 - 2 * ph), 7))
    W = draw(st.integers(max(1, dw * (KW - 1) + 1 - 2 * pw), 7))
    stride = draw(st.sampled_from([(sh, sw), (1, 1)]))       # stride 1: the wide grid
    return (N, C, H, W), (KH, KW), stride, (ph, pw), (dh, dw)


def _check_columns(kernels, geometry, seed):
    """The four GPU wrappers against the portable code on one geometry, all exactly equal:
    im2col copies, and col2im adds the same entries in the same order (kh, then kw) from 0.
    im2col_batch's columns are the portable ones without the wide grid's cut-off columns."""
    shape, kernel, stride, padding, dilation = geometry
    rng = _rng(seed)
    x = rng.standard_normal(shape).astype(np.float32)
    want = conv.im2col(x, kernel, stride, padding, dilation)             # (N, K, OH*OW)
    got = kernels.back(ck.im2col(kernels.to(x), kernel, stride, padding, dilation))
    np.testing.assert_array_equal(got, want)
    cols = rng.standard_normal(want.shape).astype(np.float32)
    gx_want = conv.col2im(cols, shape, kernel, stride, padding, dilation)
    gx = kernels.back(ck.col2im(kernels.to(cols), shape, kernel, stride, padding, dilation))
    np.testing.assert_array_equal(gx, gx_want)

    N, _, H, W = shape
    K = want.shape[1]
    OH, OW = windows.conv_output_size(H, W, kernel, stride, padding, dilation)
    Wq = windows.batch_grid_width(W, OW, stride, padding)                 # the CPU's grid
    assert windows.batch_grid_width(W, OW, stride, padding, FakeCupy) == OW   # the GPU's
    wide = conv_layouts.im2col_batch(x, kernel, stride, padding, dilation)   # (K, N*OH*Wq)
    batch_want = wide.reshape(K, N, OH, Wq)[..., :OW].reshape(K, N * OH * OW)
    np.testing.assert_array_equal(batch_want, want.transpose(1, 0, 2).reshape(K, -1))
    got = kernels.back(ck.im2col_batch(kernels.to(x), kernel, stride, padding, dilation))
    np.testing.assert_array_equal(got, batch_want)
    batch_cols = np.ascontiguousarray(cols.transpose(1, 0, 2)).reshape(K, -1)  # (K, N*OH*OW)
    gx = kernels.back(ck.col2im_batch(kernels.to(batch_cols), shape, kernel, stride, padding,
                                      dilation))
    np.testing.assert_array_equal(gx, gx_want)
    on_grid = np.zeros((K, N, OH, Wq), dtype=np.float32)                  # the portable one,
    on_grid[..., :OW] = cols.transpose(1, 0, 2).reshape(K, N, OH, OW)     # zeros where cut off
    np.testing.assert_array_equal(
        conv_layouts.col2im_batch(on_grid.reshape(K, -1), shape, kernel, stride, padding,
                                  dilation), gx_want)


class FakeCupy:
    """Stands for the cupy module where only ``xp is not np`` matters."""


@given(geometry=conv_geometry(), seed=st.integers(0, 2**16))
def test_im2col_and_col2im_match_the_portable_code(kernels, geometry, seed):
    _check_columns(kernels, geometry, seed)


@pytest.mark.parametrize("geometry", [
    # (x shape, kernel, stride, padding, dilation)
    ((2, 3, 8, 8), (3, 3), (1, 1), (1, 1), (1, 1)),          # ResNet's 3x3, stride 1
    ((2, 4, 8, 8), (3, 3), (2, 2), (1, 1), (1, 1)),          # ... stride 2
    ((2, 3, 7, 9), (3, 3), (1, 1), (0, 0), (1, 1)),          # no padding, non-square input
    ((3, 2, 9, 7), (3, 2), (2, 1), (1, 0), (2, 1)),          # non-square everything, dilation
    ((1, 3, 10, 11), (2, 3), (1, 2), (0, 1), (2, 2)),        # dilation 2 both ways
    ((2, 5, 6, 6), (1, 1), (2, 2), (0, 0), (1, 1)),          # 1x1, stride 2 (a projection)
    ((2, 2, 5, 5), (5, 5), (1, 1), (2, 2), (1, 1)),          # kernel as large as the input
    ((0, 3, 6, 6), (3, 3), (1, 1), (1, 1), (1, 1)),          # an empty batch
], ids=lambda g: "x{}-k{}-s{}-p{}-d{}".format(*("x".join(map(str, v)) for v in g)))
def test_the_specialised_kernels_on_chosen_geometries(kernels, geometry):
    """Each geometry compiles its own pair of kernels (the sizes as constants, cuda_kernels'
    GEOMETRY); on each, exactly the portable columns and images."""
    _check_columns(kernels, geometry, seed=sum(geometry[0]))
    if kernels.name == "cpu-emulation" and geometry[0][0]:
        tags = {ck.ColumnGeometry.of("t", geometry[0], *geometry[1:], layout).tag()
                for layout in (False, True)}
        assert set(ck.built_kernels()) == {f"{name}__{tag}" for name in ck.GEOMETRY
                                           for tag in tags}


def test_the_geometry_is_compiled_in_and_the_batch_size_is_not(kernels):
    """One kernel per geometry and layout, whatever the batch size; the 64-bit index variant
    (for arrays of 2**31 entries or more: INDEX32_LIMIT lowered here) gives the same columns."""
    x = _rng(7).standard_normal((4, 3, 6, 5)).astype(np.float32)
    for n in (4, 1, 3):
        got = kernels.back(ck.im2col_batch(kernels.to(x[:n]), 3, 2, 1))
        np.testing.assert_array_equal(
            got, conv.im2col(x[:n], 3, 2, 1).transpose(1, 0, 2).reshape(27, -1))
    if kernels.name == "cpu-emulation":
        assert ck.built_kernels() == ["im2col__cm_c3_h6_w5_k3x3_s2x2_p1x1_d1x1"]
        source = ck.geometry_kernel_spec("im2col", ck.ColumnGeometry.of(
            "t", x.shape, 3, 2, 1, 1, True))[2]
        assert "constexpr int C = 3, H = 6, W = 5, KH = 3, KW = 3, OH = 3, OW = 3;" in source
    limit = ck.INDEX32_LIMIT
    try:
        ck.INDEX32_LIMIT = 0
        _check_columns(kernels, ((2, 3, 6, 5), (3, 3), (2, 1), (1, 0), (1, 2)), seed=8)
        if kernels.name == "cpu-emulation":
            assert all(name.endswith("_i64") for name in ck.built_kernels()
                       if name.startswith(("im2col__", "col2im__")) and "_s2x1_" in name)
    finally:
        ck.INDEX32_LIMIT = limit


def test_im2col_batch_writes_into_the_given_buffer(kernels):
    x = _rng(0).standard_normal((2, 3, 5, 5)).astype(np.float32)
    want = conv_layouts.im2col_batch(x, 3, 2, 1)
    buffer = kernels.to(np.full(want.size + 7, -1.0, dtype=np.float32))
    got = ck.im2col_batch(kernels.to(x), 3, 2, 1, out=buffer)
    np.testing.assert_array_equal(kernels.back(got), want)
    np.testing.assert_array_equal(kernels.back(buffer)[:want.size], want.ravel())
    np.testing.assert_array_equal(kernels.back(buffer)[want.size:], -1.0)   # untouched


def test_im2col_writes_into_the_given_array(kernels):
    x = _rng(1).standard_normal((2, 3, 5, 5)).astype(np.float32)
    want = conv.im2col(x, 3, 1, 1)
    out = kernels.to(np.zeros(want.shape, dtype=np.float32))
    assert ck.im2col(kernels.to(x), 3, 1, 1, out=out) is out
    np.testing.assert_array_equal(kernels.back(out), want)
    strided = kernels.to(np.zeros((2, want.shape[2], want.shape[1]), dtype=np.float32))
    out = strided.transpose(0, 2, 1)                          # not contiguous: copied into
    assert ck.im2col(kernels.to(x), 3, 1, 1, out=out) is out
    np.testing.assert_array_equal(kernels.back(out), want)
    with pytest.raises(ValueError, match=r"im2col: out must have shape \(2, 27, 25\)"):
        ck.im2col(kernels.to(x), 3, 1, 1, out=kernels.to(np.zeros((2, 27, 24), np.float32)))


def test_resnet20_shapes_end_to_end_of_a_convolution(kernels):
    """The kernels on the shapes conv2d really sees (batch 4), columns -> GEMM -> back."""
    for C, H, stride in ((16, 32, 1), (16, 32, 2), (64, 8, 1)):
        _check_columns(kernels, ((4, C, H, H), (3, 3), (stride, stride), (1, 1), (1, 1)),
                       seed=C)


# --- batch norm -----------------------------------------------------------------------------------
def _bn_case(seed, shape, dtype, affine):
    rng = _rng(seed)
    C = shape[1]
    x = (rng.standard_normal(shape) * 2 + 0.5).astype(dtype)
    w = rng.uniform(0.5, 1.5, C).astype(dtype) if affine else None
    b = rng.standard_normal(C).astype(dtype) if affine else None
    gy = rng.standard_normal(shape).astype(dtype)
    rm, rv = rng.standard_normal(C).astype(dtype), rng.uniform(0.5, 2, C).astype(dtype)
    return x, w, b, gy, rm, rv


def _tol(dtype):
    return {"rtol": 2e-5, "atol": 2e-5} if dtype == np.float32 else {"rtol": 1e-10, "atol": 1e-10}


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("shape", [(4, 3, 5, 6), (6, 4), (2, 16, 8, 8)])
@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_batch_norm_forward_and_backward_match_the_portable_code(kernels, training, shape, affine,
                                                                 dtype):
    x, w, b, gy, rm, rv = _bn_case(hash((training, shape, affine)) % 1000, shape, dtype, affine)
    need = (True, affine, affine)
    fn = BatchNorm(rm.copy(), rv.copy(), training=training, momentum=0.1, eps=1e-5)
    fn.needs_input_grad = need
    y_want = fn.forward(x, w, b)
    _, mean_want, invstd_want, _ = fn.saved
    grads_want = fn.backward(gy)

    to = kernels.to
    rm_got, rv_got = to(rm), to(rv)
    dev = [None if a is None else to(a) for a in (x, w, b)]
    y, mean, invstd = ck.batch_norm_forward(*dev, rm_got, rv_got, training, 0.1, 1e-5)
    tol = _tol(dtype)
    np.testing.assert_allclose(kernels.back(y), y_want, **tol)
    np.testing.assert_allclose(kernels.back(mean), mean_want, **tol)
    np.testing.assert_allclose(kernels.back(invstd), invstd_want, **tol)
    np.testing.assert_allclose(kernels.back(rm_got), fn.running_mean, **tol)   # updated in place
    np.testing.assert_allclose(kernels.back(rv_got), fn.running_var, **tol)
    grads = ck.batch_norm_backward(to(gy), dev[0], mean, invstd, dev[1], training, need)
    for got, want, name in zip(grads, grads_want, ("dx", "dw", "db")):
        assert (got is None) == (want is None), name
        if want is not None:
            np.testing.assert_allclose(kernels.back(got), want, err_msg=name, **tol)


def test_batch_norm_training_without_running_statistics(kernels):
    x, w, b, gy, _, _ = _bn_case(1, (5, 3, 4, 4), np.float32, True)
    fn = BatchNorm(None, None, training=True)
    fn.needs_input_grad = (True, False, True)
    y_want = fn.forward(x, w, b)
    grads_want = fn.backward(gy)
    y, mean, invstd = ck.batch_norm_forward(kernels.to(x), kernels.to(w), kernels.to(b), None,
                                            None, True, 0.1, 1e-5)
    np.testing.assert_allclose(kernels.back(y), y_want, rtol=2e-5, atol=2e-5)
    gx, gw, gb = ck.batch_norm_backward(kernels.to(gy), kernels.to(x), mean, invstd,
                                        kernels.to(w), True, (True, False, True))
    assert gw is None
    np.testing.assert_allclose(kernels.back(gx), grads_want[0], rtol=2e-5, atol=2e-5)
    np.testing.assert_allclose(kernels.back(gb), grads_want[2], rtol=2e-5, atol=2e-5)


# --- relu -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_relu_backward_matches_the_portable_code(kernels, dtype):
    x = _rng(2).standard_normal((3, 4, 5, 6)).astype(dtype)
    x[0, 0, 0, :3] = (0.0, -0.0, np.nan)                     # the edge cases, handled alike
    gy = _rng(3).standard_normal(x.shape).astype(dtype)
    gy[0, 0, 1, 0] = np.nan                                  # NaN gradients stay NaN, as on the CPU
    fn = ReLU()
    fn.needs_input_grad = (True,)             # as Function.__call__ sets it for x requiring grad
    y = fn.forward(x)
    (gx_want,) = fn.backward(gy)
    gx = ck.relu_backward(kernels.to(gy), kernels.to(y))
    assert kernels.back(gx).dtype == dtype
    np.testing.assert_array_equal(kernels.back(gx), gx_want)


# --- cross-entropy --------------------------------------------------------------------------------
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cross_entropy_backward_matches_the_portable_code(kernels, reduction, label_smoothing,
                                                          dtype):
    rng = _rng(4)
    N, K = 7, 10
    logits = (rng.standard_normal((N, K)) * 3).astype(dtype)
    target = rng.integers(0, K, N)
    gy = (rng.standard_normal(N) if reduction == "none" else np.asarray(rng.uniform(0.5, 2)))
    gy = gy.astype(dtype)
    fn = CrossEntropy(target, label_smoothing, reduction)
    fn.forward(logits)
    logp, _ = fn.saved
    (want,) = fn.backward(gy)
    got = ck.cross_entropy_backward(kernels.to(logp), kernels.to(target), kernels.to(gy),
                                    label_smoothing, reduction)
    assert kernels.back(got).dtype == dtype
    np.testing.assert_allclose(kernels.back(got), want, **_tol(dtype))


# --- the training loop's sums --------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_epoch_sums_add_up_as_python_adds_the_numbers_read_back(kernels, dtype):
    """train/loop.py's EpochTotals on a GPU: the sums equal reading each step's loss and count
    back and adding them in Python (float(loss) * examples, in double), bit for bit."""
    rng = _rng(9)
    losses = rng.uniform(0.01, 3, 25).astype(dtype)
    counts = rng.integers(0, 129, 25)
    examples = [128] * 24 + [80]
    sums = kernels.to(np.array([1.2345678901, 7.0]))       # a resumed epoch's sums so far
    loss_sum, correct = 1.2345678901, 7
    for loss, count, n in zip(losses, counts, examples):
        ck.add_to_epoch_sums(sums, kernels.to(np.asarray(loss)), kernels.to(np.asarray(count)), n)
        loss_sum += float(loss) * n
        correct += int(count)
    got = kernels.back(sums)
    assert got.dtype == np.float64
    assert (got[0], got[1]) == (loss_sum, correct)


# --- SGD ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("settings", [
    {"momentum": 0.0, "weight_decay": 0.0}, {"momentum": 0.0, "weight_decay": 5e-4},
    {"momentum": 0.9, "weight_decay": 5e-4, "nesterov": True},
    {"momentum": 0.9, "weight_decay": 0.0, "nesterov": True},
    {"momentum": 0.9, "weight_decay": 1e-4}, {"momentum": 0.9, "dampening": 0.3}])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sgd_update_is_the_portable_update_bit_for_bit(kernels, settings, dtype):
    """Three steps of optim.SGD, portable and fused (first step: the buffer is created):
    the same weights and momentum buffers to the last bit (the kernel avoids fused
    multiply-adds and rounds in the CPU's order)."""
    from minires.optim import SGD
    rng = _rng(5)
    start = rng.standard_normal((4, 3, 3, 3)).astype(dtype)
    grads = [rng.standard_normal(start.shape).astype(dtype) for _ in range(3)]
    want = SimpleNamespace(data=start.copy(), grad=None)
    opt = SGD([want], lr=0.1, **settings)
    got = start.copy()
    buf = np.empty_like(start) if settings["momentum"] else None
    got_dev, buf_dev = kernels.to(got), (kernels.to(buf) if buf is not None else None)
    for step, grad in enumerate(grads):
        want.grad = grad
        opt.step()
        ck.sgd_update(got_dev, kernels.to(grad), buf_dev, 0.1, settings["momentum"],
                      settings.get("dampening", 0.0), settings.get("weight_decay", 0.0),
                      settings.get("nesterov", False), first=step == 0)
        np.testing.assert_array_equal(kernels.back(got_dev), want.data)
        if buf is not None:
            np.testing.assert_array_equal(kernels.back(buf_dev),
                                          opt.state[id(want)]["momentum_buffer"])


def test_sgd_on_the_device_uses_the_fused_kernel(kernels, monkeypatch):
    """optim.SGD picks sgd_update for a CuPy parameter, and its result is the portable one
    (benchmarks/launch_count.py checks the same without a GPU, through a whole step)."""
    if kernels.name != "cuda":
        pytest.skip("needs CuPy arrays: the GPU variant checks this")
    from minires.optim import SGD
    rng = _rng(6)
    start, grad = rng.standard_normal((5, 7)), rng.standard_normal((5, 7))
    cpu = SimpleNamespace(data=start.copy(), grad=grad)
    dev = SimpleNamespace(data=kernels.to(start), grad=kernels.to(grad))
    opts = [SGD([p], lr=0.05, momentum=0.9, weight_decay=1e-3, nesterov=True) for p in (cpu, dev)]
    calls = []
    real = ck.sgd_update
    monkeypatch.setattr(ck, "sgd_update", lambda *a, **k: calls.append(1) or real(*a, **k))
    for _ in range(2):
        for opt in opts:
            opt.step()
    assert len(calls) == 2
    np.testing.assert_array_equal(kernels.back(dev.data), cpu.data)


# --- no GPU needed --------------------------------------------------------------------------------
def test_module_imports_without_cupy_and_builds_nothing():
    code = ("import sys; import minires.functional.cuda_kernels as k; "
            "print('cupy' in sys.modules, k.built_kernels())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=ROOT)
    assert out.stdout.split() == ["False", "[]"]


def test_every_kernel_is_tested_here():
    source = Path(__file__).read_text()
    every = {*ck.ELEMENTWISE, *ck.REDUCTION, *ck.GEOMETRY}
    used = {name for name in every
            if any(f'"{name}"' in line for line in
                   Path(ck.__file__).read_text().splitlines() if "_kernel(" in line)}
    assert used == every, "a kernel source no wrapper uses"
    for wrapper in ("im2col", "col2im", "im2col_batch", "col2im_batch", "batch_norm_forward",
                    "batch_norm_backward", "relu_backward",
                    "cross_entropy_backward", "sgd_update", "add_to_epoch_sums"):
        assert f"ck.{wrapper}(" in source, wrapper


@pytest.mark.slow
def test_gpu_check_dry_run_on_the_cpu(tmp_path):
    """benchmarks/gpu_check.py --dry-run: every stage in a tiny CPU configuration."""
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--dry-run",
                          "--work-dir", str(tmp_path)],
                         capture_output=True, text=True, timeout=120, cwd=ROOT, check=False)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    summary = out.stdout[out.stdout.rindex("SUMMARY"):]
    for stage in ("gpu tests", "step time", "data", "training"):
        assert stage in summary, summary
    assert "FAILED" not in summary, summary
