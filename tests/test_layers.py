"""Layers of minires.nn: PyTorch signatures and reprs, parameters and buffers, what forward
computes (against the functional ops, NumPy, and PyTorch when installed), float64 gradient
checks through the module (input and parameters), and clear errors for bad input.
"""
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import minires as mr
import minires.functional as F
from minires import nn

from .helpers import t64


def randn(*shape, seed=0, dtype=np.float32):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


# --- Conv2d ------------------------------------------------------------------------------
def test_conv2d_parameters_repr_and_default_init():
    mr.manual_seed(0)
    conv = nn.Conv2d(8, 16, 3, stride=2, padding=1, groups=2)
    assert conv.weight.shape == (16, 4, 3, 3) and conv.bias.shape == (16,)
    assert repr(conv) == ("Conv2d(8, 16, kernel_size=(3, 3), stride=(2, 2), padding=(1, 1), "
                          "groups=2)")
    bound = 1 / math.sqrt(4 * 9)                              # PyTorch: U(+-1/sqrt(fan_in))
    assert np.abs(conv.weight.data).max() <= bound and np.abs(conv.weight.data).max() > 0.9 * bound
    assert np.abs(conv.bias.data).max() <= bound
    plain = nn.Conv2d(3, 4, (1, 3), bias=False, dilation=2)
    assert plain.bias is None and [n for n, _ in plain.named_parameters()] == ["weight"]
    assert repr(plain) == ("Conv2d(3, 4, kernel_size=(1, 3), stride=(1, 1), dilation=(2, 2), "
                           "bias=False)")


def test_conv2d_forward_is_f_conv2d(device):
    conv = nn.Conv2d(4, 6, 3, stride=(1, 2), padding=1, dilation=1, groups=2).to(device)
    x = mr.tensor(randn(2, 4, 7, 6), device=device)
    expected = F.conv2d(x, conv.weight, conv.bias, stride=(1, 2), padding=1, groups=2)
    y = conv(x)
    assert y.shape == (2, 6, 7, 3) and y.dtype == np.float32
    np.testing.assert_array_equal(y.numpy(), expected.numpy())


@settings(max_examples=6)
@given(c_in=st.sampled_from([2, 4]), c_out=st.sampled_from([2, 4]), groups=st.sampled_from([1, 2]),
       k=st.integers(1, 3), stride=st.integers(1, 2), padding=st.integers(0, 1),
       bias=st.booleans(), seed=st.integers(0, 1000))
def test_conv2d_layer_gradcheck(c_in, c_out, groups, k, stride, padding, bias, seed, device):
    conv = nn.Conv2d(c_in, c_out, k, stride, padding, groups=groups, bias=bias).double().to(device)
    x = t64(randn(2, c_in, 4, 4, seed=seed, dtype=np.float64), device=device)
    assert mr.gradcheck(lambda x, *p: conv(x), x, *conv.parameters())


def test_conv2d_bad_arguments_and_inputs():
    with pytest.raises(ValueError,
                       match="groups=3 must divide both in_channels=4 and out_channels=6"):
        nn.Conv2d(4, 6, 3, groups=3)
    with pytest.raises(ValueError, match="in_channels must be a positive int, got 0"):
        nn.Conv2d(0, 6, 3)
    with pytest.raises(TypeError, match="kernel_size must be an int or a pair of ints, got"):
        nn.Conv2d(1, 1, (1, 2, 3))
    with pytest.raises(ValueError, match="padding must be >= 0"):
        nn.Conv2d(1, 1, 3, padding=-1)
    with pytest.raises(ValueError, match="padding_mode='zeros'"):
        nn.Conv2d(1, 1, 3, padding_mode="reflect")
    conv = nn.Conv2d(3, 8, 3)
    with pytest.raises(ValueError, match=r"Conv2d\(3, 8, kernel_size=\(3, 3\), stride=\(1, 1\)\): "
                                         r"expected an input of shape \(N, 3, H, W\), got shape "
                                         r"\(2, 4, 5, 5\)"):
        conv(mr.tensor(randn(2, 4, 5, 5)))
    with pytest.raises(ValueError, match=r"got shape \(3, 5, 5\)"):
        conv(mr.tensor(randn(3, 5, 5)))
    with pytest.raises(TypeError, match="expected a minires Tensor as input, got ndarray"):
        conv(randn(2, 3, 5, 5))


# --- BatchNorm -----------------------------------------------------------------------------
def test_batchnorm_repr_parameters_buffers():
    bn = nn.BatchNorm2d(4, momentum=0.2)
    assert repr(bn) == ("BatchNorm2d(4, eps=1e-05, momentum=0.2, affine=True, "
                        "track_running_stats=True)")
    assert (bn.weight.data == 1).all() and not bn.bias.data.any()
    assert not bn.running_mean.data.any() and (bn.running_var.data == 1).all()
    bare = nn.BatchNorm2d(4, affine=False, track_running_stats=False)
    assert not list(bare.parameters()) and not list(bare.buffers())
    assert list(bare.state_dict()) == []


