"""minires.optim: optimisers and learning-rate schedules (PyTorch's names and formulas).

    opt = mr.optim.SGD(split_weight_decay(model, 5e-4), lr=0.1, momentum=0.9, nesterov=True)
    sched = mr.optim.Warmup(opt, 390, schedule=mr.optim.CosineAnnealingLR(opt, 30 * 390))
    ... loss.backward(); opt.step(); sched.step(); opt.zero_grad()
"""
from .adam import Adam, AdamW
from .lr_scheduler import (
    ConstantLR,
    CosineAnnealingLR,
    LRScheduler,
    MultiStepLR,
    OneCycleLR,
    Warmup,
)
from .optimizer import Optimizer, split_weight_decay
from .sgd import SGD

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "split_weight_decay", "LRScheduler", "ConstantLR",
           "MultiStepLR", "CosineAnnealingLR", "OneCycleLR", "Warmup"]
