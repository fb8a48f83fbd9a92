"""The module system: registration order, buffers, modes, zero_grad, to(), repr, hooks,
state_dict / load_state_dict, containers, and the initialisers of minires.nn.init.

Everything here is built from Linear/ReLU/BatchNorm1d/Dropout, so it needs no convolution.
"""
import math
from collections import OrderedDict

import numpy as np
import pytest

import minires as mr
import minires.functional as F
from minires import nn
from minires.nn import init

from .helpers import t64


class TwoLayer(nn.Module):
    """fc1 -> bn -> relu -> fc2, with a scale parameter assigned between the layers."""

    def __init__(self, d_in=3, d_hidden=4, d_out=2):
        super().__init__()
        self.fc1 = nn.Linear(d_in, d_hidden)
        self.scale = nn.Parameter(np.ones(1, dtype=np.float32))
        self.bn = nn.BatchNorm1d(d_hidden)
        self.relu = nn.ReLU()
        self.fc2 = nn.Linear(d_hidden, d_out)
        self.note = "a plain attribute"

    def forward(self, x):
        return self.fc2(self.relu(self.bn(self.fc1(x)) * self.scale))


def data(n=5, d=3, seed=0, dtype=np.float32):
    return np.random.default_rng(seed).standard_normal((n, d)).astype(dtype)


# --- registration ------------------------------------------------------------------------
def test_parameters_buffers_and_children_follow_assignment_order():
    m = TwoLayer()
    assert [n for n, _ in m.named_parameters()] == [
        "scale", "fc1.weight", "fc1.bias", "bn.weight", "bn.bias", "fc2.weight", "fc2.bias"]
    assert [n for n, _ in m.named_buffers()] == [
        "bn.running_mean", "bn.running_var", "bn.num_batches_tracked"]
    assert [n for n, _ in m.named_children()] == ["fc1", "bn", "relu", "fc2"]
    assert [n for n, _ in m.named_modules()] == ["", "fc1", "bn", "relu", "fc2"]
    assert all(isinstance(p, nn.Parameter) and p.requires_grad for p in m.parameters())
    assert not any(b.requires_grad for b in m.buffers())
    assert m.note == "a plain attribute" and "note" not in m._modules
    assert m.num_parameters() == 1 + 3 * 4 + 4 + 2 * 4 + 4 * 2 + 2


def test_running_stats_are_buffers_not_parameters():
    bn = nn.BatchNorm2d(3)
    assert [n for n, _ in bn.named_parameters()] == ["weight", "bias"]
    assert [n for n, _ in bn.named_buffers()] == ["running_mean", "running_var",
                                                 "num_batches_tracked"]
    assert bn.num_batches_tracked.dtype == np.int64 and bn.num_batches_tracked.shape == ()


def test_shared_modules_and_parameters_are_listed_once():
    lin = nn.Linear(2, 2)
    seq = nn.Sequential(lin, nn.ReLU(), lin)
    assert len(list(seq.parameters())) == 2
    assert len(list(seq.modules())) == 3          # seq, lin, relu


def test_reassigning_and_deleting_attributes():
    m = TwoLayer()
    m.fc2 = nn.Linear(4, 7)
    assert m.fc2.out_features == 7 and list(m._modules) == ["fc1", "bn", "relu", "fc2"]
    m.scale = None                                 # a declared but absent parameter
    assert "scale" not in dict(m.named_parameters())
    with pytest.raises(TypeError, match="parameter 'scale'.*expected a Parameter or None"):
        m.scale = np.ones(1)
    with pytest.raises(TypeError, match="sub-module 'fc1'.*expected a Module or None"):
        m.fc1 = "not a module"
    del m.fc2
    assert "fc2" not in m._modules
    with pytest.raises(AttributeError, match="'TwoLayer' object has no attribute 'fc2'"):
        _ = m.fc2


def test_assigning_before_init_is_a_clear_error():
    class Forgetful(nn.Module):
        def __init__(self):
            self.fc = nn.Linear(2, 2)

    with pytest.raises(AttributeError, match=r"super\(\).__init__\(\) first in Forgetful"):
        Forgetful()


