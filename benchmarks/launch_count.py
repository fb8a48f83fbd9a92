"""Kernel launches and device-to-host syncs of one ResNet-20 training step on the CuPy path,
counted on a machine without a GPU.

    python benchmarks/launch_count.py              # the table, fast recipe (batch 128)
    python benchmarks/launch_count.py --detail     # ... and every operation by name
    python benchmarks/launch_count.py --json out.json
    python benchmarks/launch_count.py --sites       # ... by the line of minires that asked
    python benchmarks/launch_count.py --loop read-each-step   # the loss read back every step

How. A stand-in for CuPy (``FakeCupy``) is put in ``sys.modules["cupy"]`` before minires
touches it, so ``get_array_module`` hands it to every op and every ``if xp is not np:``
takes the GPU branch, exactly as with CuPy. Its arrays (``DeviceArray``) hold NumPy arrays
and count what a CuPy array would send to the GPU:

- a launch: every ufunc call (``a + b``, ``a *= s``, ``xp.exp``), reduction (``.sum``,
  ``.max``, ``.argmax``), copy (``.copy``, ``.astype`` to another dtype, ``ascontiguousarray``
  of a non-contiguous array, advanced indexing), fill (``zeros``, ``a[...] = 0``), GEMM
  (``matmul``) and every call of an ElementwiseKernel / ReductionKernel / RawKernel;
- no launch: ``empty`` / ``empty_like`` (an allocation from CuPy's pool), and any result
  that is a view of an input (``reshape``, ``transpose``, basic slicing, ``astype`` to the
  same dtype with copy=False, ``ascontiguousarray`` of a contiguous array);
- a device-to-host sync: ``.get()``, ``.item()``, ``float()``, ``int()``, ``bool()``,
  ``.tolist()``, ``cupy.asnumpy``, and boolean-mask indexing (its size is read back);
- a host-to-device copy: ``cupy.asarray`` / ``cupy.array`` of host data.
Like CuPy, it refuses implicit conversion to NumPy (``np.asarray(device_array)``) and
NumPy arrays mixed into device operations, so a step that would fail on CuPy fails here.

The custom kernels of cuda_kernels.py run on the CPU emulation of tests/kernel_emulation.py
(g++), so the step computes the same numbers as on the CPU (checked: the loss is compared
with the NumPy step's). Without g++ they return zeros: the counts stay right, the values not.

Limits (what this cannot see). One counted launch is one CuPy call; a few CuPy calls launch
more than one kernel: a batched ``matmul`` is one cuBLAS call that may run one or two
kernels; ``einsum`` is decomposed by CuPy into several; a reduction over a non-contiguous
axis may take two passes (CUB). ``zeros`` is a cudaMemsetAsync, counted as a launch. The
time of each launch, and whether the GPU waits for Python (launch-bound) or Python for the
GPU, need a GPU: benchmarks/profile_step.py and gpu_check.py measure that. The counts are of
the code paths as written (which branch runs, how many calls), which is what changes when
kernels are fused.
"""
from __future__ import annotations

import argparse
import collections
import contextlib
import json
import shutil
import sys
import types
from pathlib import Path

import numpy as np
from numpy.lib.mixins import NDArrayOperatorsMixin

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


# --- the counters -------------------------------------------------------------------------------
class Counts:
    """What the device was asked to do, by operation name (and by operation and the line of
    minires that asked: ``sites``)."""

    def __init__(self):
        self.launches = collections.Counter()
        self.syncs = collections.Counter()
        self.h2d = collections.Counter()
        self.sites = collections.Counter()

    def totals(self):
        return {"launches": sum(self.launches.values()), "syncs": sum(self.syncs.values()),
                "host_to_device": sum(self.h2d.values())}


COUNTS = Counts()


def _site():
    """file:line of the innermost frame in minires (or the step here) that made the call."""
    frame = sys._getframe(2)
    while frame is not None:
        path = frame.f_code.co_filename
        if "minires" in Path(path).parts or (path == __file__
                                             and frame.f_code.co_name == "train_step"):
            return f"{Path(path).relative_to(ROOT)}:{frame.f_lineno}"
        frame = frame.f_back
    return "?"


def _launch(what):
    COUNTS.launches[what] += 1
    COUNTS.sites[f"{what} @ {_site()}"] += 1


def _sync(what):
    COUNTS.syncs[what] += 1
    COUNTS.sites[f"SYNC {what} @ {_site()}"] += 1


