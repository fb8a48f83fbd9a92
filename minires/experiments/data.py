"""The images the experiments run on: CIFAR-10 (or, with ``--tiny``, a synthetic stand-in),
a fixed class-balanced subset, average-pooled to the nets' input size, in batches."""
from __future__ import annotations

import numpy as np

from ..data import DataLoader, Split, load_cifar10


def synthetic_split(n, size=8, classes=10, seed=0, templates_seed=1234):
    """A learnable stand-in for CIFAR-10: uint8 images (n, 3, size, size) and labels (n,).

    Each class has a fixed random template; an image is its class template plus noise,
    so a small network can learn it in a few steps. The templates depend only on
    ``templates_seed``, so a training and a test split made with different ``seed``s
    share them.
    """
    templates = np.random.default_rng(templates_seed).uniform(40, 215, (classes, 3, size, size))
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    noise = rng.normal(0, 40, (n, 3, size, size))
    images = np.clip(templates[labels] + noise, 0, 255).astype(np.uint8)
    return Split(images, labels.astype(np.int64))


def load_splits(args, limit_train=None, limit_test=None, input_size=None, balanced=False):
    """(train, test) Splits: CIFAR-10 (first ``limit`` examples), or synthetic with ``--tiny``.

    ``input_size`` (16, 8, ...) average-pools every image to that size (see ``pool_images``);
    ``balanced`` takes the training images as a class-balanced subset (``balanced_subset``)
    instead of the first ``limit_train``. Without the data, ``minires.data.DataError`` says
    where to put it.
    """
    if args.tiny:
        train, test = (synthetic_split(limit_train or 256, seed=args.seed + 1),
                       synthetic_split(limit_test or 128, seed=args.seed + 2))
    else:
        data = load_cifar10(args.data_dir, download=False)
        train = (balanced_subset(data.train, limit_train) if balanced
                 else data.train.take(limit_train))
        test = data.test.take(limit_test)
    if input_size and input_size != train.images.shape[-1]:
        train, test = pool_split(train, input_size), pool_split(test, input_size)
    return train, test


def balanced_subset(split, n):
    """A fixed class-balanced subset: the first ``n // classes`` images of every class, in the
    order they have in ``split`` (the same images whatever the seed). All images when n is
    None."""
    if n is None or n >= len(split):
        return split
    classes = np.unique(split.labels)
    per_class = n // len(classes)
    if per_class < 1:
        raise ValueError(f"balanced_subset: need at least {len(classes)} images (one per class), "
                         f"got {n}")
    keep = np.sort(np.concatenate([np.flatnonzero(split.labels == c)[:per_class]
                                   for c in classes]))
    return Split(split.images[keep], split.labels[keep])


def pool_images(images, size):
    """Average-pool uint8 images (N, C, H, W) to (N, C, size, size), rounded back to uint8.

    H and W must be multiples of ``size``: CIFAR's 32x32 to 16x16 averages each 2x2 patch,
    which keeps the objects recognisable and makes every convolution 4x cheaper.
    """
    N, C, H, W = images.shape
    if H % size or W % size:
        raise ValueError(f"pool_images: {H}x{W} images cannot be pooled to {size}x{size} "
                         f"(need a divisor of both)")
    fh, fw = H // size, W // size
    blocks = images.reshape(N, C, size, fh, size, fw)              # (N, C, OH, fh, OW, fw)
    pooled = blocks.mean(axis=(3, 5), dtype=np.float32)            # (N, C, OH, OW)
    return np.rint(pooled).astype(np.uint8)


def pool_split(split, size):
    """``split`` with every image average-pooled to ``size`` x ``size`` (``pool_images``)."""
    return Split(pool_images(split.images, size), split.labels)


def loader(split, batch_size, shuffle=False, augment=False, seed=0, drop_last=False):
    """A ``minires.data.DataLoader`` over ``split`` (normalised float32 batches)."""
    return DataLoader(split.images, split.labels, batch_size=batch_size, shuffle=shuffle,
                      augment=augment, seed=seed, drop_last=drop_last)


def first_batch(split, n):
    """The first ``n`` examples, normalised: (x float32 (n, 3, H, W), y int64 (n,))."""
    return next(iter(loader(split.take(n), batch_size=n)))


__all__ = ["balanced_subset", "first_batch", "load_splits", "loader", "pool_images",
           "pool_split", "synthetic_split"]