def test_register_buffer_and_parameter_check_their_arguments():
    m = nn.Module()
    with pytest.raises(TypeError, match="register_buffer\\('b'\\): expected a Tensor"):
        m.register_buffer("b", np.zeros(2))
    with pytest.raises(ValueError, match="must not require grad"):
        m.register_buffer("b", mr.tensor([1.0], requires_grad=True))
    with pytest.raises(TypeError, match="register_parameter\\('w'\\): expected a Parameter"):
        m.register_parameter("w", mr.tensor([1.0]))
    m.register_buffer("b", mr.tensor([1.0, 2.0]))
    m.b = mr.tensor([3.0, 4.0])                    # assigning a Tensor updates the buffer
    assert next(iter(m.buffers())).numpy().tolist() == [3.0, 4.0]


def test_parameter_dtype_rules():
    assert nn.Parameter([1, 2]).dtype == np.float32
    assert nn.Parameter(np.zeros(2, dtype=np.float64)).dtype == np.float64
    p = nn.Parameter(np.zeros(2, dtype=np.float32))
    assert p.requires_grad and p.is_leaf and repr(p).startswith("Parameter containing:")


# --- modes, gradients, devices ------------------------------------------------------------------
def test_train_and_eval_reach_every_module():
    m = TwoLayer()
    assert all(mod.training for mod in m.modules())
    assert m.eval() is m
    assert not any(mod.training for mod in m.modules())
    m.train()
    assert all(mod.training for mod in m.modules())
    with pytest.raises(TypeError, match="mode must be a bool"):
        m.train("no")


def test_eval_mode_changes_what_batch_norm_and_dropout_do():
    mr.manual_seed(0)
    m = nn.Sequential(nn.Linear(3, 8), nn.BatchNorm1d(8), nn.Dropout(0.5))
    x = mr.tensor(data(6))
    train_out = m(x).numpy()
    assert (train_out == 0).mean() > 0.2                       # dropout zeroed some
    assert int(m[1].num_batches_tracked.item()) == 1
    m.eval()
    a, b = m(x).numpy(), m(x).numpy()
    np.testing.assert_array_equal(a, b)                        # deterministic in eval
    assert int(m[1].num_batches_tracked.item()) == 1           # eval does not count batches


def test_zero_grad():
    m = TwoLayer()
    m(mr.tensor(data())).sum().backward()
    assert all(p.grad is not None for p in m.parameters())
    m.zero_grad(set_to_none=False)
    assert all(p.grad is not None and not p.grad.any() for p in m.parameters())
    m.zero_grad()
    assert all(p.grad is None for p in m.parameters())


def test_to_converts_in_place_and_keeps_parameter_objects(device):
    m = TwoLayer()
    params_before = list(m.parameters())
    x = data()
    expected = m(mr.tensor(x)).numpy()
    m(mr.tensor(x)).sum().backward()
    assert m.to(device) is m
    m.double()
    assert list(m.parameters()) == params_before                # same Parameter objects
    assert all(p.dtype == np.float64 and p.device == device for p in m.parameters())
    assert all(p.grad.dtype == np.float64 for p in m.parameters())
    assert m.bn.running_mean.dtype == np.float64
    assert m.bn.num_batches_tracked.dtype == np.int64           # integers keep their dtype
    m.eval()
    m2 = TwoLayer()
    m2.load_state_dict(m.state_dict())
    m2.eval()
    out = m(mr.tensor(x, dtype=np.float64, device=device))
    np.testing.assert_allclose(out.numpy(), m2(mr.tensor(x)).numpy(), rtol=1e-5, atol=1e-6)
    m.float().to("cpu")
    assert all(p.dtype == np.float32 and p.device == "cpu" for p in m.parameters())
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        m.to("tpu")
    with pytest.raises(TypeError, match="floating type"):
        m.to(np.int32)
    del expected


# --- repr --------------------------------------------------------------------------------------
def test_repr_looks_like_pytorch():
    m = nn.Sequential(nn.Linear(3, 4), nn.ReLU(inplace=True),
                      nn.Sequential(nn.BatchNorm1d(4), nn.Dropout(0.25)), nn.Identity(),
                      nn.Flatten())
    assert repr(m) == (
        "Sequential(\n"
        "  (0): Linear(in_features=3, out_features=4, bias=True)\n"
        "  (1): ReLU(inplace=True)\n"
        "  (2): Sequential(\n"
        "    (0): BatchNorm1d(4, eps=1e-05, momentum=0.1, affine=True, track_running_stats=True)\n"
        "    (1): Dropout(p=0.25, inplace=False)\n"
        "  )\n"
        "  (3): Identity()\n"
        "  (4): Flatten(start_dim=1, end_dim=-1)\n"
        ")")
    assert repr(nn.ReLU()) == "ReLU()"


