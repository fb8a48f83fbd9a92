"""Every CUDA kernel of minires/functional/cuda_kernels.py compiles, for sm_80 and sm_90, in
float32 and float64 -- on a machine without a GPU.

NVRTC, the CUDA compiler CuPy uses at run time, is a library: it needs neither a GPU nor the
driver (libcuda), only CuPy and the CUDA toolkit's NVRTC and headers
(``pip install "cupy-cuda13x[ctk]"``, or minires' ``cuda12`` / ``cuda13`` extras). Where
those are missing the test is skipped, saying which one.

How the sources are made. CuPy writes an ElementwiseKernel's or ReductionKernel's CUDA
source only when it is called on device arrays, from what it sees then: the dtypes (``T``
and friends become float or double), which arguments are arrays and which are host scalars,
and each array's dimensions after broadcasting and merging contiguous axes. So the test
first runs every wrapper of cuda_kernels.py on NumPy arrays with recording stand-ins in
place of the kernels, which note each call's arguments; then, for each recorded call, it
builds the argument descriptions CuPy would build (``_ArgInfo``; the merge of axes follows
``_reduced_view_core``), asks CuPy's own code generators for the source
(``_get_elementwise_kernel_code``, ``_ReductionKernel_get_cached_function_code``), adds the
headers and options CuPy compiles with (``assemble_cupy_compiler_options``, ``-ftz=true``,
``--device-as-default-execution-space``), and compiles it with NVRTC for each architecture
into a cubin. The first compiler error fails the test with the kernel's name, dtype,
architecture and NVRTC's log.

These are CuPy internals (checked against CuPy 14.2): a CuPy that renamed them makes the
test fail, not skip, so the change is seen. What only a GPU checks: that the cubin loads and
runs (tests/test_cuda_kernels.py, "cuda" variant), and CuPy's calling conventions themselves.
"""
from __future__ import annotations

import re
import time
import warnings
from functools import partial
from types import SimpleNamespace

import numpy as np
import pytest

from minires import backend
from minires.functional import cuda_kernels as ck

ARCHS = ("80", "90")
DTYPES = (np.float32, np.float64)
# im2col / col2im are compiled per geometry (cuda_kernels.GEOMETRY): these are compiled,
# (x shape, kernel, stride, padding, dilation) -- ResNet-20's 3x3 convolutions at stride 1
# and 2, a 1x1 projection, and odd ones: no padding, non-square, dilated.
COLUMN_GEOMETRIES = (
    ((2, 16, 32, 32), (3, 3), (1, 1), (1, 1), (1, 1)),
    ((2, 16, 32, 32), (3, 3), (2, 2), (1, 1), (1, 1)),
    ((2, 64, 8, 8), (3, 3), (1, 1), (1, 1), (1, 1)),
    ((2, 16, 32, 32), (1, 1), (2, 2), (0, 0), (1, 1)),
    ((2, 3, 7, 9), (3, 2), (2, 1), (0, 1), (2, 1)),
    ((1, 2, 10, 11), (2, 3), (1, 2), (1, 0), (2, 2)),
)


# --- can this machine compile CUDA? ---------------------------------------------------------------
def _nvrtc_or_skip():
    """(cupy, nvrtc), or pytest.skip saying what is missing: CuPy, NVRTC or the CUDA headers."""
    try:
        import cupy
    except ImportError as err:
        pytest.skip(f"CuPy is not installed ({err}); pip install 'cupy-cuda13x[ctk]' (or "
                    f"minires[cuda13]) to compile the kernels here -- no GPU needed")
    except (OSError, RuntimeError, AttributeError) as err:   # a broken install: say so
        pytest.skip(f"CuPy does not import: {type(err).__name__}: {err}")
    try:
        from cupy.cuda import nvrtc
        nvrtc.getVersion()
    except (ImportError, OSError, RuntimeError, AttributeError) as err:
        pytest.skip(f"CuPy cannot load NVRTC (libnvrtc, from the CUDA toolkit): "
                    f"{type(err).__name__}: {err}; install CuPy's [ctk] extra")
    try:
        from cupy._core import core
        core.assemble_cupy_compiler_options(())
    except RuntimeError as err:     # "Failed to find CUDA headers ..."
        pytest.skip(f"CuPy finds no CUDA headers: {err}")
    return cupy, nvrtc


