"""The safetensors file format, written and read with the standard library and NumPy.

A ``.safetensors`` file (https://github.com/huggingface/safetensors) is three parts:

    8 bytes     N, the length of the header, an unsigned 64-bit little-endian integer
    N bytes     the header: a UTF-8 JSON object, one entry per tensor,
                  "layer1.0.conv1.weight": {"dtype": "F32", "shape": [64, 64, 3, 3],
                                            "data_offsets": [begin, end]}
                plus an optional "__metadata__": {str: str}; it may end in spaces, which
                pad it so the data starts at a multiple of 8 bytes
    the rest    the tensors' raw bytes, little-endian, C order, one after the other with
                no gaps; [begin, end) is a tensor's byte range counted from the start of
                this part

There is nothing else in it: no code, no pickle. Loading one cannot run anything, which
is why PyTorch (``safetensors.torch.load_file``) and most model hubs prefer it to
``torch.save``'s pickles.

Writing keeps every tensor aligned to its item size, as the reference implementation
does: the header is padded to a multiple of 8, and the tensors are laid out widest item
first (8-byte F64/I64, then 4-byte F32 ...), in the given order within each width.
Reading checks everything the reference reader checks (sizes, offsets, no gaps, no
overlap) and reports a damaged file by name.
"""
from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np

from ..backend import to_numpy
from ..checkpoint import CheckpointError
from ..files import write_atomically
from ..tensor import Tensor

