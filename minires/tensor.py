"""``Tensor``: an array that remembers the op that made it, and ``tensor()`` to make one."""
from __future__ import annotations

import numbers

import numpy as np

from . import autograd
from .backend import DEFAULT_DTYPE, device_of, get_array_module, to_device
from .functional import basic


class _HookHandle:
    def __init__(self, hooks, fn):
        self._hooks, self._fn = hooks, fn

    def remove(self):
        if self._fn in self._hooks:
            self._hooks.remove(self._fn)


class Tensor:
    """A NumPy/CuPy array plus what autograd needs.

    ``data``     the array (NumPy on "cpu", CuPy on "cuda")
    ``grad``     the gradient array after ``backward()`` (leaves, or after ``retain_grad()``)
    ``grad_fn``  the ``Function`` that produced this tensor (None for leaves)
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

    # -- autograd state --------------------------------------------------------------
    @property
    def requires_grad(self) -> bool:
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
        return self.grad_fn is None

    def _wrap_output(self, array, grad_fn):
        """Make the result tensor of an op (called by ``Function``)."""
        return Tensor(array, requires_grad=grad_fn is not None, grad_fn=grad_fn)

    def _lift(self, value):
        """A constant tensor for ``value`` on this tensor's device (Python numbers take our dtype)."""
        xp = get_array_module(self.data)
        if isinstance(value, numbers.Number) and not isinstance(value, bool):
            return Tensor(xp.asarray(value, dtype=self.data.dtype))
        if isinstance(value, (list, tuple)):
            return Tensor(xp.asarray(value, dtype=self.data.dtype))
        if device_of(value) != self.device:
            raise RuntimeError(f"cannot combine a {device_of(value)} array with a tensor on "
                               f"{self.device}; move one of them first")
        return Tensor(xp.asarray(value))

    def backward(self, grad=None, retain_graph=False):
        """Compute the gradient of this tensor with respect to every leaf that requires grad."""
        if not self.requires_grad:
            raise RuntimeError("backward(): this tensor does not require grad and has no grad_fn "
                               "(did you compute it under no_grad, or from tensors without "
                               "requires_grad=True?)")
        xp = get_array_module(self.data)
        if grad is None:
            if self.data.size != 1:
                raise RuntimeError(f"backward(): grad can be implicit only for a scalar output, but "
                                   f"this tensor has shape {self.shape}; call backward(grad) with "
                                   f"a gradient of shape {self.shape}")
            grad = xp.ones_like(self.data)
        else:
            grad = grad.data if isinstance(grad, Tensor) else xp.asarray(grad, dtype=self.data.dtype)
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
        """The same data, cut from the graph."""
        return Tensor(self.data)

    def zero_grad(self):
        self.grad = None

    # -- array-like attributes -----------------------------------------------------------
    @property
    def shape(self):
        return self.data.shape

    @property
    def ndim(self):
        return self.data.ndim

    @property
    def size(self):
        return self.data.size

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def device(self) -> str:
        return device_of(self.data)

    def __len__(self):
        return len(self.data)

    def __bool__(self):
        """Truth of a one-element tensor; ambiguous (an error) for more elements, like NumPy."""
        if self.data.size != 1:
            raise ValueError(f"the truth value of a tensor of shape {self.shape} is ambiguous; "
                             f"reduce it first (x.sum(), x.max() ...) or compare x.numpy()")
        return bool(self.data.reshape(()).item())

    def numpy(self) -> np.ndarray:
        """The data as a NumPy array (copied from the GPU if need be)."""
        return to_device(self.data, "cpu")

    def item(self):
        if self.data.size != 1:
            raise ValueError(f"item(): only a one-element tensor has an item; shape is {self.shape}")
        return self.data.reshape(()).item()

    def to(self, device):
        """This tensor on ``device`` ("cpu" or "cuda"); a leaf stays a leaf with its requires_grad."""
        if device == self.device:
            return self
        if self.grad_fn is not None:
            raise RuntimeError("to(): move leaf tensors (inputs and parameters), not intermediate "
                               f"results (this one was made by {self.grad_fn.name})")
        out = Tensor(to_device(self.data, device), requires_grad=self.requires_grad)
        if self.grad is not None:
            out.grad = to_device(self.grad, device)
        return out

    def cpu(self):
        return self.to("cpu")

    def cuda(self):
        return self.to("cuda")

    def astype(self, dtype):
        """A copy with another dtype, cut from the graph."""
        return Tensor(self.data.astype(dtype))

    def __repr__(self):
        extra = f", grad_fn={self.grad_fn.name}" if self.grad_fn is not None else (
            ", requires_grad=True" if self.requires_grad else "")
        body = np.array2string(self.numpy(), separator=", ", prefix="tensor(", threshold=50)
        dev = ", device='cuda'" if self.device == "cuda" else ""
        return f"tensor({body}, dtype={self.dtype}{dev}{extra})"

    # -- arithmetic (each one op with a backward, in functional/basic.py) ----------------------
    def __add__(self, other):
        return basic.add(self, other)

    def __radd__(self, other):
        return basic.add(other, self)

    def __sub__(self, other):
        return basic.sub(self, other)

    def __rsub__(self, other):
        return basic.sub(other, self)

    def __mul__(self, other):
        return basic.mul(self, other)

    def __rmul__(self, other):
        return basic.mul(other, self)

    def __truediv__(self, other):
        return basic.div(self, other)

    def __rtruediv__(self, other):
        return basic.div(other, self)

    def __neg__(self):
        return basic.neg(self)

    def __pow__(self, exponent):
        return basic.pow(self, exponent)

    def __matmul__(self, other):
        return basic.matmul(self, other)

    def __rmatmul__(self, other):
        return basic.matmul(other, self)

    def __getitem__(self, index):
        return basic.getitem(self, index)

    # Comparisons give boolean tensors outside the graph (no gradient exists).
    # ``==`` is left as identity so tensors can be dict keys, as the engine needs.
    def _compare(self, other, op):
        other = other.data if isinstance(other, Tensor) else other
        return Tensor(op(self.data, other))

    def __lt__(self, other):
        return self._compare(other, lambda a, b: a < b)

    def __le__(self, other):
        return self._compare(other, lambda a, b: a <= b)

    def __gt__(self, other):
        return self._compare(other, lambda a, b: a > b)

    def __ge__(self, other):
        return self._compare(other, lambda a, b: a >= b)

    __hash__ = object.__hash__

    # -- methods with NumPy's argument names ---------------------------------------------------
    def sum(self, axis=None, keepdims=False):
        return basic.sum(self, axis, keepdims)

    def mean(self, axis=None, keepdims=False):
        return basic.mean(self, axis, keepdims)

    def max(self, axis=None, keepdims=False):
        return basic.max(self, axis, keepdims)

    def min(self, axis=None, keepdims=False):
        return basic.min(self, axis, keepdims)

    def reshape(self, *shape):
        return basic.reshape(self, *shape)

    def transpose(self, *axes):
        return basic.transpose(self, *axes)

    def permute(self, *axes):
        return basic.transpose(self, *axes)

    @property
    def T(self):
        return basic.transpose(self)

    def flatten(self, start_axis=0):
        return basic.flatten(self, start_axis)

    def exp(self):
        return basic.exp(self)

    def log(self):
        return basic.log(self)

    def sqrt(self):
        return basic.sqrt(self)

    def abs(self):
        return basic.abs(self)

    def clip(self, low=None, high=None):
        return basic.clip(self, low, high)

    def argmax(self, axis=None):
        """Indices of the maxima (an integer tensor, outside the graph)."""
        return Tensor(self.data.argmax(axis=axis))


def tensor(data, requires_grad=False, dtype=None, device="cpu"):
    """Make a leaf tensor.

    A floating array keeps its dtype (float64 stays float64); Python numbers, lists
    and integer or boolean arrays become float32 unless ``dtype=`` says otherwise.
    """
    if isinstance(data, Tensor):
        data = data.data
    xp = get_array_module(data)
    array = xp.array(data)                          # a copy, like torch.tensor
    if dtype is not None:
        array = array.astype(dtype, copy=False)
    elif not (hasattr(data, "dtype") and np.issubdtype(array.dtype, np.floating)):
        array = array.astype(DEFAULT_DTYPE, copy=False)
    return Tensor(to_device(array, device), requires_grad=requires_grad)
