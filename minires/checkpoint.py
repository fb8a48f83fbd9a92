"""Checkpoints: atomic ``.npz`` files of arrays, plus a JSON metadata entry. No pickle, ever.

Layout of a checkpoint file (a plain NumPy ``.npz``, readable with ``np.load(path)``):

    model/<name>          one array per entry of ``model.state_dict()`` (conv1.weight, ...)
    optimizer/<path>      the optimizer's arrays, e.g. optimizer/state/3/momentum_buffer
    __meta__              uint8 bytes of a UTF-8 JSON document:
                            {"format": "minires-checkpoint", "format_version": 1,
                             "minires_version": ...,
                             "optimizer": <its state_dict, arrays replaced by {"__array__": key}>,
                             "scheduler": <its state_dict>,
                             "meta": <anything JSON: config, epoch, step, random-generator
                                      states, history ...>}

Writing goes to a temporary file in the destination folder, is flushed and fsync'ed, and
only then ``os.replace``d over the old file: a crash or a full disk mid-save leaves the
previous checkpoint as it was. Loading uses ``allow_pickle=False`` and ``json``: it can
never execute code from the file.
"""
from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .backend import is_array, to_numpy
from .files import write_atomically

FORMAT = "minires-checkpoint"
FORMAT_VERSION = 1
META_KEY = "__meta__"


class CheckpointError(RuntimeError):
    """A checkpoint cannot be read, or does not fit the model it is loaded into."""


@dataclass
class Checkpoint:
    """What ``load`` returns: arrays as NumPy arrays, the rest as JSON values."""

    model: dict                    # name -> np.ndarray (a model state_dict)
    optimizer: dict | None = None  # an optimizer state_dict (arrays restored)
    scheduler: dict | None = None  # a schedule state_dict
    meta: dict = field(default_factory=dict)
    minires_version: str = ""
    path: Path | None = None


# --- JSON <-> arrays ------------------------------------------------------------------------------
def _encode(value, prefix: str, arrays: dict):
    """A JSON-able copy of ``value``; arrays go to ``arrays[key]``, replaced by {"__array__": key}.

    Dicts whose keys are not all strings (an optimizer's {0: ..., 1: ...}) become
    {"__items__": [[key, value], ...]} so the keys come back with their type.
    """
    if is_array(value):
        array = to_numpy(value)
        if array.dtype == object:
            raise TypeError(f"checkpoint: {prefix} is an object array; only numeric arrays "
                            f"can be saved")
        arrays[prefix] = array
        return {"__array__": prefix}
    if isinstance(value, dict):
        if all(isinstance(k, str) for k in value):
            return {k: _encode(v, f"{prefix}/{k}", arrays) for k, v in value.items()}
        return {"__items__": [[_encode(k, f"{prefix}/key", {}), _encode(v, f"{prefix}/{k}", arrays)]
                              for k, v in value.items()]}
    if isinstance(value, (list, tuple)):
        return [_encode(v, f"{prefix}/{i}", arrays) for i, v in enumerate(value)]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"checkpoint: cannot store {prefix} of type {type(value).__name__} "
                    f"(only arrays, dicts, lists, numbers, strings and None)")


def _decode(value, arrays):
    if isinstance(value, dict):
        if set(value) == {"__array__"}:
            return arrays[value["__array__"]]
        if set(value) == {"__items__"}:
            return {_decode(k, arrays): _decode(v, arrays) for k, v in value["__items__"]}
        return {k: _decode(v, arrays) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(v, arrays) for v in value]
    return value


# --- saving --------------------------------------------------------------------------------------
def _state_of(obj):
    return obj.state_dict() if hasattr(obj, "state_dict") else obj