# --- the device array ---------------------------------------------------------------------------
def _unwrap(obj):
    if isinstance(obj, DeviceArray):
        return obj._a
    if isinstance(obj, (list, tuple)):
        return type(obj)(_unwrap(o) for o in obj)
    if isinstance(obj, dict):
        return {k: _unwrap(v) for k, v in obj.items()}
    return obj


def _wrap(obj):
    if isinstance(obj, np.ndarray):
        return DeviceArray(obj)
    if isinstance(obj, np.generic):              # CuPy returns 0-d arrays, never scalars
        return DeviceArray(np.asarray(obj))
    if isinstance(obj, tuple):
        return tuple(_wrap(o) for o in obj)
    if isinstance(obj, list):
        return [_wrap(o) for o in obj]
    return obj


def _host_arrays(objs):
    """NumPy arrays (not 0-d) among the arguments: CuPy refuses them in device operations."""
    for o in objs:
        if isinstance(o, np.ndarray) and o.ndim > 0:
            yield o
        elif isinstance(o, (list, tuple)):
            yield from _host_arrays(o)


def _arrays(objs):
    for o in objs:
        if isinstance(o, DeviceArray):
            yield o._a
        elif isinstance(o, (list, tuple)):
            yield from _arrays(o)


def _is_view_of(result, inputs):
    """True when every array in ``result`` shares memory with an input (a view: no launch)."""
    outs = [r for r in (result if isinstance(result, tuple) else (result,))
            if isinstance(r, np.ndarray)]
    return bool(outs) and all(any(np.may_share_memory(r, a) for a in inputs) for r in outs)


def _call_counted(name, fn, args, kwargs, owner=None):
    """Call the NumPy function on unwrapped arguments; one launch unless the result is a view
    (of an argument, or of ``owner``, the array whose method this is)."""
    if any(True for _ in _host_arrays(list(args) + list(kwargs.values()))):
        raise TypeError(f"{name}: a NumPy array among CuPy arguments (CuPy refuses: "
                        f"'Unsupported type numpy.ndarray')")
    inputs = list(_arrays(list(args) + list(kwargs.values())))
    if owner is not None:
        inputs.append(owner._a)
    result = fn(*_unwrap(args), **_unwrap(kwargs))
    if not _is_view_of(result, inputs):
        _launch(name)
    return _wrap(result)


class DeviceArray(NDArrayOperatorsMixin):
    """A CuPy array as the step sees it: NumPy data inside, every device operation counted."""

    __slots__ = ("_a",)

    def __init__(self, a):
        self._a = a

    # metadata: free, on the host in CuPy too
    shape = property(lambda self: self._a.shape)
    dtype = property(lambda self: self._a.dtype)
    ndim = property(lambda self: self._a.ndim)
    size = property(lambda self: self._a.size)
    itemsize = property(lambda self: self._a.itemsize)
    nbytes = property(lambda self: self._a.nbytes)
    strides = property(lambda self: self._a.strides)
    flags = property(lambda self: self._a.flags)
    T = property(lambda self: DeviceArray(self._a.T))
    device = property(lambda self: "cuda:0")

    def __len__(self):
        return len(self._a)

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        name = ufunc.__name__ + ("" if method == "__call__" else f".{method}")
        if any(True for _ in _host_arrays(list(inputs) + list(kwargs.get("out", ())))):
            raise TypeError(f"{name}: a NumPy array among CuPy arguments (CuPy refuses: "
                            f"'Unsupported type numpy.ndarray')")
        out = kwargs.get("out")
        result = getattr(ufunc, method)(*_unwrap(inputs), **_unwrap(kwargs))
        _launch(name)
        if out is not None:
            return out[0] if len(out) == 1 else out
        return _wrap(result)

    def __array_function__(self, func, types_, args, kwargs):
        return _call_counted(func.__name__, func, args, kwargs)

    def __array__(self, dtype=None, copy=None):
        raise TypeError("Implicit conversion to a NumPy array is not allowed. "
                        "Please use `.get()` to construct a NumPy array explicitly.")

    # device -> host: every one of these waits for the GPU
    def get(self, stream=None, out=None):
        _sync("get")
        return self._a.copy()

    def item(self):
        _sync("item")
        return self._a.item()

    def tolist(self):
        _sync("tolist")
        return self._a.tolist()

    def __float__(self):
        _sync("float()")
        return float(self._a)

    def __int__(self):
        _sync("int()")
        return int(self._a)

    def __index__(self):
        _sync("index")
        return self._a.__index__()

    def __bool__(self):
        _sync("bool()")
        return bool(self._a)

    def __repr__(self):
        return f"DeviceArray({self._a!r})"

    # indexing
    def __getitem__(self, key):
        if isinstance(key, DeviceArray) and key.dtype == np.bool_:
            _sync("boolean mask (size read back)")
        if isinstance(key, np.ndarray) or (isinstance(key, tuple) and any(
                isinstance(k, np.ndarray) for k in key)):
            raise TypeError("indexing a CuPy array with a NumPy array")
        def index(k):
            out = self._a[k]
            if isinstance(out, np.generic):      # integers only: CuPy gives a 0-d view
                out = self._a[(k if isinstance(k, tuple) else (k,)) + (Ellipsis,)]
            return out
        return _call_counted("getitem", index, (key,), {}, owner=self)

    def __setitem__(self, key, value):
        if isinstance(value, np.ndarray) and value.ndim > 0:
            raise TypeError("setitem: a NumPy array as the value of a CuPy array")
        self._a[_unwrap(key)] = _unwrap(value)
        _launch("setitem")

    # methods: views cost nothing, everything else is a launch
    def astype(self, dtype, copy=True, **kwargs):
        if not copy and np.dtype(dtype) == self.dtype:
            return self
        _launch("astype")
        return DeviceArray(self._a.astype(dtype, **kwargs))

    def __getattr__(self, name):
        if name.startswith("__"):       # no __array_interface__ & co: NumPy must not see the data
            raise AttributeError(name)
        attr = getattr(self._a, name)
        if not callable(attr):
            return _wrap(attr)
        return lambda *args, **kwargs: _call_counted(name, attr, args, kwargs, owner=self)