# --- containers ----------------------------------------------------------------------------------
def test_sequential_indexing_len_iteration():
    a, b, c = nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1)
    seq = nn.Sequential(a, b, c)
    assert len(seq) == 3 and list(seq) == [a, b, c]
    assert seq[0] is a and seq[-1] is c
    tail = seq[1:]
    assert isinstance(tail, nn.Sequential) and list(tail) == [b, c]
    assert [n for n, _ in tail.named_children()] == ["1", "2"]
    with pytest.raises(IndexError, match="Sequential index 3 is out of range for 3 modules"):
        seq[3]
    with pytest.raises(TypeError, match="Sequential: argument 1 is a int"):
        nn.Sequential(a, 3)
    named = nn.Sequential(OrderedDict(first=a, second=b))
    assert [n for n, _ in named.named_children()] == ["first", "second"]
    x = mr.tensor(data(4, 2))
    np.testing.assert_allclose(seq(x).numpy(), c(b(a(x))).numpy())


def test_module_list():
    layers = nn.ModuleList([nn.Linear(2, 2) for _ in range(3)])
    assert len(layers) == 3 and [n for n, _ in layers.named_parameters()][:2] == ["0.weight",
                                                                                  "0.bias"]
    layers.append(nn.ReLU())
    assert isinstance(layers[-1], nn.ReLU) and len(list(layers.parameters())) == 6
    with pytest.raises(TypeError, match="ModuleList.append: expected a Module"):
        layers.append(42)
    with pytest.raises(NotImplementedError, match="ModuleList has no forward"):
        layers(mr.tensor([1.0]))


# --- state dict -------------------------------------------------------------------------------
def test_state_dict_keys_values_and_copies():
    m = TwoLayer()
    sd = m.state_dict()
    assert isinstance(sd, OrderedDict)
    assert list(sd) == ["scale", "fc1.weight", "fc1.bias", "bn.weight", "bn.bias",
                        "bn.running_mean", "bn.running_var", "bn.num_batches_tracked",
                        "fc2.weight", "fc2.bias"]
    assert all(isinstance(v, np.ndarray) for v in sd.values())
    sd["fc1.weight"][...] = 123.0
    assert not (m.fc1.weight.data == 123.0).any()            # a copy, not a view


def test_state_dict_and_named_parameters_and_buffers_walk_alike():
    """One walk names everything: state_dict holds exactly the named parameters and
    buffers (module by module), and a tensor shared under two names is in state_dict
    under both (as in PyTorch) but in parameters() once."""
    m = TwoLayer()
    named = dict(m.named_parameters()) | dict(m.named_buffers())
    assert sorted(m.state_dict()) == sorted(named)
    a, b = nn.Linear(2, 2), nn.Linear(2, 2)
    b.weight = a.weight                          # tied weights (re-registered after bias)
    tied = nn.Sequential(a, b)
    assert list(tied.state_dict()) == ["0.weight", "0.bias", "1.bias", "1.weight"]
    assert [n for n, _ in tied.named_parameters()] == ["0.weight", "0.bias", "1.bias"]


def test_state_dict_round_trip_reproduces_outputs_and_statistics():
    mr.manual_seed(1)
    a = TwoLayer()
    a(mr.tensor(data(8, seed=3)))                            # moves a's running statistics
    mr.manual_seed(2)
    b = TwoLayer()
    x = mr.tensor(data(5, seed=4))
    a.eval(), b.eval()
    assert not np.allclose(a(x).numpy(), b(x).numpy())
    params_b = list(b.parameters())
    result = b.load_state_dict(a.state_dict())
    assert result.missing_keys == [] and result.unexpected_keys == []
    assert list(b.parameters()) == params_b                  # loaded in place
    np.testing.assert_array_equal(a(x).numpy(), b(x).numpy())
    for k, v in a.state_dict().items():
        np.testing.assert_array_equal(v, b.state_dict()[k])
    # Tensors are accepted as values too.
    b.load_state_dict({k: mr.Tensor(v) for k, v in a.state_dict().items()})


