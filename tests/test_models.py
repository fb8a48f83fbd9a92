"""Model builders: published parameter counts, torchvision state_dict keys, the registry, a tiny
instance of every family end to end (forward, backward, float64 gradcheck of the input), the
initialisation, and (with PyTorch installed) equality with torchvision-layout models in torch.
"""
import math

import numpy as np
import pytest

import minires as mr
import minires.functional as F
from minires import models, nn
from minires.nn import blocks as B

from .helpers import t64
from .test_blocks import randomize, torch_blocks


# --- parameter counts (from shapes; no forward runs) --------------------------------------------
@pytest.mark.parametrize("name,count", [
    ("resnet18", 11_689_512),         # torchvision's published figures
    ("resnet34", 21_797_672),
    ("resnet50", 25_557_032),
    ("resnext50_32x4d", 25_028_904),
])
def test_imagenet_parameter_counts_equal_torchvision(name, count):
    assert models.get_model(name).num_parameters() == count


@pytest.mark.slow
def test_resnet152_parameter_count():
    assert models.resnet152().num_parameters() == 60_192_808


def cifar_resnet_count(depth, option):
    """The CIFAR ResNet's parameters counted by hand, stage by stage (He et al. 2015, 4.2)."""
    n = (depth - 2) // 6
    conv = lambda cin, cout, k: cin * cout * k * k       # bias-free convs
    bn = lambda c: 2 * c                                 # gamma and beta
    total = conv(3, 16, 3) + bn(16)
    cin = 16
    for width in (16, 32, 64):
        for i in range(n):
            total += conv(cin, width, 3) + bn(width) + conv(width, width, 3) + bn(width)
            if cin != width and option == "B":
                total += conv(cin, width, 1) + bn(width)
            cin = width
    return total + 64 * 10 + 10                          # fc


@pytest.mark.parametrize("depth,published_millions,digits", [
    (20, 0.27, 2), (32, 0.46, 2), (44, 0.66, 2), (56, 0.85, 2), (110, 1.7, 1)])   # He et al. 2015
def test_cifar_resnet_parameter_counts(depth, published_millions, digits):
    a = models.cifar_resnet(depth).num_parameters()            # option A: the paper's choice
    b = models.cifar_resnet(depth, option="B").num_parameters()
    assert a == cifar_resnet_count(depth, "A") and b == cifar_resnet_count(depth, "B")
    assert round(a / 1e6, digits) == published_millions
    assert b - a == (16 * 32 + 2 * 32) + (32 * 64 + 2 * 64)  # the two projections (conv + BN)
    assert models.cifar_plain(depth).num_parameters() == a


def test_cifar_resnet_exact_counts():
    # Option A (parameter-free shortcuts) and option B (two 1x1 conv + BN projections).
    assert [models.cifar_resnet(d).num_parameters() for d in (20, 56, 110)] == [
        269_722, 853_018, 1_727_962]
    assert [models.cifar_resnet(d, option="B").num_parameters() for d in (20, 56, 110)] == [
        272_474, 855_770, 1_730_714]


@pytest.mark.parametrize("builder,published_millions,digits", [
    (models.preact_resnet164, 1.7, 1),          # He et al. 2016, table 2
    (models.wrn16_4, 2.7, 1),                   # Zagoruyko & Komodakis 2016, table 4
    (models.wrn16_8, 11.0, 1),
    (models.resnext29_4x16d, None, None),
    (models.resnest20, None, None),
])
def test_other_cifar_parameter_counts(builder, published_millions, digits):
    count = builder().num_parameters()
    if published_millions is not None:
        assert round(count / 1e6, digits) == published_millions
    assert count > 0


@pytest.mark.slow
@pytest.mark.parametrize("builder,published_millions", [
    (models.wrn28_10, 36.5),                    # Zagoruyko & Komodakis 2016
    (models.resnext29_8x64d, 34.4),             # Xie et al. 2017, table 7
])
def test_large_cifar_parameter_counts(builder, published_millions):
    assert round(builder().num_parameters() / 1e6, 1) == published_millions


# --- torchvision key names --------------------------------------------------------------------
BN = ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]


