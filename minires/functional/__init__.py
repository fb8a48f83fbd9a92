"""minires.functional: every op as a function, PyTorch-style (``import minires.functional as F``).

Shape vocabulary, used in names and in a comment on every reshape:
    N   batch size              C   channels (C_in, C_out when both appear)
    H, W    input height/width  KH, KW  kernel height/width
    OH, OW  output height/width G   groups in a grouped convolution
    K   classes (logits are (N, K)) or the inner size of a matrix product
"""
from .activation import dropout, gelu, leaky_relu, relu, sigmoid, tanh
from .basic import (
    abs,
    add,
    clip,
    concatenate,
    div,
    exp,
    flatten,
    fork,
    getitem,
    linear,
    log,
    matmul,
    max,
    maximum,
    mean,
    min,
    minimum,
    mul,
    neg,
    pad,
    permute,
    pow,
    reshape,
    sqrt,
    stack,
    sub,
    sum,
    transpose,
    where,
)
from .conv import col2im, conv2d_naive, im2col
from .conv_select import conv2d, conv_implementation, conv_in_use, use_conv
from .loss import cross_entropy, log_softmax, softmax
from .norm import batch_norm
from .pool import adaptive_avg_pool2d, avg_pool2d, max_pool2d

__all__ = [
    "abs", "add", "clip", "concatenate", "div", "exp", "flatten", "fork", "getitem", "linear",
    "log", "matmul", "max", "maximum", "mean", "min", "minimum", "mul", "neg", "pad", "permute",
    "pow", "reshape", "sqrt", "stack", "sub", "sum", "transpose", "where",
    "dropout", "gelu", "leaky_relu", "relu", "sigmoid", "tanh",
    "cross_entropy", "log_softmax", "softmax",
    "conv2d", "conv2d_naive", "im2col", "col2im",
    "use_conv", "conv_implementation", "conv_in_use",
    "batch_norm",
    "max_pool2d", "avg_pool2d", "adaptive_avg_pool2d",
]
