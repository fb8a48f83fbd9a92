"""The autograd engine: ``Function`` (one op, forward + backward) and the graph walk.

How it works, in three sentences. Calling a ``Function`` on tensors runs its
``forward`` on the raw arrays and, when gradients are wanted, records the
function as the ``grad_fn`` of each output -- that is the graph. ``backward``
then visits every recorded function once, in reverse topological order, hands
it the gradient of its outputs and collects the gradients of its inputs.
Gradients of tensors used twice are summed, and gradients of broadcast inputs are
summed back to the input's shape, here and only here, so ops need not care.

This file knows nothing about the ``Tensor`` class by name (``tensor.py`` builds
on it): a tensor is anything that has what ``TensorLike`` below lists -- the
complete list of what the engine reads or writes on a tensor. That keeps the
imports one-way: backend <- autograd <- functional <- tensor. Bookkeeping is keyed
by identity (``id(tensor)``), never by ``==``, which is elementwise on tensors.
"""
from __future__ import annotations

import threading
import weakref
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

from .backend import get_array_module

# --- grad mode ----------------------------------------------------------------
# Whether ops record the graph. Per thread (like PyTorch), so a background data
# loader can never switch recording off for the training loop.
_grad_mode = threading.local()


def is_grad_enabled() -> bool:
    """Whether ops record the graph now (False inside ``no_grad``), in this thread."""
    return getattr(_grad_mode, "enabled", True)


class _GradMode:
    """Context manager and decorator that sets grad mode, restoring it after."""

    enabled = True

    def __enter__(self):
        self._prev = is_grad_enabled()
        _grad_mode.enabled = self.enabled
        return self

    def __exit__(self, *exc):
        _grad_mode.enabled = self._prev
        return False

    def __call__(self, func):
        """Use as a decorator: ``@no_grad()`` runs ``func`` in this grad mode."""
        def wrapper(*args, **kwargs):
            with self.__class__():
                return func(*args, **kwargs)
        wrapper.__name__ = func.__name__
        wrapper.__doc__ = func.__doc__
        return wrapper


class no_grad(_GradMode):
    """``with no_grad(): ...`` runs ops without recording the graph."""

    enabled = False


class enable_grad(_GradMode):
    """Turn recording back on inside a ``no_grad`` block."""

    enabled = True


# --- what the engine needs of a tensor ---------------------------------------------
class VersionCounter(Protocol):
    """A counter of in-place changes, shared by the tensors that view one array."""

    value: int


@runtime_checkable
class TensorLike(Protocol):
    """Everything the engine in this file uses on a tensor; ``minires.Tensor`` provides it.

    Listed here once so that a rename in ``tensor.py`` shows up as a failing test
    (``tests/test_autograd.py``) rather than as an AttributeError mid-backward. The
    engine's annotations name this protocol, never the ``Tensor`` class.
    """

    @property
    def data(self) -> Any:
        """The NumPy/CuPy array: ``forward`` runs on it, and saved arrays are matched to it."""

    @property
    def requires_grad(self) -> bool:
        """Whether gradients flow to it: decides whether a call is recorded, and which
        inputs get a gradient in backward (``Function.needs_input_grad``)."""

    @property
    def grad_fn(self) -> Function | None:
        """The ``Function`` that made it (None for a leaf): the edges the graph walk follows."""

    @property
    def grad(self) -> Any:
        """The accumulated gradient array (None before any): backward adds to it on leaves
        and on non-leaves that retain it."""

    @grad.setter
    def grad(self, value: Any) -> None: ...

    @property
    def shape(self) -> tuple:
        """Broadcast gradients are summed back to it (``sum_to_shape``); also in messages."""

    @property
    def dtype(self) -> Any:
        """An input's gradient is cast to it; also in messages."""

    @property
    def device(self) -> str:
        """``"cpu"`` or ``"cuda"``: a call refuses inputs on different devices."""

    @property
    def _version_counter(self) -> VersionCounter:
        """Its in-place change counter: noted when forward saves its array, checked again
        in backward (``Function.saved``)."""

    @property
    def _retains_grad(self) -> bool:
        """Whether a non-leaf keeps ``grad`` after backward (``retain_grad()``)."""

    def _wrap_output(self, array: Any, grad_fn: Function | None,
                     view_of: TensorLike | None = None) -> TensorLike:
        """Make the result tensor of a call around ``array``, with ``grad_fn`` (None when
        not recorded); ``view_of`` is the input whose array it views (it then shares that
        input's version counter)."""

    def _run_hooks(self, grad: Any) -> Any:
        """Pass the gradient arriving at this tensor through its ``register_hook`` hooks;
        returns the (possibly replaced) gradient."""


