"""``Optimizer``: parameter groups, per-parameter state, zero_grad, state_dict.

A parameter is anything with ``.data`` (the array updated in place) and ``.grad`` (its
gradient array, or None: such a parameter is skipped by ``step``) -- a ``Parameter``
of ``minires.nn`` or a leaf ``mr.tensor(..., requires_grad=True)``.

Parameter groups work as in PyTorch: ``SGD(params, lr=0.1, weight_decay=5e-4)`` with
``params`` either an iterable of parameters (one group) or a list of dicts, each with a
``"params"`` entry and optional per-group settings that override the defaults:

    SGD([{"params": weights}, {"params": norms_and_biases, "weight_decay": 0}], lr=0.1, ...)

``split_weight_decay(model)`` builds exactly that split.
"""
from __future__ import annotations

from ..backend import device_of, get_array_module, is_array, to_device


class Optimizer:
    """Base class: subclasses set ``defaults`` and write ``_update(p, grad, state, group)``."""

    def __init__(self, params, defaults: dict):
        self.defaults = dict(defaults)
        self.param_groups = []
        self.state = {}                       # id(param) -> dict of arrays and counters
        groups = list(params) if not isinstance(params, dict) else [params]
        if not groups:
            raise ValueError(f"{type(self).__name__}: got an empty parameter list")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        for group in groups:
            self.add_param_group(group)

    def add_param_group(self, group: dict):
        """Add a parameter group, a dict like ``{"params": params, "lr": 0.01}``.

        ``"params"`` is a parameter or an iterable of them; the other entries (lr,
        weight_decay, ...) override the optimizer's defaults for this group. A parameter
        may belong to one group only; unknown settings raise ValueError.
        """
        if "params" not in group:
            raise ValueError(f"{type(self).__name__}: a parameter group needs a 'params' entry")
        params = group["params"]
        params = [params] if hasattr(params, "data") else list(params)
        for p in params:
            if not (hasattr(p, "data") and hasattr(p, "grad")):
                raise TypeError(f"{type(self).__name__}: expected parameters (objects with .data "
                                f"and .grad), got {type(p).__name__}")
        seen = {id(p) for g in self.param_groups for p in g["params"]}
        if any(id(p) in seen for p in params):
            raise ValueError(f"{type(self).__name__}: a parameter appears in more than one group")
        unknown = set(group) - set(self.defaults) - {"params", "initial_lr"}
        if unknown:
            raise ValueError(f"{type(self).__name__}: unknown group settings {sorted(unknown)}; "
                             f"known: {sorted(self.defaults)}")
        settings = {k: v for k, v in group.items() if k != "params"}
        full = {**self.defaults, **settings, "params": params}
        self._check_group(full)
        self.param_groups.append(full)

    def _check_group(self, group):
        if group["lr"] < 0:
            raise ValueError(f"{type(self).__name__}: lr must be >= 0, got {group['lr']}")
        if group.get("weight_decay", 0) < 0:
            raise ValueError(f"{type(self).__name__}: weight_decay must be >= 0, got "
                             f"{group['weight_decay']}")

    def parameters(self):
        """Every parameter the optimizer updates, as a list, group by group."""
        return [p for g in self.param_groups for p in g["params"]]

    def zero_grad(self, set_to_none=True):
        """Forget the gradients (``.grad = None``; the next backward writes fresh ones)."""
        for p in self.parameters():
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad[...] = 0

    def step(self):
        """Update every parameter that has a gradient, in place (``p.data`` keeps its identity).

        Each update counts as an in-place change of the parameter (its ``_version``
        moves on), so a backward through a graph built before the step raises instead
        of using the new weights.
        """
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.shape != p.data.shape:
                    raise ValueError(f"{type(self).__name__}.step: a gradient of shape "
                                     f"{p.grad.shape} for a parameter of shape {p.data.shape}")
                self._update(p, p.grad, self.state.setdefault(id(p), {}), group)
                bump = getattr(p, "_bump_version", None)    # plain duck-typed params have none
                if bump is not None:
                    bump()

    def _update(self, p, grad, state, group):  # pragma: no cover - abstract
        raise NotImplementedError

    # -- saving and restoring ----------------------------------------------------------
    def state_dict(self) -> dict:
        """``{"state": {index: {name: array or number}},
              "param_groups": [{settings..., "params": [indices]}]}``

        Parameters are named by their position across the groups (as in PyTorch), so the
        state loads into an optimizer built the same way over a freshly built model.
        Arrays are returned as they are (not copies): save them before the next step.
        """
        index = {id(p): i for i, p in enumerate(self.parameters())}
        groups = [{**{k: v for k, v in g.items() if k != "params"},
                   "params": [index[id(p)] for p in g["params"]]} for g in self.param_groups]
        state = {index[pid]: dict(s) for pid, s in self.state.items() if pid in index and s}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict):
        """Restore what ``state_dict`` saved (arrays are copied to each parameter's device)."""
        name = type(self).__name__
        groups = state_dict["param_groups"]
        if len(groups) != len(self.param_groups):
            raise ValueError(f"{name}.load_state_dict: the saved state has {len(groups)} parameter "
                             f"groups, this optimizer {len(self.param_groups)}")
        for i, (saved, mine) in enumerate(zip(groups, self.param_groups)):
            if len(saved["params"]) != len(mine["params"]):
                raise ValueError(f"{name}.load_state_dict: group {i} has {len(saved['params'])} "
                                 f"parameters in the saved state, {len(mine['params'])} here")
        params = self.parameters()
        new_state = {}
        for key, saved in state_dict["state"].items():
            p = params[int(key)]
            entry = {}
            for k, v in saved.items():
                if is_array(v):
                    if v.shape != p.data.shape:
                        raise ValueError(f"{name}.load_state_dict: state {k!r} of parameter {key} "
                                         f"has shape {v.shape}, the parameter {p.data.shape}")
                    v = get_array_module(p.data).array(to_device(v, device_of(p.data)),
                                                       dtype=p.data.dtype)   # a copy we own
                entry[k] = v
            new_state[id(p)] = entry
        for saved, mine in zip(groups, self.param_groups):
            mine.update({k: v for k, v in saved.items() if k != "params"})
        self.state = new_state

    def __repr__(self):
        lines = [f"{type(self).__name__} ("]
        for i, g in enumerate(self.param_groups):
            settings = ", ".join(f"{k}={v}" for k, v in g.items() if k != "params")
            lines.append(f"  group {i}: {len(g['params'])} params, {settings}")
        return "\n".join(lines + [")"])


def split_weight_decay(model_or_named_params, weight_decay: float):
    """Two parameter groups: weights with ``weight_decay``, batch-norm and bias parameters without.

    A parameter with one axis or fewer is a bias or a normalisation scale/shift: decaying
    them toward zero only fights the normalisation, so common recipes leave them alone.
    Accepts a module (uses ``named_parameters()``) or an iterable of (name, parameter).
    """
    named = (model_or_named_params.named_parameters()
             if hasattr(model_or_named_params, "named_parameters") else model_or_named_params)
    decay, no_decay = [], []
    for _, p in named:
        (no_decay if p.data.ndim <= 1 else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups
