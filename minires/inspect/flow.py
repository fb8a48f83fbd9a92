"""``gradient_flow``: one forward and backward pass, watched through public hooks only.

How it sees each number:

* a **forward hook** on every leaf layer (Conv2d, BatchNorm2d, Linear, ReLU, ...)
  records the statistics of the layer's output, in the order the layers run, and
  puts a ``Tensor.register_hook`` on that output to catch the gradient reaching it;
* after ``loss.backward()`` each layer's ``weight.grad`` gives its gradient norm;
* a residual block is any module with a ``fork`` submodule (``F.fork`` hands the
  block's input to two paths). A forward hook on ``block.fork`` receives the two
  output tensors ``(x_branch, x_skip)``; a tensor hook on each catches exactly the
  gradient that path sends back to the block input. Their sum is the gradient at
  the input. In a plain block ``x_skip`` is never used, so nothing arrives through
  it: its norm is 0.

What it leaves as it was (tested): the weights, the batch-norm running statistics
(a train-mode forward updates them; they are snapshotted and written back), the
gradients already in ``.grad`` (put aside, then put back), each module's
train/eval flag, and the random-number state: minires' default generator (dropout
draws from it), NumPy's global one and any ``numpy.random.Generator`` a module keeps
as an attribute are saved and restored. The pass runs inside ``minires.speed_settings()``,
so the BLAS and conv thread counts are the host's again afterwards.
"""
from __future__ import annotations

import numpy as np

from .. import backend, speed
from ..autograd import is_tensor
from ..backend import device_of, get_array_module, is_array, to_device
from ..nn.blocks import is_residual_block
from ..tensor import Tensor
from .report import Comparison, FlowReport

MODES = (None, "train", "eval")


# --- small numeric helpers (any backend; Python floats out, accumulated in float64) ----------
def _sumsq(a) -> float:
    xp = get_array_module(a)
    return float(xp.sum(xp.square(a, dtype=xp.float64)))


def norm(a) -> float:
    """Euclidean norm of a whole array, as a Python float."""
    return _sumsq(a) ** 0.5


def dot(a, b) -> float:
    xp = get_array_module(a, b)
    return float(xp.sum(xp.multiply(a, b, dtype=xp.float64)))


def cosine(a, b):
    """Cosine of the angle between two arrays seen as vectors; None if either is zero."""
    na, nb = norm(a), norm(b)
    if na == 0 or nb == 0:
        return None
    return dot(a, b) / (na * nb)


# --- which modules are what --------------------------------------------------------------
def residual_blocks(model):
    """(name, block) for every residual block (``minires.nn.is_residual_block``: a module
    with a ``fork`` submodule), in registration order."""
    return [(name, m) for name, m in model.named_modules() if is_residual_block(m)]


def leaf_layers(model):
    """(name, module) for every module without children (the layers that do the work), in
    registration order; the model itself is left out even when it has no children."""
    return [(name, m) for name, m in model.named_modules()
            if name and not any(True for _ in m.children())]


def _is_relu(module):
    from ..nn import ReLU
    return isinstance(module, ReLU)


def leaf_weight(module):
    """The parameter that stands for a leaf layer in the reports: its ``weight``, else its
    first parameter, else None (a ReLU, a pooling layer)."""
    params = dict(module.named_parameters(recurse=False))
    if "weight" in params:
        return params["weight"]
    return next(iter(params.values()), None)


def _model_device(model):
    for p in model.parameters():
        return device_of(p.data)
    return "cpu"


def _as_input(x, device):
    """``x`` as a fresh leaf Tensor on ``device`` that requires no grad (never the caller's tensor,
    so the caller's ``x.grad`` is untouched)."""
    if is_tensor(x):
        data = x.data
    elif is_array(x):
        data = x
    else:
        raise TypeError(f"minires.inspect.gradient_flow: x must be a Tensor or an array of "
                        f"shape (N, C, H, W), got {type(x).__name__}")
    return Tensor(to_device(data, device))                  # no copy when already there


# --- keep the model exactly as it was ---------------------------------------------------
class _Preserved:
    """Context manager: set aside .grad, buffers, train/eval flags and RNG state; restore them."""

    def __init__(self, model, mode):
        self.model, self.mode = model, mode

    def __enter__(self):
        m = self.model
        self.params = list(m.parameters())
        self.grads = [p.grad for p in self.params]
        self.buffers = {name: b.data.copy() for name, b in m.named_buffers()}
        self.flags = [(mod, mod.training) for mod in m.modules()]
        self.rng = backend.get_rng_state()
        self.np_rng = np.random.get_state()
        # a module may keep its own generator (e.g. a noise layer seeded separately)
        self.generators = [(g, g.bit_generator.state) for mod in m.modules()
                           for g in vars(mod).values() if isinstance(g, np.random.Generator)]
        for p in self.params:
            p.grad = None
        if self.mode is not None:
            m.train(self.mode == "train")
        return self

    def __exit__(self, *exc):
        for p, g in zip(self.params, self.grads):
            p.grad = g
        for name, b in self.model.named_buffers():
            if name in self.buffers:
                b.data[...] = self.buffers[name]
        for mod, flag in self.flags:
            mod.training = flag
        backend.set_rng_state(self.rng)
        np.random.set_state(self.np_rng)
        for g, state in self.generators:
            g.bit_generator.state = state
        return False


