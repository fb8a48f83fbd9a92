"""The CPU emulation of CuPy's ElementwiseKernel / ReductionKernel: the kernel sources of
minires/functional/cuda_kernels.py compiled as plain C++ with g++ and called through ctypes,
one loop iteration per GPU thread, on NumPy arrays.

It follows CuPy's kernel conventions (``i`` is the output element's index, ``raw`` arrays are
indexed by hand, other arrays are broadcast and bound to element ``i``, type placeholders take
the arrays' dtypes, Python scalars are cast to them). tests/test_cuda_kernels.py checks the
kernels against the portable code with it; benchmarks/launch_count.py runs a whole training
step on it. Needs g++ (``shutil.which("g++")``).
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import subprocess
import tempfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np

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

    def __init__(self, in_params, out_params, operation, name="kernel", options=()):
        # options: NVRTC's flags (--fmad=false): g++ at -O1 contracts no multiply-adds anyway
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

    def __call__(self, *args, size=None):
        """As cupy.ElementwiseKernel's call; ``size``: the number of threads when every array
        argument is raw (CuPy's ``size=``)."""
        nin = len(self.ins)
        assert len(args) in (nin, nin + len(self.outs)), f"{self.name}: wrong number of arguments"
        scalars = frozenset(name for (raw, _, name), a in zip(self.ins, args)
                            if not raw and not isinstance(a, np.ndarray))
        types = self._types(args)
        arrays = [a for (raw, _, _), a in zip(self.ins + self.outs, args)
                  if not raw and isinstance(a, np.ndarray)]
        if size is not None:
            assert not arrays, f"{self.name}: size= with non-raw array arguments"
            shape = (int(size),)
        else:
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


def emulated_cupy():
    """A stand-in for the cupy module that has only what cuda_kernels builds its kernels with
    (``ElementwiseKernel``, ``ReductionKernel``), emulated: put it in place of
    ``cuda_kernels.get_cupy`` (with ``cuda_kernels._KERNELS`` emptied) to run every kernel,
    the per-geometry ones included, on NumPy arrays."""
    return SimpleNamespace(ElementwiseKernel=EmulatedElementwiseKernel,
                           ReductionKernel=EmulatedReductionKernel)
