"""``Tensor``: an array that remembers the op that made it; ``tensor()`` and friends make one.

Names and meanings follow PyTorch where PyTorch has the name (``==`` is elementwise,
``size()`` is the shape, ``+=`` works in place, ``mr.tensor`` keeps an array's dtype);
reductions also accept NumPy's ``axis``/``keepdims`` spelling. One deliberate
difference: float32 and float64 tensors do not mix (``x32 + y64`` is a TypeError naming
the op and both dtypes, where PyTorch would promote to float64 silently); convert one
with ``x.to(np.float64)`` (recorded in the graph). Python numbers and NumPy scalars take
the tensor's dtype, so ``x * 0.5`` stays float32.
"""
from __future__ import annotations

import numbers
import operator

import numpy as np

from . import autograd
from .backend import (
    DEFAULT_DTYPE,
    array_module_for,
    check_device,
    default_rng,
    device_of,
    get_array_module,
    is_array,
    to_device,
)
from .functional import basic

_KINDS = "biuf"     # bool, signed and unsigned integers, floating point: what a tensor may hold


class _HookHandle:
    """Returned by ``Tensor.register_hook``: ``remove()`` unregisters that hook."""

    def __init__(self, hooks, fn):
        self._hooks, self._fn = hooks, fn

    def remove(self):
        """Unregister the hook (a no-op if it is already gone). Found by identity, not ``==``."""
        for i, hook in enumerate(self._hooks):
            if hook is self._fn:
                del self._hooks[i]
                return


class _VersionCounter:
    """How many times an array was changed in place through a tensor.

    Tensors that view one array (``detach()``, an op whose output is a view of its
    input) share one counter, as in PyTorch, so a change through any of them counts.
    """

    def __init__(self):
        self.value = 0


def _python_dtype(op, array):
    """The dtype PyTorch gives Python data: floats float32, ints int64, bools bool."""
    kind = array.dtype.kind
    if kind == "f":
        return DEFAULT_DTYPE
    if kind in "iu":
        return np.int64
    if kind == "b":
        return np.bool_
    raise TypeError(f"{op}: expected numbers (bool, int or float) or nested lists of them, got "
                    f"data NumPy reads as dtype {array.dtype}")


def _check_kind(op, dtype):
    if np.dtype(dtype).kind not in _KINDS:
        raise TypeError(f"{op}: a minires tensor holds booleans, integers or floating-point "
                        f"numbers; got dtype {np.dtype(dtype)}")


def _numpy_style(t, dtype, out, name):
    """The ``dtype``/``out`` arguments NumPy passes when ``np.sum(t)`` / ``np.mean(t)`` calls
    the tensor's method: ``dtype`` casts first, ``out`` cannot be honoured."""
    if out is not None:
        raise TypeError(f"Tensor.{name}: out= is not supported (minires ops return new tensors)")
    return t if dtype is None else t.astype(dtype)


