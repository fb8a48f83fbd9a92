"""minires: a from-scratch deep-learning framework for learning how residual networks work.

    import minires as mr
    import minires.functional as F
    x = mr.tensor([[1.0, 2.0]], requires_grad=True)       # (1, 2), float32
    w = mr.tensor([[0.5], [1.0]], requires_grad=True)      # (2, 1)
    y = F.relu(x @ w).sum(); y.backward()
    x.grad, w.grad                                         # [[0.5, 1.0]], [[1.0], [2.0]]

Importing minires changes nothing outside it. ``fit``, ``evaluate``, ``inspect.gradient_flow``
and the experiments apply the speed settings for the duration of the call
(``with mr.speed_settings(): ...`` does the same for a block of your own);
``mr.use_speed_settings()`` sets threads and memory for the whole process (the command
lines make it).

Subpackages with heavier imports (nn, models, optim, data, inspect, checkpoint, files,
train, experiments) load on first use: ``mr.nn`` imports ``minires.nn``.
"""
import importlib

from . import functional
from .autograd import Function, enable_grad, is_grad_enabled, no_grad
from .backend import get_array_module, gpu_available, manual_seed
from .gradcheck import GradcheckError, gradcheck
from .speed import set_num_threads, speed_settings, use_speed_settings
from .tensor import Tensor, from_numpy, ones, randn, tensor, zeros

__version__ = "0.1.0"

_LAZY = ("nn", "models", "optim", "data", "inspect", "checkpoint", "files", "train", "experiments",
         "export")


def __getattr__(name):
    if name in _LAZY:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'minires' has no attribute {name!r}")


__all__ = ["Tensor", "tensor", "zeros", "ones", "randn", "from_numpy", "Function", "no_grad",
           "enable_grad", "is_grad_enabled", "functional", "gradcheck", "GradcheckError",
           "get_array_module", "gpu_available", "manual_seed", "set_num_threads",
           "speed_settings", "use_speed_settings", "__version__", *_LAZY]
