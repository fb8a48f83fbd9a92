"""``Module``, ``Parameter``, ``Sequential``, ``ModuleList``: the module system.

A ``Module`` owns three ordered dictionaries, filled by plain attribute
assignment (``__setattr__``), in the order the attributes are set:

    _parameters   name -> Parameter   (learned, requires_grad=True)
    _buffers      name -> Tensor      (state that is not learned: BN running statistics)
    _modules      name -> Module      (children)

Everything else -- ``parameters()``, ``state_dict()``, ``train()``, ``to()``,
``repr`` -- walks those dictionaries, so a model is just a tree of modules. Names
are dotted paths from the root (``layer1.0.conv1.weight``), as in PyTorch. One walk,
``named_modules``, visits the tree; one more, ``_named_tensors``, names the
parameters and buffers on it, and ``named_parameters``, ``named_buffers``,
``state_dict`` and ``load_state_dict`` all read it (checkpoints and the safetensors
export read ``state_dict``), so they always agree on names and order.

Calling a module (``module(x)``) runs, in order: forward pre-hooks, forward,
forward hooks; when full backward hooks are registered it also wraps the tensor
inputs and outputs in an identity ``Function`` (``_BackwardHookFunction``) so
that in backward the hook receives ``grad_output`` (the gradient arriving at the
module's outputs) and ``grad_input`` (the gradient the module sends back to its
inputs), exactly the two things PyTorch's ``register_full_backward_hook`` gives.
"""
from __future__ import annotations

import itertools
from collections import OrderedDict, namedtuple

import numpy as np

from ..autograd import Function, is_grad_enabled
from ..backend import (
    DEFAULT_DTYPE,
    check_device,
    device_of,
    get_array_module,
    is_cupy_array,
    to_device,
)
from ..tensor import Tensor


# --- Parameter ------------------------------------------------------------------
class Parameter(Tensor):
    """A tensor that is a learned weight: a module that holds one lists it in ``parameters()``.

    ``requires_grad`` is True by default. A floating array keeps its dtype (float64
    stays float64, for gradient checks); anything else becomes float32. The array
    is not copied.
    """

    def __init__(self, data, requires_grad=True):
        if isinstance(data, Tensor):
            data = data.data
        xp = get_array_module(data)
        data = xp.asarray(data)
        if not np.issubdtype(data.dtype, np.floating):
            data = data.astype(DEFAULT_DTYPE)
        super().__init__(data, requires_grad=requires_grad)

    def __repr__(self):
        return "Parameter containing:\n" + super().__repr__()


# --- hook handles ---------------------------------------------------------------
class RemovableHandle:
    """Returned by every ``register_*_hook``: ``handle.remove()`` unregisters the hook."""

    _ids = itertools.count()

    def __init__(self, hooks: OrderedDict):
        self._hooks = hooks
        self.id = next(RemovableHandle._ids)

    def remove(self):
        """Unregister the hook; calling it again does nothing.

        Leaving a ``with handle:`` block also calls it.
        """
        self._hooks.pop(self.id, None)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.remove()
        return False


# --- full backward hooks ----------------------------------------------------------
class _BackwardHookState:
    """What one call of a module with backward hooks shares between its two wrappers."""

    def __init__(self, module, n_inputs):
        self.module = module
        self.n_inputs = n_inputs
        self.grad_output = None


class _BackwardHookFunction(Function):
    """Identity on any number of tensors; its backward reports the gradients to the module's hooks.

    One instance wraps the module's tensor *outputs*: its backward sees the
    gradients arriving at the outputs (``grad_output``) and stores them. Another
    wraps the module's tensor *inputs*: its backward runs once the whole module has
    been backpropagated, and sees the gradients the module sends to its inputs
    (``grad_input``); it calls each hook with both. A hook may return a tuple to
    replace ``grad_input``. keeps: nothing.
    """

    def __init__(self, state, side):
        super().__init__()
        self.state, self.side = state, side

    def forward(self, *xs):
        return tuple(xs)

    def backward(self, *grads):
        state = self.state
        if self.side == "output":
            state.grad_output = grads
            if state.n_inputs == 0:     # no input needs grad: call the hooks now (as PyTorch)
                state.module._run_backward_hooks((None,), grads)
            return grads
        grad_input = tuple(g if need else None for g, need in zip(grads, self.needs_input_grad))
        result = state.module._run_backward_hooks(grad_input, state.grad_output)
        return tuple(grads if result is None else result)


