"""The way out to PyTorch: a minires model as a PyTorch module, or its weights as a file.

Two ways, both under torchvision's names (``conv1.weight``, ``bn1.running_mean``,
``layer1.0.conv1.weight``, ``layer1.0.downsample.0.weight``, ``fc.weight`` ...):

``to_torch(model)`` -- a ``torch.nn.Module`` with the model's layout and its weights,
batch-norm running statistics and ``num_batches_tracked`` loaded, in the model's mode
and dtype (``minires.export.pytorch``: which layouts, and how each is rebuilt). The
ImageNet ResNets become ``torchvision.models.resnet.ResNet`` where torchvision is
installed; the CIFAR ResNets (option-A zero-padding shortcuts included), their plain
twins and the other CIFAR layouts are rebuilt from small ``torch.nn`` modules. Needs
PyTorch (``pip install torch``; without it, an ImportError says so):

    import minires as mr
    from minires.export import to_torch
    net = to_torch(model.eval())          # then net(torch.from_numpy(x)) == model(x)

``export_safetensors`` writes a model's ``state_dict()`` -- its parameters and its
batch-norm buffers -- in the safetensors format, from a model in memory or from a
checkpoint file that ``python -m minires.train`` or ``python -m minires.experiments``
wrote:

    python -m minires.export runs/cifar/best.npz --to resnet20.safetensors

    import minires as mr
    from minires.export import export_safetensors
    export_safetensors(model, "resnet18.safetensors", model_name="resnet18")
    export_safetensors("runs/cifar/best.npz", "resnet20.safetensors")

Why. Someone who outgrows minires keeps what they trained. safetensors is the format
PyTorch and the model hubs read without ``pickle``: a JSON header and raw little-endian
bytes, nothing that can run code when loaded. minires writes it itself, with the
standard library and NumPy (``minires.export.format``), so writing needs no new
dependency; the file is written atomically, like a checkpoint (a crash leaves no
half-written file).

How to load the file in PyTorch. ``safetensors.torch.load_file`` comes from the
``safetensors`` package, which neither minires nor PyTorch installs:
``pip install torch safetensors``. Then, into the module with the same layout -- for the
ImageNet ResNets that is torchvision's, the names and shapes are the same:

    import safetensors.torch, torchvision
    model = torchvision.models.resnet18()
    model.load_state_dict(safetensors.torch.load_file("resnet18.safetensors"))
    model.eval()     # batch norm then uses the exported running statistics

The CIFAR ResNets (``resnet20`` ...) have no torchvision twin; the module ``to_torch``
builds for the same minires model loads the file the same way:
``to_torch(mr.models.resnet20()).load_state_dict(safetensors.torch.load_file(path))``.

The file's ``__metadata__`` records ``model`` (the model's name, when known),
``minires_version`` and ``format: "pt"`` (the tensors are in PyTorch's layout: NCHW,
OIHW, Linear weight (out, in)); ``safetensors_metadata(path)`` reads it back, and
``load_safetensors(path)`` reads the tensors as NumPy arrays (a minires model loads them
with ``model.load_state_dict``; no safetensors package needed).
"""
from __future__ import annotations

import os
from pathlib import Path

from .. import checkpoint
from ..checkpoint import CheckpointError
from .format import load_safetensors, safetensors_metadata, write_safetensors
from .pytorch import to_torch

#: the ``__metadata__`` key convention of the model hubs for PyTorch-layout tensors
TORCH_FORMAT = {"format": "pt"}


def checkpoint_model_name(ckpt) -> str | None:
    """The model name a ``Checkpoint``'s metadata records, or None.

    ``python -m minires.train`` records it as ``config.model``; the experiments
    (``degradation`` ...) as ``model``.
    """
    meta = ckpt.meta if isinstance(ckpt.meta, dict) else {}
    config = meta.get("config") if isinstance(meta.get("config"), dict) else {}
    name = meta.get("model") or config.get("model")
    return name if isinstance(name, str) else None


def _state_and_name(source):
    """(state_dict, model name or None, where it came from) of any ``export_safetensors`` source."""
    if isinstance(source, (str, os.PathLike)):
        source = checkpoint.load(source)           # CheckpointError names the file
    if isinstance(source, checkpoint.Checkpoint):
        return source.model, checkpoint_model_name(source), f"checkpoint {source.path}"
    if hasattr(source, "state_dict") and callable(source.state_dict):
        return source.state_dict(), type(source).__name__, f"model {type(source).__name__}"
    if isinstance(source, dict):
        return source, None, "state_dict"
    raise TypeError(f"export_safetensors: expected a model, a state_dict, a Checkpoint or the "
                    f"path of a checkpoint file, got {type(source).__name__}")


def export_safetensors(source, path, *, model_name=None, metadata=None, overwrite=True) -> Path:
    """Write a model's weights to ``path`` in the safetensors format; returns ``path``.

    ``source``: a minires model (its ``state_dict()`` is written), a state_dict (name ->
    array), a ``minires.checkpoint.Checkpoint``, or the path of a checkpoint ``.npz`` from
    ``python -m minires.train`` or ``python -m minires.experiments`` (its model weights
    are written; the optimizer state is not).

    ``model_name`` goes into the file's ``__metadata__`` as ``model``; by default it is
    the name a checkpoint records, or a model's class name (``ResNet``: pass
    ``model_name="resnet18"`` to say which one), and is left out for a bare state_dict.
    ``metadata`` (str -> str) adds entries of your own. ``minires_version`` and
    ``format: "pt"`` are always there.

    Tensors keep their dtype: float32 (or float64) weights, int64 ``num_batches_tracked``.
    The file is written atomically (a temporary file in the same folder, renamed over
    ``path`` when complete). With ``overwrite=False`` an existing ``path`` is refused.

    Raises ``CheckpointError`` naming the file when the checkpoint cannot be read or
    holds no model weights, or the folder of ``path`` does not exist;
    ``FileExistsError`` for an existing ``path`` with ``overwrite=False``; ``TypeError``
    / ``ValueError`` for a tensor or metadata entry safetensors cannot hold.
    """
    from .. import __version__

    path = Path(path)
    if not path.parent.is_dir():             # before reading a checkpoint that may be large
        raise CheckpointError(f"cannot write safetensors file {path}: the folder {path.parent} "
                              f"does not exist")
    if not overwrite and path.exists():
        raise FileExistsError(f"{path} already exists; pass overwrite=True to replace it")
    state, recorded_name, origin = _state_and_name(source)
    if not state:
        raise CheckpointError(f"{origin} holds no model weights; nothing to export to {path}")
    name = model_name if model_name is not None else recorded_name
    meta = {**TORCH_FORMAT, "minires_version": __version__}
    if name is not None:
        meta["model"] = str(name)
    meta.update(metadata or {})
    return write_safetensors(path, state, meta)


__all__ = [
    "checkpoint_model_name",
    "export_safetensors",
    "load_safetensors",
    "safetensors_metadata",
    "to_torch",
    "write_safetensors",
]