# --- the CuPy module ----------------------------------------------------------------------------
class _Kernel:
    """ElementwiseKernel / ReductionKernel: one launch per call, computed by the emulation."""

    def __init__(self, kind, emulated, spec):
        self.kind, self.emulated, self.spec = kind, emulated, spec
        self.name = spec[-1]

    def __call__(self, *args, **kwargs):
        if any(True for _ in _host_arrays(args)):
            raise TypeError(f"{self.name}: a NumPy array among CuPy arguments")
        _launch(f"kernel {self.name}")
        if self.emulated is not None:
            return _wrap(self.emulated(*_unwrap(args), **kwargs))
        return _wrap(_zeros_like_kernel_output(self.kind, self.spec, _unwrap(args), kwargs))


def _zeros_like_kernel_output(kind, spec, args, kwargs):
    """What the kernel would return, filled with zeros (no g++ for the emulation)."""
    from tests.kernel_emulation import _parse
    ins, outs = _parse(spec[0]), _parse(spec[1])
    given = list(args[len(ins):])
    if given:
        return given[0] if len(given) == 1 else tuple(given)
    arrays = [a for (raw, _, _), a in zip(ins, args) if not raw and isinstance(a, np.ndarray)]
    dtypes = {t: a.dtype for (_, t, _), a in zip(ins, args) if isinstance(a, np.ndarray)}
    shape = np.broadcast_shapes(*(a.shape for a in arrays))
    results = [np.zeros(shape, dtype=dtypes.get(t, t)) for _, t, _ in outs]
    if kind == "reduction":
        results = [r.sum(axis=kwargs.get("axis")) for r in results]
    return results[0] if len(results) == 1 else tuple(results)


