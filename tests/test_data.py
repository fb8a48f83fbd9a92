"""minires.data: tiny CIFAR-10 archives built here in both official formats (never the real data).

Covers: parsing both formats (from a folder, an archive in the root, and a download),
checksums, safe extraction (traversal, absolute paths, links, devices refused), the
restricted unpickler (a pickle that calls os.system is refused and does not run),
truncated and corrupt files, the data root, the validation split, augmentation
(against a per-image loop, determinism) and the loader (coverage, order, resume
from a batch, prefetch).
"""
import dataclasses
import hashlib
import io
import os
import pickle
import struct
import tarfile
import threading

import numpy as np
import pytest

from minires.data import (
    BINARY,
    CIFAR_MEAN,
    CIFAR_STD,
    PYTHON,
    DataError,
    DataLoader,
    data_root,
    extract_archive,
    find_or_fetch,
    load_cifar10,
    normalize,
    random_crop_flip,
    random_crop_flip_reference,
    read_binary_batch,
    read_python_batch,
    verify_md5,
)

N_PER_FILE = 6      # records per batch file in the tiny archives


# --- building tiny archives in the official formats ---------------------------------------------
def fake_cifar(seed=0, n=N_PER_FILE):
    """Six batches (5 train + test) of random images (N, 3, 32, 32) uint8 and labels 0..9."""
    rng = np.random.default_rng(seed)
    return [(rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8),
             rng.integers(0, 10, n).astype(np.int64)) for _ in range(6)]


def write_binary(root, batches):
    folder = root / BINARY.folder
    folder.mkdir(parents=True)
    for name, (images, labels) in zip((*BINARY.train_files, BINARY.test_file), batches):
        records = np.concatenate([labels.astype(np.uint8)[:, None],
                                  images.reshape(len(labels), -1)], axis=1)      # (N, 1 + 3072)
        records.tofile(folder / name)
    (folder / "batches.meta.txt").write_text("airplane\nautomobile\n")
    return folder


class Py2Pickler(pickle._Pickler):
    """Writes bytes the way Python 2 wrote its str (BINSTRING), as in the official pickles."""

    dispatch = dict(pickle._Pickler.dispatch)

    def save_py2_str(self, obj):
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str


def py2_pickle(obj):
    buf = io.BytesIO()
    Py2Pickler(buf, protocol=2).dump(obj)
    return buf.getvalue()


def write_python(root, batches, py2=True):
    folder = root / PYTHON.folder
    folder.mkdir(parents=True)
    for name, (images, labels) in zip((*PYTHON.train_files, PYTHON.test_file), batches):
        batch = {b"batch_label": name.encode(), b"labels": [int(v) for v in labels],
                 b"data": images.reshape(len(labels), -1),
                 b"filenames": [f"img_{i}.png".encode() for i in range(len(labels))]}
        data = py2_pickle(batch) if py2 else pickle.dumps(batch, protocol=4)
        (folder / name).write_bytes(data)
    return folder


def make_tar(folder, tar_path):
    with tarfile.open(tar_path, "w:gz") as tar:
        tar.add(folder, arcname=folder.name)
    return hashlib.md5(tar_path.read_bytes()).hexdigest()


def assert_matches(data, batches):
    train_x = np.concatenate([b[0] for b in batches[:5]])
    train_y = np.concatenate([b[1] for b in batches[:5]])
    np.testing.assert_array_equal(data.train.images, train_x)
    np.testing.assert_array_equal(data.train.labels, train_y)
    np.testing.assert_array_equal(data.test.images, batches[5][0])
    np.testing.assert_array_equal(data.test.labels, batches[5][1])
    assert data.train.images.dtype == np.uint8 and data.train.images.shape[1:] == (3, 32, 32)
    assert data.train.labels.dtype == np.int64


# --- parsing --------------------------------------------------------------------------------------
def test_binary_folder_is_used_as_is(tmp_path):
    batches = fake_cifar()
    write_binary(tmp_path, batches)
    data = load_cifar10(tmp_path, download=False)
    assert_matches(data, batches)
    assert data.format == "bin" and data.val is None


