"""Shuffled, augmented mini-batches, optionally prepared by a background thread.

Randomness, and why it is laid out this way. Every random choice the loader makes is
a pure function of ``(seed, epoch, batch index)``:

    order of epoch e              = default_rng([seed, 0, e]).permutation(N)
    augmentation of batch b of e  = default_rng([seed, 1, e, b])   (crop offsets, flips)

So "where the data stream is" is fully described by ``(seed, epoch, batch)``. A run
stopped in the middle of an epoch and resumed from those three numbers sees exactly
the batches an uninterrupted run sees, and the prefetch thread -- which works one or
two batches ahead -- cannot shift anyone's random stream.
"""
from __future__ import annotations

import math
import queue
import threading

import numpy as np

from .transforms import CIFAR_MEAN, CIFAR_STD, normalize, random_crop_flip


class DataLoader:
    """Batches ``(x, y)`` of float32 (N, C, H, W) normalised images and int64 (N,) labels.

    images: uint8 (N, C, H, W); labels: integer (N,).
    shuffle:   a new random order every epoch.
    augment:   random crop with ``padding`` zero pixels and horizontal flip.
    drop_last: drop the last batch when it is smaller than ``batch_size`` (else keep it).
    prefetch:  how many batches a background thread may prepare ahead (0: none, all in
               the caller's thread). NumPy releases the GIL while copying, so the next
               batch is built while the model computes.
    seed:      an int; everything random follows from it (see the module docstring).

    ``loader.epoch(e, start=b)`` iterates epoch ``e`` from batch ``b`` on;
    ``for x, y in loader`` iterates the next epoch (0, 1, 2 ... on successive loops).
    """

    def __init__(self, images, labels, batch_size=128, shuffle=False, augment=False,
                 drop_last=False, seed=0, prefetch=0, padding=4, mean=CIFAR_MEAN, std=CIFAR_STD):
        images, labels = np.asarray(images), np.asarray(labels)
        if images.ndim != 4 or images.dtype != np.uint8:
            raise ValueError(f"DataLoader: images must be uint8 of shape (N, C, H, W), got "
                             f"{images.dtype} {images.shape}")
        if labels.shape != (len(images),):
            raise ValueError(f"DataLoader: {len(images)} images but labels of shape {labels.shape}")
        if batch_size < 1:
            raise ValueError(f"DataLoader: batch_size must be >= 1, got {batch_size}")
        if int(seed) < 0:
            raise ValueError(f"DataLoader: seed must be a non-negative int, got {seed}")
        self.images, self.labels = images, labels.astype(np.int64, copy=False)
        self.batch_size, self.shuffle, self.augment = int(batch_size), shuffle, augment
        self.drop_last, self.seed, self.prefetch = drop_last, int(seed), int(prefetch)
        self.padding, self.mean, self.std = padding, mean, std
        self._next_epoch = 0

    def __len__(self):
        """Batches per epoch."""
        n = len(self.labels)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def order(self, epoch: int) -> np.ndarray:
        """The example indices of ``epoch`` in the order they are served."""
        if not self.shuffle:
            return np.arange(len(self.labels))
        return np.random.default_rng([self.seed, 0, epoch]).permutation(len(self.labels))

    def batch(self, epoch: int, b: int, order=None):
        """Batch ``b`` of ``epoch``: (x float32 (n, C, H, W), y int64 (n,))."""
        order = self.order(epoch) if order is None else order
        idx = order[b * self.batch_size:(b + 1) * self.batch_size]
        images = self.images[idx]                                  # (n, C, H, W) uint8
        if self.augment:
            rng = np.random.default_rng([self.seed, 1, epoch, b])
            images = random_crop_flip(images, rng, padding=self.padding)
        return normalize(images, self.mean, self.std), self.labels[idx]

    def _batches(self, epoch, start):
        order = self.order(epoch)
        for b in range(start, len(self)):
            yield self.batch(epoch, b, order)

    def epoch(self, epoch: int, start: int = 0):
        """Iterate the batches of ``epoch`` from batch ``start`` on."""
        if not 0 <= start <= len(self):
            raise ValueError(f"DataLoader.epoch: start batch {start} outside 0..{len(self)}")
        batches = self._batches(epoch, start)
        return _prefetched(batches, self.prefetch) if self.prefetch > 0 else batches

    def __iter__(self):
        epoch, self._next_epoch = self._next_epoch, self._next_epoch + 1
        return iter(self.epoch(epoch))

    def state_dict(self):
        """A dict of ``seed`` and ``next_epoch``: what ``for x, y in loader`` needs to go on.

        Every order, crop and flip is a function of (seed, epoch, batch), so nothing else
        has to be saved.
        """
        return {"seed": self.seed, "next_epoch": self._next_epoch}

    def load_state_dict(self, state):
        """Restore the seed and the next epoch that ``state_dict()`` saved."""
        self.seed, self._next_epoch = int(state["seed"]), int(state["next_epoch"])


_END = object()


class _Failure:
    def __init__(self, error):
        self.error = error


def _prefetched(iterator, depth: int):
    """Run ``iterator`` in a background thread, ``depth`` items ahead, through a bounded queue.

    Errors in the thread are re-raised here; leaving the loop early (break, an exception,
    Ctrl-C) stops the thread and waits for it.
    """
    q = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item):
        while not stop.is_set():
            try:
                q.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def work():
        try:
            for item in iterator:
                if not put(item):
                    return
            put(_END)
        except BaseException as err:  # noqa: BLE001 - handed to the consumer, re-raised there
            put(_Failure(err))

    thread = threading.Thread(target=work, name="minires-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is _END:
                return
            if isinstance(item, _Failure):
                raise item.error
            yield item
    finally:
        stop.set()
        thread.join()