def _make_fake_cupy(emulate=True):
    mod = types.ModuleType("cupy")
    mod.__fake__ = True
    mod.ndarray = DeviceArray
    emulation = None
    if emulate and shutil.which("g++"):
        from tests import kernel_emulation as emulation

    def elementwise(in_params, out_params, operation, name="kernel", **kwargs):
        emulated = (emulation.EmulatedElementwiseKernel(in_params, out_params, operation, name)
                    if emulation else None)
        return _Kernel("elementwise", emulated, (in_params, out_params, operation, name))

    def reduction(in_params, out_params, map_expr, reduce_expr, post_map_expr, identity,
                  name="reduce", **kwargs):
        emulated = (emulation.EmulatedReductionKernel(in_params, out_params, map_expr,
                                                      reduce_expr, post_map_expr, identity, name)
                    if emulation else None)
        return _Kernel("reduction", emulated, (in_params, out_params, name))

    mod.ElementwiseKernel, mod.ReductionKernel = elementwise, reduction
    mod.emulated = emulation is not None

    def to_device(a, dtype=None, copy=False, **kwargs):
        if isinstance(a, DeviceArray):
            if dtype is None or np.dtype(dtype) == a.dtype:
                return DeviceArray(a._a.copy()) if copy else a
            _launch("astype")
            return DeviceArray(a._a.astype(dtype))
        COUNTS.h2d["asarray"] += 1
        return DeviceArray(np.array(a, dtype=dtype))

    mod.asarray = to_device
    mod.array = lambda a, dtype=None, copy=True, **kw: to_device(a, dtype, copy=copy)

    def asnumpy(a, *args, **kwargs):
        if isinstance(a, DeviceArray):
            return a.get()
        return np.asarray(a)

    mod.asnumpy = asnumpy

    def allocate(fn):
        return lambda *a, **k: DeviceArray(fn(*_unwrap(a), **_unwrap(k)))

    for name in ("empty", "empty_like"):
        setattr(mod, name, allocate(getattr(np, name)))

    def fill(name, fn):
        def call(*a, **k):
            _launch(name)
            return DeviceArray(fn(*_unwrap(a), **_unwrap(k)))
        return call

    for name in ("zeros", "zeros_like", "ones", "ones_like", "full", "full_like", "arange"):
        setattr(mod, name, fill(name, getattr(np, name)))

    def ascontiguousarray(a, dtype=None):
        if dtype is not None and np.dtype(dtype) != a.dtype:
            return to_device(a, dtype)
        if a.flags.c_contiguous:
            return a
        _launch("ascontiguousarray (copy)")
        return DeviceArray(np.ascontiguousarray(a._a))

    mod.ascontiguousarray = ascontiguousarray

    runtime = types.SimpleNamespace(getDeviceCount=lambda: 1, is_hip=False)
    mod.cuda = types.SimpleNamespace(runtime=runtime, Device=lambda i=0: types.SimpleNamespace(
        synchronize=lambda: None, compute_capability="90"))

    def module_getattr(name):
        attr = getattr(np, name)
        if isinstance(attr, (type, np.ufunc, np.dtype)) or not callable(attr):
            return attr          # dtypes, ufuncs (they dispatch to DeviceArray), constants
        return lambda *args, **kwargs: _call_counted(name, attr, args, kwargs)

    mod.__getattr__ = module_getattr
    return mod


@contextlib.contextmanager
def fake_cupy(emulate=True):
    """``sys.modules["cupy"]`` is the counting stand-in inside the block (a real CuPy, if one
    is imported, is put back after it; arrays made by the real one must not enter the block),
    and cuda_kernels builds its kernels anew from it."""
    real = sys.modules.get("cupy")
    from minires.functional import cuda_kernels
    saved_kernels = dict(cuda_kernels._KERNELS)
    cuda_kernels._KERNELS.clear()
    sys.modules["cupy"] = fake = _make_fake_cupy(emulate)
    try:
        yield fake
    finally:
        cuda_kernels._KERNELS.clear()
        cuda_kernels._KERNELS.update(saved_kernels)
        if real is None:
            sys.modules.pop("cupy", None)
        else:
            sys.modules["cupy"] = real


# --- the step -----------------------------------------------------------------------------------
def build(batch_size=128, recipe="fast", seed=0):
    """A ResNet-20, its optimiser and schedule as the fast (or paper) recipe builds them, and one
    batch of random images and labels (host arrays, as the data loader gives them)."""
    import minires as mr
    from minires.train import recipes
    settings = {k: v for k, v in recipes.RECIPES[recipe].items()
                if k in recipes.TrainConfig.__dataclass_fields__}
    settings["lr"] = settings["lr"] or 0.1
    config = recipes.TrainConfig(**settings)
    mr.manual_seed(seed)
    model = recipes.build_model(config.model)
    optimizer = recipes.build_optimizer(config, model)
    steps = 50000 // batch_size
    schedule = recipes.build_schedule(config, optimizer, steps, steps * 10)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch_size, 3, 32, 32)).astype(np.float32)
    y = rng.integers(0, 10, batch_size)
    return config, model, optimizer, schedule, x, y