# --- the watchers ---------------------------------------------------------------------------
class _LayerWatch:
    """Forward hook for one leaf layer: a row per call, with output stats and a gradient catcher."""

    def __init__(self, name, module, rows):
        self.name, self.module, self.rows = name, module, rows
        self.calls = 0

    def __call__(self, module, inputs, output):
        if not is_tensor(output):
            return
        self.calls += 1
        name = self.name if self.calls == 1 else f"{self.name}#{self.calls}"
        out = output.data
        xp = get_array_module(out)
        row = {"name": name, "kind": type(module).__name__, "module": module,
               "act_mean": float(xp.mean(out, dtype=xp.float64)),
               "act_std": float(xp.std(out, dtype=xp.float64)),
               "out_grad_norm": None, "dead_frac": None}
        if _is_relu(module) and out.ndim >= 1 and out.shape[0] > 0:
            # A unit (a channel at one position) is dead on this batch if it is zero for every
            # example.
            alive = (out > 0).any(axis=0)
            row["dead_frac"] = 1.0 - float(xp.mean(alive, dtype=xp.float64))
        if output.requires_grad:
            def catch(grad, row=row):
                row["out_grad_norm"] = norm(grad) if row["out_grad_norm"] is None else \
                    (row["out_grad_norm"] ** 2 + _sumsq(grad)) ** 0.5
            output.register_hook(catch)
        self.rows.append(row)


class _BlockWatch:
    """Forward hook on ``block.fork``: catches the gradient of each of the two paths."""

    def __init__(self, name, block, rows):
        self.name, self.block, self.rows = name, block, rows
        self.calls = 0

    def __call__(self, fork, inputs, output):
        if not (isinstance(output, tuple) and len(output) == 2):
            raise TypeError(f"minires.inspect: {self.name}.fork must return two tensors "
                            f"(x_branch, x_skip), got {type(output).__name__}")
        self.calls += 1
        name = self.name if self.calls == 1 else f"{self.name}#{self.calls}"
        row = {"name": name, "kind": type(self.block).__name__, "branch": None, "skip": None}
        for path, tensor in zip(("branch", "skip"), output):
            if tensor.requires_grad:
                def catch(grad, row=row, path=path):
                    row[path] = grad if row[path] is None else row[path] + grad
                tensor.register_hook(catch)
        self.rows.append(row)


def _layer_row(raw):
    """The public row of a layer: parameter statistics read after backward, plus output stats."""
    weight = leaf_weight(raw["module"])
    row = {"name": raw["name"], "kind": raw["kind"], "shape": None, "params": 0,
           "weight_norm": None, "grad_norm": None, "grad_weight_ratio": None,
           "act_mean": raw["act_mean"], "act_std": raw["act_std"],
           "out_grad_norm": raw["out_grad_norm"], "dead_frac": raw["dead_frac"]}
    if weight is not None:
        row["shape"] = list(weight.shape)
        row["params"] = int(sum(p.numel() for p in raw["module"].parameters()))
        row["weight_norm"] = norm(weight.data)
        row["grad_norm"] = norm(weight.grad) if weight.grad is not None else 0.0
        if row["weight_norm"] > 0:
            row["grad_weight_ratio"] = row["grad_norm"] / row["weight_norm"]
    return row


def _block_row(raw):
    branch, skip = raw["branch"], raw["skip"]
    has_skip = skip is not None
    nb = norm(branch) if branch is not None else 0.0
    ns = norm(skip) if skip is not None else 0.0
    if branch is not None and skip is not None:
        total = norm(branch + skip)
    else:
        total = nb if branch is not None else ns
    return {"name": raw["name"], "kind": raw["kind"], "has_skip": has_skip,
            "skip_grad_norm": ns, "branch_grad_norm": nb, "total_grad_norm": total,
            "cosine": cosine(branch, skip) if has_skip and branch is not None else None,
            "skip_share": ns / (ns + nb) if ns + nb > 0 else None}


# --- the public functions -----------------------------------------------------------------
def default_loss(output, y):
    """Mean softmax cross-entropy of logits ``output`` (N, K) and integer labels ``y`` (N,)."""
    from ..functional import cross_entropy
    return cross_entropy(output, y)


def model_name(model, blocks=None) -> str:
    """How a report names ``model`` when it is not given a name.

    The name of the ``minires.models`` builder that made it (``plain20``, recorded as
    ``model.builder_name``); else its class name, marked "(plain: no shortcuts)" when
    ``blocks`` (a report's block rows) show blocks and none of them has a skip path.
    """
    recorded = getattr(model, "builder_name", None)
    if isinstance(recorded, str) and recorded:
        return recorded
    kind = type(model).__name__
    if blocks and not any(b["has_skip"] for b in blocks):
        return f"{kind} (plain: no shortcuts)"
    return kind


