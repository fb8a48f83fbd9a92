"""Augmentation and normalisation, vectorised over the whole batch.

Images stay uint8 (N, C, H, W) -- the byte order of the CIFAR files -- until the last
step, ``normalize``, turns them into the float32 NCHW batch the network eats. Keeping
uint8 that long means the crop and flip move a quarter of the bytes float32 would.

``random_crop_flip`` is one gather, not a loop: the padded batch is viewed as all its
(2p+1)^2 possible H x W windows (``sliding_window_view``, no copy), and one fancy index
picks window (dy, dx) for each image. ``random_crop_flip_reference`` is the plain loop
it is tested against.
"""
from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

# Per-channel statistics of the CIFAR-10 training images (R, G, B), pixel values in [0, 1].
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)


def _draw(rng: np.random.Generator, N: int, padding: int, flip: bool):
    """The random choices for a batch, always drawn in this order: dy, dx, flip."""
    dy = rng.integers(0, 2 * padding + 1, size=N)
    dx = rng.integers(0, 2 * padding + 1, size=N)
    mirror = rng.random(N) < 0.5 if flip else np.zeros(N, dtype=bool)
    return dy, dx, mirror


def random_crop_flip(images: np.ndarray, rng: np.random.Generator, padding: int = 4,
                     flip: bool = True) -> np.ndarray:
    """Random crop after zero padding, and random horizontal flip, for a uint8 batch.

    images: (N, C, H, W). Each image is padded with ``padding`` zero pixels on every side,
    a random H x W window of the padded image is kept (a shift by -padding..padding
    pixels in each direction), and with probability 1/2 it is mirrored left-right.
    Returns a new (N, C, H, W) array of the same dtype.
    """
    if images.ndim != 4:
        raise ValueError(f"random_crop_flip: expected images of shape (N, C, H, W), got "
                         f"{images.shape}")
    N, C, H, W = images.shape
    p = padding
    dy, dx, mirror = _draw(rng, N, p, flip)
    padded = np.zeros((N, C, H + 2 * p, W + 2 * p), dtype=images.dtype)     # (N, C, H+2p, W+2p)
    padded[:, :, p:p + H, p:p + W] = images
    windows = sliding_window_view(padded, (H, W), axis=(2, 3))  # (N, C, 2p+1, 2p+1, H, W), a view
    out = windows[np.arange(N), :, dy, dx]                      # (N, C, H, W), one copy
    out[mirror] = out[mirror, :, :, ::-1]
    return out


def random_crop_flip_reference(images: np.ndarray, rng: np.random.Generator, padding: int = 4,
                               flip: bool = True) -> np.ndarray:
    """The same as ``random_crop_flip`` (same random draws), one image at a time. For tests."""
    N, _, H, W = images.shape
    p = padding
    dy, dx, mirror = _draw(rng, N, p, flip)
    out = np.empty_like(images)
    for n in range(N):
        padded = np.pad(images[n], ((0, 0), (p, p), (p, p)))             # (C, H+2p, W+2p)
        crop = padded[:, dy[n]:dy[n] + H, dx[n]:dx[n] + W]                # (C, H, W)
        out[n] = crop[:, :, ::-1] if mirror[n] else crop
    return out


def normalize(images: np.ndarray, mean=CIFAR_MEAN, std=CIFAR_STD) -> np.ndarray:
    """uint8 (N, C, H, W) in 0..255 -> float32 (N, C, H, W): (x / 255 - mean) / std per channel.

    Computed as x * (1 / (255 std)) - mean / std with float32 constants: two passes, no
    float64 anywhere.
    """
    C = images.shape[1]
    mean = np.asarray(mean, dtype=np.float64)
    std = np.asarray(std, dtype=np.float64)
    if mean.shape != (C,) or std.shape != (C,):
        raise ValueError(f"normalize: mean and std need one value per channel ({C}), got "
                         f"{mean.shape} and {std.shape}")
    scale = (1.0 / (255.0 * std)).astype(np.float32).reshape(1, C, 1, 1)   # (1, C, 1, 1)
    shift = (mean / std).astype(np.float32).reshape(1, C, 1, 1)            # (1, C, 1, 1)
    x = images.astype(np.float32)
    x *= scale
    x -= shift
    return x