class Tensor:
    """A NumPy/CuPy array plus what autograd needs.

    ``data``     the array (NumPy on "cpu", CuPy on "cuda")
    ``grad``     the gradient array after ``backward()`` (leaves, or after ``retain_grad()``)
    ``grad_fn``  the ``Function`` that produced this tensor (None for leaves)

    Comparisons (``==``, ``!=``, ``<`` ...) are elementwise and give boolean tensors,
    as in PyTorch; hashing stays by identity, so tensors can still be dict keys and
    set members (the engine and the optimizers key by ``id``, never by ``==``).
    """

    __array_priority__ = 1000   # make ``ndarray + Tensor`` call Tensor.__radd__

    def __init__(self, data, requires_grad=False, grad_fn=None):
        self.data = data
        self.grad = None
        self.grad_fn = grad_fn
        self._requires_grad = False
        self.requires_grad = requires_grad
        self._hooks = []
        self._retains_grad = False
        self._version_counter = _VersionCounter()

    # -- autograd state --------------------------------------------------------------
    @property
    def requires_grad(self) -> bool:
        """Whether gradients flow to this tensor (settable on leaves; only floating dtypes)."""
        return self._requires_grad

    @requires_grad.setter
    def requires_grad(self, value):
        if value and not np.issubdtype(self.data.dtype, np.floating):
            raise TypeError(f"only floating-point tensors can require grad; this tensor has "
                            f"dtype {self.data.dtype}")
        if not value and self.grad_fn is not None:
            raise RuntimeError("requires_grad can only be switched off on a leaf tensor; "
                               "use .detach() for a non-leaf")
        self._requires_grad = bool(value)

    @property
    def is_leaf(self) -> bool:
        """True for tensors no recorded op made (inputs, parameters): they keep ``.grad``."""
        return self.grad_fn is None

    @property
    def _version(self) -> int:
        """How many in-place changes this tensor's array has had (PyTorch's ``_version``).

        Bumped by ``+=``, ``-=``, ``*=``, ``/=``, ``zero_()``, ``fill_()``, ``copy_()`` and
        optimizer steps; a backward that needs an array saved at an older version raises.
        Writing to ``.data`` directly is not counted (as with PyTorch's ``.data``).
        """
        return self._version_counter.value

    def _bump_version(self):
        """Count one in-place change of ``data`` (optimizers call this after each update)."""
        self._version_counter.value += 1

    def _wrap_output(self, array, grad_fn, view_of=None):
        """Make the result tensor of an op (called by ``Function``).

        ``view_of``: the input tensor whose array ``array`` is (or views); the result
        then shares its version counter.
        """
        out = Tensor(array, requires_grad=grad_fn is not None, grad_fn=grad_fn)
        if view_of is not None:
            out._version_counter = view_of._version_counter
        return out

    def _constant_like(self, value):
        """``value`` (a number, list or array) as a constant Tensor to combine with this one.

        The result is on this tensor's device (an array on another device is refused) and
        outside the graph. Python numbers and lists follow PyTorch's promotion: they take
        this tensor's dtype unless they are of a higher kind (bool < int < float): a float
        with an integer tensor gives float32, an int with a bool tensor int64. Arrays keep
        their dtype. Out-of-place ops call it through ``functional.basic._as_tensors``.
        """
        xp = get_array_module(self.data)
        if isinstance(value, (numbers.Number, list, tuple)):
            probe = np.asarray(value)
            theirs, mine = np.dtype(_python_dtype("Tensor", probe)), self.data.dtype
            rank = "biuf".index                     # bool < int < unsigned int < float
            dtype = mine if rank(theirs.kind) <= rank(mine.kind) else theirs
            return Tensor(xp.asarray(probe, dtype=dtype))
        if device_of(value) != self.device:
            raise RuntimeError(f"cannot combine a {device_of(value)} array with a tensor on "
                               f"{self.device}; move one of them first")
        return Tensor(xp.asarray(value))

    def backward(self, grad=None, retain_graph=False):
        """Compute the gradient of this tensor with respect to every leaf that requires grad.

        ``grad``: the gradient of the final result with respect to this tensor (an array
        or tensor of this tensor's shape); implicit (1) only for one-element tensors.
        ``retain_graph=True`` keeps the saved arrays for a second backward.
        """
        if not self.requires_grad:
            raise RuntimeError("backward(): this tensor does not require grad and has no grad_fn "
                               "(did you compute it under no_grad, or from tensors without "
                               "requires_grad=True?)")
        xp = get_array_module(self.data)
        if grad is None:
            if self.data.size != 1:
                raise RuntimeError(f"backward(): grad can be implicit only for a scalar output, "
                                   f"but this tensor has shape {self.shape}; call backward(grad) "
                                   f"with a gradient of shape {self.shape}")
            grad = xp.ones_like(self.data)
        else:
            grad = (grad.data if isinstance(grad, Tensor)
                    else xp.asarray(grad, dtype=self.data.dtype))
            if grad.shape != self.shape:
                raise ValueError(f"backward(grad): grad has shape {grad.shape} but the tensor has "
                                 f"shape {self.shape}")
        autograd.run_backward(self, grad, retain_graph=retain_graph)

    def register_hook(self, fn):
        """Call ``fn(grad)`` with the gradient flowing into this tensor; a return value replaces it.

        Returns a handle with ``remove()``.
        """
        if not self.requires_grad:
            raise RuntimeError("register_hook: cannot register a hook on a tensor that does not "
                               "require grad")
        self._hooks.append(fn)
        return _HookHandle(self._hooks, fn)

    def _run_hooks(self, grad):
        for hook in self._hooks:
            out = hook(grad)
            if out is not None:
                grad = out.data if isinstance(out, Tensor) else out
        return grad

    def retain_grad(self):
        """Keep ``.grad`` on this non-leaf tensor after backward (leaves always keep it)."""
        if self.grad_fn is not None:
            self._retains_grad = True

    def detach(self):
        """The same data, cut from the graph (no copy; shares the version counter, as in
        PyTorch)."""
        out = Tensor(self.data)
        out._version_counter = self._version_counter
        return out

    def zero_grad(self):
        """Forget this tensor's gradient (``grad = None``)."""
        self.grad = None

    # -- array-like attributes -----------------------------------------------------------
    @property
    def shape(self):
        """The shape, a tuple of ints (the same as ``size()``)."""
        return self.data.shape

    @property
    def ndim(self):
        """The number of dimensions (PyTorch's ``dim()``)."""
        return self.data.ndim

    def size(self, dim=None):
        """The shape as a tuple (like ``torch.Size``), or with ``dim`` the length of that axis.

        As in PyTorch, not NumPy: ``x.size()`` is ``x.shape`` and ``x.size(1)`` is
        ``x.shape[1]``; the number of elements is ``x.numel()``.
        """
        if dim is None:
            return tuple(self.data.shape)
        if not isinstance(dim, numbers.Integral) or isinstance(dim, bool):
            raise TypeError(f"size(): dim must be an int, got {type(dim).__name__}")
        n = self.data.ndim
        if not -n <= dim < n:
            raise IndexError(f"size(): dim {dim} is out of range for a tensor of shape "
                             f"{tuple(self.shape)} (expected a dim in [{-n}, {n - 1}])"
                             if n else f"size(): a 0-d tensor has no dim {dim}")
        return int(self.data.shape[dim])

    def numel(self) -> int:
        """The number of elements (NumPy's ``a.size``)."""
        return int(self.data.size)

    @property
    def dtype(self):
        """The NumPy dtype of the data (float32 by default)."""
        return self.data.dtype

    @property
    def device(self) -> str:
        """``"cpu"`` (NumPy data) or ``"cuda"`` (CuPy data)."""
        return device_of(self.data)

    def __len__(self):
        """The length of the first axis."""
        return len(self.data)

    def __bool__(self):
        """Truth of a one-element tensor; ambiguous (an error) for more elements, like NumPy."""
        if self.data.size != 1:
            raise ValueError(f"the truth value of a tensor of shape {self.shape} is ambiguous; "
                             f"reduce it first (x.sum(), x.max() ...) or compare x.numpy()")
        return bool(self.data.reshape(()).item())

    def _scalar(self, kind):
        if self.data.size != 1:
            raise ValueError(f"{kind}(): only a one-element tensor can be converted to a Python "
                             f"{kind}; this tensor has shape {tuple(self.shape)} ({self.data.size} "
                             f"elements). Reduce it first (x.sum(), x.mean() ...) or index one")
        return self.data.reshape(()).item()

    def __float__(self):
        """``float(t)`` for a one-element tensor (ValueError otherwise)."""
        return float(self._scalar("float"))

    def __int__(self):
        """``int(t)`` for a one-element tensor, truncating a float (ValueError otherwise)."""
        return int(self._scalar("int"))

    def numpy(self) -> np.ndarray:
        """The data as a NumPy array (copied from the GPU if need be)."""
        return to_device(self.data, "cpu")

    def __array__(self, dtype=None, copy=None):
        """NumPy's view of a CPU tensor (``np.asarray(t)``, ``np.mean(pred == y)``), as PyTorch
        allows; a GPU tensor refuses, so that no device copy happens behind your back."""
        if self.device != "cpu":
            raise TypeError("a cuda tensor cannot become a NumPy array implicitly; call "
                            ".numpy() (it copies to the host)")
        return self.data if dtype is None else self.data.astype(dtype, copy=False)

    def item(self):
        """The one element of a one-element tensor as a Python number."""
        if self.data.size != 1:
            raise ValueError(f"item(): only a one-element tensor has an item; "
                             f"shape is {self.shape}")
        return self.data.reshape(()).item()

    def to(self, device=None, dtype=None):
        """This tensor on ``device`` ("cpu" or "cuda") and/or in ``dtype``, as in PyTorch.

        ``x.to("cuda")`` moves a leaf (inputs and parameters), which stays a leaf with its
        requires_grad. ``x.to(np.float64)`` (or ``dtype=np.float64``) converts, recorded in
        the graph: gradients flow back, converted to x's dtype. That is the explicit way to
        combine tensors of two floating precisions, which minires refuses to mix silently
        (``x32 + y64`` is a TypeError; ``x32.to(np.float64) + y64`` is float64). An integer
        or bool ``dtype`` gives a constant copy, as ``astype`` does. Returns ``self`` when
        nothing changes.
        """
        if device is not None and not isinstance(device, str):     # x.to(np.float64)
            if dtype is not None:
                raise TypeError(f"to(): got two dtypes, {device!r} and {dtype!r}")
            device, dtype = None, device
        out = self if device is None else self._move(device)
        if dtype is not None:
            _check_kind("to()", dtype)
            out = basic.cast(out, dtype)
        return out

    def _move(self, device):
        if device == self.device:
            return self
        if self.grad_fn is not None:
            raise RuntimeError("to(): move leaf tensors (inputs and parameters), not intermediate "
                               f"results (this one was made by {self.grad_fn.name})")
        out = Tensor(to_device(self.data, device), requires_grad=self.requires_grad)
        if self.grad is not None:
            out.grad = to_device(self.grad, device)
        return out

    def double(self):
        """``to(np.float64)``: recorded in the graph."""
        return self.to(dtype=np.float64)

    def float(self):
        """``to(np.float32)``: recorded in the graph."""
        return self.to(dtype=np.float32)

    def cpu(self):
        """``to("cpu")``."""
        return self.to("cpu")

    def cuda(self):
        """``to("cuda")``."""
        return self.to("cuda")

    def astype(self, dtype):
        """A copy with another dtype, cut from the graph (a constant; ``to(dtype)`` keeps the
        graph)."""
        return Tensor(self.data.astype(dtype))

    def __repr__(self):
        """``tensor([...], dtype=..., device=..., grad_fn=...)``, like PyTorch's."""
        extra = f", grad_fn={self.grad_fn.name}" if self.grad_fn is not None else (
            ", requires_grad=True" if self.requires_grad else "")
        body = np.array2string(self.numpy(), separator=", ", prefix="tensor(", threshold=50)
        dev = ", device='cuda'" if self.device == "cuda" else ""
        return f"tensor({body}, dtype={self.dtype}{dev}{extra})"

    # -- arithmetic (each one op with a backward, in functional/basic.py) ----------------------
    def __add__(self, other):
        """``self + other`` (broadcasting; other may be a tensor, array or number)."""
        return basic.add(self, other)

    def __radd__(self, other):
        """``other + self``."""
        return basic.add(other, self)

    def __sub__(self, other):
        """``self - other``."""
        return basic.sub(self, other)

    def __rsub__(self, other):
        """``other - self``."""
        return basic.sub(other, self)

    def __mul__(self, other):
        """``self * other`` (elementwise)."""
        return basic.mul(self, other)

    def __rmul__(self, other):
        """``other * self``."""
        return basic.mul(other, self)

    def __truediv__(self, other):
        """``self / other``."""
        return basic.div(self, other)

    def __rtruediv__(self, other):
        """``other / self``."""
        return basic.div(other, self)

    def __neg__(self):
        """``-self``."""
        return basic.neg(self)

    def __pow__(self, exponent):
        """``self ** exponent`` for a Python number exponent."""
        return basic.pow(self, exponent)

    def __matmul__(self, other):
        """``self @ other`` (NumPy's matmul rules)."""
        return basic.matmul(self, other)

    def __rmatmul__(self, other):
        """``other @ self``."""
        return basic.matmul(other, self)

    def __getitem__(self, index):
        """``self[index]``: slices, ints, None, Ellipsis, integer or boolean arrays/tensors."""
        return basic.getitem(self, index)

    # -- in place: change ``data`` itself, count the change ---------------------------------
    def _check_inplace(self, op):
        """In-place ops are not recorded in the graph, so refuse them where one would be needed."""
        if self.requires_grad and autograd.is_grad_enabled():
            if self.grad_fn is None:
                raise RuntimeError(
                    f"Tensor {op}: a leaf tensor that requires grad is being used in an in-place "
                    f"operation (PyTorch refuses this too); do it inside `with mr.no_grad():`, as "
                    f"an optimizer step does, or out of place (x = x + 1 makes a new tensor)")
            raise RuntimeError(
                f"Tensor {op}: this tensor is part of the graph (made by {self.grad_fn.name}) and "
                f"minires does not record in-place operations; write it out of place "
                f"(x = x + 1 makes a new tensor)")

    def _array_or_number(self, op, other):
        """``other`` (tensor, array, list or number) unwrapped to a bare number or an array on
        this tensor's device (another device is refused): what comparisons and in-place
        updates hand to NumPy/CuPy."""
        if isinstance(other, Tensor):
            other = other.data
        elif isinstance(other, (list, tuple)):
            other = get_array_module(self.data).asarray(other)
        if isinstance(other, (numbers.Number, np.generic)):
            return other
        if device_of(other) != self.device:
            raise RuntimeError(f"Tensor {op}: cannot combine a {device_of(other)} operand with a "
                               f"tensor on {self.device}; move one of them first")
        return other

    def _inplace_operand(self, op, other):
        """``other`` as a bare array or number for updating this tensor in place.

        Refuses a tensor that requires grad (the update cannot carry its gradient) and an
        operand whose broadcast with this tensor would change its shape."""
        if isinstance(other, Tensor):
            if other.requires_grad and autograd.is_grad_enabled():
                raise RuntimeError(f"Tensor {op}: the other operand requires grad, and an in-place "
                                   f"result cannot carry its gradient; write it out of place "
                                   f"(x = x + y), or use y.detach()")
        other = self._array_or_number(op, other)
        shape = tuple(np.shape(other))
        out = basic.broadcast_shape(f"Tensor {op}", self.shape, shape)
        if out != tuple(self.shape):
            raise ValueError(f"Tensor {op}: cannot update a tensor of shape {tuple(self.shape)} in "
                             f"place with an operand of shape {shape}: the result would have "
                             f"shape {out}")
        return other

    def _inplace(self, op, other, update):
        self._check_inplace(op)
        other = self._inplace_operand(op, other)
        try:
            update(self.data, other)
        except TypeError:   # NumPy's UFuncTypeError: the result's dtype does not fit in ours
            given = getattr(other, "dtype", type(other).__name__)
            raise TypeError(f"Tensor {op}: the result (this {self.dtype} tensor {op[0]} {given}) "
                            f"cannot be stored in place in a {self.dtype} tensor (NumPy's "
                            f"same-kind rule: e.g. a float result in an integer tensor); compute "
                            f"out of place (x = x {op[0]} y) or convert first "
                            f"(x.astype(np.float32))") from None
        self._bump_version()
        return self

    def __iadd__(self, other):
        """``self += other``, in place (as in PyTorch: every tensor sharing the array sees it)."""
        return self._inplace("+=", other, operator.iadd)

    def __isub__(self, other):
        """``self -= other``, in place."""
        return self._inplace("-=", other, operator.isub)

    def __imul__(self, other):
        """``self *= other``, in place."""
        return self._inplace("*=", other, operator.imul)

    def __itruediv__(self, other):
        """``self /= other``, in place (an integer tensor refuses: the result is not an integer)."""
        return self._inplace("/=", other, operator.itruediv)

    def zero_(self):
        """Set every element to 0, in place; returns self."""
        self._check_inplace("zero_()")
        self.data[...] = 0
        self._bump_version()
        return self

    def fill_(self, value):
        """Set every element to the number ``value``, in place; returns self."""
        self._check_inplace("fill_()")
        if isinstance(value, Tensor):
            value = value.item()
        if not isinstance(value, numbers.Number):
            raise TypeError(f"Tensor fill_(): expected a number, got {type(value).__name__}")
        self.data[...] = value
        self._bump_version()
        return self

    def copy_(self, src):
        """Copy the elements of ``src`` (a tensor, array or number broadcasting to this shape)
        into this tensor, in place, converting to this dtype and device; returns self."""
        self._check_inplace("copy_()")
        if isinstance(src, Tensor):
            if src.requires_grad and autograd.is_grad_enabled():
                raise RuntimeError("Tensor copy_(): src requires grad, and an in-place copy cannot "
                                   "carry its gradient; use src.detach()")
            src = src.data
        src = to_device(src, self.device) if device_of(src) != self.device else src
        self.data[...] = self._inplace_operand("copy_()", src)
        self._bump_version()
        return self

    # -- comparisons ------------------------------------------------------------------------
    # Elementwise, as in PyTorch, giving boolean tensors outside the graph (no gradient
    # exists). Anything that is not a tensor, array, number or list compares by identity
    # (``t == None`` is False). ``__hash__`` stays identity-based.
    def _compare(self, other, op, symbol):
        if not (isinstance(other, (Tensor, numbers.Number, np.generic, list, tuple))
                or is_array(other)):
            return NotImplemented
        other = self._array_or_number(symbol, other)
        basic.broadcast_shape(f"Tensor {symbol}", self.shape, np.shape(other))
        return Tensor(get_array_module(self.data).asarray(op(self.data, other)))

    def __eq__(self, other):
        """``self == other`` elementwise: a boolean tensor (not a Python bool), as in PyTorch."""
        return self._compare(other, operator.eq, "==")

    def __ne__(self, other):
        """``self != other`` elementwise: a boolean tensor."""
        return self._compare(other, operator.ne, "!=")

    def __lt__(self, other):
        """``self < other`` elementwise: a boolean tensor."""
        return self._compare(other, operator.lt, "<")

    def __le__(self, other):
        """``self <= other`` elementwise: a boolean tensor."""
        return self._compare(other, operator.le, "<=")

    def __gt__(self, other):
        """``self > other`` elementwise: a boolean tensor."""
        return self._compare(other, operator.gt, ">")

    def __ge__(self, other):
        """``self >= other`` elementwise: a boolean tensor."""
        return self._compare(other, operator.ge, ">=")

    __hash__ = object.__hash__      # by identity: dict keys and sets never call ``==``

    # -- reductions: NumPy's axis/keepdims or PyTorch's dim/keepdim ---------------------------
    def sum(self, axis=None, keepdims=None, *, dim=None, keepdim=None, dtype=None, out=None):
        """Sum over ``axis`` (None: all); ``dim``/``keepdim`` are accepted as PyTorch spells them.

        ``keepdims`` (default False) keeps the reduced axes with size 1. Giving both
        spellings of one argument is a TypeError. ``dtype``/``out`` are there so that
        ``np.sum(t)`` works: ``dtype`` casts the input first, ``out`` is not supported.
        """
        return basic.sum(_numpy_style(self, dtype, out, "sum"), axis, keepdims, dim=dim,
                         keepdim=keepdim)

    def mean(self, axis=None, keepdims=None, *, dim=None, keepdim=None, dtype=None, out=None):
        """Mean over ``axis`` (None: all); ``dim``/``keepdim``, ``dtype``/``out`` as in ``sum``
        (so ``np.mean(pred == y)`` is the accuracy)."""
        return basic.mean(_numpy_style(self, dtype, out, "mean"), axis, keepdims, dim=dim,
                          keepdim=keepdim)

    def max(self, axis=None, keepdims=None, *, dim=None, keepdim=None):
        """Maximum over ``axis`` (None: all) -- the values, as ``numpy.max`` gives them.

        With PyTorch's ``dim=`` (one int) it returns ``(values, indices)`` as
        ``torch.max(x, dim)`` does (fields ``.values`` and ``.indices``).
        """
        return basic.max(self, axis, keepdims, dim=dim, keepdim=keepdim)

    def min(self, axis=None, keepdims=None, *, dim=None, keepdim=None):
        """Minimum over ``axis``; with ``dim=`` ``(values, indices)``, as ``max``."""
        return basic.min(self, axis, keepdims, dim=dim, keepdim=keepdim)

    def argmax(self, axis=None, keepdims=None, *, dim=None, keepdim=None):
        """Indices of the maxima over ``axis`` (None: of the flattened tensor), an int64
        tensor outside the graph; ``dim``/``keepdim`` accepted, as in ``sum``."""
        return basic.argmax(self, axis, keepdims, dim=dim, keepdim=keepdim)

    # -- shape ops ------------------------------------------------------------------------------
    def reshape(self, *shape):
        """The same elements in a new shape: ``x.reshape(2, 3)`` or ``x.reshape((2, 3))``."""
        return basic.reshape(self, *shape)

    def view(self, *shape):
        """The same as ``reshape`` here (PyTorch's ``view``): a new shape for the same elements.

        Unlike PyTorch, it never refuses a non-contiguous tensor: NumPy gives a view
        when it can and a copy otherwise; either way the gradient is the same.
        """
        return basic.reshape(self, *shape)

    def transpose(self, *axes):
        """Permute the axes (NumPy's ``transpose``; no arguments reverses them)."""
        return basic.transpose(self, *axes)

    def permute(self, *axes):
        """Permute the axes: ``x.permute(0, 2, 3, 1)`` (the same as ``transpose``)."""
        return basic.transpose(self, *axes)

    @property
    def T(self):
        """The axes reversed (the transpose of a matrix)."""
        return basic.transpose(self)

    def flatten(self, start_dim=0, end_dim=-1):
        """Merge axes ``start_dim``..``end_dim`` into one, as ``torch.flatten``: all of them by
        default; ``x.flatten(1)`` keeps the batch axis ((N, C, H, W) -> (N, C*H*W))."""
        return basic.flatten(self, start_dim, end_dim)

    # -- elementwise math -----------------------------------------------------------------------
    def exp(self):
        """Elementwise e ** x."""
        return basic.exp(self)

    def log(self):
        """Elementwise natural logarithm."""
        return basic.log(self)

    def sqrt(self):
        """Elementwise square root."""
        return basic.sqrt(self)

    def abs(self):
        """Elementwise absolute value."""
        return basic.abs(self)

    def clip(self, low=None, high=None):
        """Clamp to [low, high] (either may be None); the gradient flows inside the range."""
        return basic.clip(self, low, high)