def _check_name(name, where, what="name"):
    if name is not None and not (isinstance(name, str) and name.strip()):
        raise TypeError(f"minires.inspect.{where}: {what} must be a non-empty str (how the report "
                        f"names the model), got {name!r:.60}")


def gradient_flow(model, x, y, loss_fn=None, mode=None, name=None, *,
                  speed_settings=True) -> FlowReport:
    """Run ``loss_fn(model(x), y)`` forward and backward once and report where the gradient goes.

    model    a ``minires.nn.Module`` (on CPU or GPU; ``x`` and ``y`` are moved to it)
    x, y     a batch: images (N, C, H, W) and integer labels (N,), as Tensors or arrays
    loss_fn  ``loss_fn(output, y) -> scalar Tensor``; default: cross-entropy
    mode     None: the model's current mode (a fresh model is in train mode: batch norm
             uses the batch's statistics, as during training); "train" or "eval": that
             mode for this pass only
    name     what the report calls the model; default: the name of the ``minires.models``
             builder that made it (``plain20``), else its class name (see ``model_name``)

    The model is left exactly as it was: weights, batch-norm running statistics (a
    train-mode pass updates them; they are written back), existing ``.grad``,
    train/eval flags and the random state (global generators, and any a module keeps).
    speed_settings: True runs the pass inside ``minires.speed_settings()`` (the command
    lines' thread settings, the host's put back afterwards); False: the process as it is.
    """
    from ..nn import Module
    if not isinstance(model, Module):
        raise TypeError(f"minires.inspect.gradient_flow: model must be a minires.nn.Module, got "
                        f"{type(model).__name__}")
    if mode not in MODES:
        raise ValueError(f"minires.inspect.gradient_flow: mode must be one of {MODES}, got "
                         f"{mode!r}")
    _check_name(name, "gradient_flow")
    if not any(True for _ in model.parameters()):
        raise ValueError(f"minires.inspect.gradient_flow: {type(model).__name__} has no "
                         f"parameters, so there is no gradient to inspect")
    loss_fn = default_loss if loss_fn is None else loss_fn
    device = _model_device(model)
    x_t = _as_input(x, device)

    layer_rows, block_rows, handles = [], [], []
    try:
        with _Preserved(model, mode), speed.scoped(speed_settings):
            for layer_name, layer in leaf_layers(model):
                if leaf_weight(layer) is not None or _is_relu(layer):
                    watch = _LayerWatch(layer_name, layer, layer_rows)
                    handles.append(layer.register_forward_hook(watch))
            for block_name, block in residual_blocks(model):
                watch = _BlockWatch(block_name, block, block_rows)
                handles.append(block.fork.register_forward_hook(watch))
            training = model.training
            output = model(x_t)
            loss = loss_fn(output, y)
            if not is_tensor(loss) or loss.numel() != 1:
                raise ValueError(f"minires.inspect.gradient_flow: loss_fn must return a scalar "
                                 f"Tensor, got {type(loss).__name__}"
                                 f"{'' if not is_tensor(loss) else ' of shape ' + str(loss.shape)}")
            if not loss.requires_grad:
                raise ValueError("minires.inspect.gradient_flow: the loss does not depend on any "
                                 "parameter that requires grad; nothing to inspect")
            loss.backward()
            layers = [_layer_row(r) for r in layer_rows]
            blocks = [_block_row(r) for r in block_rows]
            loss_value = float(loss.item())
    finally:
        for h in handles:
            h.remove()
    return FlowReport(name or model_name(model, blocks), layers, blocks, loss_value,
                      int(x_t.shape[0]), "train" if training else "eval", device)


def compare(models: dict, x, y, loss_fn=None, mode=None, *, speed_settings=True) -> Comparison:
    """``gradient_flow`` of each model on the same batch, side by side.

    ``models`` maps a label to a model: ``compare({"plain20": p, "resnet20": r}, x, y)``;
    each model's report is named by its label.
    ``print(...)`` shows, per model, the weight-gradient norm of the first and last
    layer and their ratio, how much of the gradient takes the skip path, and a
    one-line profile of the gradient norm across the layers.
    ``speed_settings``: as in ``gradient_flow``, once for all the models.
    """
    if not isinstance(models, dict) or not models:
        raise ValueError("minires.inspect.compare: expected a non-empty dict of name -> model, got "
                         f"{models!r:.60}")
    for label in models:
        _check_name(label, "compare", "each key of models")
    with speed.scoped(speed_settings):
        return Comparison({label: gradient_flow(m, x, y, loss_fn=loss_fn, mode=mode, name=label,
                                                speed_settings=speed_settings)
                           for label, m in models.items()})