def is_tensor(obj) -> bool:
    """Whether ``obj`` is a minires tensor (duck-typed: autograd never names the class).

    A cheap check of two ``TensorLike`` members, since every op call runs it; the test
    suite checks that ``Tensor`` has all of them.
    """
    return hasattr(obj, "_wrap_output") and hasattr(obj, "grad_fn")


# --- Function -------------------------------------------------------------------
_FREED = object()   # marks saved arrays released after backward


class Function:
    """One differentiable op.

    Subclasses write ``forward(*arrays)`` (raw NumPy/CuPy arrays in, an array or a
    tuple of arrays out) and ``backward(*grad_outputs)`` (one gradient per output
    in, a tuple with one gradient per input out, ``None`` where an input needs
    none). Whatever backward needs, forward keeps with ``save_for_backward`` --
    each op thereby declares what it keeps -- and the engine frees it after
    backward unless the graph is retained. Non-array settings (stride, axis ...)
    are plain attributes set in ``__init__``.

    Call an instance on tensors: ``Exp()(x)``. ``None`` may stand for an absent
    optional input (a conv without bias); it gets no gradient.

    Saved arrays are not copied, so changing one in place before backward would
    give a silently wrong gradient. To catch that, when forward saves an input's or
    an output's array (or a view of one), the call notes that tensor's version
    counter (``Tensor._version``, bumped by every in-place tensor operation and
    optimizer step); ``saved`` checks the counters again in backward and raises
    PyTorch's "modified by an inplace operation" error if one has moved.
    """

    _saved_versions = ()    # (counter, version at save, description) per saved tensor

    def __init__(self):
        self._saved = ()

    @property
    def name(self) -> str:
        """The op's name in messages and reprs: the class name (``"Conv2d"``, ``"Mul"`` ...)."""
        return type(self).__name__

    # -- what backward keeps ------------------------------------------------------
    def save_for_backward(self, *arrays):
        """Keep ``arrays`` for backward (call from ``forward``; read them back with ``saved``).

        The arrays are kept as they are, not copied. Saving an input's or an output's
        own array (or a view of it) also makes backward check that the tensor was not
        changed in place in between (see the class docstring).
        """
        self._saved = arrays

    @property
    def saved(self):
        """The arrays ``save_for_backward`` kept, as a tuple (read them in ``backward``).

        Raises RuntimeError if they were freed by an earlier backward, or if a saved
        tensor was modified in place since forward (its version moved on).
        """
        if self._saved is _FREED:
            raise RuntimeError(
                f"{self.name}.backward: the arrays saved for backward were already freed by an "
                f"earlier backward() through this graph. Pass retain_graph=True to the first "
                f"backward() if you need to backpropagate through the same graph twice.")
        for counter, version, what in self._saved_versions:
            if counter.value != version:
                raise RuntimeError(
                    f"{self.name}.backward: one of the variables needed for gradient computation "
                    f"has been modified by an inplace operation: [{what}] is at version "
                    f"{counter.value}; expected version {version} instead. Hint: it was changed in "
                    f"place (+=, -=, *=, /=, zero_(), fill_(), copy_() or an optimizer step) after "
                    f"{self.name} saved it in forward; make that change after backward(), or out "
                    f"of place (x = x + 1 makes a new tensor).")
        return self._saved

    def release(self):
        """Free the saved arrays (the engine calls this after backward unless retain_graph)."""
        self._saved = _FREED
        self._saved_versions = ()

    def _note_saved_versions(self, inputs: Sequence[TensorLike | None],
                             outputs: Sequence[TensorLike]) -> None:
        """Remember the version of each input/output tensor whose array forward saved.

        ``outputs`` are the result tensors. Matching is by identity of the array or of
        the array a view was taken from (``.base``): cheap, and no copies.
        """
        found = []
        for a in self._saved:
            for role, tensors in (("input", inputs), ("output", outputs)):
                i = next((i for i, t in enumerate(tensors)
                          if t is not None and _same_memory(a, t.data)), None)
                if i is not None:
                    t = tensors[i]
                    what = (f"Tensor of shape {tuple(t.shape)}, dtype {t.dtype}, which is "
                            f"{role} {i} of {self.name}")
                    found.append((t._version_counter, t._version_counter.value, what))
                    break
        self._saved_versions = tuple(found)

    # -- the contract subclasses fill in ------------------------------------------
    def forward(self, *arrays):  # pragma: no cover - abstract
        """Compute the op on raw arrays; return an array or a tuple of arrays (subclasses)."""
        raise NotImplementedError

    def backward(self, *grad_outputs):  # pragma: no cover - abstract
        """Given one gradient per output, return one gradient per input, None where not needed."""
        raise NotImplementedError

    # -- recording ------------------------------------------------------------------
    def __call__(self, *inputs: TensorLike | None):
        """Run ``forward`` on the inputs' arrays and wrap the results as tensors.

        When grad mode is on and an input requires grad, the results get this function
        as their ``grad_fn`` (recorded in the graph); otherwise the saved arrays are
        freed at once. A result whose array is an input's array or a view of it shares
        that input's version counter, as a view does in PyTorch.
        """
        tensors = [x for x in inputs if x is not None]
        bad = [type(x).__name__ for x in tensors if not is_tensor(x)]
        if not tensors or bad:
            raise TypeError(f"{self.name}: expected Tensor inputs, got {bad or 'none'}; "
                            f"wrap arrays with minires.tensor(...)")
        devices = sorted({t.device for t in tensors})
        if len(devices) > 1:
            raise RuntimeError(f"{self.name}: inputs are on different devices "
                               f"({' and '.join(devices)}); move them to one device with "
                               f".to(device) first")
        self.needs_input_grad = tuple(x is not None and x.requires_grad for x in inputs)
        record = is_grad_enabled() and any(self.needs_input_grad)

        outputs = self.forward(*(None if x is None else x.data for x in inputs))
        single = not isinstance(outputs, tuple)
        if single:
            outputs = (outputs,)
        results = tuple(
            tensors[0]._wrap_output(y, self if record else None,
                                    next((x for x in tensors if _same_memory(y, x.data)), None))
            for y in outputs)
        if record:
            self.inputs = inputs
            # Weak references: the graph must not keep outputs alive (only inputs).
            self.outputs = tuple(weakref.ref(r) for r in results)
            self.output_meta = tuple((y.shape, y.dtype) for y in outputs)
            self._note_saved_versions(inputs, results)
        else:
            self.release()
        return results[0] if single else results


