"""CIFAR-10 from the dataset authors' archive: find or download, verify, extract, parse.

The dataset (https://www.cs.toronto.edu/~kriz/cifar.html) comes in two official forms:

- binary (the default, no pickle involved): ``cifar-10-binary.tar.gz`` holding
  ``cifar-10-batches-bin/data_batch_{1..5}.bin`` and ``test_batch.bin``. Each file is a
  run of 3073-byte records: one label byte (0-9), then 3072 pixel bytes -- the 1024
  red values of the 32x32 image row by row, then the green, then the blue plane;
- Python: ``cifar-10-python.tar.gz`` holding ``cifar-10-batches-py/data_batch_{1..5}`` and
  ``test_batch``, each a pickled dict with ``data`` (a uint8 array of N rows of the same
  3072 bytes) and ``labels`` (a list of N ints). We read it with a restricted unpickler
  that can build dicts, lists, strings, numbers and NumPy arrays and nothing else, so a
  doctored file cannot run code.

Either way the images come out as uint8 arrays of shape (N, C, H, W) = (N, 3, 32, 32)
(the byte order of the files, so no transpose) and the labels as int64 (N,).

Where the data lives (the "data root"): ``data_dir`` if given, else ``$MINIRES_DATA``,
else ``~/.cache/minires``. A root that already holds ``cifar-10-batches-bin/`` or
``cifar-10-batches-py/`` is used as is; else a ``.tar.gz`` lying there is checked and
unpacked; else the binary archive is downloaded (progress bar, MD5 check, then moved
into place). Nothing half-written is ever left where it would be taken for good data.
"""
from __future__ import annotations

import hashlib
import io
import os
import pickle
import shutil
import tarfile
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..files import write_atomically

CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
           "dog", "frog", "horse", "ship", "truck")
NUM_CLASSES = 10
C, H, W = 3, 32, 32
IMAGE_BYTES = C * H * W            # 3072
RECORD_BYTES = 1 + IMAGE_BYTES     # 3073: label byte + pixels
OFFICIAL_RECORDS_PER_FILE = 10_000

ENV_VAR = "MINIRES_DATA"
DEFAULT_ROOT = Path("~/.cache/minires")


class DataError(RuntimeError):
    """CIFAR-10 is missing, corrupt or unsafe; the message names the file and what to do."""


@dataclass(frozen=True)
class Archive:
    """One official archive: where it comes from, its checksum, and the folder it unpacks to."""

    format: str        # "bin" or "py"
    filename: str
    url: str
    md5: str
    folder: str
    train_files: tuple
    test_file: str


BINARY = Archive(
    format="bin", filename="cifar-10-binary.tar.gz",
    url="https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",
    md5="c32a1d4ab5d03f1284b67883e8d87530", folder="cifar-10-batches-bin",
    train_files=tuple(f"data_batch_{i}.bin" for i in range(1, 6)), test_file="test_batch.bin")
PYTHON = Archive(
    format="py", filename="cifar-10-python.tar.gz",
    url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
    md5="c58f30108f718f92721af3b95e74349a", folder="cifar-10-batches-py",
    train_files=tuple(f"data_batch_{i}" for i in range(1, 6)), test_file="test_batch")
ARCHIVES = {"bin": BINARY, "py": PYTHON}


# --- where the data is ------------------------------------------------------------------------
def data_root(data_dir=None) -> Path:
    """``data_dir``, else ``$MINIRES_DATA``, else ``~/.cache/minires`` (user-expanded)."""
    root = data_dir if data_dir is not None else os.environ.get(ENV_VAR) or DEFAULT_ROOT
    return Path(root).expanduser()


def _missing_data_message(root: Path, reason: str) -> str:
    return (f"CIFAR-10 is not in {root} and could not be downloaded ({reason}).\n"
            f"Put the official binary archive there:\n"
            f"    {root / BINARY.filename}   (from {BINARY.url}, MD5 {BINARY.md5})\n"
            f"or its extracted folder {root / BINARY.folder}/ "
            f"(or the Python version: {root / PYTHON.filename} or {root / PYTHON.folder}/),\n"
            f"or point --data-dir / ${ENV_VAR} at a folder that holds one of them.")