def test_root_that_is_the_folder_itself(tmp_path):
    batches = fake_cifar()
    folder = write_binary(tmp_path, batches)
    assert_matches(load_cifar10(folder, download=False), batches)


@pytest.mark.parametrize("py2", [True, False], ids=["python2-pickles", "protocol-4"])
def test_python_folder_through_restricted_unpickler(tmp_path, py2):
    batches = fake_cifar(1)
    write_python(tmp_path, batches, py2=py2)
    data = load_cifar10(tmp_path, download=False)
    assert_matches(data, batches)
    assert data.format == "py"


@pytest.mark.parametrize("fmt", ["bin", "py"])
def test_archive_in_root_is_verified_and_extracted(tmp_path, fmt):
    batches = fake_cifar(2)
    src = tmp_path / "src"
    folder = (write_binary if fmt == "bin" else write_python)(src, batches)
    root = tmp_path / "root"
    root.mkdir()
    archive = BINARY if fmt == "bin" else PYTHON
    md5 = make_tar(folder, root / archive.filename)
    data = load_cifar10(root, download=False, archive=dataclasses.replace(archive, md5=md5))
    assert_matches(data, batches)
    assert (root / archive.folder).is_dir()
    assert not [p for p in root.iterdir() if p.name.startswith(".")], "staging folder left behind"


def test_download_verifies_then_moves_into_place(tmp_path):
    batches = fake_cifar(3)
    src = tmp_path / "server"
    md5 = make_tar(write_binary(src, batches), src / "cifar.tar.gz")
    root = tmp_path / "root"             # does not exist yet: created
    archive = dataclasses.replace(BINARY, url=(src / "cifar.tar.gz").as_uri(), md5=md5)
    assert_matches(load_cifar10(root, download=True, archive=archive), batches)
    assert (root / BINARY.filename).is_file()
    assert {p.name for p in root.iterdir()} == {BINARY.filename, BINARY.folder}
    umask = os.umask(0)
    os.umask(umask)
    assert (root / BINARY.filename).stat().st_mode & 0o777 == 0o666 & ~umask   # not 0600


def test_download_with_wrong_checksum_keeps_nothing(tmp_path):
    src = tmp_path / "server"
    make_tar(write_binary(src, fake_cifar()), src / "cifar.tar.gz")
    root = tmp_path / "root"
    archive = dataclasses.replace(BINARY, url=(src / "cifar.tar.gz").as_uri(), md5="0" * 32)
    with pytest.raises(DataError, match="MD5 is .* expected 0{32}"):
        find_or_fetch(root, download=True, archive=archive)
    assert list(root.iterdir()) == []


def test_archive_with_wrong_checksum_names_the_file(tmp_path):
    make_tar(write_binary(tmp_path / "src", fake_cifar()), tmp_path / BINARY.filename)
    with pytest.raises(DataError,
                       match=f"{BINARY.filename}: MD5 checksum mismatch .*expected {BINARY.md5}"):
        load_cifar10(tmp_path, download=False)
    with pytest.raises(DataError, match="checksum mismatch"):
        verify_md5(tmp_path / BINARY.filename, "f" * 32)


def test_offline_without_data_says_what_to_put_where(tmp_path):
    root = tmp_path / "empty"
    with pytest.raises(DataError) as err:
        load_cifar10(root, download=False)
    message = str(err.value)
    assert str(root / BINARY.filename) in message and BINARY.md5 in message
    assert BINARY.url in message and str(root / BINARY.folder) in message
    missing = dataclasses.replace(BINARY, url=(tmp_path / "nowhere.tar.gz").as_uri())
    with pytest.raises(DataError, match="could not be downloaded .*URLError"):
        load_cifar10(root, download=True, archive=missing)


def test_data_root_order(tmp_path, monkeypatch):
    monkeypatch.setenv("MINIRES_DATA", str(tmp_path / "env"))
    assert data_root(tmp_path / "given") == tmp_path / "given"
    assert data_root() == tmp_path / "env"
    monkeypatch.delenv("MINIRES_DATA")
    assert str(data_root()) == os.path.expanduser("~/.cache/minires")


