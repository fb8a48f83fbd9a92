"""Residual blocks: float64 gradient checks (input and every parameter, train and eval mode),
output shapes, the fork/branch/downsample contract, shortcuts, SE, zero-init, torchvision keys,
and (when PyTorch is installed) equality with torchvision-layout blocks built in torch.
"""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import minires as mr
import minires.functional as F
from minires import nn
from minires.nn import blocks as B

from .helpers import t64

# Block gradchecks perturb every element of the input and of every parameter (a few hundred
# forward passes each), so they draw a third of the profile's examples (5 under "ci").
BLOCK_EXAMPLES = settings(max_examples=max(3, settings.default.max_examples // 3))


def randomize(block, rng):
    """Weights N(0, 0.5^2), BN affine and running statistics away from their defaults, so that
    eval mode really uses the stored statistics and no ReLU input sits at 0."""
    for name, p in block.named_parameters():
        p.data[...] = rng.normal(0.0, 0.5, size=p.shape)
        if name.endswith("weight") and p.ndim == 1:            # BN gamma: away from 0
            p.data[...] = rng.uniform(0.5, 1.5, size=p.shape)
    for name, b in block.named_buffers():
        if name.endswith("running_mean"):
            b.data[...] = rng.normal(0.0, 0.3, size=b.shape)
        elif name.endswith("running_var"):
            b.data[...] = rng.uniform(0.5, 2.0, size=b.shape)


def check_block(block, x_shape, seed, device, train, reseed=None):
    """gradcheck the block in float64 w.r.t. its input and all of its parameters."""
    rng = np.random.default_rng(seed)
    block.double()
    randomize(block, rng)
    block.to(device).train(train)
    x = t64(rng.standard_normal(x_shape), device=device)
    params = list(block.parameters())

    def fn(x, *params):
        if reseed is not None:          # dropout: the same mask in every forward pass
            mr.manual_seed(reseed)
        return block(x)

    assert mr.gradcheck(fn, x, *params)


# --- Hypothesis configs, one strategy per block type ------------------------------------------
@st.composite
def basic_cfg(draw):
    inplanes = draw(st.integers(1, 3))
    option = draw(st.sampled_from(["A", "B"]))
    planes = draw(st.integers(inplanes if option == "A" else 1, 4))
    return dict(inplanes=inplanes, planes=planes, stride=draw(st.sampled_from([1, 2])),
                option=option, shortcut=draw(st.booleans()), se=draw(st.booleans()))


@st.composite
def bottleneck_cfg(draw):
    groups = draw(st.sampled_from([1, 2]))
    return dict(inplanes=draw(st.sampled_from([2, 4, 6])), planes=1,
                stride=draw(st.sampled_from([1, 2])), groups=groups, base_width=64,
                shortcut=draw(st.booleans()), se=draw(st.booleans()))


@st.composite
def preact_cfg(draw):
    inplanes = draw(st.integers(1, 3))
    return dict(inplanes=inplanes, planes=draw(st.integers(1, 3)),
                stride=draw(st.sampled_from([1, 2])), shortcut=draw(st.booleans()),
                se=draw(st.booleans()))


@st.composite
def preact_bottleneck_cfg(draw):
    return dict(inplanes=draw(st.sampled_from([2, 4])), planes=1,
                stride=draw(st.sampled_from([1, 2])), shortcut=draw(st.booleans()))


@st.composite
def wide_cfg(draw):
    return dict(inplanes=draw(st.integers(1, 3)), planes=draw(st.integers(1, 3)),
                stride=draw(st.sampled_from([1, 2])), dropout=draw(st.sampled_from([0.0, 0.3])))


@st.composite
def resnext_cfg(draw):
    return dict(inplanes=draw(st.sampled_from([2, 4])), planes=1,
                stride=draw(st.sampled_from([1, 2])), cardinality=draw(st.sampled_from([2, 3])),
                base_width=64)


@st.composite
def split_attention_cfg(draw):
    return dict(inplanes=draw(st.sampled_from([2, 4])), planes=2,   # width divisible by radix
                stride=draw(st.sampled_from([1, 2])), radix=2)


@BLOCK_EXAMPLES
@given(cfg=basic_cfg(), seed=st.integers(0, 2**16), train=st.booleans())
def test_basic_block_gradcheck(cfg, seed, train, device):
    block = B.BasicBlock(**cfg)
    check_block(block, (2, cfg["inplanes"], 4, 4), seed, device, train)


@BLOCK_EXAMPLES
@given(cfg=bottleneck_cfg(), seed=st.integers(0, 2**16), train=st.booleans())
def test_bottleneck_gradcheck(cfg, seed, train, device):
    check_block(B.Bottleneck(**cfg), (2, cfg["inplanes"], 4, 4), seed, device, train)


@BLOCK_EXAMPLES
@given(cfg=preact_cfg(), seed=st.integers(0, 2**16), train=st.booleans())
def test_preact_block_gradcheck(cfg, seed, train, device):
    check_block(B.PreActBlock(**cfg), (2, cfg["inplanes"], 4, 4), seed, device, train)


@BLOCK_EXAMPLES
@given(cfg=preact_bottleneck_cfg(), seed=st.integers(0, 2**16), train=st.booleans())
def test_preact_bottleneck_gradcheck(cfg, seed, train, device):
    check_block(B.PreActBottleneck(**cfg), (2, cfg["inplanes"], 4, 4), seed, device, train)


@BLOCK_EXAMPLES
@given(cfg=wide_cfg(), seed=st.integers(0, 2**16), train=st.booleans())
def test_wide_block_gradcheck(cfg, seed, train, device):
    check_block(B.WideBasic(**cfg), (2, cfg["inplanes"], 4, 4), seed, device, train, reseed=seed)


@BLOCK_EXAMPLES
@given(cfg=resnext_cfg(), seed=st.integers(0, 2**16), train=st.booleans())
def test_resnext_block_gradcheck(cfg, seed, train, device):
    check_block(B.ResNeXtBottleneck(**cfg), (2, cfg["inplanes"], 4, 4), seed, device, train)


@BLOCK_EXAMPLES
@given(cfg=split_attention_cfg(), seed=st.integers(0, 2**16), train=st.booleans())
def test_split_attention_block_gradcheck(cfg, seed, train, device):
    check_block(B.SplitAttentionBlock(**cfg), (2, cfg["inplanes"], 4, 4), seed, device, train)


@pytest.mark.parametrize("train", [True, False])
def test_plain_block_gradcheck(train, device):
    check_block(B.PlainBlock(2, 3, stride=2), (2, 2, 4, 4), 7, device, train)


# --- shapes ---------------------------------------------------------------------------------
BLOCKS = [  # (constructor, in_planes, out_planes)
    (lambda s: B.BasicBlock(4, 4, s, option="A"), 4, 4),
    (lambda s: B.BasicBlock(4, 8, s, option="A"), 4, 8),
    (lambda s: B.BasicBlock(4, 8, s, option="B", se=True), 4, 8),
    (lambda s: B.PlainBlock(4, 8, s), 4, 8),
    (lambda s: B.Bottleneck(8, 2, s), 8, 8),
    (lambda s: B.Bottleneck(4, 4, s, se=True), 4, 16),
    (lambda s: B.ResNeXtBottleneck(8, 4, s, cardinality=2, base_width=16), 8, 16),
    (lambda s: B.PreActBlock(4, 8, s), 4, 8),
    (lambda s: B.PreActBlock(4, 8, s, option="A"), 4, 8),
    (lambda s: B.PreActBottleneck(4, 2, s), 4, 8),
    (lambda s: B.WideBasic(4, 8, s, dropout=0.3), 4, 8),
    (lambda s: B.SplitAttentionBlock(8, 2, s), 8, 8),
]


@pytest.mark.parametrize("make,cin,cout", BLOCKS)
@pytest.mark.parametrize("stride", [1, 2])
def test_block_output_shape_and_dtype(make, cin, cout, stride, device):
    block = make(stride).to(device)
    x = mr.tensor(np.random.default_rng(0).standard_normal((3, cin, 8, 6)), dtype=np.float32,
                  device=device)
    y = block(x)
    assert y.shape == (3, cout, 8 // stride, 6 // stride)
    assert y.dtype == np.float32 and y.device == device
    assert block.out_planes == cout and block.in_planes == cin


# --- the fork contract ----------------------------------------------------------------------
def path_gradients(block, x):
    """Run forward + backward, catching the gradient of each forked path with tensor hooks."""
    seen = {"branch": [], "skip": []}

    def on_fork(module, inputs, output):
        x_branch, x_skip = output
        x_branch.register_hook(lambda g: seen["branch"].append(g.copy()))
        x_skip.register_hook(lambda g: seen["skip"].append(g.copy()))

    handle = block.fork.register_forward_hook(on_fork)
    out = block(x)
    r = np.random.default_rng(1).standard_normal(out.shape)
    (out * mr.tensor(r, dtype=out.dtype)).sum().backward()
    handle.remove()
    return seen


@pytest.mark.parametrize("make,cin,cout", BLOCKS)
def test_fork_contract_skip_and_branch_gradients(make, cin, cout):
    block = make(2)
    assert isinstance(block.fork, B.Fork) and not list(block.fork.parameters())
    x = mr.tensor(np.random.default_rng(0).standard_normal((2, cin, 4, 4)), dtype=np.float32,
                  requires_grad=True)
    seen = path_gradients(block, x)
    assert len(seen["branch"]) == 1
    if block.shortcut:
        assert len(seen["skip"]) == 1 and np.abs(seen["skip"][0]).sum() > 0
        total = seen["branch"][0] + seen["skip"][0]
        assert block.downsample is not None
    else:   # plain: the skip path gets no gradient at all, and there is no downsample
        assert seen["skip"] == [] and block.downsample is None
        total = seen["branch"][0]
    np.testing.assert_allclose(x.grad, total, rtol=1e-5, atol=1e-6)


def test_forward_is_branch_plus_shortcut():
    rng = np.random.default_rng(3)
    x = mr.tensor(rng.standard_normal((2, 4, 6, 6)), dtype=np.float32)
    for block, post in [(B.BasicBlock(4, 8, 2, option="A"), True),
                        (B.Bottleneck(4, 2, 2), True),
                        (B.PreActBlock(4, 8, 2), False),
                        (B.WideBasic(4, 4, 1), False)]:
        block.eval()
        randomize(block, rng)
        expected = block.branch(x) + block.downsample(x)
        expected = F.relu(expected) if post else expected
        np.testing.assert_allclose(block(x).numpy(), expected.numpy(), rtol=1e-6, atol=1e-6)
        assert block.post_activation is post
    plain = B.PlainBlock(4, 4).eval()
    np.testing.assert_allclose(plain(x).numpy(), F.relu(plain.branch(x)).numpy())


def test_is_residual_block_names_the_blocks_of_a_model():
    for block in (B.BasicBlock(4, 4), B.Bottleneck(16, 4), B.PreActBlock(4, 4),
                  B.PreActBottleneck(16, 4), B.WideBasic(4, 4), B.SplitAttentionBlock(16, 4),
                  B.PlainBlock(4, 4)):
        assert nn.is_residual_block(block)
    for module in (nn.Conv2d(4, 4, 3), nn.Sequential(nn.ReLU()), B.Fork(), B.ShortcutA(4, 8, 2),
                   B.SqueezeExcitation(16), mr.models.resnet20()):
        assert not nn.is_residual_block(module)
    model = mr.models.resnet20()
    assert sum(nn.is_residual_block(m) for m in model.modules()) == 9

    class OwnBlock(nn.Module):          # a user's block keeping the contract: a fork
        def __init__(self):
            super().__init__()
            self.fork, self.fc = B.Fork(), nn.Linear(4, 4)

        def forward(self, x):
            x_branch, x_skip = self.fork(x)
            return self.fc(x_branch) + x_skip
    assert nn.is_residual_block(OwnBlock())
    assert [name for name, _ in mr.inspect.residual_blocks(nn.Sequential(OwnBlock()))] == ["0"]

def test_shortcut_kinds():
    assert isinstance(B.BasicBlock(4, 4, 1, option="A").downsample, nn.Identity)
    assert isinstance(B.BasicBlock(4, 8, 2, option="A").downsample, B.ShortcutA)
    proj = B.BasicBlock(4, 8, 2, option="B").downsample
    assert isinstance(proj, nn.Sequential) and isinstance(proj[0], nn.Conv2d)
    assert isinstance(proj[1], nn.BatchNorm2d) and proj[0].stride == (2, 2)
    pre = B.PreActBlock(4, 8, 2).downsample                      # bare 1x1 conv, no BN
    assert len(pre) == 1 and isinstance(pre[0], nn.Conv2d)
    assert isinstance(B.Bottleneck(64, 16).downsample, nn.Identity)
    assert isinstance(B.Bottleneck(64, 64).downsample, nn.Sequential)   # 64 -> 256 channels
    with pytest.raises(ValueError, match="option must be 'A'.*or 'B'.*got 'C'"):
        B.BasicBlock(4, 8, 2, option="C")
    with pytest.raises(ValueError, match="ShortcutA: cannot map 8 channels to fewer \\(4\\)"):
        B.BasicBlock(8, 4, 2, option="A")
    with pytest.raises(ValueError, match="PlainBlock has no shortcut"):
        B.PlainBlock(4, 4, shortcut=True)
    with pytest.raises(ValueError, match="stride must be a positive int, got 0"):
        B.BasicBlock(4, 4, 0)


def test_shortcut_a_subsamples_and_zero_pads_channels(device):
    x = np.arange(2 * 4 * 4 * 4, dtype=np.float32).reshape(2, 4, 4, 4)
    y = B.ShortcutA(4, 8, 2)(mr.tensor(x, device=device)).numpy()
    assert y.shape == (2, 8, 2, 2)
    np.testing.assert_array_equal(y[:, 2:6], x[:, :, ::2, ::2])
    assert not y[:, :2].any() and not y[:, 6:].any()
    assert not list(B.ShortcutA(4, 8, 2).parameters())


def test_squeeze_excitation_scales_channels_by_a_gate_in_0_1():
    se = B.SqueezeExcitation(8, reduction=4)
    assert se.fc1.out_channels == 2 and se.fc2.out_channels == 8
    x = mr.tensor(np.random.default_rng(0).standard_normal((2, 8, 3, 3)), dtype=np.float32)
    ratio = se(x).numpy() / x.numpy()
    gate = ratio[:, :, :1, :1]
    np.testing.assert_allclose(ratio, np.broadcast_to(gate, ratio.shape), rtol=1e-5)
    assert ((gate > 0) & (gate < 1)).all()


def test_zero_init_residual_makes_the_block_its_shortcut():
    rng = np.random.default_rng(0)
    x = mr.tensor(rng.standard_normal((2, 8, 4, 4)), dtype=np.float32)
    for block, post in [(B.BasicBlock(8, 8), True), (B.Bottleneck(8, 2), True),
                        (B.PreActBlock(8, 8), False), (B.PreActBottleneck(8, 2), False),
                        (B.WideBasic(8, 8), False), (B.SplitAttentionBlock(8, 2), True)]:
        block.eval()
        block.zero_init_residual()
        expected = F.relu(x) if post else x
        np.testing.assert_allclose(block(x).numpy(), expected.numpy(), atol=1e-6)


def test_block_state_dict_keys_follow_torchvision():
    keys = list(B.BasicBlock(4, 8, 2, option="B").state_dict())
    bn = ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]
    assert keys == (["conv1.weight"] + [f"bn1.{k}" for k in bn] + ["conv2.weight"]
                    + [f"bn2.{k}" for k in bn] + ["downsample.0.weight"]
                    + [f"downsample.1.{k}" for k in bn])
    keys = list(B.Bottleneck(64, 64, 2).state_dict())
    assert [k for k in keys if k.endswith("weight") and "bn" not in k] == [
        "conv1.weight", "conv2.weight", "conv3.weight", "downsample.0.weight",
        "downsample.1.weight"]
    assert list(B.BasicBlock(4, 8, 2, option="A").state_dict())[-1] == "bn2.num_batches_tracked"


def test_resnext_and_split_attention_widths():
    block = B.ResNeXtBottleneck(256, 128, 2, cardinality=32, base_width=4)   # torchvision 32x4d
    assert block.conv2.weight.shape == (256, 8, 3, 3) and block.conv2.groups == 32
    sa = B.SplitAttentionBlock(16, 8, radix=2)
    assert sa.conv2.conv.weight.shape == (16, 4, 3, 3)      # 8 channels x radix 2, groups 2
    with pytest.raises(ValueError, match="radix must be >= 1"):
        B.SplitAttentionConv2d(4, 4, radix=0)
    with pytest.raises(ValueError,
                       match="in_channels=3 must be divisible by radix \\* cardinality = 2"):
        B.SplitAttentionConv2d(3, 4, radix=2)


def test_block_errors_name_the_layer():
    block = B.BasicBlock(4, 4)
    expected = (r"Conv2d\(4, 4, kernel_size=\(3, 3\).*expected an input "
                r"of shape \(N, 4, H, W\), got shape \(2, 3, 4, 4\)")
    with pytest.raises(ValueError, match=expected) as err:
        block(mr.tensor(np.zeros((2, 3, 4, 4), dtype=np.float32)))
    assert "raised in module 'conv1' (Conv2d) of BasicBlock" in "\n".join(err.value.__notes__)


# --- the same blocks in PyTorch ----------------------------------------------------------------
def torch_blocks():
    """torchvision's BasicBlock and Bottleneck layouts, written out in torch.nn."""
    torch = pytest.importorskip("torch")
    tnn = torch.nn

    class TBasic(tnn.Module):
        def __init__(self, inplanes, planes, stride):
            super().__init__()
            self.conv1 = tnn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
            self.bn1 = tnn.BatchNorm2d(planes)
            self.relu = tnn.ReLU()
            self.conv2 = tnn.Conv2d(planes, planes, 3, 1, 1, bias=False)
            self.bn2 = tnn.BatchNorm2d(planes)
            self.downsample = None
            if stride != 1 or inplanes != planes:
                self.downsample = tnn.Sequential(
                    tnn.Conv2d(inplanes, planes, 1, stride, bias=False), tnn.BatchNorm2d(planes))

        def forward(self, x):
            out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
            identity = x if self.downsample is None else self.downsample(x)
            return self.relu(out + identity)

    class TBottleneck(tnn.Module):
        def __init__(self, inplanes, planes, stride, groups=1, base_width=64):
            super().__init__()
            width = int(planes * (base_width / 64.0)) * groups
            self.conv1 = tnn.Conv2d(inplanes, width, 1, bias=False)
            self.bn1 = tnn.BatchNorm2d(width)
            self.conv2 = tnn.Conv2d(width, width, 3, stride, 1, groups=groups, bias=False)
            self.bn2 = tnn.BatchNorm2d(width)
            self.conv3 = tnn.Conv2d(width, planes * 4, 1, bias=False)
            self.bn3 = tnn.BatchNorm2d(planes * 4)
            self.relu = tnn.ReLU()
            self.downsample = None
            if stride != 1 or inplanes != planes * 4:
                self.downsample = tnn.Sequential(
                    tnn.Conv2d(inplanes, planes * 4, 1, stride, bias=False),
                    tnn.BatchNorm2d(planes * 4))

        def forward(self, x):
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.relu(self.bn2(self.conv2(out)))
            out = self.bn3(self.conv3(out))
            identity = x if self.downsample is None else self.downsample(x)
            return self.relu(out + identity)

    return torch, TBasic, TBottleneck


@pytest.mark.parametrize("kind", ["basic", "basic_stride2", "bottleneck", "resnext"])
def test_blocks_match_pytorch(kind):
    torch, TBasic, TBottleneck = torch_blocks()
    make = {"basic": lambda: (B.BasicBlock(16, 16, 1), TBasic(16, 16, 1)),
            "basic_stride2": lambda: (B.BasicBlock(16, 32, 2, option="B"), TBasic(16, 32, 2)),
            "bottleneck": lambda: (B.Bottleneck(32, 16, 2), TBottleneck(32, 16, 2)),
            "resnext": lambda: (B.ResNeXtBottleneck(32, 16, 2, cardinality=4, base_width=8),
                                TBottleneck(32, 16, 2, groups=4, base_width=8))}[kind]
    ours, theirs = make()
    rng = np.random.default_rng(0)
    randomize(ours, rng)
    # Our keys load into torch's module with strict=True: names and shapes agree.
    theirs.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in ours.state_dict().items()})
    x = rng.standard_normal((4, ours.in_planes, 8, 8)).astype(np.float32)
    out_side = 8 // ours.stride
    r = rng.standard_normal((4, ours.out_planes, out_side, out_side)).astype(np.float32)
    for train in (True, False):
        ours.train(train), theirs.train(train)
        xm = mr.tensor(x, requires_grad=True)
        xt = torch.tensor(x, requires_grad=True)
        ym, yt = ours(xm), theirs(xt)
        np.testing.assert_allclose(ym.numpy(), yt.detach().numpy(), rtol=1e-4, atol=1e-4)
        (ym * mr.tensor(r)).sum().backward()
        (yt * torch.from_numpy(r)).sum().backward()
        np.testing.assert_allclose(xm.grad, xt.grad.numpy(), rtol=1e-4, atol=1e-4)
        grads = {n: p.grad for n, p in ours.named_parameters()}
        for n, p in theirs.named_parameters():
            np.testing.assert_allclose(grads[n], p.grad.numpy(), rtol=1e-3, atol=1e-4, err_msg=n)
        ours.zero_grad(), theirs.zero_grad()
    for k, v in theirs.state_dict().items():          # running statistics moved the same way
        np.testing.assert_allclose(ours.state_dict()[k], v.numpy(), rtol=1e-5, atol=1e-6, err_msg=k)
