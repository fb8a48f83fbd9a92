"""Learning-rate schedules, stepped once per iteration (one optimizer step = one iteration).

Convention. Iterations are numbered t = 0, 1, 2 ...; iteration t trains with the learning
rate ``lr_at(t)``. Building a schedule sets the rate for iteration 0; call
``scheduler.step()`` right after each ``optimizer.step()`` to move to the next
iteration. A schedule's whole state is the iteration counter ``t`` (and the base rates),
because every rate is a pure function of ``t`` -- so resuming from ``state_dict()``
gives the same rates, bit for bit, as never stopping.

    opt = SGD(model.parameters(), lr=0.1, momentum=0.9)
    sched = Warmup(opt, warmup_steps=390, schedule=CosineAnnealingLR(opt, total_steps=30 * 390))
    for x, y in batches:
        ...; loss.backward(); opt.step(); sched.step()

Each group's base rate is its ``lr`` when the first schedule was built (kept as
``group["initial_lr"]``, as in PyTorch). Epoch-based milestones are iteration
milestones times ``steps_per_epoch``.
"""
from __future__ import annotations

import math


class LRScheduler:
    """Base class: subclasses write ``lr_for(base_lr, t)``, or ``factor(t)`` (base_lr * factor)."""

    def __init__(self, optimizer):
        self.optimizer = optimizer
        for group in optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])
        self.base_lrs = [float(g["initial_lr"]) for g in optimizer.param_groups]
        self.t = 0
        self._apply()

    def factor(self, t: int) -> float:  # pragma: no cover - abstract
        """The multiplier of the base rate at iteration ``t``; subclasses that scale the base
        rate define it."""
        raise NotImplementedError

    def lr_for(self, base_lr: float, t: int) -> float:
        """The learning rate at iteration ``t`` of a group whose base rate is ``base_lr``
        (``base_lr * factor(t)`` unless overridden)."""
        return base_lr * self.factor(t)

    def lr_at(self, t: int) -> list:
        """The learning rate of every group at iteration ``t``."""
        return [self.lr_for(base, t) for base in self.base_lrs]

    def _apply(self):
        for group, lr in zip(self.optimizer.param_groups, self.lr_at(self.t)):
            group["lr"] = float(lr)

    def step(self):
        """Move to the next iteration (call after ``optimizer.step()``)."""
        self.t += 1
        self._apply()

    def get_last_lr(self) -> list:
        """The learning rate each group has now (the one the next ``optimizer.step()`` uses)."""
        return [float(g["lr"]) for g in self.optimizer.param_groups]

    def state_dict(self) -> dict:
        """A dict of the schedule's class name, ``t`` and ``base_lrs``.

        That is all a schedule needs to resume, since each rate is a function of ``t``.
        """
        return {"name": type(self).__name__, "t": self.t, "base_lrs": list(self.base_lrs)}

    def load_state_dict(self, state: dict):
        """Restore the iteration counter and base rates saved by ``state_dict()``.

        The groups' rates are set for that iteration at once. Raises ValueError when the
        state belongs to another kind of schedule or another number of parameter groups.
        """
        if state.get("name", type(self).__name__) != type(self).__name__:
            raise ValueError(f"{type(self).__name__}.load_state_dict: the saved state belongs to a "
                             f"{state['name']} schedule")
        if len(state["base_lrs"]) != len(self.base_lrs):
            raise ValueError(f"{type(self).__name__}.load_state_dict: {len(state['base_lrs'])} "
                             f"parameter groups saved, {len(self.base_lrs)} here")
        self.t, self.base_lrs = int(state["t"]), [float(b) for b in state["base_lrs"]]
        self._apply()

    def __repr__(self):
        return f"{type(self).__name__}(t={self.t}, lr={self.get_last_lr()})"


class ConstantLR(LRScheduler):
    """The base rate throughout."""

    def factor(self, t):
        """Always 1."""
        return 1.0


class MultiStepLR(LRScheduler):
    """Multiply the rate by ``gamma`` at each milestone.

    Milestones count iterations (He et al.: ``MultiStepLR(opt, [32000, 48000])`` divides by
    10 at 32k and 48k), or epochs with ``steps_per_epoch=S`` (milestone m then falls on
    iteration m * S). From iteration ``m`` on, the lower rate applies.
    """

    def __init__(self, optimizer, milestones, gamma=0.1, steps_per_epoch=1):
        milestones = [int(m) for m in milestones]
        if milestones != sorted(milestones) or any(m < 0 for m in milestones):
            raise ValueError(f"MultiStepLR: milestones must be increasing and >= 0, got "
                             f"{milestones}")
        if steps_per_epoch < 1:
            raise ValueError(f"MultiStepLR: steps_per_epoch must be >= 1, got {steps_per_epoch}")
        self.milestones = [m * int(steps_per_epoch) for m in milestones]    # in iterations
        self.gamma = float(gamma)
        super().__init__(optimizer)

    def factor(self, t):
        """``gamma`` to the power of the number of milestones reached by iteration ``t``."""
        return self.gamma ** sum(t >= m for m in self.milestones)