def test_validation_split_is_the_last_training_images(tmp_path):
    batches = fake_cifar()
    write_binary(tmp_path, batches)
    data = load_cifar10(tmp_path, download=False, val_split=7)
    train_x = np.concatenate([b[0] for b in batches[:5]])
    assert len(data.train) == 5 * N_PER_FILE - 7 and len(data.val) == 7
    np.testing.assert_array_equal(data.val.images, train_x[-7:])
    np.testing.assert_array_equal(data.train.images, train_x[:-7])
    with pytest.raises(ValueError, match="val_split must lie in 1..29"):
        load_cifar10(tmp_path, download=False, val_split=5 * N_PER_FILE)


# --- corrupt files --------------------------------------------------------------------------------
def test_truncated_binary_file_is_named(tmp_path):
    folder = write_binary(tmp_path, fake_cifar())
    path = folder / "data_batch_3.bin"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DataError, match=r"data_batch_3\.bin: size 18338 bytes is not a whole "
                                        r"number of 3073-byte records"):
        load_cifar10(tmp_path, download=False)


def test_file_with_missing_records_is_named(tmp_path):
    folder = write_binary(tmp_path, fake_cifar())
    path = folder / "test_batch.bin"
    path.write_bytes(path.read_bytes()[:3 * 3073])
    with pytest.raises(DataError, match=r"test_batch\.bin: holds 3 records but the other batch "
                                        r"files hold 6 each"):
        load_cifar10(tmp_path, download=False)


def test_label_out_of_range_is_named(tmp_path):
    folder = write_binary(tmp_path, fake_cifar())
    raw = bytearray((folder / "data_batch_2.bin").read_bytes())
    raw[2 * 3073] = 10                       # label byte of record 2
    (folder / "data_batch_2.bin").write_bytes(bytes(raw))
    with pytest.raises(DataError, match=r"data_batch_2\.bin: record 2 has label 10"):
        read_binary_batch(folder / "data_batch_2.bin")


def test_missing_batch_file_is_named(tmp_path):
    folder = write_binary(tmp_path, fake_cifar())
    (folder / "data_batch_4.bin").unlink()
    with pytest.raises(DataError, match=r"data_batch_4\.bin: file missing"):
        load_cifar10(tmp_path, download=False)


def test_truncated_pickle_is_named(tmp_path):
    folder = write_python(tmp_path, fake_cifar())
    path = folder / "data_batch_1"
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(DataError, match=r"data_batch_1: cannot read as a CIFAR-10 pickle"):
        read_python_batch(path)


def test_pickle_with_wrong_contents_is_named(tmp_path):
    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps({b"data": np.zeros((3, 100), np.uint8), b"labels": [0, 1, 2]}, 4))
    with pytest.raises(DataError, match=r"data_batch_1: 'data' must be a uint8 array of shape "
                                        r"\(N, 3072\), got uint8 array of shape \(3, 100\)"):
        read_python_batch(path)
    path.write_bytes(pickle.dumps({b"data": np.zeros((3, 3072), np.uint8), b"labels": [0, 1]}, 4))
    with pytest.raises(DataError, match=r"3 images but labels of shape \(2,\)"):
        read_python_batch(path)


class _RunsShell:
    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


@pytest.mark.parametrize("py2", [True, False], ids=["python2-style", "protocol-4"])
def test_pickle_that_runs_code_is_refused_and_does_not_run(tmp_path, py2):
    folder = write_python(tmp_path, fake_cifar())
    marker = tmp_path / "pwned"
    evil = {b"data": _RunsShell(f"touch {marker}"), b"labels": [0]}
    payload = py2_pickle(evil) if py2 else pickle.dumps(evil, protocol=4)
    (folder / "data_batch_1").write_bytes(payload)
    assert pickle.loads(payload, encoding="bytes") == {b"data": 0, b"labels": [0]} \
        and marker.exists(), "the test pickle should run its command under plain pickle"
    marker.unlink()
    with pytest.raises(DataError,
                       match=r"data_batch_1: refusing to load global (posix|os|nt)\.system"):
        load_cifar10(tmp_path, download=False)
    assert not marker.exists()