def _same_memory(a, b) -> bool:
    """Whether arrays ``a`` and ``b`` are one array, or views of the same array (by identity)."""
    if a is b:
        return True
    base_a, base_b = getattr(a, "base", None), getattr(b, "base", None)
    return (base_a is not None and (base_a is b or base_a is base_b)) or (
        base_b is not None and base_b is a)


# --- the graph walk ------------------------------------------------------------
def sum_to_shape(grad, shape, op_name="autograd"):
    """Sum a broadcast gradient back to ``shape`` (the reverse of broadcasting)."""
    if grad.shape == tuple(shape):
        return grad
    given = grad.shape
    lead = grad.ndim - len(shape)
    if lead >= 0:
        axes = tuple(range(lead)) + tuple(
            lead + i for i, s in enumerate(shape) if s == 1 and grad.shape[lead + i] != 1)
        grad = grad.sum(axis=axes, keepdims=True) if axes else grad
        if lead:
            grad = grad.reshape(grad.shape[lead:])
    if lead < 0 or grad.shape != tuple(shape):
        raise RuntimeError(f"{op_name}.backward returned a gradient of shape {given} "
                           f"for an input of shape {tuple(shape)}")
    return grad


def _graph_dependencies(root_fn: Function) -> dict[Function, int]:
    """For each Function reachable from ``root_fn``: how many graph edges consume its outputs.

    An explicit stack instead of recursion, so a chain of 100,000 ops is fine.
    """
    deps = {root_fn: 0}
    stack = [root_fn]
    while stack:
        fn = stack.pop()
        for x in fn.inputs:
            parent = None if x is None else x.grad_fn
            if parent is None:
                continue
            if parent not in deps:
                deps[parent] = 0
                stack.append(parent)
            deps[parent] += 1
    return deps


