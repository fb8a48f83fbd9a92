"""The GPU kernels of minires/functional/cuda_kernels.py against the portable code.

Every test runs on two backends (the ``kernels`` fixture):
  "cuda"          the real CuPy kernels on a GPU (marked gpu; skipped without one);
  "cpu-emulation" the SAME kernel sources, compiled as plain C++ with g++ and called
                  through ctypes, one loop iteration per GPU thread, with NumPy arrays
                  (skipped without a C++ compiler).
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

import ctypes
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

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

ROOT = Path(__file__).resolve().parent.parent

# --- the CPU emulation of CuPy's ElementwiseKernel / ReductionKernel ------------------------------
_C_TYPES = {"float32": ("float", ctypes.c_float), "float64": ("double", ctypes.c_double),
            "int32": ("int", ctypes.c_int), "int64": ("long long", ctypes.c_longlong),
            "bool": ("bool", ctypes.c_bool), "uint8": ("unsigned char", ctypes.c_ubyte)}
_BUILD_DIR = Path(tempfile.gettempdir()) / f"minires-kernel-emulation-{os.getuid()}"


def _parse(params):
    """'raw T x, int32 N' -> [(raw, type, name), ...]."""
    out = []
    for item in params.split(","):
        words = item.split()
        raw = words[0] == "raw"
        if raw:
            words = words[1:]
        assert len(words) == 2, f"cannot parse kernel parameter {item!r}"
        out.append((raw, words[0], words[1]))
    return out


class EmulatedElementwiseKernel:
    """cupy.ElementwiseKernel's calling convention on NumPy arrays, the body run by g++ code."""

    def __init__(self, in_params, out_params, operation, name="kernel"):
        self.ins, self.outs = _parse(in_params), _parse(out_params)
        self.operation, self.name = operation, name
        self._built = {}

    def _types(self, args):
        """Placeholder -> numpy dtype name, from the array arguments (inputs and outputs)."""
        types = {}
        for (_, typ, name), a in zip(self.ins + self.outs, args):
            if typ in _C_TYPES or not isinstance(a, np.ndarray):
                continue
            if types.setdefault(typ, a.dtype.name) != a.dtype.name:
                raise TypeError(f"{self.name}: {name} has dtype {a.dtype}, but {typ} is "
                                f"{types[typ]} from another argument")
        return types

    def _build(self, types, scalars):
        """The kernel body inside a C++ loop over i, compiled once per dtypes (cached)."""
        key = (tuple(sorted(types.items())), scalars)
        if key in self._built:
            return self._built[key]
        params, bind, argtypes = ["ptrdiff_t _size"], [], [ctypes.c_ssize_t]
        for is_out, specs in ((False, self.ins), (True, self.outs)):
            for raw, typ, name in specs:
                ctype, scalar_type = _C_TYPES[types.get(typ, typ)]
                if name in scalars:                     # a scalar argument, passed by value
                    params.append(f"{ctype} {name}")
                    argtypes.append(scalar_type)
                    continue
                argtypes.append(ctypes.c_void_p)
                const = "" if is_out else "const "
                if raw:                                 # indexed by hand in the body
                    params.append(f"{const}{ctype}* {name}")
                else:                                   # bound to element i
                    params.append(f"{const}{ctype}* _p_{name}")
                    bind.append(f"{const}{ctype}{'&' if is_out else ''} {name} = _p_{name}[i];")
        typedefs = "".join(f"typedef {_C_TYPES[v][0]} {k};\n" for k, v in types.items())
        source = (f"#include <cmath>\n#include <cstddef>\nusing std::exp; using std::sqrt;\n"
                  f"{typedefs}extern \"C\" void emulated({', '.join(params)}) {{\n"
                  f"  for (ptrdiff_t i = 0; i < _size; ++i) {{\n    {' '.join(bind)}\n"
                  f"    {{ {self.operation} }}\n  }}\n}}\n")
        digest = hashlib.sha1(source.encode()).hexdigest()[:16]
        _BUILD_DIR.mkdir(exist_ok=True)
        lib = _BUILD_DIR / f"{self.name}-{digest}.so"
        if not lib.exists():
            src = lib.with_name(lib.stem + f".{os.getpid()}.cpp")
            src.write_text(source)
            tmp = lib.with_name(lib.name + f".{os.getpid()}.tmp")
            subprocess.run(["g++", "-O1", "-shared", "-fPIC", "-o", str(tmp), str(src)],
                           check=True, capture_output=True, text=True)
            os.replace(tmp, lib)
            src.unlink()
        function = ctypes.CDLL(str(lib)).emulated
        function.argtypes, function.restype = argtypes, None
        self._built[key] = function
        return function

    def __call__(self, *args):
        nin = len(self.ins)
        assert len(args) in (nin, nin + len(self.outs)), f"{self.name}: wrong number of arguments"
        scalars = frozenset(name for (raw, _, name), a in zip(self.ins, args)
                            if not raw and not isinstance(a, np.ndarray))
        types = self._types(args)
        arrays = [a for (raw, _, _), a in zip(self.ins + self.outs, args)
                  if not raw and isinstance(a, np.ndarray)]
        shape = np.broadcast_shapes(*(a.shape for a in arrays))
        outs = list(args[nin:]) or [
            np.empty(shape, dtype=types.get(typ, typ)) for _, typ, _ in self.outs]
        call, keep = [int(np.prod(shape))], []
        for (raw, typ, name), a in zip(self.ins, args[:nin]):
            if name in scalars:
                call.append(a)
                continue
            a = np.ascontiguousarray(a if raw else np.broadcast_to(a, shape))
            keep.append(a)
            call.append(a.ctypes.data)
        results = []
        for (raw, _, _), out in zip(self.outs, outs):
            work = out if (raw or out.shape == shape) and out.flags.c_contiguous else \
                np.empty(shape, dtype=out.dtype)
            results.append((out, work))
            call.append(work.ctypes.data)
        self._build(types, scalars)(*call)
        for out, work in results:
            if work is not out:
                out[...] = work
        return outs[0] if len(outs) == 1 else tuple(outs)