# --- making tensors ---------------------------------------------------------------------------
def tensor(data, requires_grad=False, dtype=None, device="cpu"):
    """Make a leaf tensor from ``data`` (copied, like ``torch.tensor``).

    dtype rules (PyTorch's): an array or NumPy scalar keeps its dtype (float64 stays
    float64, integer labels stay integers, uint8 images stay uint8); Python floats and
    lists of floats become float32, Python ints int64, bools bool. ``dtype=``
    overrides all of that.
    """
    if isinstance(data, Tensor):
        data = data.data
    xp = get_array_module(data)
    array = xp.array(data)                          # a copy, like torch.tensor
    if dtype is not None:
        _check_kind("tensor()", dtype)
        array = array.astype(dtype, copy=False)
    elif hasattr(data, "dtype"):
        _check_kind("tensor()", array.dtype)
    else:
        array = array.astype(_python_dtype("tensor()", array), copy=False)
    return Tensor(to_device(array, "cpu" if device is None else device),
                  requires_grad=requires_grad)


def from_numpy(array):
    """A tensor that shares memory with the NumPy ``array`` (no copy), keeping its dtype.

    As with ``torch.from_numpy``, changing one changes the other (such changes are not
    counted by the version check: the array is written directly).
    """
    if not isinstance(array, np.ndarray):
        raise TypeError(f"from_numpy(): expected a numpy.ndarray, got {type(array).__name__} "
                        f"(use minires.tensor(...) for lists, numbers and CuPy arrays)")
    _check_kind("from_numpy()", array.dtype)
    return Tensor(array)