# --- 1. the calls: every wrapper run on NumPy arrays, the kernels recorded ------------------------
class _Call:
    """One call of a kernel: its arguments (NumPy arrays as stand-ins for CuPy arrays, or host
    scalars) and keyword arguments; ``kernel``: the _Recorder (what the kernel was built from).
    ``name`` is the kernel's table name: ``im2col`` for every geometry's ``im2col__<tag>``."""

    def __init__(self, kernel, args, kwargs):
        self.kernel, self.kind, self.spec = kernel, kernel.kind, kernel.spec
        self.name = kernel.name.removeprefix("minires_").split("__")[0]
        self.args, self.kwargs = args, kwargs

    def dtype(self):
        return next(a.dtype for a in self.args if isinstance(a, np.ndarray)
                    and a.dtype.kind == "f")


def _parse(params):
    out = []
    for item in params.split(","):
        words = item.split()
        raw = words[0] == "raw"
        out.append((raw, *words[raw:]))
    return out


class _Recorder:
    """Stands in for a cupy.ElementwiseKernel / ReductionKernel, built with the same arguments
    (kept: ``build(cupy)`` makes the real kernel object from them): records each call and
    returns zero outputs of the shape and dtype CuPy would give (enough for the wrapper to go
    on)."""

    def __init__(self, kind, calls, *args, **kwargs):
        self.kind, self.calls, self.args, self.kwargs = kind, calls, args, kwargs
        self.spec, self.name = args, kwargs.get("name", "kernel")

    def build(self, cupy):
        make = cupy.ElementwiseKernel if self.kind == "elementwise" else cupy.ReductionKernel
        return make(*self.args, **self.kwargs)

    def __call__(self, *args, **kwargs):
        self.calls.append(_Call(self, args, kwargs))
        ins, outs = _parse(self.spec[0]), _parse(self.spec[1])
        given = list(args[len(ins):])
        if given:
            return given[0] if len(given) == 1 else tuple(given)
        types = {t: a.dtype for (_, t, _), a in zip(ins, args) if isinstance(a, np.ndarray)}
        arrays = [a for (raw, _, _), a in zip(ins, args) if not raw and isinstance(a, np.ndarray)]
        shape = (kwargs["size"],) if "size" in kwargs else \
            np.broadcast_shapes(*(a.shape for a in arrays))
        results = [np.zeros(shape, dtype=types.get(t, t)) for _, t, _ in outs]
        if self.kind == "reduction":
            results = [r.sum(axis=kwargs.get("axis")) for r in results]
        return results[0] if len(results) == 1 else tuple(results)


