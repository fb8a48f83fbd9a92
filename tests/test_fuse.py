"""fuse_conv_bn: batch norm folded into the convolution before it, for inference."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import minires as mr
from minires.data import Split
from minires.nn.utils import FoldedBatchNorm, fuse_conv_bn
from minires.train import evaluate


def _randomise_batch_norms(model, rng):
    """Running statistics and affine parameters far from their defaults (1, 0)."""
    for m in model.modules():
        if isinstance(m, mr.nn.BatchNorm2d):
            C = m.num_features
            m.running_mean.data[...] = rng.normal(0, 0.5, C)
            m.running_var.data[...] = rng.uniform(0.2, 3.0, C)
            m.weight.data[...] = rng.normal(1, 0.5, C)
            m.bias.data[...] = rng.normal(0, 0.5, C)


def _logits(model, x):
    with mr.no_grad():
        return model(mr.tensor(x)).numpy()


@settings(max_examples=6, deadline=None)
@given(name=st.sampled_from(["resnet8", "plain8", "preact_resnet20", "resnext29_4x16d",
                             "resnest20", "wrn16_4"]),
       seed=st.integers(0, 2**16), size=st.sampled_from([8, 12, 32]))
def test_fused_copy_gives_the_same_logits_float64(name, seed, size):
    rng = np.random.default_rng(seed)
    mr.manual_seed(seed)
    model = mr.models.get_model(name).double()
    _randomise_batch_norms(model, rng)
    model.eval()
    x = rng.standard_normal((3, 3, size, size))
    before = {k: v.copy() for k, v in model.state_dict().items()}
    fused = fuse_conv_bn(model, example=mr.tensor(x[:2]))
    a, b = _logits(model, x), _logits(fused, x)
    assert np.abs(a - b).max() <= 1e-10 * max(np.abs(a).max(), 1.0)
    # the original is untouched, the copy has no batch norm left after a convolution
    assert all(np.array_equal(before[k], v) for k, v in model.state_dict().items())
    assert any(isinstance(m, FoldedBatchNorm) for m in fused.modules())
    assert not fused.training


def test_float32_and_the_default_example():
    model = mr.models.resnet20()
    _randomise_batch_norms(model, np.random.default_rng(0))
    model.eval()
    fused = fuse_conv_bn(model)                    # default example: 2 x 3 x 32 x 32
    x = np.random.default_rng(1).standard_normal((4, 3, 32, 32)).astype(np.float32)
    a, b = _logits(model, x), _logits(fused, x)
    assert b.dtype == np.float32
    assert np.abs(a - b).max() <= 1e-4 * np.abs(a).max()
    folded = [n for n, m in fused.named_modules() if isinstance(m, FoldedBatchNorm)]
    assert len(folded) == 19 and "bn1" in folded and "layer1.0.bn2" in folded
    assert fused.conv1.bias is not None and model.conv1.bias is None


def test_pre_activation_keeps_the_batch_norms_that_do_not_follow_a_convolution():
    model = mr.models.get_model("preact_resnet20").eval()
    fused = fuse_conv_bn(model)
    kept = {n for n, m in fused.named_modules() if isinstance(m, mr.nn.BatchNorm2d)}
    # each pre-activation block's bn1 reads the block input (an addition), not a conv output
    assert "layer1.0.bn1" in kept and "layer1.0.bn2" not in kept


def test_the_copy_leaves_the_gradients_behind():
    model = mr.models.resnet8()
    x = mr.tensor(np.random.default_rng(0).standard_normal((4, 3, 8, 8)).astype(np.float32))
    model(x).sum().backward()
    fused = fuse_conv_bn(model.eval(), example=x)
    assert all(p.grad is None for p in fused.parameters())
    assert all(p.grad is not None for p in model.parameters())


def test_folded_batch_norm_refuses_training():
    fused = fuse_conv_bn(mr.models.resnet8().eval())
    fused.train()
    with pytest.raises(RuntimeError, match="FoldedBatchNorm: this batch norm was folded into "
                                           "'conv1' by fuse_conv_bn"):
        fused(mr.tensor(np.zeros((2, 3, 8, 8), dtype=np.float32)))


class _ConvUsedTwice(mr.nn.Module):
    """The conv's output feeds its batch norm AND the output: folding would be wrong."""

    def __init__(self):
        super().__init__()
        self.conv = mr.nn.Conv2d(3, 4, 3, padding=1)
        self.bn = mr.nn.BatchNorm2d(4)

    def forward(self, x):
        z = self.conv(x)
        return self.bn(z) + z


def test_a_conv_output_used_twice_is_refused():
    model = _ConvUsedTwice()
    _randomise_batch_norms(model, np.random.default_rng(0))
    model.eval()
    with pytest.raises(RuntimeError, match="fuse_conv_bn: the fused copy's output differs"):
        fuse_conv_bn(model)


def test_bad_inputs():
    with pytest.raises(TypeError, match="fuse_conv_bn: expected a minires Module, got list"):
        fuse_conv_bn([1, 2])
    with pytest.raises(ValueError, match=r"fuse_conv_bn: running the model on the example input "
                                         r"of shape \(2, 5, 8, 8\) failed"):
        fuse_conv_bn(mr.models.resnet8(), example=np.zeros((2, 5, 8, 8), dtype=np.float32))
    # nothing to fold: a copy that computes the same
    mlp = mr.nn.Sequential(mr.nn.Linear(4, 3))
    assert isinstance(fuse_conv_bn(mlp), mr.nn.Sequential)


def test_evaluate_folds_and_gives_the_same_figures():
    rng = np.random.default_rng(3)
    model = mr.models.resnet8()
    _randomise_batch_norms(model, rng)
    split = Split(rng.integers(0, 256, (40, 3, 8, 8), dtype=np.uint8),
                  rng.integers(0, 10, 40).astype(np.int64))
    folded = evaluate(model, split, batch_size=16)
    unfolded = evaluate(model, split, batch_size=16, fuse=False)
    assert folded[1] == unfolded[1]
    assert folded[0] == pytest.approx(unfolded[0], rel=1e-5)
    assert model.training                            # the mode is restored
    # what evaluate runs: the folded copy (the model itself only where folding fails)
    from minires.train.evaluation import inference_copy
    x = mr.tensor(np.zeros((2, 3, 8, 8), dtype=np.float32))
    assert any(isinstance(m, FoldedBatchNorm) for m in inference_copy(model, x).modules())
    twice = _ConvUsedTwice().eval()
    _randomise_batch_norms(twice, rng)
    assert inference_copy(twice, mr.tensor(np.zeros((2, 3, 8, 8), dtype=np.float32))) is twice