def test_load_state_dict_missing_key_names_it_and_loads_nothing():
    m = TwoLayer()
    before = m.state_dict()
    sd = TwoLayer().state_dict()
    del sd["fc2.bias"], sd["bn.running_var"]
    with pytest.raises(RuntimeError, match=r"missing keys \(2\): bn.running_var, fc2.bias") as err:
        m.load_state_dict(sd)
    assert "TwoLayer" in str(err.value) and "nothing was loaded" in str(err.value)
    for k, v in m.state_dict().items():
        np.testing.assert_array_equal(v, before[k])
    result = m.load_state_dict(sd, strict=False)
    assert result.missing_keys == ["bn.running_var", "fc2.bias"]
    np.testing.assert_array_equal(m.fc1.weight.data, sd["fc1.weight"])


def test_load_state_dict_unexpected_key():
    m = TwoLayer()
    sd = m.state_dict()
    sd["fc3.weight"] = np.zeros((2, 2), dtype=np.float32)
    with pytest.raises(RuntimeError, match=r"unexpected keys \(1\): fc3.weight"):
        m.load_state_dict(sd)
    assert m.load_state_dict(sd, strict=False).unexpected_keys == ["fc3.weight"]


def test_load_state_dict_wrong_shape_names_key_and_both_shapes():
    m = TwoLayer()
    sd = m.state_dict()
    sd["fc2.weight"] = np.zeros((3, 4), dtype=np.float32)
    msg = (r"shape mismatch \(1\): fc2.weight: the state_dict has shape \(3, 4\), "
           r"the model has \(2, 4\)")
    with pytest.raises(RuntimeError, match=msg):
        m.load_state_dict(sd)
    with pytest.raises(RuntimeError, match=msg):           # even when not strict
        m.load_state_dict(sd, strict=False)
    with pytest.raises(TypeError, match="expected a mapping"):
        m.load_state_dict([1, 2])


# --- hooks ---------------------------------------------------------------------------------------
def test_forward_pre_hook_and_forward_hook_see_and_may_replace_values():
    lin = nn.Linear(3, 2)
    calls = []
    pre = lin.register_forward_pre_hook(lambda mod, inputs: calls.append(("pre", inputs[0].shape)))
    post = lin.register_forward_hook(lambda mod, inputs, out: calls.append(("post", out.shape)))
    x = mr.tensor(data())
    y = lin(x)
    assert calls == [("pre", (5, 3)), ("post", (5, 2))]
    pre.remove(), post.remove()
    lin(x)
    assert len(calls) == 2                                  # removed hooks no longer run
    doubled = lin(x * 2).numpy()
    with lin.register_forward_pre_hook(lambda mod, inputs: (inputs[0] * 2,)):
        np.testing.assert_allclose(lin(x).numpy(), doubled)
    with lin.register_forward_hook(lambda mod, inputs, out: out * 0):
        assert not lin(x).numpy().any()
    np.testing.assert_array_equal(lin(x).numpy(), y.numpy())


