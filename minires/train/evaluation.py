"""Evaluation: the mean loss and accuracy of a model on a split, with or without flip test-time
augmentation, computed on a copy with batch norm folded into the convolutions."""
from __future__ import annotations

from .. import backend, speed
from .. import functional as F
from ..autograd import no_grad
from ..backend import to_device
from ..data import DataLoader, Split
from ..nn.utils import fuse_conv_bn
from ..tensor import Tensor


def evaluate(model, split: Split, batch_size=256, device="cpu",
             flip=False, fuse=True, *, speed_settings=True) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``model`` (in eval mode) on ``split``.

    ``flip=True`` is test-time augmentation: the logits are the mean of the image's and its
    mirror image's (the same left-right flip the training augmentation uses), at twice the cost.
    ``fuse=True`` evaluates a copy with batch norm folded into the convolutions
    (``minires.nn.utils.fuse_conv_bn``): the same function, computed faster.
    ``speed_settings=True`` runs it inside ``minires.speed_settings()`` (the command lines'
    thread settings, the host's put back afterwards); False leaves the process as it is.
    """
    return evaluate_views(model, split, batch_size, device, flip=flip, fuse=fuse,
                          speed_settings=speed_settings)[flip]


def inference_copy(model, example):
    """``fuse_conv_bn(model, example)``, or the model itself when folding does not apply
    (no convolution, or a convolution whose output feeds more than its batch norm):
    folding is for speed only, so evaluation never depends on it."""
    try:
        return fuse_conv_bn(model, example)
    except (RuntimeError, ValueError):
        return model


def evaluate_views(model, split: Split, batch_size=256, device="cpu",
                   flip=True, fuse=True, *, speed_settings=True) -> dict[bool, tuple[float, float]]:
    """``{False: (loss, acc)}`` and, with ``flip``, ``{True: flip-averaged (loss, acc)}`` too,
    in one pass: the plain forward pass serves both."""
    loader = DataLoader(split.images, split.labels, batch_size=batch_size)
    views = (False, True) if flip else (False,)
    loss_sum, correct = dict.fromkeys(views, 0.0), dict.fromkeys(views, 0)
    was_training = model.training
    model.eval()
    net = None                  # what runs: the fused copy, made from the first batch
    try:
        with no_grad(), speed.scoped(speed_settings):
            for x, y in loader.epoch(0):
                y_dev = to_device(y, device)
                x_dev = to_device(x, device)                         # (N, C, H, W)
                if net is None:
                    net = inference_copy(model, Tensor(x_dev[:2])) if fuse else model
                logits = {False: net(Tensor(x_dev))}
                if flip:
                    xp = backend.get_array_module(x_dev)
                    mirrored = xp.ascontiguousarray(x_dev[..., ::-1])    # (N, C, H, W), W reversed
                    logits[True] = (logits[False] + net(Tensor(mirrored))) * 0.5
                for view in views:
                    loss = F.cross_entropy(logits[view], y_dev, reduction="sum")
                    loss_sum[view] += float(loss.item())
                    correct[view] += int((logits[view].data.argmax(axis=1) == y_dev).sum())
    finally:
        model.train(was_training)
    n = max(len(split), 1)
    return {view: (loss_sum[view] / n, correct[view] / n) for view in views}