class EmulatedReductionKernel:
    """cupy.ReductionKernel for sums: the map expression emulated, the sum by NumPy."""

    def __init__(self, in_params, out_params, map_expr, reduce_expr, post_map_expr, identity,
                 name="reduce"):
        (_, out_type, out_name), = _parse(out_params)
        # what this emulation supports -- and all that cuda_kernels uses
        assert (reduce_expr, identity, post_map_expr) == ("a + b", "0", f"{out_name} = a")
        self.map = EmulatedElementwiseKernel(in_params, f"{out_type} mapped",
                                             f"mapped = ({map_expr});", name)

    def __call__(self, *args, axis=None):
        return self.map(*args).sum(axis=axis)


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
    for name, spec in ck.ELEMENTWISE.items():
        monkeypatch.setitem(ck._KERNELS, name, EmulatedElementwiseKernel(*spec, name=name))
    for name, spec in ck.REDUCTION.items():
        monkeypatch.setitem(ck._KERNELS, name, EmulatedReductionKernel(*spec, name=name))
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


@given(geometry=conv_geometry(), seed=st.integers(0, 2**16))
def test_im2col_and_col2im_match_the_portable_code(kernels, geometry, seed):
    shape, kernel, stride, padding, dilation = geometry
    x = _rng(seed).standard_normal(shape).astype(np.float32)
    want = conv.im2col(x, kernel, stride, padding, dilation)
    got = kernels.back(ck.im2col(kernels.to(x), kernel, stride, padding, dilation))
    np.testing.assert_array_equal(got, want)                 # a copy: exactly equal
    cols = _rng(seed + 1).standard_normal(want.shape).astype(np.float32)
    want = conv.col2im(cols, shape, kernel, stride, padding, dilation)
    got = kernels.back(ck.col2im(kernels.to(cols), shape, kernel, stride, padding, dilation))
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