class UsesInputTwice(nn.Module):
    """y = fc(x) * x: the gradient at x has two terms, both must reach grad_input."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 3)

    def forward(self, x):
        return self.fc(x) * x


def test_full_backward_hook_gives_the_gradient_the_module_sends_back():
    m = UsesInputTwice().double()
    seen = []
    m.register_full_backward_hook(lambda mod, gi, go: seen.append((mod, gi, go)))
    x = t64(data(4, 3, dtype=np.float64))
    h = x * 3.0                                            # the module's input is not a leaf
    h.retain_grad()
    y = m(h)
    y.retain_grad()
    (F.tanh(y) * mr.tensor(data(4, 3, seed=9, dtype=np.float64))).sum().backward()
    assert len(seen) == 1
    mod, grad_input, grad_output = seen[0]
    assert mod is m and len(grad_input) == 1 and len(grad_output) == 1
    np.testing.assert_allclose(grad_output[0], y.grad)      # what arrived at the output
    np.testing.assert_allclose(grad_input[0], h.grad)       # what the module sent to its input
    # ... and that is d(out)/d(in)^T grad_output, computed by hand: fc(x)*x has
    # d/dx = grad_out * fc(x) + (grad_out * x) @ W.
    hv, go = h.data, grad_output[0]
    fc = hv @ m.fc.weight.data.T + m.fc.bias.data
    np.testing.assert_allclose(grad_input[0], go * fc + (go * hv) @ m.fc.weight.data)


def test_full_backward_hook_can_replace_grad_input_and_be_removed():
    lin = nn.Linear(3, 2)
    handle = lin.register_full_backward_hook(lambda mod, gi, go: (gi[0] * 0,))
    x = mr.tensor(data(), requires_grad=True)
    lin(x).sum().backward()
    assert not x.grad.any()
    assert lin.weight.grad.any()                            # parameters still get gradients
    handle.remove()
    x.grad = None
    lin(x).sum().backward()
    assert x.grad.any()


def test_full_backward_hook_without_input_grad_gets_none():
    lin = nn.Linear(3, 2)
    seen = []
    lin.register_full_backward_hook(lambda mod, gi, go: seen.append((gi, go)))
    lin(mr.tensor(data())).sum().backward()                 # x does not require grad
    assert len(seen) == 1 and seen[0][0] == (None,) and seen[0][1][0].shape == (5, 2)


def test_full_backward_hook_fires_once_per_call_and_not_under_no_grad():
    lin = nn.Linear(3, 3)
    seen = []
    lin.register_full_backward_hook(lambda mod, gi, go: seen.append(gi[0].shape))
    x = mr.tensor(data(), requires_grad=True)
    lin(lin(x)).sum().backward()
    assert seen == [(5, 3), (5, 3)]
    with mr.no_grad():
        out = lin(x)
    assert out.grad_fn is None


def test_errors_raised_inside_a_model_name_the_submodule():
    model = nn.Sequential(nn.Linear(3, 4), nn.Sequential(nn.ReLU(), nn.Linear(5, 2)))
    with pytest.raises(ValueError, match="Linear.*expected an input whose last axis has 5") as err:
        model(mr.tensor(data()))
    assert "raised in module '1.1' (Linear) of Sequential" in "\n".join(err.value.__notes__)


# --- init --------------------------------------------------------------------------------------
def test_kaiming_normal_fan_modes_have_the_right_spread():
    w = nn.Parameter(np.zeros((64, 32, 3, 3), dtype=np.float32))
    rng = np.random.default_rng(0)
    init.kaiming_normal_(w, mode="fan_out", nonlinearity="relu", generator=rng)
    assert abs(w.data.std() / math.sqrt(2 / (64 * 9)) - 1) < 0.03
    assert abs(w.data.mean()) < 0.01 and w.dtype == np.float32
    init.kaiming_normal_(w, mode="fan_in", nonlinearity="relu", generator=rng)
    assert abs(w.data.std() / math.sqrt(2 / (32 * 9)) - 1) < 0.03
    init.kaiming_uniform_(w, mode="fan_in", nonlinearity="relu", generator=rng)
    bound = math.sqrt(3) * math.sqrt(2 / (32 * 9))
    assert w.data.max() <= bound and w.data.min() >= -bound and w.data.max() > 0.95 * bound
    with pytest.raises(ValueError, match="mode must be 'fan_in' or 'fan_out', got 'fan'"):
        init.kaiming_normal_(w, mode="fan")
    with pytest.raises(ValueError, match="unsupported nonlinearity 'swish'"):
        init.kaiming_normal_(w, nonlinearity="swish")
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        init.kaiming_normal_(nn.Parameter(np.zeros(3)))


def test_xavier_and_constants():
    w = nn.Parameter(np.zeros((200, 300), dtype=np.float32))
    init.xavier_uniform_(w, generator=np.random.default_rng(0))
    bound = math.sqrt(6 / 500)
    assert w.data.max() <= bound and w.data.min() >= -bound and w.data.max() > 0.95 * bound
    init.xavier_normal_(w, gain=2.0, generator=np.random.default_rng(0))
    assert abs(w.data.std() / (2 * math.sqrt(2 / 500)) - 1) < 0.03
    init.ones_(w)
    assert (w.data == 1).all()
    init.zeros_(w)
    assert not w.data.any()
    assert init.calculate_gain("relu") == math.sqrt(2) and init.calculate_gain("linear") == 1


def test_manual_seed_makes_initialisation_repeatable():
    mr.manual_seed(5)
    a = TwoLayer().state_dict()
    mr.manual_seed(5)
    b = TwoLayer().state_dict()
    mr.manual_seed(6)
    c = TwoLayer().state_dict()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    assert not np.array_equal(a["fc1.weight"], c["fc1.weight"])


def test_linear_default_init_is_pytorchs():
    mr.manual_seed(0)
    lin = nn.Linear(50, 400)
    bound = 1 / math.sqrt(50)
    for p in (lin.weight, lin.bias):
        assert p.data.min() >= -bound and p.data.max() <= bound and p.data.max() > 0.9 * bound