# --- safe extraction ------------------------------------------------------------------------------
def _tar_with(tmp_path, bad: tarfile.TarInfo, payload=b"x"):
    path = tmp_path / "bad.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        good = tarfile.TarInfo(f"{BINARY.folder}/data_batch_1.bin")
        good.size = 1
        tar.addfile(good, io.BytesIO(b"\0"))
        tar.addfile(bad, io.BytesIO(payload) if bad.isfile() else None)
    return path


def _info(name, kind=tarfile.REGTYPE, linkname="", size=1):
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, linkname
    info.size = size if kind == tarfile.REGTYPE else 0
    return info


@pytest.mark.parametrize("bad, reason", [
    (_info(f"{BINARY.folder}/../../evil.txt"), "'..' would leave the target folder"),
    (_info("/tmp/minires_evil_abs.txt"), "absolute path"),
    (_info(f"{BINARY.folder}/link", tarfile.SYMTYPE, "/etc/passwd"), "links are not allowed"),
    (_info(f"{BINARY.folder}/hard", tarfile.LNKTYPE, "/etc/passwd"), "links are not allowed"),
    (_info(f"{BINARY.folder}/dev", tarfile.CHRTYPE), "devices and pipes are not allowed"),
    (_info(f"{BINARY.folder}/fifo", tarfile.FIFOTYPE), "devices and pipes are not allowed"),
], ids=["dotdot", "absolute", "symlink", "hardlink", "device", "fifo"])
def test_unsafe_tar_members_are_refused(tmp_path, bad, reason):
    path = _tar_with(tmp_path, bad)
    root = tmp_path / "root"
    root.mkdir()
    with pytest.raises(DataError, match=f"bad.tar.gz: refusing to extract .*{reason}"):
        extract_archive(path, root, BINARY.folder)
    assert list(root.iterdir()) == []          # nothing extracted, no staging folder left
    assert not (tmp_path / "evil.txt").exists() and not os.path.exists("/tmp/minires_evil_abs.txt")


def test_corrupt_archive_is_named(tmp_path):
    path = tmp_path / BINARY.filename
    path.write_bytes(b"not a tar file at all")
    with pytest.raises(DataError, match="cannot open as a tar archive"):
        extract_archive(path, tmp_path, BINARY.folder)


# --- augmentation ---------------------------------------------------------------------------------
def _images(n=16, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)


def test_crop_flip_matches_the_per_image_loop():
    images = _images()
    fast = random_crop_flip(images, np.random.default_rng(5))
    slow = random_crop_flip_reference(images, np.random.default_rng(5))
    assert fast.shape == images.shape and fast.dtype == np.uint8
    np.testing.assert_array_equal(fast, slow)


def test_crop_flip_is_deterministic_per_seed_and_varies_between_seeds():
    images = _images()
    a = random_crop_flip(images, np.random.default_rng(1))
    b = random_crop_flip(images, np.random.default_rng(1))
    c = random_crop_flip(images, np.random.default_rng(2))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_crop_is_a_shifted_window_with_zero_fill():
    images = _images(200, seed=3) | 1            # no zero pixels in the source
    out = random_crop_flip(images, np.random.default_rng(0), padding=4, flip=False)
    zero_rows = (out == 0).all(axis=(1, 3)).sum(axis=1)      # rows entirely zero per image
    assert zero_rows.max() <= 4 and zero_rows.min() == 0
    unshifted = [n for n in range(200) if np.array_equal(out[n], images[n])]
    assert 0 < len(unshifted) < 20               # (dy, dx) = (4, 4) has probability 1/81
    flipped = random_crop_flip(images, np.random.default_rng(0), padding=0)
    same = [np.array_equal(flipped[n], images[n]) for n in range(200)]
    mirrored = [np.array_equal(flipped[n], images[n, :, :, ::-1]) for n in range(200)]
    assert all(s or m for s, m in zip(same, mirrored)) and 70 < sum(mirrored) < 130


