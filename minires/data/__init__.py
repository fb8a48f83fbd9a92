"""minires.data: CIFAR-10 (find, download, verify, extract, parse), augmentation and batching.

    from minires.data import load_cifar10, DataLoader
    data = load_cifar10()                      # ~/.cache/minires, $MINIRES_DATA or data_dir=
    train = DataLoader(data.train.images, data.train.labels, batch_size=128,
                       shuffle=True, augment=True, seed=0, prefetch=2)
    for x, y in train: ...                     # x float32 (N, 3, 32, 32), y int64 (N,)
"""
from .cifar import (
    ARCHIVES,
    BINARY,
    CIFAR10,
    CLASSES,
    PYTHON,
    Archive,
    DataError,
    Split,
    data_root,
    download_file,
    extract_archive,
    find_or_fetch,
    load_cifar10,
    read_binary_batch,
    read_folder,
    read_python_batch,
    restricted_load,
    verify_md5,
)
from .loader import DataLoader
from .transforms import (
    CIFAR_MEAN,
    CIFAR_STD,
    normalize,
    random_crop_flip,
    random_crop_flip_reference,
)

__all__ = [
    "ARCHIVES", "BINARY", "CIFAR10", "CLASSES", "PYTHON", "Archive", "DataError", "Split",
    "data_root", "download_file", "extract_archive", "find_or_fetch", "load_cifar10",
    "read_binary_batch", "read_folder", "read_python_batch", "restricted_load", "verify_md5",
    "DataLoader", "CIFAR_MEAN", "CIFAR_STD", "normalize", "random_crop_flip",
    "random_crop_flip_reference",
]