def _shape_arg(op, size):
    """``zeros(2, 3)`` and ``zeros((2, 3))`` alike: the shape as a tuple of ints >= 0."""
    if len(size) == 1 and isinstance(size[0], (tuple, list)):
        size = tuple(size[0])
    if not all(isinstance(s, numbers.Integral) and not isinstance(s, bool) for s in size):
        raise TypeError(f"{op}: the size must be ints, as {op}(2, 3) or {op}((2, 3)); got "
                        f"{size!r}")
    if any(s < 0 for s in size):
        raise ValueError(f"{op}: sizes must be >= 0, got {tuple(int(s) for s in size)}")
    return tuple(int(s) for s in size)


def _filled(op, size, value, dtype, requires_grad, device):
    shape = _shape_arg(op, size)
    dtype = DEFAULT_DTYPE if dtype is None else dtype
    _check_kind(f"{op}()", dtype)
    return Tensor(array_module_for(device).full(shape, value, dtype=dtype),
                  requires_grad=requires_grad)


def zeros(*size, dtype=None, requires_grad=False, device=None):
    """A tensor of zeros of shape ``size`` (``zeros(2, 3)`` or ``zeros((2, 3))``), float32
    unless ``dtype=`` says otherwise, on ``device`` ("cpu" by default), like ``torch.zeros``."""
    return _filled("zeros", size, 0, dtype, requires_grad, device)


def ones(*size, dtype=None, requires_grad=False, device=None):
    """A tensor of ones of shape ``size``; float32 unless ``dtype=`` says otherwise
    (``torch.ones``)."""
    return _filled("ones", size, 1, dtype, requires_grad, device)


def randn(*size, dtype=None, requires_grad=False, device=None):
    """Standard normal samples of shape ``size`` (``torch.randn``), float32 unless ``dtype=``
    says otherwise (a floating dtype).

    Drawn on the host from minires' seeded generator (``minires.backend.default_rng()``,
    set by ``mr.manual_seed``), then moved to ``device``: the same seed gives the same
    numbers on the CPU and on the GPU, and in float32 and float64 (up to rounding).
    """
    shape = _shape_arg("randn", size)
    dtype = np.dtype(DEFAULT_DTYPE if dtype is None else dtype)
    if dtype.kind != "f":
        raise TypeError(f"randn(): normal samples need a floating-point dtype, got {dtype}")
    # Drawn in float64 whatever the dtype: one seed gives the same numbers (rounded) in each.
    array = default_rng().standard_normal(shape).astype(dtype, copy=False)
    if device is not None and check_device(device) != "cpu":
        array = to_device(array, device)
    return Tensor(array, requires_grad=requires_grad)