@given(geometry=conv_geometry(), seed=st.integers(0, 2**16))
def test_batch_layout_matches_the_portable_code_wide_grid_included(kernels, geometry, seed):
    shape, kernel, stride, padding, dilation = geometry
    x = _rng(seed).standard_normal(shape).astype(np.float32)
    want = conv_layouts.im2col_batch(x, kernel, stride, padding, dilation)
    got = kernels.back(ck.im2col_batch(kernels.to(x), kernel, stride, padding, dilation))
    np.testing.assert_array_equal(got, want)                 # the wide grid's extra columns too
    N, _, H, W = shape
    OH, OW = windows.conv_output_size(H, W, kernel, stride, padding, dilation)
    Wq = windows.batch_grid_width(W, OW, stride, padding)
    cols = _rng(seed + 1).standard_normal(want.shape).astype(np.float32)
    cols.reshape(-1, N, OH, Wq)[..., OW:] = 0                 # as conv2d's backward leaves them
    want = conv_layouts.col2im_batch(cols, shape, kernel, stride, padding, dilation)
    got = kernels.back(ck.col2im_batch(kernels.to(cols), shape, kernel, stride, padding,
                                       dilation))
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_im2col_batch_writes_into_the_given_buffer(kernels):
    x = _rng(0).standard_normal((2, 3, 5, 5)).astype(np.float32)
    want = conv_layouts.im2col_batch(x, 3, 2, 1)
    buffer = kernels.to(np.full(want.size + 7, -1.0, dtype=np.float32))
    got = ck.im2col_batch(kernels.to(x), 3, 2, 1, out=buffer)
    np.testing.assert_array_equal(kernels.back(got), want)
    np.testing.assert_array_equal(kernels.back(buffer)[:want.size], want.ravel())
    np.testing.assert_array_equal(kernels.back(buffer)[want.size:], -1.0)   # untouched


def test_resnet20_shapes_end_to_end_of_a_convolution(kernels):
    """The kernels on the shapes conv2d really sees (batch 4), columns -> GEMM -> back."""
    for C, H, stride in ((16, 32, 1), (16, 32, 2), (64, 8, 1)):
        x = _rng(C).standard_normal((4, C, H, H)).astype(np.float32)
        want = conv_layouts.im2col_batch(x, 3, stride, 1)
        got = kernels.back(ck.im2col_batch(kernels.to(x), 3, stride, 1))
        np.testing.assert_array_equal(got, want)
        OH = (H + 2 - 3) // stride + 1
        Wq = windows.batch_grid_width(H, OH, (stride, stride), (1, 1))
        cols = _rng(C + 1).standard_normal(want.shape).astype(np.float32)
        cols.reshape(-1, 4, OH, Wq)[..., OH:] = 0
        np.testing.assert_allclose(
            kernels.back(ck.col2im_batch(kernels.to(cols), x.shape, 3, stride, 1)),
            conv_layouts.col2im_batch(cols, x.shape, 3, stride, 1), rtol=1e-5, atol=1e-5)


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
def test_relu_forward_and_backward_match_the_portable_code(kernels, dtype):
    x = _rng(2).standard_normal((3, 4, 5, 6)).astype(dtype)
    x[0, 0, 0, :3] = (0.0, -0.0, np.nan)                     # the edge cases, handled alike
    gy = _rng(3).standard_normal(x.shape).astype(dtype)
    fn = ReLU()
    fn.needs_input_grad = (True,)             # as Function.__call__ sets it for x requiring grad
    y_want = fn.forward(x)
    (mask_want,) = fn.saved
    (gx_want,) = fn.backward(gy)
    y, mask = ck.relu_forward(kernels.to(x))
    np.testing.assert_array_equal(kernels.back(y), y_want)
    np.testing.assert_array_equal(kernels.back(mask), mask_want)
    assert kernels.back(mask).dtype == np.bool_ and kernels.back(y).dtype == dtype
    np.testing.assert_array_equal(kernels.back(ck.relu_backward(kernels.to(gy), mask)), gx_want)


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


# --- no GPU needed --------------------------------------------------------------------------------
def test_module_imports_without_cupy_and_builds_nothing():
    code = ("import sys; import minires.functional.cuda_kernels as k; "
            "print('cupy' in sys.modules, k.built_kernels())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=ROOT)
    assert out.stdout.split() == ["False", "[]"]


def test_every_kernel_is_tested_here():
    source = Path(__file__).read_text()
    used = {name for name in (*ck.ELEMENTWISE, *ck.REDUCTION)
            if any(f'"{name}"' in line for line in
                   Path(ck.__file__).read_text().splitlines() if "_kernel(" in line)}
    assert used == set(ck.ELEMENTWISE) | set(ck.REDUCTION), "a kernel source no wrapper uses"
    for wrapper in ("im2col", "col2im", "im2col_batch", "col2im_batch", "batch_norm_forward",
                    "batch_norm_backward", "relu_forward", "relu_backward",
                    "cross_entropy_backward"):
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