def test_normalize_is_float32_and_per_channel():
    images = _images(4)
    x = normalize(images)
    assert x.dtype == np.float32 and x.shape == images.shape
    mean, std = np.array(CIFAR_MEAN)[:, None, None], np.array(CIFAR_STD)[:, None, None]
    expected = (images / 255.0 - mean) / std
    np.testing.assert_allclose(x, expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="one value per channel"):
        normalize(images, mean=(0.5, 0.5), std=(1, 1))


# --- the loader -----------------------------------------------------------------------------------
def _loader(n=50, **kw):
    images = _images(n, seed=9)
    labels = np.arange(n) % 10
    return DataLoader(images, labels, **{"batch_size": 16, **kw})


def test_every_example_once_per_epoch_in_a_new_order():
    loader = _loader(shuffle=True, seed=4)
    assert len(loader) == 4                                   # 16 + 16 + 16 + 2
    orders = [loader.order(e) for e in range(2)]
    for order in orders:
        assert sorted(order) == list(range(50))
    assert not np.array_equal(*orders)
    sizes = [len(y) for _, y in loader.epoch(0)]
    assert sizes == [16, 16, 16, 2]
    x, y = next(iter(loader.epoch(0)))
    assert x.dtype == np.float32 and x.shape == (16, 3, 32, 32) and y.dtype == np.int64
    np.testing.assert_array_equal(y, orders[0][:16] % 10)


def test_drop_last():
    loader = _loader(drop_last=True)
    assert len(loader) == 3 and [len(y) for _, y in loader.epoch(0)] == [16, 16, 16]


def test_same_seed_same_batches_other_seed_other_batches():
    def batches(seed):
        return [b for b in _loader(shuffle=True, augment=True, seed=seed).epoch(1)]
    a, b, c = batches(7), batches(7), batches(8)
    for (xa, ya), (xb, yb) in zip(a, b):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    assert not np.array_equal(a[0][1], c[0][1])


def test_starting_mid_epoch_gives_the_remaining_batches_exactly():
    loader = _loader(shuffle=True, augment=True, seed=1)
    full = list(loader.epoch(2))
    rest = list(loader.epoch(2, start=2))
    assert len(rest) == 2
    for (xa, ya), (xb, yb) in zip(full[2:], rest):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)


def test_prefetch_gives_the_same_batches_and_stops_its_thread():
    plain = list(_loader(shuffle=True, augment=True, seed=3).epoch(0))
    fetched = _loader(shuffle=True, augment=True, seed=3, prefetch=2)
    got = list(fetched.epoch(0))
    assert len(got) == len(plain)
    for (xa, ya), (xb, yb) in zip(plain, got):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    iterator = iter(fetched.epoch(1))
    next(iterator)
    iterator.close()                                          # leaving early stops the thread
    assert not any(t.name == "minires-prefetch" for t in threading.enumerate())


def test_prefetch_reraises_errors_from_the_thread():
    loader = _loader(prefetch=1)
    loader.mean = (0.5, 0.5)                      # wrong: normalize raises in the thread
    with pytest.raises(ValueError, match="one value per channel"):
        list(loader.epoch(0))


def test_iterating_the_loader_walks_through_epochs():
    loader = _loader(shuffle=True, seed=2)
    first = [y for _, y in loader]
    second = [y for _, y in loader]
    np.testing.assert_array_equal(np.concatenate(first), loader.order(0) % 10)
    np.testing.assert_array_equal(np.concatenate(second), loader.order(1) % 10)


def test_loader_bad_input():
    with pytest.raises(ValueError, match=r"images must be uint8 of shape \(N, C, H, W\)"):
        DataLoader(np.zeros((4, 3, 32, 32), np.float32), np.zeros(4), 2)
    with pytest.raises(ValueError, match="4 images but labels of shape"):
        DataLoader(np.zeros((4, 3, 32, 32), np.uint8), np.zeros(3), 2)
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        DataLoader(np.zeros((4, 3, 32, 32), np.uint8), np.zeros(4), 0)