def test_resnet18_state_dict_keys_match_torchvision():
    sd = models.resnet18().state_dict()
    keys = list(sd)
    assert len(keys) == 122
    assert keys[:19] == (["conv1.weight"] + [f"bn1.{k}" for k in BN]
                         + ["layer1.0.conv1.weight"] + [f"layer1.0.bn1.{k}" for k in BN]
                         + ["layer1.0.conv2.weight"] + [f"layer1.0.bn2.{k}" for k in BN]
                         + ["layer1.1.conv1.weight"])
    assert keys[-2:] == ["fc.weight", "fc.bias"]
    shapes = {"conv1.weight": (64, 3, 7, 7), "layer2.0.conv1.weight": (128, 64, 3, 3),
              "layer2.0.downsample.0.weight": (128, 64, 1, 1),
              "layer2.0.downsample.1.running_var": (128,),
              "layer4.1.bn2.num_batches_tracked": (), "fc.weight": (1000, 512), "fc.bias": (1000,)}
    for k, shape in shapes.items():
        assert sd[k].shape == shape, k
    assert "layer1.0.downsample.0.weight" not in sd         # identity shortcut in layer1
    assert not [k for k in keys if "fork" in k or "relu" in k]


def test_resnet50_state_dict_keys_match_torchvision():
    sd = models.resnet50().state_dict()
    assert len(sd) == 320
    assert sd["layer1.0.downsample.0.weight"].shape == (256, 64, 1, 1)
    assert sd["layer1.0.conv3.weight"].shape == (256, 64, 1, 1)
    assert sd["layer3.5.conv2.weight"].shape == (256, 256, 3, 3)
    assert sd["layer4.0.conv2.weight"].shape == (512, 512, 3, 3)   # stride 2 on the 3x3
    assert sd["fc.weight"].shape == (1000, 2048)


def test_cifar_model_layout_names():
    m = models.resnet20()
    assert [n for n, _ in m.named_children()] == ["conv1", "bn1", "relu", "layer1", "layer2",
                                                  "layer3", "avgpool", "fc"]
    assert [len(m.layer1), len(m.layer2), len(m.layer3)] == [3, 3, 3]
    assert isinstance(m.layer2[0].downsample, B.ShortcutA)
    assert m.fc.in_features == 64 and m.layer3[2].conv2.out_channels == 64
    p = models.preact_resnet20()
    assert [n for n, _ in p.named_children()] == ["conv1", "layer1", "layer2", "layer3", "bn",
                                                  "relu", "avgpool", "fc"]
    assert models.plain20().layer2[0].downsample is None


# --- registry ------------------------------------------------------------------------------------
def test_registry_has_every_published_layout_and_num_classes_reaches_fc():
    expected = {f"resnet{d}" for d in (8, 14, 20, 32, 44, 56, 110)} | \
        {f"plain{d}" for d in (8, 14, 20, 32, 44, 56, 110)} | \
        {f"preact_resnet{d}" for d in (20, 32, 44, 56, 110, 164)} | \
        {"wrn16_4", "wrn16_8", "wrn28_10", "resnext29_8x64d", "resnext29_16x64d", "resnext29_4x16d",
         "resnest20", "resnet18", "resnet34", "resnet50", "resnet101", "resnet152",
         "resnext50_32x4d"}
    assert expected <= set(models.MODELS)
    for name in ("resnet8", "plain8", "preact_resnet20", "resnest20", "resnext29_4x16d", "wrn16_4"):
        assert models.get_model(name, num_classes=7).fc.out_features == 7


def test_get_model_bad_name_lists_the_valid_ones():
    with pytest.raises(ValueError,
                       match="unknown model 'resnet21'; valid names: .*plain110.*resnet20"):
        models.get_model("resnet21")


def test_depth_validation():
    with pytest.raises(ValueError, match="cifar_resnet: depth must be 6n\\+2 \\(n >= 1\\), got 21"):
        models.cifar_resnet(21)
    with pytest.raises(ValueError, match="wide_resnet: depth must be 6n\\+4"):
        models.wide_resnet(27, 2)
    with pytest.raises(ValueError, match="bottleneck.*9n\\+2"):
        models.preact_resnet(165, bottleneck=True)
    with pytest.raises(ValueError, match="ResNet: expected 4 stage sizes"):
        models.ResNet(B.BasicBlock, [2, 2, 2])


# --- initialisation ------------------------------------------------------------------------------
def test_initialisation_is_torchvisions_and_seeded():
    mr.manual_seed(0)
    m = models.resnet18()
    w = m.layer4[0].conv2.weight.data                            # (512, 512, 3, 3)
    assert abs(w.std() / math.sqrt(2 / (512 * 9)) - 1) < 0.02    # kaiming normal, fan_out
    assert all((bn.weight.data == 1).all() and not bn.bias.data.any()
               for bn in m.modules() if isinstance(bn, nn.BatchNorm2d))
    mr.manual_seed(3)
    a = models.resnet8().state_dict()
    mr.manual_seed(3)
    b = models.resnet8().state_dict()
    assert all(np.array_equal(a[k], b[k]) for k in a)
    zero = models.resnet20(zero_init_residual=True)
    assert all(not blk.bn2.weight.data.any() for layer in (zero.layer1, zero.layer2, zero.layer3)
               for blk in layer)
    assert models.resnet50(zero_init_residual=True).layer3[2].bn3.weight.data.sum() == 0