def _wrap_tensors(values, fn):
    """Pass the tensors among ``values`` (a tuple) through ``fn``; other values stay as they are."""
    positions = [i for i, v in enumerate(values) if isinstance(v, Tensor) and v.requires_grad]
    if not positions:
        return values, 0
    wrapped = fn(*(values[i] for i in positions))
    out = list(values)
    for i, w in zip(positions, wrapped):
        out[i] = w
    return tuple(out), len(positions)


# --- Module -----------------------------------------------------------------------
_IncompatibleKeys = namedtuple("IncompatibleKeys", ["missing_keys", "unexpected_keys"])


def _addindent(text, spaces):
    lines = text.split("\n")
    if len(lines) == 1:
        return text
    return lines[0] + "\n" + "\n".join(" " * spaces + line for line in lines[1:])


class Module:
    """Base class of every layer, block and model.

    Subclasses call ``super().__init__()`` first, assign their parameters,
    buffers and sub-modules as attributes, and write ``forward``. ``training``
    (True after construction) says whether the module is in training mode;
    ``train()`` / ``eval()`` set it on the whole tree.
    """

    # Names of buffers that stay NumPy arrays on the host whatever device ``to()`` is given:
    # small counters the host updates (BatchNorm's num_batches_tracked), where a GPU copy
    # would cost a kernel launch per update and a wait for the GPU per read.
    _host_buffers = ()

    def __init__(self):
        # object.__setattr__: our own __setattr__ needs these dictionaries to exist.
        object.__setattr__(self, "training", True)
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "_forward_pre_hooks", OrderedDict())
        object.__setattr__(self, "_forward_hooks", OrderedDict())
        object.__setattr__(self, "_backward_hooks", OrderedDict())

    def forward(self, *args, **kwargs):
        """The computation of this module: subclasses must override it.

        Call the module (``module(x)``), not ``forward``, so that the hooks run.
        """
        raise NotImplementedError(f"{type(self).__name__} has no forward(); subclasses of "
                                  f"Module must define one")

    # -- registration by attribute assignment ------------------------------------------
    def _check_initialised(self, what):
        if "_parameters" not in self.__dict__:
            raise AttributeError(f"cannot assign {what} before Module.__init__() is called: call "
                                 f"super().__init__() first in {type(self).__name__}.__init__")

    def _forget(self, name):
        for table in (self.__dict__, self._parameters, self._buffers, self._modules):
            table.pop(name, None)

    def __setattr__(self, name, value):
        d = self.__dict__
        if isinstance(value, Parameter):
            self._check_initialised("parameters")
            self._forget(name)
            self._parameters[name] = value
        elif isinstance(value, Module):
            self._check_initialised("sub-modules")
            self._forget(name)
            self._modules[name] = value
        elif name in d.get("_parameters", ()):
            if value is not None:
                raise TypeError(f"cannot assign a {type(value).__name__} to parameter {name!r} of "
                                f"{type(self).__name__}: expected a Parameter or None")
            self._parameters[name] = None
        elif name in d.get("_modules", ()):
            if value is not None:
                raise TypeError(f"cannot assign a {type(value).__name__} to sub-module {name!r} of "
                                f"{type(self).__name__}: expected a Module or None")
            self._modules[name] = None
        elif name in d.get("_buffers", ()):
            if value is not None and not isinstance(value, Tensor):
                raise TypeError(f"cannot assign a {type(value).__name__} to buffer {name!r} of "
                                f"{type(self).__name__}: expected a Tensor or None")
            self._buffers[name] = value
        else:
            object.__setattr__(self, name, value)

    def __getattr__(self, name):
        # Only called when normal lookup fails: look in the three dictionaries.
        d = self.__dict__
        for table in ("_parameters", "_buffers", "_modules"):
            if table in d and name in d[table]:
                return d[table][name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __delattr__(self, name):
        for table in (self._parameters, self._buffers, self._modules):
            if name in table:
                del table[name]
                return
        object.__delattr__(self, name)

    def register_parameter(self, name, param):
        """Add a parameter (or None: a declared but absent one, like a conv without bias)."""
        self._check_initialised("parameters")
        if param is not None and not isinstance(param, Parameter):
            raise TypeError(f"register_parameter({name!r}): expected a Parameter or None, got "
                            f"{type(param).__name__}")
        self._forget(name)
        self._parameters[name] = param

    def register_buffer(self, name, tensor):
        """Add state that is saved in ``state_dict`` and moved by ``to()`` but not learned."""
        self._check_initialised("buffers")
        if tensor is not None and not isinstance(tensor, Tensor):
            raise TypeError(f"register_buffer({name!r}): expected a Tensor or None, got "
                            f"{type(tensor).__name__}")
        if tensor is not None and tensor.requires_grad:
            raise ValueError(f"register_buffer({name!r}): a buffer must not require grad; register "
                             f"a Parameter instead")
        self._forget(name)
        self._buffers[name] = tensor

    def add_module(self, name, module):
        """Register ``module`` (a Module, or None for an absent one) as the child ``name``.

        The same as assigning ``self.name = module``.
        """
        self._check_initialised("sub-modules")
        if module is not None and not isinstance(module, Module):
            raise TypeError(f"add_module({name!r}): expected a Module or None, got "
                            f"{type(module).__name__}")
        self._forget(name)
        self._modules[name] = module

    # -- walking the tree ---------------------------------------------------------------
    def named_modules(self, prefix=""):
        """(name, module) for this module and every descendant, depth first, each once."""
        seen = set()
        stack = [(prefix, self)]
        while stack:
            name, module = stack.pop()
            if id(module) in seen:
                continue
            seen.add(id(module))
            yield name, module
            children = [(f"{name}.{n}" if name else n, m)
                        for n, m in module._modules.items() if m is not None]
            stack.extend(reversed(children))

    def modules(self):
        """Every module of the tree, this one first, depth first, each once (``named_modules``)."""
        for _, m in self.named_modules():
            yield m

    def named_children(self):
        """(name, module) for each direct child, in registration order, each module once."""
        seen = set()
        for name, m in self._modules.items():
            if m is not None and id(m) not in seen:
                seen.add(id(m))
                yield name, m

    def children(self):
        """The direct children, in registration order, each once."""
        for _, m in self.named_children():
            yield m

    def _named_tensors(self, tables, prefix="", recurse=True, remove_duplicate=True):
        """(dotted name, tensor) for the entries of ``tables`` ("_parameters", "_buffers") of
        each module, module by module in ``named_modules`` order, each table in the order
        given; absent (None) entries are skipped.

        ``remove_duplicate``: a tensor shared by two modules is named once (what
        ``parameters()`` wants: an optimizer must step it once), or under every name
        (what ``state_dict`` wants, as in PyTorch).
        """
        seen = set()
        modules = self.named_modules(prefix) if recurse else [(prefix, self)]
        for mod_name, module in modules:
            for table in tables:
                for name, value in getattr(module, table).items():
                    if value is None or (remove_duplicate and id(value) in seen):
                        continue
                    seen.add(id(value))
                    yield (f"{mod_name}.{name}" if mod_name else name), value

    def named_parameters(self, prefix="", recurse=True):
        """(dotted name, Parameter), in registration order; a shared parameter appears once."""
        return self._named_tensors(("_parameters",), prefix, recurse)

    def parameters(self, recurse=True):
        """Every Parameter of this module and (``recurse=True``) of its descendants, each once.

        This is what an optimizer is built from: ``SGD(model.parameters(), lr=0.1)``.
        """
        for _, p in self.named_parameters(recurse=recurse):
            yield p

    def named_buffers(self, prefix="", recurse=True):
        """(dotted name, buffer Tensor) for every buffer (e.g. ``bn1.running_mean``), each once."""
        return self._named_tensors(("_buffers",), prefix, recurse)

    def buffers(self, recurse=True):
        """Every buffer Tensor (state that is not learned: BN running statistics), each once."""
        for _, b in self.named_buffers(recurse=recurse):
            yield b

    def apply(self, fn):
        """Call ``fn(module)`` on every descendant (children first), then on this module."""
        for child in self.children():
            child.apply(fn)
        fn(self)
        return self

    def num_parameters(self, trainable_only=False):
        """How many numbers the parameters hold (counted from shapes; runs no forward)."""
        return int(sum(p.numel() for p in self.parameters()
                       if p.requires_grad or not trainable_only))

    # -- modes, gradients, devices ---------------------------------------------------------
    def train(self, mode=True):
        """Set training mode (``mode=True``) or evaluation mode on this module and all below it."""
        if not isinstance(mode, bool):
            raise TypeError(f"train(mode): mode must be a bool, got {type(mode).__name__}")
        for m in self.modules():
            m.training = mode
        return self

    def eval(self):
        """Set evaluation mode on the whole tree (BN uses running statistics, Dropout is off);
        returns self."""
        return self.train(False)

    def requires_grad_(self, requires_grad=True):
        """Set ``requires_grad`` on every parameter (False freezes them); returns self."""
        for p in self.parameters():
            p.requires_grad = requires_grad
        return self

    def zero_grad(self, set_to_none=True):
        """Clear the gradients of all parameters (``None``, or zeros with set_to_none=False)."""
        for p in self.parameters():
            if p.grad is None:
                continue
            if set_to_none:
                p.grad = None
            else:
                p.grad[...] = 0

    def to(self, device=None, dtype=None):
        """Move (and/or cast) every parameter and buffer *in place*; returns this module.

        ``model.to("cuda")``, ``model.to(numpy.float64)``, ``model.to("cpu", numpy.float32)``.
        The Parameter objects stay the same objects (only their ``.data`` and ``.grad``
        change), so an optimizer built before the move keeps working. A dtype applies
        to floating-point tensors only (``num_batches_tracked`` stays an integer). The
        buffers a module names in ``_host_buffers`` (``num_batches_tracked``) stay on the
        host: NumPy arrays on every device.
        """
        if device is not None and not isinstance(device, str):
            device, dtype = None, device          # model.to(numpy.float64)
        if device is not None:
            check_device(device)
        if dtype is not None:
            dtype = np.dtype(dtype)
            if not np.issubdtype(dtype, np.floating):
                raise TypeError(f"Module.to: dtype must be a floating type, got {dtype}")

        def convert(array, host=False):
            if device is not None:
                array = to_device(array, "cpu" if host else device)
            if dtype is not None and np.issubdtype(array.dtype, np.floating):
                array = array.astype(dtype, copy=False)
            return array

        on_host = {id(b) for m in self.modules() for name in m._host_buffers
                   if (b := m._buffers.get(name)) is not None}
        for t in itertools.chain(self.parameters(), self.buffers()):
            t.data = convert(t.data, id(t) in on_host)
            if t.grad is not None:
                t.grad = convert(t.grad)
        return self

    def cpu(self):
        """Move every parameter and buffer to the CPU (NumPy arrays), in place; returns self."""
        return self.to("cpu")

    def cuda(self):
        """Move every parameter and buffer to the GPU (CuPy arrays), in place; returns self."""
        return self.to("cuda")

    def double(self):
        """Cast floating-point parameters and buffers to float64, in place; returns self."""
        return self.to(dtype=np.float64)

    def float(self):
        """Cast floating-point parameters and buffers to float32, in place; returns self."""
        return self.to(dtype=np.float32)

    # -- state dict ------------------------------------------------------------------------
    def state_dict(self):
        """OrderedDict dotted name -> a copy of the array (parameters, then buffers, per module).

        The arrays live where the module lives (NumPy on "cpu", CuPy on "cuda"; host
        buffers such as ``num_batches_tracked`` are NumPy on both, see ``to``), and
        are copies: changing them does not change the model. Key names follow
        PyTorch (``layer1.0.conv1.weight``, ``bn1.running_mean``, ...).
        """
        return OrderedDict((name, t.data.copy()) for name, t in self._state_tensors().items())

    def _state_tensors(self):
        """OrderedDict dotted name -> the live Parameter/buffer, same keys as ``state_dict``."""
        return OrderedDict(self._named_tensors(("_parameters", "_buffers"),
                                               remove_duplicate=False))

    def load_state_dict(self, state_dict, strict=True):
        """Copy arrays from ``state_dict`` into this module's parameters and buffers.

        Values may be NumPy or CuPy arrays, Tensors, or anything ``numpy.asarray``
        accepts (a CPU ``torch.Tensor`` included). Every key is checked before
        anything is written, so a failed load leaves the model untouched:
        with ``strict=True`` missing and unexpected keys raise; a shape mismatch
        always raises. The error lists every problem by name. Returns
        ``(missing_keys, unexpected_keys)``.
        """
        if not hasattr(state_dict, "keys"):
            raise TypeError(f"load_state_dict: expected a mapping of name -> array, got "
                            f"{type(state_dict).__name__}")
        own = self._state_tensors()
        missing = [k for k in own if k not in state_dict]
        unexpected = [k for k in state_dict if k not in own]
        values, mismatched = {}, []
        for key, target in own.items():
            if key not in state_dict:
                continue
            value = state_dict[key]
            value = value.data if isinstance(value, Tensor) else value
            if not is_cupy_array(value):           # NumPy, a CPU torch.Tensor, a number ...
                value = np.asarray(value)
            if tuple(value.shape) != tuple(target.shape):
                mismatched.append(f"{key}: the state_dict has shape {tuple(value.shape)}, "
                                  f"the model has {tuple(target.shape)}")
            values[key] = value
        problems = []
        if strict and missing:
            problems.append(f"missing keys ({len(missing)}): {', '.join(missing)}")
        if strict and unexpected:
            problems.append(f"unexpected keys ({len(unexpected)}): {', '.join(unexpected)}")
        if mismatched:
            problems.append(f"shape mismatch ({len(mismatched)}): " + "; ".join(mismatched))
        if problems:
            raise RuntimeError(f"Error(s) in loading state_dict for {type(self).__name__} "
                               f"(nothing was loaded):\n  " + "\n  ".join(problems))
        for key, value in values.items():
            target = own[key]
            value = to_device(value, device_of(target.data))   # e.g. CuPy arrays into a CPU model
            target.data[...] = value.astype(target.dtype, copy=False)
        return _IncompatibleKeys(missing, unexpected)

    # -- hooks -------------------------------------------------------------------------------
    def register_forward_pre_hook(self, hook):
        """``hook(module, inputs)`` before forward; may return new inputs (a tuple or one value)."""
        handle = RemovableHandle(self._forward_pre_hooks)
        self._forward_pre_hooks[handle.id] = hook
        return handle

    def register_forward_hook(self, hook):
        """``hook(module, inputs, output)`` after forward; may return a replacement output."""
        handle = RemovableHandle(self._forward_hooks)
        self._forward_hooks[handle.id] = hook
        return handle

    def register_full_backward_hook(self, hook):
        """``hook(module, grad_input, grad_output)`` when the module's input gradients are known.

        ``grad_output``: tuple of gradients (arrays) arriving at the module's tensor
        outputs. ``grad_input``: tuple of gradients the module sends to its tensor
        inputs that require grad (``(None,)`` when no input requires grad). The hook
        may return a tuple to replace ``grad_input``. Like PyTorch, the hook fires
        once per call of the module.
        """
        handle = RemovableHandle(self._backward_hooks)
        self._backward_hooks[handle.id] = hook
        return handle

    def _run_backward_hooks(self, grad_input, grad_output):
        for hook in list(self._backward_hooks.values()):
            result = hook(self, grad_input, grad_output)
            if result is not None:
                result = tuple(result) if isinstance(result, (tuple, list)) else (result,)
                if len(result) != len(grad_input):
                    raise RuntimeError(f"backward hook on {type(self).__name__} returned "
                                       f"{len(result)} gradients for {len(grad_input)} inputs")
                grad_input = tuple(r.data if isinstance(r, Tensor) else r for r in result)
        return grad_input

    def __call__(self, *args, **kwargs):
        """Run the module: forward pre-hooks, ``forward(*args, **kwargs)``, forward hooks.

        With full backward hooks registered (and grad mode on) the tensor inputs and
        outputs are also wrapped so the hooks see the gradients in backward. An error
        raised inside gets a note naming the sub-module it came from.
        """
        try:
            return self._call(args, kwargs)
        except Exception as err:
            _note_module_path(err, self)
            raise

    def _call(self, args, kwargs):
        for hook in list(self._forward_pre_hooks.values()):
            result = hook(self, args)
            if result is not None:
                args = result if isinstance(result, tuple) else (result,)
        state = None
        if self._backward_hooks and is_grad_enabled():
            state = _BackwardHookState(self, 0)
            args, state.n_inputs = _wrap_tensors(args, _BackwardHookFunction(state, "input"))
        output = self.forward(*args, **kwargs)
        for hook in list(self._forward_hooks.values()):
            result = hook(self, args, output)
            if result is not None:
                output = result
        if state is not None:
            single = isinstance(output, Tensor)
            outs = (output,) if single else output
            if isinstance(outs, tuple):
                outs, _ = _wrap_tensors(outs, _BackwardHookFunction(state, "output"))
                output = outs[0] if single else outs
        return output

    # -- repr ----------------------------------------------------------------------------------
    def extra_repr(self):
        """The settings shown between the parentheses of this module's repr (override it)."""
        return ""

    def __repr__(self):
        lines = []
        extra = self.extra_repr()
        if extra:
            lines.extend(extra.split("\n"))
        for name, module in self._modules.items():
            lines.append(f"({name}): " + _addindent(repr(module), 2))
        if not lines:
            return f"{type(self).__name__}()"
        if len(lines) == 1 and not self._modules:
            return f"{type(self).__name__}({lines[0]})"
        return f"{type(self).__name__}(\n  " + "\n  ".join(lines) + "\n)"


def _note_module_path(err, module):
    """Tell, in the error, which sub-module raised it: ``in layer1.0.conv1 (Conv2d) of ResNet``.

    The innermost module that sees the error records itself; each enclosing module
    looks it up among its named sub-modules and rewrites the note, so the note
    finally names the path from the outermost module called.
    """
    inner = getattr(err, "_minires_module", None)
    if inner is None:
        try:
            err._minires_module = module
        except AttributeError:      # an exception type that takes no attributes
            return
        return
    path = next((name for name, m in module.named_modules() if m is inner), None)
    if not path:
        return
    note = f"(raised in module {path!r} ({type(inner).__name__}) of {type(module).__name__})"
    notes = getattr(err, "__notes__", None)
    old = getattr(err, "_minires_note", None)
    if notes is not None and old in notes:
        notes[notes.index(old)] = note
    else:
        err.add_note(note)
    err._minires_note = note


# --- containers ---------------------------------------------------------------------
class Sequential(Module):
    """Modules applied one after the other. ``Sequential(a, b)`` names them "0", "1";
    ``Sequential(OrderedDict(name=module, ...))`` keeps the given names.

    Indexable (``seq[0]``, ``seq[-1]``, a slice gives a Sequential), ``len``, iterable.
    """

    def __init__(self, *modules):
        super().__init__()
        if len(modules) == 1 and isinstance(modules[0], OrderedDict):
            for name, m in modules[0].items():
                self.add_module(name, m)
        else:
            for i, m in enumerate(modules):
                if not isinstance(m, Module):
                    raise TypeError(f"Sequential: argument {i} is a {type(m).__name__}, "
                                    "not a Module")
                self.add_module(str(i), m)

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def __getitem__(self, index):
        items = list(self._modules.items())
        if isinstance(index, slice):
            return Sequential(OrderedDict(items[index]))
        try:
            return items[index][1]
        except IndexError:
            raise IndexError(f"Sequential index {index} is out of range for {len(items)} "
                             f"modules") from None

    def append(self, module):
        """Add ``module`` at the end, named by its position; returns self."""
        self.add_module(str(len(self)), module)
        return self

    def forward(self, x):
        """Pass x through each module in order and return the last output."""
        for module in self._modules.values():
            x = module(x)
        return x


class ModuleList(Module):
    """A list of sub-modules, registered as "0", "1", ... (no forward of its own)."""

    def __init__(self, modules=()):
        super().__init__()
        self.extend(modules)

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def __getitem__(self, index):
        values = list(self._modules.values())
        if isinstance(index, slice):
            return ModuleList(values[index])
        try:
            return values[index]
        except IndexError:
            raise IndexError(f"ModuleList index {index} is out of range for {len(values)} "
                             f"modules") from None

    def append(self, module):
        """Add ``module`` at the end, named by its position; returns self."""
        if not isinstance(module, Module):
            raise TypeError(f"ModuleList.append: expected a Module, got {type(module).__name__}")
        self.add_module(str(len(self)), module)
        return self

    def extend(self, modules):
        """Append each module of an iterable; returns self."""
        for m in modules:
            self.append(m)
        return self

    def forward(self, *args):
        """Not defined: a ModuleList only holds modules; the enclosing module's forward
        iterates over them."""
        raise NotImplementedError("ModuleList has no forward(): iterate over it in your module's "
                                  "forward")