def find_or_fetch(data_dir=None, download=True, archive: Archive = BINARY) -> tuple[Path, Archive]:
    """The extracted CIFAR-10 folder and its format, fetching and unpacking it if needed.

    Order: an extracted folder in the root (binary first, then Python); a root that *is*
    such a folder; an archive file in the root (checksum verified, then extracted); a
    download of ``archive`` (``download=True``). Otherwise a ``DataError`` saying
    exactly what to put where.
    """
    root = data_root(data_dir)
    for arch in (BINARY, PYTHON):
        if (root / arch.folder).is_dir():
            return root / arch.folder, arch
        if root.name == arch.folder and root.is_dir():
            return root, arch
    for arch in (archive, *(a for a in (BINARY, PYTHON) if a is not archive)):
        if (root / arch.filename).is_file():
            verify_md5(root / arch.filename, arch.md5)
            extract_archive(root / arch.filename, root, arch.folder)
            return root / arch.folder, arch
    if not download:
        raise DataError(_missing_data_message(root, "downloading is switched off"))
    try:
        root.mkdir(parents=True, exist_ok=True)
        download_file(archive.url, root / archive.filename, archive.md5)
    except DataError:
        raise
    except OSError as err:   # no network, DNS failure, HTTP error, unwritable root ...
        raise DataError(_missing_data_message(root, f"{type(err).__name__}: {err}")) from err
    extract_archive(root / archive.filename, root, archive.folder)
    return root / archive.folder, archive


# --- download and verify ----------------------------------------------------------------------
def file_md5(path, chunk=1 << 20) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_md5(path, expected: str) -> None:
    """Raise ``DataError`` naming ``path`` unless its MD5 is ``expected``."""
    got = file_md5(path)
    if got != expected:
        raise DataError(f"{path}: MD5 checksum mismatch (expected {expected}, got {got}); the file "
                        f"is incomplete or corrupt. Delete it and download it again.")


def download_file(url: str, dest, md5: str | None = None, timeout=60, progress=True) -> Path:
    """Download ``url`` to ``dest`` with a progress bar, through ``minires.files.write_atomically``:
    into a temporary file beside ``dest``, checksum verified, then moved into place (so
    ``dest`` is never partial; a folder that cannot be written is a ``minires.files.WriteError``,
    an ``OSError``)."""
    from tqdm.auto import tqdm

    dest = Path(dest)

    def fetch(out):
        digest = hashlib.md5()
        with urllib.request.urlopen(url, timeout=timeout) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=f"downloading {dest.name}",
                      disable=not progress, leave=False) as bar:
                for block in iter(lambda: response.read(1 << 20), b""):
                    out.write(block)
                    digest.update(block)
                    bar.update(len(block))
        if md5 is not None and digest.hexdigest() != md5:
            raise DataError(f"{url}: the downloaded file's MD5 is {digest.hexdigest()}, expected "
                            f"{md5}; the download is corrupt (nothing was kept). Try again.")

    write_atomically(dest, fetch, what="download")     # never partial; usual permissions
    return dest


# --- safe extraction ------------------------------------------------------------------------------
def _check_member(tar_path, member: tarfile.TarInfo) -> None:
    """Refuse anything but plain files and folders with relative, ``..``-free names."""
    name = member.name
    parts = Path(name).parts
    if name.startswith(("/", "\\")) or Path(name).is_absolute() or (parts and ":" in parts[0]):
        raise DataError(f"{tar_path}: refusing to extract {name!r}: absolute path")
    if ".." in parts:
        raise DataError(f"{tar_path}: refusing to extract {name!r}: '..' would leave the target "
                        f"folder")
    if member.issym() or member.islnk():
        raise DataError(f"{tar_path}: refusing to extract {name!r}: links are not allowed "
                        f"(it points to {member.linkname!r})")
    if not (member.isfile() or member.isdir()):
        raise DataError(f"{tar_path}: refusing to extract {name!r}: not a regular file or folder "
                        f"(devices and pipes are not allowed)")