def test_batchnorm2d_train_updates_running_stats_and_eval_uses_them(device):
    bn = nn.BatchNorm2d(3, momentum=0.1).to(device)
    x = randn(4, 3, 5, 5) * 2 + 1
    y = bn(mr.tensor(x, device=device)).numpy()
    mean, var = x.mean(axis=(0, 2, 3)), x.var(axis=(0, 2, 3))
    np.testing.assert_allclose(y, (x - mean[:, None, None]) / np.sqrt(var[:, None, None] + 1e-5),
                               rtol=1e-4, atol=1e-5)
    n = 4 * 5 * 5
    np.testing.assert_allclose(bn.running_mean.numpy(), 0.1 * mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(bn.running_var.numpy(), 0.9 + 0.1 * var * n / (n - 1), rtol=1e-5)
    assert int(bn.num_batches_tracked.item()) == 1
    bn.eval()
    rm, rv = bn.running_mean.numpy().copy(), bn.running_var.numpy().copy()
    y = bn(mr.tensor(x, device=device)).numpy()
    np.testing.assert_allclose(y, (x - rm[:, None, None]) / np.sqrt(rv[:, None, None] + 1e-5),
                               rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(bn.running_mean.numpy(), rm)      # eval leaves them alone
    assert int(bn.num_batches_tracked.item()) == 1


def test_batchnorm_momentum_none_is_a_cumulative_average():
    bn = nn.BatchNorm1d(2, momentum=None)
    xs = [randn(6, 2, seed=s) for s in range(3)]
    for x in xs:
        bn(mr.tensor(x))
    np.testing.assert_allclose(bn.running_mean.numpy(), np.mean([x.mean(0) for x in xs], axis=0),
                               rtol=1e-5, atol=1e-6)
    assert int(bn.num_batches_tracked.item()) == 3


def test_batchnorm_without_running_stats_always_uses_the_batch():
    bn = nn.BatchNorm2d(2, track_running_stats=False).eval()
    x = randn(3, 2, 2, 2) + 5
    y = bn(mr.tensor(x)).numpy()
    np.testing.assert_allclose(y.mean(axis=(0, 2, 3)), 0, atol=1e-5)


def test_batchnorm1d_2d_and_3d_inputs():
    bn = nn.BatchNorm1d(3)
    x3 = randn(4, 3, 5)
    y3 = bn(mr.tensor(x3)).numpy()
    assert y3.shape == (4, 3, 5)
    np.testing.assert_allclose(y3.mean(axis=(0, 2)), 0, atol=1e-5)
    np.testing.assert_allclose(y3.std(axis=(0, 2)), 1, atol=1e-3)
    y2 = bn(mr.tensor(randn(6, 3))).numpy()
    assert y2.shape == (6, 3)
    with pytest.raises(ValueError, match=r"BatchNorm1d\(3, .*expected an input of shape "
                                         r"\(N, 3\) or \(N, 3, L\), got shape \(6, 4\)"):
        bn(mr.tensor(randn(6, 4)))


def test_batchnorm_bad_arguments_and_inputs():
    with pytest.raises(ValueError, match="num_features must be a positive int"):
        nn.BatchNorm2d(0)
    with pytest.raises(ValueError, match="momentum must be in \\[0, 1\\] or None, got 2"):
        nn.BatchNorm2d(3, momentum=2)
    with pytest.raises(ValueError, match=r"BatchNorm2d\(3, eps=1e-05.*expected an input of shape "
                                         r"\(N, 3, H, W\), got shape \(2, 4, 3, 3\)"):
        nn.BatchNorm2d(3)(mr.tensor(randn(2, 4, 3, 3)))


@settings(max_examples=6)
@given(train=st.booleans(), seed=st.integers(0, 1000), affine=st.booleans())
def test_batchnorm_layers_gradcheck(train, seed, affine, device):
    rng = np.random.default_rng(seed)
    for bn, shape in ((nn.BatchNorm2d(3, affine=affine), (2, 3, 2, 3)),
                      (nn.BatchNorm1d(3, affine=affine), (5, 3))):
        bn.double()
        for p in bn.parameters():
            p.data[...] = rng.uniform(0.5, 1.5, size=p.shape)
        bn.running_mean.data[...] = rng.normal(size=3)
        bn.running_var.data[...] = rng.uniform(0.5, 2, size=3)
        bn.to(device).train(train)
        x = t64(rng.standard_normal(shape), device=device)
        assert mr.gradcheck(lambda x, *p, bn=bn: bn(x), x, *bn.parameters())


# --- Linear, activations, pooling, reshaping ----------------------------------------------
def test_linear(device):
    lin = nn.Linear(4, 3).to(device)
    assert repr(lin) == "Linear(in_features=4, out_features=3, bias=True)"
    x = randn(5, 4)
    y = lin(mr.tensor(x, device=device)).numpy()
    np.testing.assert_allclose(y, x @ lin.weight.numpy().T + lin.bias.numpy(), rtol=1e-5, atol=1e-6)
    assert nn.Linear(4, 3, bias=False).bias is None
    with pytest.raises(ValueError, match=r"Linear\(in_features=4.*last axis has 4 features, got "
                                         r"shape \(5, 3\)"):
        lin(mr.tensor(randn(5, 3), device=device))
    with pytest.raises(ValueError, match="out_features must be a positive int"):
        nn.Linear(3, 0)


def test_linear_gradcheck():
    lin = nn.Linear(3, 2).double()
    assert mr.gradcheck(lambda x, *p: lin(x), t64(randn(4, 3, dtype=np.float64)), *lin.parameters())


def test_relu_identity_flatten(device):
    x = mr.tensor(randn(2, 3, 4, 5), device=device)
    np.testing.assert_array_equal(nn.ReLU()(x).numpy(), np.maximum(x.numpy(), 0))
    assert nn.Identity(54, unused="yes")(x) is x
    assert nn.Flatten()(x).shape == (2, 60)
    assert nn.Flatten(0)(x).shape == (120,)
    assert nn.Flatten(1, 2)(x).shape == (2, 12, 5)
    with pytest.raises(ValueError, match="start_dim 3 comes after end_dim 1"):
        nn.Flatten(3, 1)(x)


def test_pooling_layers(device):
    x = mr.tensor(randn(2, 3, 8, 8), device=device)
    mp = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
    assert repr(mp) == "MaxPool2d(kernel_size=3, stride=2, padding=1, dilation=1, ceil_mode=False)"
    np.testing.assert_array_equal(mp(x).numpy(), F.max_pool2d(x, 3, 2, 1).numpy())
    assert mp(x).shape == (2, 3, 4, 4)
    ap = nn.AvgPool2d(2)
    assert repr(ap) == "AvgPool2d(kernel_size=2, stride=2, padding=0)"
    np.testing.assert_allclose(ap(x).numpy(), x.numpy().reshape(2, 3, 4, 2, 4, 2).mean(axis=(3, 5)),
                               rtol=1e-6, atol=1e-6)
    gap = nn.AdaptiveAvgPool2d(1)
    assert repr(gap) == "AdaptiveAvgPool2d(output_size=(1, 1))"
    np.testing.assert_allclose(gap(x).numpy(), x.numpy().mean(axis=(2, 3), keepdims=True),
                               rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="MaxPool2d: minires supports dilation=1"):
        nn.MaxPool2d(2, ceil_mode=True)
    with pytest.raises(ValueError, match="AvgPool2d: minires supports ceil_mode=False, "
                                         "count_include_pad=True"):
        nn.AvgPool2d(2, count_include_pad=False)


def test_dropout_layer_train_and_eval():
    drop = nn.Dropout(0.5)
    assert repr(drop) == "Dropout(p=0.5, inplace=False)"
    x = mr.tensor(np.ones((100, 100), dtype=np.float32))
    mr.manual_seed(0)
    y = drop(x).numpy()
    assert set(np.unique(y)) == {0.0, 2.0} and 0.45 < (y == 0).mean() < 0.55
    drop.eval()
    assert drop(x) is x
    with pytest.raises(ValueError, match="Dropout: p must be in \\[0, 1\\), got 1.5"):
        nn.Dropout(1.5)


# --- the same layers in PyTorch --------------------------------------------------------------
def test_conv_and_batchnorm_layers_match_pytorch():
    torch = pytest.importorskip("torch")
    x = randn(4, 6, 7, 7)
    for kw in (dict(kernel_size=3, stride=2, padding=1), dict(kernel_size=(1, 3), groups=3),
               dict(kernel_size=3, dilation=2, padding=2, bias=False)):
        ours = nn.Conv2d(6, 9, **kw)
        theirs = torch.nn.Conv2d(6, 9, **kw)
        theirs.load_state_dict({k: torch.from_numpy(v) for k, v in ours.state_dict().items()})
        np.testing.assert_allclose(ours(mr.tensor(x)).numpy(),
                                   theirs(torch.from_numpy(x)).detach().numpy(),
                                   rtol=1e-4, atol=1e-5)
    ours, theirs = nn.BatchNorm2d(6, momentum=0.3), torch.nn.BatchNorm2d(6, momentum=0.3)
    for step in range(3):
        xs = randn(4, 6, 3, 3, seed=step) * (step + 1)
        np.testing.assert_allclose(ours(mr.tensor(xs)).numpy(),
                                   theirs(torch.from_numpy(xs)).detach().numpy(),
                                   rtol=1e-4, atol=1e-5)
    for k, v in theirs.state_dict().items():
        np.testing.assert_allclose(ours.state_dict()[k], v.numpy(), rtol=1e-5, atol=1e-6, err_msg=k)
    ours.eval(), theirs.eval()
    np.testing.assert_allclose(ours(mr.tensor(x)).numpy(),
                               theirs(torch.from_numpy(x)).detach().numpy(), rtol=1e-4, atol=1e-5)
    # ... and torch's state_dict (torch tensors) loads into ours.
    fresh = nn.BatchNorm2d(6)
    fresh.load_state_dict(theirs.state_dict())
    for k, v in theirs.state_dict().items():
        np.testing.assert_array_equal(fresh.state_dict()[k], v.numpy())
