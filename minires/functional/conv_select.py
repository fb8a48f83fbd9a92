"""Which conv2d runs, and every other knob of the convolution, in one place.

``F.conv2d`` (and so ``nn.Conv2d``) has two complete implementations of the same
arithmetic, and this module, above both, picks one:

  "reference"   ``conv.Conv2d``: im2col, one matmul, dW by a matmul, dx by col2im --
                lesson 03 line by line, plain NumPy / CuPy (conv.py).
  "fast"        ``conv_fast.FastConv2d``, the default: the same in chunks that stay in
                the CPU cache, the columns of a chunk in one matrix, the chunks on a
                thread pool, Winograd for wide 3x3 layers, CUDA kernels on the GPU
                (conv_fast.py, conv_layouts.py, winograd.py, parallel.py, cuda_kernels.py).

    F.use_conv("reference")                  # for the whole program; returns the previous
    with F.conv_implementation("reference"): # for one block, restored afterwards
        ...
    F.conv_in_use()                          # "fast" unless changed

The fast path's own knobs, which change its speed and, by float rounding only, its
results (the reference has none):

  use_winograd(on)       let the fast path pick Winograd F(2x2, 3x3) where it wins (True,
                         the default) or never; from conv_fast.py, re-exported here.
  set_chunk_bytes(n)     how many bytes of columns a CPU chunk holds (default 4 MiB);
  get_chunk_bytes()      from parallel.py, re-exported here.
  threads                ``minires.set_num_threads(n)`` (how many threads run the CPU
                         chunks) and ``minires.use_speed_settings()`` (those threads plus
                         OpenBLAS on one thread each), in minires/speed.py; nothing is
                         set at import.

The choice is one module-level setting, not per thread: a training run picks one
implementation for all its work.
"""
from __future__ import annotations

import contextlib

from .conv import Conv2d
from .conv_fast import FastConv2d, use_winograd
from .parallel import get_chunk_bytes, set_chunk_bytes

_IMPLEMENTATIONS = {"reference": Conv2d, "fast": FastConv2d}
_implementation = "fast"


def use_conv(name: str) -> str:
    """Make ``conv2d`` (and so nn.Conv2d) run ``name``: "reference" (``conv.Conv2d``: im2col,
    one matmul, col2im, as lesson 03 teaches) or "fast" (``conv_fast.FastConv2d``, the
    default). Returns the previous choice, so ``use_conv(previous)`` restores it."""
    global _implementation
    if name not in _IMPLEMENTATIONS:
        raise ValueError(f"use_conv: expected one of {sorted(_IMPLEMENTATIONS)}, got {name!r}")
    previous, _implementation = _implementation, name
    return previous


def conv_in_use() -> str:
    """The name of the conv2d implementation in use: "reference" or "fast"."""
    return _implementation


@contextlib.contextmanager
def conv_implementation(name: str):
    """``with conv_implementation("reference"): ...`` runs the block with that conv2d,
    then restores the previous choice (also when the block raises)."""
    previous = use_conv(name)
    try:
        yield name
    finally:
        use_conv(previous)


def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """2-D convolution, like ``torch.nn.functional.conv2d``.

    x: (N, C_in, H, W); weight: (C_out, C_in/groups, KH, KW); bias: (C_out,) or None.
    stride, padding, dilation: an int or a pair (h, w). groups divides C_in and C_out
    (groups == C_in is a depthwise convolution). Returns (N, C_out, OH, OW).
    Runs the implementation chosen by ``use_conv`` (default "fast").
    """
    return _IMPLEMENTATIONS[_implementation](stride, padding, dilation, groups)(x, weight, bias)


__all__ = ["conv2d", "conv_implementation", "conv_in_use", "get_chunk_bytes", "set_chunk_bytes",
           "use_conv", "use_winograd"]