# --- tiny instances of every family, end to end --------------------------------------------------
TINY = {
    "resnet": lambda: models.resnet8(num_classes=3),
    "plain": lambda: models.plain8(num_classes=3),
    "resnet_se_optionB": lambda: models.cifar_resnet(8, num_classes=3, option="B", se=True),
    "preact": lambda: models.preact_resnet(8, num_classes=3),
    "preact_bottleneck": lambda: models.preact_resnet(11, num_classes=3, bottleneck=True),
    "wide": lambda: models.wide_resnet(10, 1, dropout=0.3, num_classes=3),
    "resnext": lambda: models.CifarResNet(B.ResNeXtBottleneck, [1, 1, 1], 3, widths=(4, 8, 16),
                                          stem_width=8, cardinality=2, base_width=32),
    "resnest": lambda: models.CifarResNet(B.SplitAttentionBlock, [1, 1, 1], 3, widths=(2, 4, 8),
                                          stem_width=8),
    "imagenet_basic": lambda: models.ResNet(B.BasicBlock, [1, 1, 1, 1], num_classes=3),
    "imagenet_resnext": lambda: models.ResNet(B.Bottleneck, [1, 1, 1, 1], num_classes=3, groups=4,
                                              width_per_group=4),
}


@pytest.mark.parametrize("family", list(TINY))
def test_tiny_model_forward_backward(family, device):
    mr.manual_seed(0)
    model = TINY[family]().to(device)
    size = 32 if family.startswith("imagenet") else 8
    x = mr.tensor(np.random.default_rng(0).standard_normal((2, 3, size, size)), dtype=np.float32,
                  device=device, requires_grad=True)
    logits = model(x)
    assert logits.shape == (2, 3) and logits.dtype == np.float32 and logits.device == device
    loss = F.cross_entropy(logits, mr.tensor(np.array([0, 2]), dtype=np.int64, device=device))
    loss.backward()
    assert np.isfinite(loss.item())
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, f"parameters without a gradient: {missing}"
    assert x.grad.shape == x.shape and np.abs(mr.backend.to_numpy(x.grad)).sum() > 0
    model.eval()
    with mr.no_grad():
        a, b = model(x).numpy(), model(x).numpy()
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("family,train", [
    ("resnet", True), ("resnet", False), ("plain", True), ("resnet_se_optionB", True),
    ("preact", False), ("preact_bottleneck", True), ("wide", True), ("resnext", False),
    ("resnest", True)])
def test_tiny_model_input_gradcheck(family, train, device):
    """Every input element of a tiny network of each family, through the whole network."""
    mr.manual_seed(0)
    model = TINY[family]().double()
    if not train:
        randomize(model, np.random.default_rng(1))
    model.to(device).train(train)
    x = t64(np.random.default_rng(2).standard_normal((2, 3, 4, 4)), device=device)

    def fn(x):
        mr.manual_seed(5)                  # the same dropout mask in every pass (wide)
        return model(x)

    assert mr.gradcheck(fn, x)


def test_model_errors_name_the_layer():
    with pytest.raises(ValueError, match=r"expected an input of shape \(N, 3, H, W\), got shape "
                                         r"\(2, 1, 8, 8\)") as err:
        models.resnet8()(mr.tensor(np.zeros((2, 1, 8, 8), dtype=np.float32)))
    assert "raised in module 'conv1' (Conv2d) of CifarResNet" in "\n".join(err.value.__notes__)


def test_model_on_device_matches_cpu(device):
    mr.manual_seed(0)
    model = models.resnet8().eval()
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32)
    expected = model(mr.tensor(x)).numpy()
    params = list(model.parameters())
    model.to(device)
    assert list(model.parameters()) == params
    np.testing.assert_allclose(model(mr.tensor(x, device=device)).numpy(), expected,
                               rtol=1e-4, atol=1e-5)