class CosineAnnealingLR(LRScheduler):
    """lr(t) = min_lr + (base - min_lr) * (1 + cos(pi * t / total_steps)) / 2, then min_lr."""

    def __init__(self, optimizer, total_steps, min_lr=0.0):
        if total_steps < 1:
            raise ValueError(f"CosineAnnealingLR: total_steps must be >= 1, got {total_steps}")
        self.total_steps, self.min_lr = int(total_steps), float(min_lr)
        super().__init__(optimizer)

    def lr_for(self, base_lr, t):
        """The cosine from ``base_lr`` at t = 0 down to ``min_lr`` at t = total_steps; ``min_lr``
        after that."""
        progress = min(t, self.total_steps) / self.total_steps
        return self.min_lr + (base_lr - self.min_lr) * (1.0 + math.cos(math.pi * progress)) / 2.0


class OneCycleLR(LRScheduler):
    """Smith's one-cycle: from base/div_factor up to base, then down to
    base/(div_factor * final_div_factor).

    The group's ``lr`` is the peak. With T = total_steps and U = pct_start * T - 1 (as in
    PyTorch): cosine from the start rate to the peak over iterations 0..U, cosine from
    the peak to the final rate over U..T-1, and the final rate after that.
    (Momentum is not cycled.)
    """

    def __init__(self, optimizer, total_steps, pct_start=0.3, div_factor=25.0,
                 final_div_factor=1e4):
        if total_steps < 2:
            raise ValueError(f"OneCycleLR: total_steps must be >= 2, got {total_steps}")
        if not 0.0 < pct_start < 1.0:
            raise ValueError(f"OneCycleLR: pct_start must lie in (0, 1), got {pct_start}")
        self.total_steps, self.pct_start = int(total_steps), float(pct_start)
        self.div_factor, self.final_div_factor = float(div_factor), float(final_div_factor)
        super().__init__(optimizer)

    @staticmethod
    def _cos(start, end, pct):
        return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1.0)

    def lr_for(self, base_lr, t):
        """The one-cycle rate at iteration ``t`` for a group whose peak rate is ``base_lr`` (see
        the class docstring)."""
        initial = base_lr / self.div_factor
        final = initial / self.final_div_factor
        peak_step = self.pct_start * self.total_steps - 1
        last_step = self.total_steps - 1
        t = min(t, last_step)
        if t <= peak_step:
            return self._cos(initial, base_lr, t / peak_step if peak_step > 0 else 1.0)
        return self._cos(base_lr, final, (t - peak_step) / (last_step - peak_step))


class Warmup(LRScheduler):
    """Warm-up in front of (multiplying) another schedule.

    For t < warmup_steps the rate is scaled by ``start_factor + (1 - start_factor) * t /
    warmup_steps`` (``mode="linear"``) or by ``start_factor`` (``mode="constant"``: He et
    al.'s 0.01 for ResNet-110); afterwards by 1. The scaled rate is ``schedule``'s (or the
    base rate without one): ``Warmup(opt, 390, schedule=CosineAnnealingLR(opt, T))``.
    Only the outer ``Warmup`` is stepped.
    """

    MODES = ("linear", "constant")

    def __init__(self, optimizer, warmup_steps, start_factor=0.1, schedule=None, mode="linear"):
        if warmup_steps < 0:
            raise ValueError(f"Warmup: warmup_steps must be >= 0, got {warmup_steps}")
        if mode not in self.MODES:
            raise ValueError(f"Warmup: unknown mode {mode!r}; expected one of {self.MODES}")
        if schedule is not None and schedule.optimizer is not optimizer:
            raise ValueError("Warmup: the inner schedule must drive the same optimizer")
        self.warmup_steps, self.start_factor = int(warmup_steps), float(start_factor)
        self.schedule, self.mode = schedule, mode
        super().__init__(optimizer)

    def warmup_factor(self, t):
        """The warm-up multiplier at iteration ``t``: linear from ``start_factor`` to 1, or
        ``start_factor`` (constant mode), then 1."""
        if t >= self.warmup_steps:
            return 1.0
        if self.mode == "constant":
            return self.start_factor
        return self.start_factor + (1.0 - self.start_factor) * t / self.warmup_steps

    def lr_for(self, base_lr, t):
        """The inner schedule's rate at iteration ``t`` (or ``base_lr``) times
        ``warmup_factor(t)``."""
        inner = self.schedule.lr_for(base_lr, t) if self.schedule is not None else base_lr
        return self.warmup_factor(t) * inner

    def state_dict(self):
        """The warm-up's own state, plus the inner schedule's under the key ``schedule``."""
        state = super().state_dict()
        if self.schedule is not None:
            state["schedule"] = self.schedule.state_dict()
        return state

    def load_state_dict(self, state):
        """Restore the inner schedule (its state must be there when there is one), then the
        warm-up's counter."""
        if self.schedule is not None:
            if "schedule" not in state:
                raise ValueError(f"Warmup.load_state_dict: the saved state has no inner schedule, "
                                 f"this one wraps {type(self.schedule).__name__}")
            self.schedule.load_state_dict(state["schedule"])
        super().load_state_dict(state)