def extract_archive(tar_path, root, folder: str) -> Path:
    """Unpack the ``folder/`` of a ``.tar.gz`` into ``root`` safely.

    Every member is checked first (no absolute paths, no ``..``, no links, no devices),
    then the files are written by us -- not by ``tarfile.extractall`` -- into a temporary
    folder inside ``root`` that is renamed to ``root/folder`` only when complete.
    Members outside ``folder/`` are skipped.
    """
    tar_path, root = Path(tar_path), Path(root)
    try:
        tar = tarfile.open(tar_path, "r:*")
    except (tarfile.TarError, OSError) as err:
        raise DataError(f"{tar_path}: cannot open as a tar archive ({err}); the file is corrupt. "
                        f"Delete it and download it again.") from err
    with tar:
        members = tar.getmembers()
        for member in members:
            _check_member(tar_path, member)
        wanted = [m for m in members if Path(m.name).parts[:1] == (folder,) and m.isfile()]
        if not wanted:
            raise DataError(f"{tar_path}: holds no {folder}/ folder; is it the right archive?")
        staging = Path(tempfile.mkdtemp(prefix=f".{folder}.", suffix=".extracting", dir=root))
        try:
            for member in wanted:
                target = staging.joinpath(*Path(member.name).parts[1:])
                inside = staging.resolve()
                if os.path.commonpath([inside, target.resolve()]) != str(inside):
                    raise DataError(f"{tar_path}: refusing to extract {member.name!r}: "
                                    f"it resolves outside the target folder")
                target.parent.mkdir(parents=True, exist_ok=True)
                with tar.extractfile(member) as src, open(target, "wb") as dst:
                    shutil.copyfileobj(src, dst)
            os.replace(staging, root / folder)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    return root / folder


# --- parsing: binary -----------------------------------------------------------------------------
def read_binary_batch(path) -> tuple[np.ndarray, np.ndarray]:
    """One ``*.bin`` batch -> images uint8 (N, C, H, W), labels int64 (N,)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file missing from the CIFAR-10 folder; delete the folder and "
                        f"extract the archive again")
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size == 0 or raw.size % RECORD_BYTES:
        raise DataError(f"{path}: size {raw.size} bytes is not a whole number of "
                        f"{RECORD_BYTES}-byte records (1 label byte + {IMAGE_BYTES} pixel bytes); "
                        f"the file is truncated or corrupt. Delete {path.parent} and extract the "
                        f"archive again.")
    records = raw.reshape(-1, RECORD_BYTES)                        # (N, 1 + C*H*W)
    labels = records[:, 0].astype(np.int64)
    images = records[:, 1:].reshape(-1, C, H, W)                   # (N, C, H, W), a view
    _check_labels(path, labels)
    return np.ascontiguousarray(images), labels


def _check_labels(path, labels):
    bad = np.flatnonzero((labels < 0) | (labels >= NUM_CLASSES))
    if bad.size:
        raise DataError(f"{path}: record {bad[0]} has label {labels[bad[0]]}, but CIFAR-10 "
                        f"labels lie in 0..{NUM_CLASSES - 1} ({bad.size} bad records); the file "
                        f"is corrupt.")


# --- parsing: Python pickles, restricted ---------------------------------------------------------
class _Refused(pickle.UnpicklingError):
    """The restricted unpickler met something a CIFAR-10 batch never holds."""


def _allowed_globals() -> dict:
    """The only globals a CIFAR-10 pickle needs: what rebuilds a NumPy array and its dtype.

    NumPy 2 moved ``numpy.core`` to ``numpy._core``; files written by either name the
    ``multiarray`` module by one of the two paths, so both map to the same function.
    """
    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # pragma: no cover - NumPy 1.x
        from numpy.core.multiarray import _reconstruct
    return {("numpy.core.multiarray", "_reconstruct"): _reconstruct,
            ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
            ("numpy", "ndarray"): np.ndarray,
            ("numpy", "dtype"): np.dtype}


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that builds dicts, lists, tuples, bytes, str, numbers and NumPy arrays only.

    Pickle runs code through ``find_class`` (any importable callable can be named and then
    called by the REDUCE opcode); here ``find_class`` answers only the three NumPy names an
    array needs and refuses everything else, so ``os.system`` & co can never be reached.
    """

    def __init__(self, file, source="pickle"):
        super().__init__(file, encoding="bytes")
        self.source = source
        self._allowed = _allowed_globals()

    def find_class(self, module, name):
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise _Refused(
                f"{self.source}: refusing to load global {module}.{name} -- a CIFAR-10 pickle "
                f"holds only dicts, lists and NumPy arrays; this file is not a genuine CIFAR-10 "
                f"batch and may be malicious") from None

    def persistent_load(self, pid):
        raise _Refused(f"{self.source}: refusing persistent id {pid!r}")


def restricted_load(path):
    """Unpickle ``path`` with ``RestrictedUnpickler``; errors name the file."""
    path = Path(path)
    data = path.read_bytes()
    try:
        return RestrictedUnpickler(io.BytesIO(data), source=str(path)).load()
    except _Refused as err:
        raise DataError(str(err)) from err
    except Exception as err:  # truncated stream, bad opcode ...
        raise DataError(f"{path}: cannot read as a CIFAR-10 pickle ({type(err).__name__}: {err}); "
                        f"the file is truncated or corrupt. Delete {path.parent} and extract the "
                        f"archive again.") from err