# --- the same models in PyTorch -------------------------------------------------------------------
def torch_models():
    torch, TBasic, TBottleneck = torch_blocks()
    tnn = torch.nn

    class TResNet(tnn.Module):
        """torchvision's ImageNet ResNet layout."""

        def __init__(self, block, layers, expansion, num_classes=10):
            super().__init__()
            self.conv1 = tnn.Conv2d(3, 64, 7, 2, 3, bias=False)
            self.bn1 = tnn.BatchNorm2d(64)
            self.relu = tnn.ReLU()
            self.maxpool = tnn.MaxPool2d(3, 2, 1)
            inplanes = 64
            for i, (planes, n) in enumerate(zip((64, 128, 256, 512), layers)):
                blocks = []
                for j in range(n):
                    blocks.append(block(inplanes, planes, 2 if i and not j else 1))
                    inplanes = planes * expansion
                setattr(self, f"layer{i + 1}", tnn.Sequential(*blocks))
            self.avgpool = tnn.AdaptiveAvgPool2d((1, 1))
            self.fc = tnn.Linear(512 * expansion, num_classes)

        def forward(self, x):
            x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
            x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
            return self.fc(torch.flatten(self.avgpool(x), 1))

    class TCifarBlockA(tnn.Module):
        """He et al.'s CIFAR BasicBlock with the option A shortcut."""

        def __init__(self, inplanes, planes, stride):
            super().__init__()
            self.conv1 = tnn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
            self.bn1 = tnn.BatchNorm2d(planes)
            self.conv2 = tnn.Conv2d(planes, planes, 3, 1, 1, bias=False)
            self.bn2 = tnn.BatchNorm2d(planes)
            self.stride, self.extra = stride, planes - inplanes

        def forward(self, x):
            out = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
            skip = x[:, :, ::self.stride, ::self.stride]
            if self.extra:
                skip = torch.nn.functional.pad(skip, (0, 0, 0, 0, self.extra // 2,
                                                      self.extra - self.extra // 2))
            return torch.relu(out + skip)

    class TCifarResNet(tnn.Module):
        def __init__(self, n, num_classes=10):
            super().__init__()
            self.conv1 = tnn.Conv2d(3, 16, 3, 1, 1, bias=False)
            self.bn1 = tnn.BatchNorm2d(16)
            inplanes = 16
            for i, planes in enumerate((16, 32, 64)):
                blocks = []
                for j in range(n):
                    blocks.append(TCifarBlockA(inplanes, planes, 2 if i and not j else 1))
                    inplanes = planes
                setattr(self, f"layer{i + 1}", tnn.Sequential(*blocks))
            self.fc = tnn.Linear(64, num_classes)

        def forward(self, x):
            x = torch.relu(self.bn1(self.conv1(x)))
            x = self.layer3(self.layer2(self.layer1(x)))
            return self.fc(x.mean(dim=(2, 3)))

    return torch, TResNet, TBasic, TBottleneck, TCifarResNet


def compare_with_torch(torch, ours, theirs, x):
    """Load our state_dict into the torch model (strict: same names and shapes), then compare
    logits in eval and train mode, to float32 accuracy relative to the logits' size."""
    theirs.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in ours.state_dict().items()})
    for train in (False, True):
        ours.train(train), theirs.train(train)
        with torch.no_grad():
            expected = theirs(torch.from_numpy(x)).numpy()
        np.testing.assert_allclose(ours(mr.tensor(x)).numpy(), expected, rtol=1e-3,
                                   atol=1e-5 * np.abs(expected).max())


@pytest.mark.parametrize("name", ["resnet18", pytest.param("resnet50", marks=pytest.mark.slow)])
def test_imagenet_resnet_matches_torchvision_layout_in_torch(name):
    torch, TResNet, TBasic, TBottleneck, _ = torch_models()
    mr.manual_seed(0)
    ours = models.get_model(name, num_classes=10)
    randomize(ours, np.random.default_rng(0))
    for m in ours.modules():                     # keep activations O(1) through the depth
        if isinstance(m, nn.Conv2d):
            m.weight.data *= math.sqrt(2 / (m.weight.data[0].size)) / 0.5
    block, expansion = (TBasic, 1) if name == "resnet18" else (TBottleneck, 4)
    layers = [2, 2, 2, 2] if name == "resnet18" else [3, 4, 6, 3]
    theirs = TResNet(block, layers, expansion)
    x = np.random.default_rng(1).standard_normal((2, 3, 64, 64)).astype(np.float32)
    # (64x64: layer4 keeps 2x2 pixels, so its train-mode BN does not see just 2 values per channel)
    compare_with_torch(torch, ours, theirs, x)


def test_cifar_resnet20_option_a_matches_torch():
    torch, _, _, _, TCifarResNet = torch_models()
    mr.manual_seed(0)
    ours = models.resnet20()
    randomize(ours, np.random.default_rng(0))
    for m in ours.modules():
        if isinstance(m, nn.Conv2d):
            m.weight.data *= math.sqrt(2 / (m.weight.data[0].size)) / 0.5
    x = np.random.default_rng(1).standard_normal((4, 3, 16, 16)).astype(np.float32)
    compare_with_torch(torch, ours, TCifarResNet(3), x)
