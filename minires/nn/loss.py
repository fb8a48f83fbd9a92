"""Loss modules: the ``nn.Module`` face of the losses in ``minires.functional.loss``.

    criterion = mr.nn.CrossEntropyLoss(label_smoothing=0.1)
    loss = criterion(model(x), y)        # the same as F.cross_entropy(model(x), y, 0.1)
"""
from __future__ import annotations

import numbers

from .. import functional as F
from ..functional.loss import REDUCTIONS
from .module import Module


class CrossEntropyLoss(Module):
    """Softmax cross-entropy of logits (N, C) against integer class labels (N,), as in PyTorch.

    ``label_smoothing`` (in [0, 1]) mixes the one-hot target with the uniform
    distribution; ``reduction`` is "mean" (default), "sum" or "none" (one loss per
    example). Arguments are keywords only: PyTorch's first positional argument is
    ``weight``, which minires does not support. The work is ``F.cross_entropy``.
    """

    def __init__(self, *, label_smoothing=0.0, reduction="mean"):
        super().__init__()
        if reduction not in REDUCTIONS:
            raise ValueError(f"CrossEntropyLoss: unknown reduction {reduction!r}; expected one of "
                             f"{REDUCTIONS}")
        if (not isinstance(label_smoothing, numbers.Real) or isinstance(label_smoothing, bool)
                or not 0.0 <= label_smoothing <= 1.0):
            raise ValueError(f"CrossEntropyLoss: label_smoothing must be a number in [0, 1], got "
                             f"{label_smoothing!r}")
        self.label_smoothing, self.reduction = float(label_smoothing), reduction

    def extra_repr(self):
        """The settings shown in the repr: label_smoothing and reduction."""
        return f"label_smoothing={self.label_smoothing}, reduction={self.reduction!r}"

    def forward(self, input, target):  # noqa: A002 - PyTorch's argument name
        """The loss of logits ``input`` (N, C) for labels ``target`` (N integers in [0, C))."""
        return F.cross_entropy(input, target, label_smoothing=self.label_smoothing,
                               reduction=self.reduction)


__all__ = ["CrossEntropyLoss"]