def train_step(config, model, optimizer, schedule, x, y, device, loop="trainer", totals=None):
    """One step as minires/train/loop.py's Trainer._train_step does it (keep the two alike),
    returning its StepStats: labels and images to the device, zero_grad, forward, the loss
    (the labels given to cross_entropy from the host: checked there, no wait), backward, the
    update, the schedule, the number of correct predictions; the loss and that number stay
    on the device, added into ``totals`` (an EpochTotals: on the device too, read back once
    per epoch), so on a GPU the step waits for nothing.

    loop="read-each-step": the Trainer as it was before (issue 25, item 2): the labels go to
    the device first (cross_entropy then reads their range back), and the loss and the
    number of correct predictions are read back after every step -- three waits per step.
    """
    import minires.functional as F
    from minires import Tensor
    from minires.backend import get_array_module, to_device
    from minires.train.loop import EpochTotals, StepStats
    labels = to_device(y, device)
    optimizer.zero_grad()
    logits = model(Tensor(to_device(x, device)))
    on_gpu = get_array_module(logits.data) is not np
    if loop == "read-each-step":
        loss = F.cross_entropy(logits, labels, label_smoothing=config.label_smoothing)
        value = float(loss.item())
    else:
        loss = F.cross_entropy(logits, y if on_gpu else labels,
                               label_smoothing=config.label_smoothing)
        value = loss.data if on_gpu else float(loss.item())
    loss.backward()
    optimizer.step()
    schedule.step()
    correct = (logits.data.argmax(axis=1) == labels).sum()
    if loop == "read-each-step" or not on_gpu:
        correct = int(correct)
    stats = StepStats(step=1, epoch=1, batch=1, loss=value, correct=correct, examples=len(y),
                      lr=optimizer.param_groups[0]["lr"])
    (EpochTotals() if totals is None else totals).add(stats)
    return stats


def count_step(batch_size=128, recipe="fast", emulate=True, loop="trainer"):
    """(counts of the second step, its loss, the NumPy step's loss, emulated?). The first step
    is not counted: it creates the momentum buffers (and CuPy compiles the kernels)."""
    from minires.train.loop import EpochTotals
    setup = build(batch_size, recipe)
    cpu = build(batch_size, recipe)
    losses_cpu = [train_step(*cpu, "cpu").loss for _ in range(2)]
    with fake_cupy(emulate) as fake:
        config, model, optimizer, schedule, x, y = setup
        model.to("cuda")
        totals = EpochTotals()
        train_step(config, model, optimizer, schedule, x, y, "cuda", loop, totals)
        COUNTS.__init__()
        stats = train_step(config, model, optimizer, schedule, x, y, "cuda", loop, totals)
        counts = Counts()
        counts.launches, counts.syncs, counts.h2d, counts.sites = (
            COUNTS.launches.copy(), COUNTS.syncs.copy(), COUNTS.h2d.copy(), COUNTS.sites.copy())
        loss = stats.loss                   # read back now, after the counting
        emulated = fake.emulated
    return counts, loss, losses_cpu[1], emulated


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--recipe", default="fast", choices=("fast", "paper"))
    parser.add_argument("--loop", default="trainer", choices=("trainer", "read-each-step"),
                        help="the Trainer's step (nothing read back), or as it was before: "
                             "the loss, the accuracy and the labels' range read back every step "
                             "(see train_step)")
    parser.add_argument("--detail", action="store_true", help="every operation by name")
    parser.add_argument("--sites", action="store_true",
                        help="every operation by name and the line of minires that asked for it")
    parser.add_argument("--no-emulation", action="store_true",
                        help="kernels return zeros (counts only; no g++ needed)")
    parser.add_argument("--json", help="write the counts here")
    args = parser.parse_args(argv)
    counts, loss, loss_cpu, emulated = count_step(args.batch_size, args.recipe,
                                                  not args.no_emulation, args.loop)
    totals = counts.totals()
    print(f"ResNet-20, batch {args.batch_size}, {args.recipe} recipe, {args.loop} loop, one "
          f"training step on the CuPy path (counted without a GPU):")
    print(f"  kernel launches      {totals['launches']}")
    print(f"  device->host syncs   {totals['syncs']}  ({dict(counts.syncs)})")
    print(f"  host->device copies  {totals['host_to_device']}")
    if emulated:
        print(f"  loss {loss:.7f} (NumPy step: {loss_cpu:.7f})")
    else:
        print("  (kernels not emulated: no g++ or --no-emulation; the loss is meaningless)")
    if args.detail:
        print("launches by operation:")
        for name, n in counts.launches.most_common():
            print(f"  {n:5d}  {name}")
    if args.sites:
        print("launches and syncs by operation and line:")
        for name, n in counts.sites.most_common():
            print(f"  {n:5d}  {name}")
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"batch_size": args.batch_size, "recipe": args.recipe, "loop": args.loop, **totals,
             "launches_by_op": dict(counts.launches), "syncs_by_op": dict(counts.syncs),
             "by_site": dict(counts.sites),
             "loss": loss, "loss_numpy": loss_cpu, "emulated": emulated}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