def _exercise_wrappers(dtype, xp=np):
    """Call every wrapper of cuda_kernels.py, in every mode that picks a different kernel or
    different arguments, on small arrays of ``dtype`` (NumPy's, or ``xp``'s: CuPy on a GPU)."""
    rng = np.random.default_rng(0)

    def arr(*shape):
        return xp.asarray(rng.standard_normal(shape).astype(dtype))

    for shape, *settings in COLUMN_GEOMETRIES:  # each one a kernel of its own, both layouts
        x = arr(*shape)
        cols = ck.im2col(x, *settings)
        ck.col2im(cols, x.shape, *settings)
        cols = ck.im2col_batch(x, *settings, out=xp.empty(cols.size + 7, dtype=dtype))
        ck.col2im_batch(cols, x.shape, *settings)
    x = arr(2, 3, 6, 5)
    C = x.shape[1]
    w, b, rm, rv = arr(C), arr(C), arr(C), abs(arr(C)) + 1
    for weight, bias in ((w, b), (None, None)):
        for training, stats in ((True, True), (True, False), (False, True)):
            _, mean, invstd = ck.batch_norm_forward(x, weight, bias, rm if stats else None,
                                                    rv if stats else None, training, 0.1, 1e-5)
            ck.batch_norm_backward(arr(*x.shape), x, mean, invstd, weight, training,
                                   (True, weight is not None, bias is not None))
    ck.relu_backward(arr(*x.shape), x)
    logp, target = arr(4, 10), xp.asarray(rng.integers(0, 10, 4))
    ck.cross_entropy_backward(logp, target, xp.asarray(1.0, dtype=dtype), 0.1, "mean")
    ck.cross_entropy_backward(logp, target, arr(4), 0.0, "none")
    ck.add_to_epoch_sums(xp.zeros(2), arr(), xp.asarray(np.array(5, dtype=np.int64)), 128)
    for momentum, dampening, nesterov in ((0.0, 0.0, False), (0.9, 0.0, True), (0.9, 0.1, False)):
        param, buf = arr(3, 4), (arr(3, 4) if momentum else None)
        for first in (True, False):
            ck.sgd_update(param, arr(3, 4), buf, 0.1, momentum, dampening, 5e-4, nesterov, first)


def record_calls(dtype, index32_limit=None):
    """Every kernel call the wrappers make in ``dtype``: a list of _Call. ``index32_limit``:
    cuda_kernels.INDEX32_LIMIT meanwhile (0: every geometry kernel with 64-bit indexing)."""
    calls = []
    recording = SimpleNamespace(ElementwiseKernel=partial(_Recorder, "elementwise", calls),
                                ReductionKernel=partial(_Recorder, "reduction", calls))
    saved = dict(ck._KERNELS), ck.get_cupy, ck.INDEX32_LIMIT
    ck._KERNELS.clear()
    ck.get_cupy = lambda: recording          # the kernels are built as CuPy's, recording
    if index32_limit is not None:
        ck.INDEX32_LIMIT = index32_limit
    try:
        _exercise_wrappers(dtype)
    finally:
        ck._KERNELS.clear()
        ck._KERNELS.update(saved[0])
        ck.get_cupy, ck.INDEX32_LIMIT = saved[1:]
    return calls


# --- 2. the sources: what CuPy would generate for each call ---------------------------------------
_NDARRAY, _INDEXER, _SCALAR = 1, 2, 3        # cupy/_core/_kernel.pxd: _ArgKind


def _index_32_bits(a):
    return a.size * a.itemsize < 2**31


def _merged_shape(arrays, shape):
    """The shape after CuPy's _reduced_view_core merges axes over which every (broadcast,
    non-raw) array is contiguous; ``arrays`` as broadcast NumPy views. A shape of one axis or
    none (0-d operands: the epoch_sums kernel) is kept as it is, as _reduce_dims keeps it."""
    if not arrays or len(shape) <= 1:
        return tuple(shape)
    strided = [a for a in arrays if not a.flags.c_contiguous]
    if not strided:
        return (int(np.prod(shape)),)
    if len(shape) == 2:
        return tuple(shape)
    vecshape, axes, last = list(shape), [], -1
    for ax in range(len(shape)):
        if vecshape[ax] == 1:
            continue
        if last < 0:
            last = ax
            continue
        if any(a.strides[ax] * vecshape[ax] != a.strides[last] for a in strided):
            axes.append(last)
        else:
            vecshape[ax] *= vecshape[last]
        last = ax
    if last >= 0:
        axes.append(last)
    if len(axes) == len(shape):
        return tuple(shape)
    return tuple(vecshape[ax] for ax in axes)