def run_backward(root: TensorLike, grad, retain_graph: bool = False) -> None:
    """Backpropagate ``grad`` (an array shaped like ``root``) through the graph of ``root``.

    Kahn's algorithm: a function runs once every consumer of its outputs has
    passed its gradient down, so each node is visited exactly once. Tensors are
    keyed by identity (``id``), never by ``==``, which is elementwise on tensors;
    each keyed tensor stays alive meanwhile (the graph's functions hold their inputs).
    """
    grads = {id(root): grad}        # id(tensor) -> gradient accumulated so far
    handed_out = {id(grad)}         # arrays someone else holds (see the leaves below)
    leaves: dict[int, TensorLike] = {}   # id -> leaf tensor reached, in the order first reached
    if root.grad_fn is None:
        leaves[id(root)] = root
    else:
        deps = _graph_dependencies(root.grad_fn)
        ready = [root.grad_fn]
        while ready:
            fn = ready.pop()
            grad_outputs = []
            for ref, (shape, dtype) in zip(fn.outputs, fn.output_meta):
                y = ref()
                g = grads.pop(id(y), None) if y is not None else None
                if g is not None:
                    g = y._run_hooks(g)
                    if y._retains_grad:
                        y.grad = g if y.grad is None else y.grad + g
                        handed_out.add(id(y.grad))
                if g is None:   # an output nobody used: its gradient is zero
                    xp = _module_of(fn)
                    g = xp.zeros(shape, dtype=dtype)
                grad_outputs.append(g)

            grad_inputs = fn.backward(*grad_outputs)
            if not isinstance(grad_inputs, tuple):
                grad_inputs = (grad_inputs,)
            if len(grad_inputs) != len(fn.inputs):
                raise RuntimeError(f"{fn.name}.backward returned {len(grad_inputs)} gradients "
                                   f"for {len(fn.inputs)} inputs")
            if not retain_graph:
                fn.release()

            for x, gx, needed in zip(fn.inputs, grad_inputs, fn.needs_input_grad):
                if not needed:
                    continue
                if gx is not None:
                    gx = sum_to_shape(gx, x.shape, fn.name)
                    if gx.dtype != x.dtype:
                        gx = gx.astype(x.dtype)
                    grads[id(x)] = gx if id(x) not in grads else grads[id(x)] + gx
                if x.grad_fn is None:
                    if id(x) in grads:
                        leaves[id(x)] = x
                else:
                    # Counted even when gx is None (no gradient on this edge), or the
                    # producer of x would wait forever and its other paths be lost.
                    deps[x.grad_fn] -= 1
                    if deps[x.grad_fn] == 0:
                        ready.append(x.grad_fn)

    # Leaves keep their gradient in .grad, summed over backward calls (like PyTorch).
    # Ops may hand one array to several inputs (add) or a read-only view (sum's
    # broadcast), so a leaf's first gradient is copied unless it is already a
    # fresh array of its own: then ``p.grad`` can be updated in place safely.
    for key, leaf in leaves.items():
        g = leaf._run_hooks(grads.pop(key))
        if leaf.grad is None:
            if id(g) in handed_out or g.base is not None or not getattr(g.flags, "writeable", True):
                g = g.copy()
            handed_out.add(id(g))
            leaf.grad = g
        else:
            leaf.grad = leaf.grad + g


def _module_of(fn: Function):
    """The array module (numpy or cupy) of ``fn``'s inputs."""
    for x in fn.inputs:
        if x is not None:
            return get_array_module(x.data)
    raise RuntimeError(f"{fn.name}: has no inputs")  # pragma: no cover


__all__ = ["Function", "TensorLike", "VersionCounter", "no_grad", "enable_grad",
           "is_grad_enabled", "run_backward", "sum_to_shape", "is_tensor"]