# safetensors dtype code <-> NumPy dtype (always little-endian in the file). bfloat16 and the
# float8 kinds have no NumPy dtype; reading a file that holds them says so.
DTYPES = {
    "F64": np.dtype("<f8"), "F32": np.dtype("<f4"), "F16": np.dtype("<f2"),
    "I64": np.dtype("<i8"), "I32": np.dtype("<i4"), "I16": np.dtype("<i2"), "I8": np.dtype("i1"),
    "U64": np.dtype("<u8"), "U32": np.dtype("<u4"), "U16": np.dtype("<u2"), "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}
_CODE_OF = {(dtype.kind, dtype.itemsize): code for code, dtype in DTYPES.items()}

METADATA_KEY = "__metadata__"
MAX_HEADER_BYTES = 100_000_000      # the reference reader refuses larger headers
_ALIGN = 8


def dtype_code(dtype) -> str:
    """The safetensors code of a NumPy dtype (float32 -> "F32"); TypeError for any other."""
    dtype = np.dtype(dtype)
    code = _CODE_OF.get((dtype.kind, dtype.itemsize))
    if code is None:
        raise TypeError(f"safetensors has no type for NumPy {dtype}; supported: "
                        f"{', '.join(str(d) for d in DTYPES.values())}")
    return code


# --- writing -------------------------------------------------------------------------------------
def _little_endian(name, array) -> np.ndarray:
    """``array`` as a C-contiguous little-endian NumPy array, checked for a safetensors dtype."""
    if isinstance(array, Tensor):
        array = array.data
    array = to_numpy(array)
    try:
        code = dtype_code(array.dtype)
    except TypeError as err:
        raise TypeError(f"tensor {name!r}: {err}") from None
    return array.astype(DTYPES[code], order="C", copy=False)   # keeps 0-d arrays 0-d


def _header_bytes(header: dict) -> bytes:
    """The JSON header, padded with spaces so the data after it starts 8-byte aligned."""
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return text + b" " * (-(8 + len(text)) % _ALIGN)


def write_safetensors(path, tensors: dict, metadata: dict | None = None) -> Path:
    """Write ``tensors`` (name -> array) and ``metadata`` (str -> str) to ``path`` atomically.

    Arrays may be NumPy or CuPy arrays of a type in ``DTYPES`` (float64/32/16, signed and
    unsigned ints, bool), of any shape including 0-d. The file is written next to
    ``path`` and renamed over it only when complete (``files.write_atomically``).
    Raises ``TypeError``/``ValueError`` for a name, dtype or metadata value the format
    cannot hold (nothing is written then), ``CheckpointError`` when the folder is missing.
    """
    arrays = {}
    for name, array in tensors.items():
        if not isinstance(name, str) or not name or name == METADATA_KEY:
            raise ValueError(f"tensor names must be non-empty strings other than "
                             f"{METADATA_KEY!r}; got {name!r}")
        arrays[name] = _little_endian(name, array)
    if metadata is not None:
        bad = {k: v for k, v in metadata.items() if not (isinstance(k, str) and isinstance(v, str))}
        if bad:
            raise ValueError(f"safetensors metadata maps strings to strings; not: {bad!r}")

    # widest items first (a stable sort keeps the given order within each width), so every
    # tensor starts at a multiple of its item size
    order = sorted(arrays, key=lambda name: -arrays[name].dtype.itemsize)
    header = {METADATA_KEY: dict(metadata)} if metadata else {}
    offset = 0
    for name in order:
        array = arrays[name]
        header[name] = {"dtype": dtype_code(array.dtype), "shape": list(array.shape),
                        "data_offsets": [offset, offset + array.nbytes]}
        offset += array.nbytes
    head = _header_bytes(header)

    def write(f):
        f.write(struct.pack("<Q", len(head)))
        f.write(head)
        for name in order:
            f.write(arrays[name].tobytes())

    return write_atomically(path, write, what="safetensors file")


# --- reading -------------------------------------------------------------------------------------
def _read_header(f, path: Path):
    """(metadata, entries, data_start) of an open safetensors file; entries sorted by offset."""
    def damaged(why):
        return CheckpointError(f"safetensors file {path}: {why}; the file is damaged or not a "
                               f"safetensors file")

    size = f.seek(0, 2)
    f.seek(0)
    if size < 8:
        raise damaged(f"only {size} bytes long")
    (n,) = struct.unpack("<Q", f.read(8))
    if n > min(MAX_HEADER_BYTES, size - 8):
        raise damaged(f"its header length field says {n} bytes (the file has {size - 8} after "
                      f"it; at most {MAX_HEADER_BYTES} are allowed)")
    try:
        header = json.loads(f.read(n).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise damaged(f"its header is not valid JSON ({err})") from None
    if not isinstance(header, dict):
        raise damaged("its header is not a JSON object")
    metadata = header.pop(METADATA_KEY, None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                 for k, v in metadata.items()):
        raise damaged(f"its {METADATA_KEY} is not an object of strings")

    entries = []
    for name, info in header.items():
        try:
            code, shape, (begin, end) = info["dtype"], info["shape"], info["data_offsets"]
            valid = (isinstance(code, str) and isinstance(shape, list)
                     and all(isinstance(d, int) and d >= 0 for d in shape)
                     and isinstance(begin, int) and isinstance(end, int) and 0 <= begin <= end)
        except (TypeError, KeyError, ValueError):
            valid = False
        if not valid:
            raise damaged(f"the header entry {name!r} is not "
                          f'{{"dtype": ..., "shape": [...], "data_offsets": [begin, end]}}')
        if code not in DTYPES:
            raise CheckpointError(f"safetensors file {path}: tensor {name!r} has dtype {code}, "
                                  f"which NumPy cannot hold (readable: {', '.join(DTYPES)})")
        if end - begin != int(np.prod(shape, dtype=np.int64)) * DTYPES[code].itemsize:
            raise damaged(f"tensor {name!r}: {end - begin} bytes for a {code} tensor of shape "
                          f"{tuple(shape)}")
        entries.append((begin, end, name, DTYPES[code], tuple(shape)))

    entries.sort()
    position = 0
    for begin, end, name, _, _ in entries:
        if begin != position:
            raise damaged(f"tensor {name!r} starts at byte {begin} of the data, expected "
                          f"{position} (the tensors must follow each other with no gap or "
                          f"overlap)")
        position = end
    if position != size - 8 - n:
        raise damaged(f"the tensors take {position} bytes but the data part is {size - 8 - n}")
    return metadata, entries, 8 + n


def _open(path) -> tuple:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"safetensors file {path}: no such file")
    try:
        return path, open(path, "rb")
    except OSError as err:
        raise CheckpointError(f"safetensors file {path}: cannot open it ({err})") from err


def load_safetensors(path) -> dict:
    """Read a safetensors file into a dict name -> NumPy array, in the file's data order.

    Every array is writable and owns its memory, with the dtype and shape the file
    records (a 0-d int64 ``num_batches_tracked`` comes back as a 0-d int64 array).
    Raises ``CheckpointError`` naming the file when it is missing, damaged, or holds a
    dtype NumPy has no type for (bfloat16, float8). ``safetensors_metadata`` reads the
    ``__metadata__``.
    """
    path, f = _open(path)
    with f:
        _, entries, start = _read_header(f, path)
        tensors = {}
        for begin, end, name, dtype, shape in entries:
            f.seek(start + begin)
            raw = bytearray(f.read(end - begin))    # a bytearray: the array is writable
            array = np.frombuffer(raw, dtype=dtype).reshape(shape)
            tensors[name] = array.astype(dtype.newbyteorder("="), copy=False)  # native order
    return tensors


def safetensors_metadata(path) -> dict:
    """The ``__metadata__`` of a safetensors file (str -> str; empty when it has none)."""
    path, f = _open(path)
    with f:
        metadata, _, _ = _read_header(f, path)
    return metadata


__all__ = [
    "DTYPES",
    "METADATA_KEY",
    "dtype_code",
    "load_safetensors",
    "safetensors_metadata",
    "write_safetensors",
]