def _source(cupy, call):
    """(CUDA source, kernel options) CuPy would compile for this call."""
    from cupy._core import _carray, _kernel, _reduction, _scalar
    ArgInfo = _kernel._ArgInfo

    def array_info(a, ndim, contiguous):
        return ArgInfo(_NDARRAY, cupy.ndarray, a.dtype, ndim, contiguous, _index_32_bits(a))

    def scalar_info(dtype):
        return ArgInfo(_SCALAR, _scalar.CScalar, np.dtype(dtype), 0, True, True)

    def indexer_info(shape):
        return ArgInfo(_INDEXER, _carray.Indexer, None, len(shape), True,
                       int(np.prod(shape)) < 2**31)

    if call.kind == "elementwise":
        kernel = call.kernel.build(cupy)
        ins, outs = call.args[:kernel.nin], list(call.args[kernel.nin:])
        in_types, out_types, type_map = kernel._decide_params_type(
            tuple(a.dtype if isinstance(a, np.ndarray) else None for a in ins),
            tuple(a.dtype for a in outs))
        nonraw = [a for p, a in zip(kernel.params, list(ins) + outs)   # raw outputs take no part
                  if not p.raw and isinstance(a, np.ndarray)]
        shape = (call.kwargs["size"],) if "size" in call.kwargs else \
            np.broadcast_shapes(*(a.shape for a in nonraw))
        if not outs:
            outs = [np.empty(shape, dtype=t) for t in out_types]
        views, infos = [], []
        for p, a in zip(kernel.params, list(ins) + outs):
            if isinstance(a, np.ndarray) and not p.raw:
                views.append(np.broadcast_to(a, shape))
        merged = _merged_shape(views, shape) if kernel.reduce_dims else tuple(shape)
        for i, (p, a) in enumerate(zip(kernel.params, list(ins) + outs)):
            if not isinstance(a, np.ndarray):
                infos.append(scalar_info(in_types[i]))
            elif p.raw:
                infos.append(array_info(a, a.ndim, a.flags.c_contiguous))
            else:
                view = np.broadcast_to(a, shape)
                infos.append(array_info(a, len(merged), view.flags.c_contiguous))
        infos.append(indexer_info(merged))
        code = _kernel._get_elementwise_kernel_code(
            tuple(infos), type_map, kernel.params, kernel.operation, kernel.name,
            kernel.preamble, **kernel.kwargs)
        return code, tuple(kernel.kwargs.get("options", ()))

    kernel = call.kernel.build(cupy)
    ins = call.args[:kernel.nin]
    assert len(call.args) == kernel.nin, "reduction with given outputs: not modelled here"
    in_types, out_types, type_map = _kernel._decide_params_type(
        kernel.in_params, kernel.out_params,
        tuple(a.dtype.type if isinstance(a, np.ndarray) else None for a in ins), ())
    shape = np.broadcast_shapes(*(a.shape for a in ins if isinstance(a, np.ndarray)))
    axis = call.kwargs.get("axis")
    axes = tuple(range(len(shape))) if axis is None else \
        tuple(ax % len(shape) for ax in np.atleast_1d(axis))
    keep = tuple(ax for ax in range(len(shape)) if ax not in axes)
    order = axes + keep                                  # _set_permuted_args: reduced axes first
    in_views = [np.broadcast_to(a, shape).transpose(order) for a in ins
                if isinstance(a, np.ndarray)]
    in_shape = _merged_shape(in_views, tuple(shape[ax] for ax in order))
    out_shape = tuple(shape[ax] for ax in keep)
    out_merged = (int(np.prod(out_shape)),) if out_shape else ()
    index_type = "int32" if np.prod(shape) / max(1, np.prod(out_shape)) <= 0x7fffffff else "int64"
    type_map = _kernel._TypeMap(type_map._pairs + (("IndexT", index_type),))
    infos = []
    for i, a in enumerate(ins):
        if isinstance(a, np.ndarray):
            infos.append(array_info(a, len(in_shape),
                                    np.broadcast_to(a, shape).transpose(order).flags.c_contiguous))
        else:
            infos.append(scalar_info(in_types[i]))
    for t in out_types:
        infos.append(array_info(np.empty(out_shape, dtype=t), len(out_merged), True))
    infos += [indexer_info(in_shape), indexer_info(out_merged), scalar_info(np.int32)]
    block_size = 512                                     # CuPy's default block for reductions
    code = _reduction._ReductionKernel_get_cached_function_code(
        kernel.nin, kernel.nout, kernel._params, tuple(infos), type_map, kernel.name, block_size,
        kernel.reduce_type, kernel.identity, kernel.map_expr, kernel.reduce_expr,
        kernel.post_map_expr, kernel.preamble, tuple(kernel.options))
    return code, tuple(kernel.options)