def _get(d, key):
    for k in (key.encode(), key):
        if k in d:
            return d[k]
    raise KeyError(key)


def read_python_batch(path) -> tuple[np.ndarray, np.ndarray]:
    """One pickled batch -> images uint8 (N, C, H, W), labels int64 (N,)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file missing from the CIFAR-10 folder; delete the folder and "
                        f"extract the archive again")
    batch = restricted_load(path)
    try:
        data, labels = _get(batch, "data"), _get(batch, "labels")
    except (KeyError, TypeError):
        keys = f" with keys {list(batch)}" if isinstance(batch, dict) else ""
        raise DataError(f"{path}: expected a dict with 'data' and 'labels', got "
                        f"{type(batch).__name__}{keys}") from None
    if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2
            and data.shape[1] == IMAGE_BYTES):
        desc = (f"{data.dtype} array of shape {data.shape}" if isinstance(data, np.ndarray)
                else type(data).__name__)
        raise DataError(f"{path}: 'data' must be a uint8 array of shape (N, {IMAGE_BYTES}), got "
                        f"{desc}; the file is corrupt")
    labels = np.asarray(labels)
    if labels.shape != (data.shape[0],) or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"{path}: {data.shape[0]} images but labels of shape {labels.shape} and "
                        f"dtype {labels.dtype}; the file is truncated or corrupt")
    labels = labels.astype(np.int64)
    _check_labels(path, labels)
    return data.reshape(-1, C, H, W), labels                       # (N, C, H, W)


READERS = {"bin": read_binary_batch, "py": read_python_batch}


# --- the whole set -------------------------------------------------------------------------------
@dataclass
class Split:
    """Images uint8 (N, C, H, W) and labels int64 (N,)."""

    images: np.ndarray
    labels: np.ndarray

    def __len__(self):
        return len(self.labels)

    def take(self, n):
        """The first ``n`` examples (all of them when ``n`` is None)."""
        return self if n is None else Split(self.images[:n], self.labels[:n])


@dataclass
class CIFAR10:
    """The training, optional validation and test splits, and where they came from."""

    train: Split
    test: Split
    val: Split | None = None
    folder: Path | None = None
    format: str = "bin"
    classes: tuple = CLASSES


def read_folder(folder, fmt: str) -> tuple[Split, Split]:
    """Parse an extracted folder of either format; all files must hold as many records."""
    folder = Path(folder)
    archive, reader = ARCHIVES[fmt], READERS[fmt]
    names = (*archive.train_files, archive.test_file)
    parts = {name: reader(folder / name) for name in names}
    counts = {name: len(labels) for name, (_, labels) in parts.items()}
    common = max(set(counts.values()), key=list(counts.values()).count)
    odd = [name for name, n in counts.items() if n != common]
    if odd:
        raise DataError(f"{folder / odd[0]}: holds {counts[odd[0]]} records but the other batch "
                        f"files hold {common} each (official: {OFFICIAL_RECORDS_PER_FILE}); the "
                        f"file is truncated or corrupt. Delete {folder} and extract the archive "
                        f"again.")
    train = Split(np.concatenate([parts[n][0] for n in archive.train_files]),
                  np.concatenate([parts[n][1] for n in archive.train_files]))
    test = Split(*parts[archive.test_file])
    return train, test


def load_cifar10(data_dir=None, download=True, val_split=0, archive: Archive = BINARY) -> CIFAR10:
    """Load CIFAR-10 (finding, verifying, downloading and unpacking it as needed).

    ``val_split=n`` holds out the last ``n`` training images as a validation split (the
    training files are in random order, so this is a random subset, and the same one
    whatever the seed -- He et al. used 45k/5k).
    """
    folder, arch = find_or_fetch(data_dir, download=download, archive=archive)
    train, test = read_folder(folder, arch.format)
    val = None
    if val_split:
        if not 0 < val_split < len(train):
            raise ValueError(f"val_split must lie in 1..{len(train) - 1} (the training set has "
                             f"{len(train)} images), got {val_split}")
        cut = len(train) - val_split
        train, val = (Split(train.images[:cut], train.labels[:cut]),
                      Split(train.images[cut:], train.labels[cut:]))
    return CIFAR10(train=train, test=test, val=val, folder=folder, format=arch.format)