def _write_npz(fileobj, arrays: dict):
    """Write ``arrays`` as an uncompressed .npz into the open binary file (no pickle)."""
    with zipfile.ZipFile(fileobj, mode="w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for key, array in arrays.items():
            with zf.open(f"{key}.npy", mode="w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asanyarray(array), allow_pickle=False)


def save(path, model, optimizer=None, scheduler=None, meta=None) -> Path:
    """Save ``model`` (a Module or a state_dict), optimizer, schedule and JSON ``meta`` atomically.

    Returns the path. On any error (disk full, unwritable folder ...) the file at ``path``
    is left exactly as it was and the temporary file is removed.
    """
    from . import __version__

    path = Path(path)
    arrays = {}
    for name, array in _state_of(model).items():
        _encode(array, f"model/{name}", arrays)
    document = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "minires_version": __version__,
        "optimizer": None if optimizer is None else _encode(_state_of(optimizer), "optimizer",
                                                             arrays),
        "scheduler": None if scheduler is None else _encode(_state_of(scheduler), "scheduler",
                                                             arrays),
        "meta": _encode(meta or {}, "meta", arrays),
    }
    if META_KEY in arrays:  # pragma: no cover - the prefixes above make this impossible
        raise ValueError(f"checkpoint: {META_KEY} is reserved")
    arrays[META_KEY] = np.frombuffer(json.dumps(document).encode("utf-8"), dtype=np.uint8)

    return write_atomically(path, lambda f: _write_npz(f, arrays), what="checkpoint")


# --- loading -------------------------------------------------------------------------------------
def load(path) -> Checkpoint:
    """Read a checkpoint written by ``save`` (arrays: ``allow_pickle=False``; metadata: json)."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"checkpoint {path}: a folder, not a checkpoint file (a run folder "
                              f"of python -m minires.train holds last.npz and best.npz)")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path}: no such file")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
    except Exception as err:
        raise CheckpointError(f"checkpoint {path}: cannot read it as a .npz file of arrays "
                              f"({_why_unreadable(path, err)}); the file is damaged or not a "
                              f"checkpoint") from err
    if META_KEY not in arrays:
        raise CheckpointError(f"checkpoint {path}: no {META_KEY} entry; not a minires checkpoint")
    try:
        document = json.loads(arrays.pop(META_KEY).tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"checkpoint {path}: its {META_KEY} entry is not valid JSON "
                              f"({err})") from err
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        found = document.get("format") if isinstance(document, dict) else None
        raise CheckpointError(f"checkpoint {path}: not a minires checkpoint (format {found!r})")
    if document.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(f"checkpoint {path}: format version {document['format_version']} is "
                              f"newer than this minires understands ({FORMAT_VERSION}); "
                              f"upgrade minires")
    try:
        model = {key[len("model/"):]: a for key, a in arrays.items() if key.startswith("model/")}
        return Checkpoint(model=model,
                          optimizer=_decode(document.get("optimizer"), arrays),
                          scheduler=_decode(document.get("scheduler"), arrays),
                          meta=_decode(document.get("meta") or {}, arrays),
                          minires_version=document.get("minires_version", ""), path=path)
    except KeyError as err:
        raise CheckpointError(f"checkpoint {path}: metadata refers to a missing array "
                              f"{err}") from err


def _why_unreadable(path: Path, err: Exception) -> str:
    """Why ``np.load`` could not read ``path``, in words for a checkpoint's user.

    NumPy's own message for a file that is not a .npz or holds object arrays suggests
    loading it with ``allow_pickle`` -- advice that would let a file run code: a
    checkpoint never needs it, so that message is not passed on.
    """
    try:
        with open(path, "rb") as f:
            head = f.read(6)
    except OSError as os_err:
        return f"cannot open it: {os_err.strerror or os_err}"
    if not head:
        return "the file is empty"
    if head.startswith(b"\x93NUMPY"):
        return "it is a single .npy array, not a .npz archive"
    if not head.startswith(b"PK"):
        return "it is not a .npz (zip) archive"
    if "pickle" in str(err):
        return "it holds object arrays, which a checkpoint never does and minires does not load"
    return f"the zip archive is broken: {type(err).__name__}: {err}"


def state_differences(expected: dict, found: dict) -> list:
    """Human-readable differences between two state_dicts (names and shapes); empty if they fit."""
    lines = []
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    if missing:
        lines.append(f"missing from the checkpoint ({len(missing)}): {', '.join(missing[:10])}"
                     + (" ..." if len(missing) > 10 else ""))
    if unexpected:
        lines.append(f"not in the model ({len(unexpected)}): {', '.join(unexpected[:10])}"
                     + (" ..." if len(unexpected) > 10 else ""))
    for k, array in expected.items():
        if k in found and tuple(np.shape(array)) != tuple(np.shape(found[k])):
            lines.append(f"{k}: model has shape {tuple(np.shape(array))}, checkpoint "
                         f"{tuple(np.shape(found[k]))}")
    return lines


def load_model_state(model, state: dict, source="checkpoint"):
    """``model.load_state_dict(state)`` after checking all names and shapes (errors list them)."""
    differences = state_differences(model.state_dict(), state)
    if differences:
        raise CheckpointError(f"{source} does not fit this model ({type(model).__name__}):\n  "
                              + "\n  ".join(differences))
    model.load_state_dict(state)


def restore(path_or_checkpoint, model, optimizer=None, scheduler=None) -> Checkpoint:
    """Load a checkpoint into ``model`` (and optimizer, schedule); returns the ``Checkpoint``."""
    ckpt = path_or_checkpoint
    if not isinstance(ckpt, Checkpoint):
        ckpt = load(ckpt)
    load_model_state(model, ckpt.model, source=f"checkpoint {ckpt.path}")
    if optimizer is not None:
        if ckpt.optimizer is None:
            raise CheckpointError(f"checkpoint {ckpt.path} holds no optimizer state")
        optimizer.load_state_dict(ckpt.optimizer)
    if scheduler is not None:
        if ckpt.scheduler is None:
            raise CheckpointError(f"checkpoint {ckpt.path} holds no schedule state")
        scheduler.load_state_dict(ckpt.scheduler)
    return ckpt


__all__ = ["Checkpoint", "CheckpointError", "FORMAT", "FORMAT_VERSION", "META_KEY", "load",
           "load_model_state", "restore", "save", "state_differences"]