# --- 3. compiling ---------------------------------------------------------------------------------
def _compile(nvrtc, code, options, arch, label):
    """NVRTC, as CuPy's compile_with_cache would call it; the log on failure (None: compiled)."""
    from cupy._core import core
    source = "".join(f"#include <{h}>\n" for h in core._cupy_header_list) + code
    options = (core.assemble_cupy_compiler_options(options)
               + ("-ftz=true", f"-arch=sm_{arch}", "--device-as-default-execution-space"))
    program = nvrtc.createProgram(source, f"{label}.cu", (), ())
    try:
        nvrtc.compileProgram(program, options)
        assert len(nvrtc.getCUBIN(program)) > 0
        return None
    except nvrtc.NVRTCError as err:
        return f"{err}\n{nvrtc.getProgramLog(program)}\n--- source ---\n{source}"
    finally:
        nvrtc.destroyProgram(program)


def test_every_kernel_compiles_for_sm80_and_sm90_in_float32_and_float64():
    cupy, nvrtc = _nvrtc_or_skip()
    start = time.perf_counter()
    sources = {}                              # source -> (name, dtype, options, call): deduplicated
    seen = set()
    for dtype in DTYPES:
        calls = record_calls(dtype)
        for call in calls:
            code, options = _source(cupy, call)
            sources.setdefault((code, options), (call.name, np.dtype(call.dtype()).name))
            seen.add((call.name, np.dtype(call.dtype()).name))
    every = {(name, np.dtype(d).name) for name in (*ck.ELEMENTWISE, *ck.REDUCTION, *ck.GEOMETRY)
             for d in DTYPES}
    assert not every - seen, f"kernels no wrapper call reached (add a case): {sorted(every - seen)}"
    compiled = _compile_every(nvrtc, sources)
    names = {name for name, _ in seen}
    print(f"\n{len(names)} kernels x {len(DTYPES)} dtypes x {len(ARCHS)} archs (im2col, col2im: "
          f"x {len(COLUMN_GEOMETRIES)} geometries x 2 layouts): {compiled} compilations of "
          f"{len(sources)} distinct sources, NVRTC {nvrtc.getVersion()}, "
          f"{time.perf_counter() - start:.1f} s")


def _compile_every(nvrtc, sources):
    """Compile every source ({(code, options): (name, dtype)}) for every architecture; the
    first failure fails the test. Returns the number of compilations."""
    compiled = 0
    for (code, options), (name, dtype) in sources.items():
        for arch in ARCHS:
            log = _compile(nvrtc, code, options, arch, f"minires_{name}")
            if log is not None:
                pytest.fail(f"kernel {name!r} ({dtype}, sm_{arch}) does not compile with NVRTC:\n"
                            f"{log}", pytrace=False)
            compiled += 1
    return compiled


def test_the_geometry_kernels_compile_with_64_bit_indexing_too():
    """im2col / col2im for arrays of 2**31 entries or more: the same geometries with
    cuda_kernels.INDEX32_LIMIT at 0, so each is built with its 64-bit ``index_t``."""
    cupy, nvrtc = _nvrtc_or_skip()
    sources = {}
    for dtype in DTYPES:
        for call in record_calls(dtype, index32_limit=0):
            if call.name in ck.GEOMETRY:
                assert call.kernel.name.endswith("_i64")
                code, options = _source(cupy, call)
                assert "typedef unsigned long long index_t;" in code
                sources.setdefault((code, options), (call.name, np.dtype(call.dtype()).name))
    assert len(sources) == len(DTYPES) * 2 * 2 * len(COLUMN_GEOMETRIES)
    _compile_every(nvrtc, sources)


def test_the_sources_are_those_of_the_wrappers_calls():
    """The recorded calls cover every kernel in both dtypes (no CuPy needed for this part)."""
    for dtype in DTYPES:
        calls = record_calls(dtype)
        names = {call.name for call in calls}
        assert names == set(ck.ELEMENTWISE) | set(ck.REDUCTION) | set(ck.GEOMETRY)
        tags = {call.kernel.name for call in calls if call.name in ck.GEOMETRY}
        assert len(tags) == 2 * 2 * len(COLUMN_GEOMETRIES)     # im2col, col2im x both layouts


def test_merged_shape_follows_cupy():
    """_reduced_view_core's rules: all contiguous -> one axis; a broadcast per-channel operand
    keeps the channel axis apart; size-1 axes vanish."""
    x = np.zeros((4, 3, 5))
    mean = np.zeros((1, 3, 1))
    assert _merged_shape([x], x.shape) == (60,)
    assert _merged_shape([x, np.broadcast_to(mean, x.shape)], x.shape) == (4, 3, 5)
    assert _merged_shape([np.broadcast_to(np.zeros((1, 3)), (4, 3))], (4, 3)) == (4, 3)
    row = np.zeros((1, 15))
    assert _merged_shape([np.broadcast_to(row, (4, 15))[:, ::1]], (4, 15)) == (4, 15)
    assert _merged_shape([np.broadcast_to(np.zeros((1, 1, 5)), (1, 3, 5))], (1, 3, 5)) == (3, 5)
    assert _merged_shape([np.zeros(())], ()) == ()


def _without_template_arguments(code):
    """The source with CArray<T, ndim, c_contiguous, index_32_bits> / CIndexer<ndim, ...> cut
    to their element types: the parts that depend on how CuPy merges axes."""
    code = re.sub(r"CArray<([^,<>]+), \d+, \d, \d>", r"CArray<\1>", code)
    return re.sub(r"CIndexer<\d+, \d>", "CIndexer", code)


@pytest.mark.gpu
def test_the_generated_sources_are_cupys_own():
    """On a GPU: the wrappers run on CuPy arrays, and every source CuPy generated for them (its
    kernels' ``cached_codes``) is one that this file generates without a GPU. The types, the
    parameters and the bodies must agree exactly; where only the template arguments that come
    from CuPy's merging of axes differ (the model of _reduced_view_core), a warning says so."""
    if not backend.gpu_available():
        pytest.skip("no CUDA GPU with CuPy on this machine; GPU variant skipped")
    cupy, _ = _nvrtc_or_skip()
    for dtype in DTYPES:
        generated = {code for code, _ in (_source(cupy, call) for call in record_calls(dtype))}
        loose = {_without_template_arguments(code) for code in generated}
        saved = dict(ck._KERNELS)
        ck._KERNELS.clear()                       # fresh kernel objects: their codes are ours
        try:
            _exercise_wrappers(dtype, xp=cupy)
            cupy.cuda.Device().synchronize()
            for name, kernel in ck._KERNELS.items():
                for code in kernel.cached_codes.values():
                    if code in generated:
                        continue
                    assert _without_template_arguments(code) in loose, \
                        f"{name} ({np.dtype(dtype).name}): CuPy generated a source this test " \
                        f"does not:\n{code}"
                    warnings.warn(f"{name} ({np.dtype(dtype).name}): CuPy's source differs "
                                  f"from the generated one only in CArray/CIndexer template "
                                  f"arguments (how axes were merged)")
        finally:
            ck._KERNELS.clear()
            ck._KERNELS.update(saved)
