"""PyTorch semantics where a name matches PyTorch's: elementwise ``==``, dtype rules of
``mr.tensor``, ``size()``/``numel()``/``view``/``float()``, ``dim``/``keepdim``, flatten
defaults, ``CrossEntropyLoss``, ``clip_grad_norm_``, ``zeros``/``ones``/``randn``/
``from_numpy``, and the version check of arrays saved for backward."""
import re

import numpy as np
import pytest

import minires as mr
import minires.functional as F
from minires import nn
from minires.backend import to_numpy

from .helpers import grad_of, t32, t64

INPLACE_MSG = (r"one of the variables needed for gradient computation has been modified by an "
               r"inplace operation: \[Tensor of shape \(2, 3\)")


# --- 1. == and != are elementwise; identity everywhere else ------------------------------------
def test_eq_ne_are_elementwise_boolean_tensors(device):
    a = t32([1.0, 2.0, 3.0], device, requires_grad=True)
    b = t32([1.0, 5.0, 3.0], device)
    eq, ne = a == b, a != b
    assert isinstance(eq, mr.Tensor) and eq.dtype == np.bool_ and not eq.requires_grad
    assert eq.numpy().tolist() == [True, False, True]
    assert ne.numpy().tolist() == [False, True, False]
    assert (a == 2.0).numpy().tolist() == [False, True, False]          # with a number
    assert (a != [1.0, 2.0, 0.0]).numpy().tolist() == [False, False, True]      # with a list


def test_eq_with_numpy_arrays_on_either_side():
    t = mr.tensor([1.0, 2.0, 3.0])
    assert (t != np.array([1.0, 2.0, 0.0])).numpy().tolist() == [False, False, True]
    reflected = np.array([1.0, 0.0, 3.0]) == t
    assert isinstance(reflected, mr.Tensor) and reflected.numpy().tolist() == [True, False, True]


def test_accuracy_idiom_is_elementwise():
    pred = mr.tensor(np.array([0, 1, 2, 2]))
    y = mr.tensor(np.array([0, 1, 1, 2]))
    assert (pred == y).numpy().tolist() == [True, True, False, True]
    assert float((pred == y).mean()) == pytest.approx(0.75)
    assert np.mean((pred == y).numpy()) == pytest.approx(0.75)


def test_eq_with_other_objects_is_identity():
    t = mr.tensor([1.0, 2.0])
    assert (t == None) is False and (t != None) is True          # noqa: E711 - the point of the test
    assert (t == "a") is False
    assert t.__eq__(object()) is NotImplemented


def test_eq_shape_mismatch_names_the_op_and_shapes():
    with pytest.raises(ValueError,
                       match=r"Tensor ==: shapes \(2,\) and \(3,\) cannot be broadcast"):
        mr.tensor([1.0, 2.0]) == mr.tensor([1.0, 2.0, 3.0])


def test_hash_is_identity_so_sets_and_dicts_work():
    a, b = mr.tensor([1.0, 2.0]), mr.tensor([1.0, 2.0])
    assert len({a, b}) == 2 and {a: 1, b: 2}[b] == 2
    assert hash(a) == object.__hash__(a)


def test_engine_keys_by_identity_with_equal_valued_tensors():
    # Equal values everywhere: a == b would be all-True, yet a and b must stay apart.
    a = mr.tensor([2.0, 2.0], requires_grad=True)
    b = mr.tensor([2.0, 2.0], requires_grad=True)
    (a * b * a).sum().backward()
    np.testing.assert_allclose(a.grad, [8.0, 8.0])     # d(a^2 b)/da = 2ab
    np.testing.assert_allclose(b.grad, [4.0, 4.0])     # a^2


def test_hook_handle_removes_by_identity():
    x = mr.tensor([1.0, 2.0], requires_grad=True)
    seen = []
    h1 = x.register_hook(lambda g: seen.append(1))
    x.register_hook(lambda g: seen.append(2))
    h1.remove()
    h1.remove()                                         # a second remove is a no-op
    (x * 2).sum().backward()
    assert seen == [2]


def test_model_trains_one_sgd_step_correctly():
    mr.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3))
    opt = mr.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((5, 4)).astype(np.float32)
    y = np.array([0, 2, 1, 2, 0])
    w0, b0 = model[0].weight.data.copy(), model[0].bias.data.copy()

    loss = nn.CrossEntropyLoss()(model(mr.tensor(x)), mr.tensor(y))
    opt.zero_grad()
    loss.backward()
    opt.step()

    logits = x @ w0.T + b0                              # the same step by hand
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    g = p.copy()
    g[np.arange(5), y] -= 1
    g /= 5
    np.testing.assert_allclose(model[0].weight.data, w0 - 0.5 * (g.T @ x), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model[0].bias.data, b0 - 0.5 * g.sum(axis=0), rtol=1e-5, atol=1e-6)
    assert len(opt.state) == 2 and all(isinstance(k, int) for k in opt.state)   # keyed by id
    pred = model(mr.tensor(x)).argmax(dim=1)
    assert (pred == mr.tensor(y)).numpy().shape == (5,)


# --- 2. dtype rules of mr.tensor; integer inputs to Conv2d / Linear ---------------------------
def test_tensor_keeps_integer_arrays_and_follows_python_defaults(device):
    assert mr.tensor(np.array([0, 1, 2]), device=device).dtype == np.int64
    assert mr.tensor(np.zeros((2, 3, 4, 4), dtype=np.uint8), device=device).dtype == np.uint8
    assert mr.tensor(np.int32(3)).dtype == np.int32
    assert mr.tensor([[1.0, 2.0]]).dtype == np.float32 and mr.tensor(1.5).dtype == np.float32
    assert mr.tensor([1, 2]).dtype == np.int64 and mr.tensor(7).dtype == np.int64
    assert mr.tensor([True, False]).dtype == np.bool_
    assert mr.tensor([1, 2], dtype=np.float32).dtype == np.float32
    assert mr.tensor([]).dtype == np.float32


@pytest.mark.parametrize("data, dtype", [(["a", "b"], None), (np.array([1 + 2j]), None),
                                         ([1.0], np.complex64), ([object()], None)])
def test_tensor_refuses_what_is_not_a_number(data, dtype):
    with pytest.raises(TypeError, match=r"tensor\(\)"):
        mr.tensor(data, dtype=dtype)


def test_integer_tensors_promote_like_pytorch():
    labels = mr.tensor([1, 2, 3])
    assert (labels * 0.5).dtype == np.float32 and (labels + 1).dtype == np.int64
    images = mr.tensor(np.full((1, 1, 2, 2), 255, dtype=np.uint8))
    scaled = images / 255.0
    assert scaled.dtype == np.float32 and np.all(scaled.numpy() == 1.0)
    assert (mr.tensor([1, 2]) / mr.tensor([2, 4])).dtype == np.float32
    assert (mr.tensor([True, False]) + 1).dtype == np.int64
    assert (t64([1.0, 2.0]) + mr.tensor([1, 2])).dtype == np.float64


def test_integer_tensor_cannot_require_grad():
    with pytest.raises(TypeError, match="only floating-point tensors can require grad"):
        mr.tensor([1, 2], requires_grad=True)


@pytest.mark.parametrize("layer, shape", [(lambda: nn.Conv2d(3, 4, 3), (2, 3, 8, 8)),
                                          (lambda: nn.Linear(5, 2), (2, 5))])
@pytest.mark.parametrize("dtype", [np.uint8, np.int64])
def test_integer_images_get_a_clear_error(layer, shape, dtype):
    module = layer()
    x = mr.tensor(np.zeros(shape, dtype=dtype))
    name = type(module).__name__
    with pytest.raises(TypeError, match=rf"{name}\(.*\): expected a floating-point input .*got "
                                        rf"dtype {np.dtype(dtype)}.*minires\.data\.transforms\."
                                        rf"normalize"):
        module(x)


def test_normalised_images_go_through():
    from minires.data.transforms import normalize
    images = np.random.default_rng(0).integers(0, 256, (2, 3, 8, 8), dtype=np.uint8)
    out = nn.Conv2d(3, 4, 3)(mr.tensor(normalize(images)))
    assert out.dtype == np.float32 and out.shape == (2, 4, 6, 6)


# --- 3. float(), size(), numel(), view(), dim / keepdim ---------------------------------------
def test_python_scalars_from_one_element_tensors():
    assert float(mr.tensor([[2.5]])) == 2.5 and int(mr.tensor(3.7)) == 3
    assert isinstance(float(mr.tensor(np.float64(1.0))), float)
    with pytest.raises(ValueError, match=r"float\(\): only a one-element tensor can be converted "
                                         r"to a Python float; this tensor has shape \(2,\)"):
        float(mr.tensor([1.0, 2.0]))


def test_size_numel_view(device):
    x = t32(np.arange(24.0).reshape(2, 3, 4), device, requires_grad=True)
    assert x.size() == (2, 3, 4) and isinstance(x.size(), tuple)
    assert x.size(1) == 3 and x.size(-1) == 4 and x.numel() == 24
    assert mr.tensor(5.0).size() == () and mr.tensor(5.0).numel() == 1
    with pytest.raises(IndexError, match=r"size\(\): dim 3 is out of range for a tensor of shape "
                                         r"\(2, 3, 4\) \(expected a dim in \[-3, 2\]\)"):
        x.size(3)
    with pytest.raises(TypeError, match=r"size\(\): dim must be an int"):
        x.size("1")
    v = x.view(6, 4)
    assert v.shape == (6, 4) and x.view((4, 6)).shape == (4, 6) and x.view(-1).shape == (24,)
    (v * 2).sum().backward()
    np.testing.assert_array_equal(grad_of(x), np.full((2, 3, 4), 2.0))
    with pytest.raises(ValueError, match="reshape: cannot reshape"):
        x.view(5, 5)


@pytest.mark.parametrize("name", ["sum", "mean", "max", "min"])
def test_reductions_accept_dim_and_keepdim(device, name):
    x_np = np.random.default_rng(0).standard_normal((3, 4, 5))
    x = t32(x_np, device)
    numpy_result = getattr(x_np, name)(axis=1, keepdims=True)
    out = getattr(x, name)(dim=1, keepdim=True)
    values = out.values if name in ("max", "min") else out
    np.testing.assert_allclose(values.numpy(), numpy_result, rtol=1e-6)
    np.testing.assert_allclose(getattr(x, name)(axis=1, keepdim=True).numpy(), numpy_result,
                               rtol=1e-6)
    np.testing.assert_allclose(getattr(F, name)(x, 1, True).numpy(), numpy_result, rtol=1e-6)
    with pytest.raises(TypeError, match=rf"{name}: got both axis=1 and dim=1"):
        getattr(x, name)(axis=1, dim=1)
    with pytest.raises(TypeError, match=rf"{name}: got both keepdims=False and keepdim=True"):
        getattr(x, name)(1, False, keepdim=True)


def test_max_min_with_dim_return_values_and_indices_like_torch(device):
    x_np = np.array([[1.0, 5.0, 3.0], [7.0, 2.0, 0.5]])
    x = t64(x_np, device)
    values, indices = x.max(dim=1)
    np.testing.assert_array_equal(values.numpy(), [5.0, 7.0])
    assert indices.dtype == np.int64 and indices.numpy().tolist() == [1, 0]
    assert not indices.requires_grad and values.requires_grad
    values.sum().backward()
    np.testing.assert_array_equal(grad_of(x), [[0, 1, 0], [1, 0, 0]])
    low = F.min(x, dim=0, keepdim=True)
    assert low.indices.shape == (1, 3) and low.indices.numpy().tolist() == [[0, 1, 1]]
    assert x.max(axis=1).shape == (2,)                 # NumPy's spelling: the values only
    with pytest.raises(TypeError, match=r"max: dim= takes one int"):
        x.max(dim=(0, 1))


def test_argmax_accepts_dim_and_keepdim():
    x = mr.tensor([[1.0, 5.0, 3.0], [7.0, 2.0, 0.5]])
    assert x.argmax().item() == 3
    assert x.argmax(dim=1).numpy().tolist() == [1, 0]
    assert x.argmax(axis=0, keepdims=True).shape == (1, 3)
    assert x.argmax(dim=1, keepdim=True).dtype == np.int64
    with pytest.raises(TypeError, match="argmax: got both axis=0 and dim=0"):
        x.argmax(axis=0, dim=0)
    with pytest.raises(ValueError, match="argmax: axis 2 is out of range"):
        x.argmax(dim=2)


# --- 4. CrossEntropyLoss, clip_grad_norm_, zeros / ones / randn / from_numpy -----------------
@pytest.mark.parametrize("smoothing", [0.0, 0.2])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_loss_module_matches_functional(device, smoothing, reduction):
    logits_np = np.random.default_rng(0).standard_normal((4, 3))
    y = np.array([0, 2, 1, 1])
    crit = nn.CrossEntropyLoss(label_smoothing=smoothing, reduction=reduction)
    a, b = t64(logits_np, device), t64(logits_np, device)
    out = crit(a, mr.tensor(y, device=device))
    ref = F.cross_entropy(b, y, label_smoothing=smoothing, reduction=reduction)
    np.testing.assert_allclose(out.numpy(), ref.numpy())
    out.sum().backward()
    ref.sum().backward()
    np.testing.assert_allclose(grad_of(a), grad_of(b))
    assert "label_smoothing" in repr(crit) and isinstance(crit, nn.Module)


def test_cross_entropy_loss_bad_settings():
    with pytest.raises(ValueError, match=r"CrossEntropyLoss: unknown reduction 'avg'"):
        nn.CrossEntropyLoss(reduction="avg")
    with pytest.raises(ValueError, match=r"CrossEntropyLoss: label_smoothing must be a number in"):
        nn.CrossEntropyLoss(label_smoothing=1.5)
    with pytest.raises(TypeError):
        nn.CrossEntropyLoss(None)                       # PyTorch's positional weight: refused


@pytest.mark.parametrize("norm_type", [2.0, 1, float("inf")])
def test_clip_grad_norm_matches_the_definition(device, norm_type):
    rng = np.random.default_rng(0)
    grads = [rng.standard_normal((3, 4)), rng.standard_normal(5)]
    params = [t32(np.zeros(g.shape), device, requires_grad=True) for g in grads]
    for p, g in zip(params, grads):
        p.grad = mr.tensor(g, dtype=np.float32, device=device).data
    params.append(t32(np.zeros(2), device, requires_grad=True))     # no grad: skipped
    flat = np.concatenate([g.ravel() for g in grads])
    expected = np.linalg.norm(flat, ord=norm_type)
    total = nn.utils.clip_grad_norm_(iter(params), max_norm=0.5, norm_type=norm_type)
    assert isinstance(total, mr.Tensor) and total.shape == ()
    assert float(total) == pytest.approx(expected, rel=1e-5)
    clipped = np.concatenate([to_numpy(p.grad).ravel() for p in params[:2]])
    assert np.linalg.norm(clipped, ord=norm_type) == pytest.approx(0.5, rel=1e-4)
    np.testing.assert_allclose(clipped, flat * 0.5 / (expected + 1e-6), rtol=1e-5)


def test_clip_grad_norm_leaves_small_gradients_and_checks_its_arguments():
    p = mr.tensor([0.0, 0.0], requires_grad=True)
    p.grad = np.array([0.3, 0.4], dtype=np.float32)
    assert float(nn.utils.clip_grad_norm_(p, 1.0)) == pytest.approx(0.5)
    np.testing.assert_allclose(p.grad, [0.3, 0.4])
    assert float(nn.utils.clip_grad_norm_([mr.tensor([1.0], requires_grad=True)], 1.0)) == 0.0
    with pytest.raises(ValueError,
                       match=r"clip_grad_norm_: max_norm must be a number >= 0, got -1"):
        nn.utils.clip_grad_norm_(p, -1)
    with pytest.raises(ValueError, match=r"clip_grad_norm_: norm_type must be a number > 0"):
        nn.utils.clip_grad_norm_(p, 1.0, norm_type=0)
    with pytest.raises(TypeError,
                       match=r"clip_grad_norm_: expected tensors \(parameters\), got int"):
        nn.utils.clip_grad_norm_([1, 2], 1.0)
    p.grad = np.array([np.inf, 0.0], dtype=np.float32)
    with pytest.raises(RuntimeError,
                       match=r"clip_grad_norm_: the total norm of order 2.0 .* is inf"):
        nn.utils.clip_grad_norm_(p, 1.0, error_if_nonfinite=True)


def test_zeros_ones_randn(device):
    z = mr.zeros(2, 3, device=device)
    assert z.shape == (2, 3) and z.dtype == np.float32 and z.device == device
    assert np.all(z.numpy() == 0) and not z.requires_grad
    o = mr.ones((4,), dtype=np.int64, device=device)
    assert o.dtype == np.int64 and o.numpy().tolist() == [1, 1, 1, 1]
    assert mr.zeros([2, 2], requires_grad=True).requires_grad
    assert mr.zeros().shape == () and mr.zeros(0, 3).shape == (0, 3)
    mr.manual_seed(3)
    r1 = mr.randn(3, 4, device=device)
    mr.manual_seed(3)
    r2 = mr.randn((3, 4), dtype=np.float64, requires_grad=True)
    assert r1.dtype == np.float32 and r2.dtype == np.float64 and r2.requires_grad
    assert r1.device == device
    np.testing.assert_allclose(r1.numpy(), r2.numpy(), rtol=1e-6)      # same seed, same numbers
    assert abs(float(mr.randn(10000).mean())) < 0.05


def test_creation_bad_arguments():
    with pytest.raises(TypeError, match=r"zeros: the size must be ints"):
        mr.zeros(2.5)
    with pytest.raises(ValueError, match=r"ones: sizes must be >= 0, got \(2, -1\)"):
        mr.ones(2, -1)
    with pytest.raises(TypeError, match=r"randn\(\): normal samples need a floating-point dtype, "
                                        r"got int64"):
        mr.randn(2, dtype=np.int64)
    with pytest.raises(ValueError, match="unknown device 'gpu'"):
        mr.zeros(2, device="gpu")
    with pytest.raises(TypeError, match="only floating-point tensors can require grad"):
        mr.ones(2, dtype=np.int64, requires_grad=True)


def test_from_numpy_shares_memory_and_keeps_dtype():
    a = np.arange(6, dtype=np.int32).reshape(2, 3)
    t = mr.from_numpy(a)
    assert t.dtype == np.int32 and t.data is a
    a[0, 0] = 100
    assert t.numpy()[0, 0] == 100
    with pytest.raises(TypeError, match=r"from_numpy\(\): expected a numpy.ndarray, got list"):
        mr.from_numpy([1, 2])


def test_new_names_are_exported():
    for name in ("zeros", "ones", "randn", "from_numpy"):
        assert name in mr.__all__ and callable(getattr(mr, name))
    assert "CrossEntropyLoss" in nn.__all__ and "utils" in nn.__all__
    assert nn.utils.clip_grad_norm_.__doc__


# --- 5. flatten defaults agree with torch ------------------------------------------------------
def test_flatten_defaults_agree_with_torch(device):
    x = t32(np.arange(120.0).reshape(2, 3, 4, 5), device)
    assert x.flatten().shape == (120,) and F.flatten(x).shape == (120,)      # torch.flatten(x)
    assert x.flatten(1).shape == (2, 60) and F.flatten(x, 1).shape == (2, 60)
    assert F.flatten(x, 1, 2).shape == (2, 12, 5) and x.flatten(-2).shape == (2, 3, 20)
    assert nn.Flatten()(x).shape == (2, 60)                                # nn.Flatten: start_dim=1
    assert mr.tensor(3.0).flatten().shape == (1,)
    assert F.flatten(t32(np.zeros((0, 3)), device), 0).shape == (0,)
    with pytest.raises(ValueError, match=r"flatten: start_dim=2 comes after end_dim=1"):
        x.flatten(2, 1)
    with pytest.raises(ValueError, match=r"flatten: start_dim=4 is out of range for a tensor of "
                                         r"shape \(2, 3, 4, 5\)"):
        x.flatten(4)
    with pytest.raises(TypeError, match="flatten: end_dim must be an int"):
        x.flatten(0, 1.5)


def test_flatten_gradient(device):
    x = np.random.default_rng(0).standard_normal((2, 3, 2))
    assert mr.gradcheck(lambda t: t.flatten(1, 2), t64(x, device))


# --- 6. in-place changes of saved arrays are detected ------------------------------------------
def test_input_modified_in_place_after_forward_is_detected(device):
    w = t64(np.ones((2, 3)), device)
    x = t64(np.arange(6.0).reshape(2, 3), device, requires_grad=False)
    loss = (w * x).sum()
    assert x._version == 0
    x += 1.0
    assert x._version == 1
    with pytest.raises(RuntimeError, match=INPLACE_MSG + r", dtype float64, which is input 1 of "
                                          r"Mul\] is at version 1; expected version 0 instead"):
        loss.backward()


def test_optimizer_step_between_forward_and_backward_is_detected():
    lin = nn.Linear(3, 2)
    opt = mr.optim.SGD(lin.parameters(), lr=0.1)
    x = mr.tensor(np.ones((2, 3), dtype=np.float32))
    first = lin(x).sum()
    second = lin(x).sum()
    first.backward()
    opt.step()                                          # changes the weight second's graph saved
    assert lin.weight._version == 1
    with pytest.raises(RuntimeError, match=r"Linear.backward: one of the variables needed for "
                                           r"gradient computation has been modified by an inplace "
                                           r"operation: \[Tensor of shape \(2, 3\), dtype float32, "
                                           r"which is input 1 of Linear\] is at version 1; "
                                           r"expected version 0 instead"):
        second.backward()


def test_saved_output_modified_under_no_grad_is_detected():
    x = mr.tensor(np.zeros((2, 3)), requires_grad=True)
    y = x.exp()                                         # Exp saves its output
    with mr.no_grad():
        y *= 2.0
    with pytest.raises(RuntimeError,
                       match=INPLACE_MSG + r", dtype float64, which is output 0 of Exp"):
        y.sum().backward()


def test_views_and_detach_share_the_version_counter():
    w = mr.tensor(np.ones((2, 3)), requires_grad=True)
    x = mr.tensor(np.arange(6.0))
    x2 = x.reshape(2, 3)                                # a view of x's array
    loss = (w * x2).sum()
    d = x.detach()
    d += 1.0                                            # changes x's array through another tensor
    assert x._version == x2._version == 1
    with pytest.raises(RuntimeError, match=INPLACE_MSG):
        loss.backward()


def test_unchanged_graph_and_changes_after_backward_are_fine():
    w = mr.tensor(np.ones(3), requires_grad=True)
    x = mr.tensor(np.arange(3.0))
    loss = (w * x).sum()
    loss.backward(retain_graph=True)
    np.testing.assert_array_equal(w.grad, [0.0, 1.0, 2.0])
    x += 1.0
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()                                 # the retained graph saw the change


def test_in_place_operators_work_in_place():
    a = mr.tensor([1.0, 2.0, 3.0])
    alias = a
    a += 1.0
    a -= mr.tensor([1.0, 1.0, 1.0])
    a *= 2.0
    a /= 4.0
    assert alias is a and a.numpy().tolist() == [0.5, 1.0, 1.5] and a._version == 4
    assert a.zero_() is a and a.numpy().tolist() == [0.0, 0.0, 0.0]
    a.fill_(7.0).copy_(np.array([1.0, 2.0, 3.0]))
    assert a.numpy().tolist() == [1.0, 2.0, 3.0] and a._version == 7


def test_in_place_operators_refuse_what_the_graph_needs():
    leaf = mr.tensor([1.0, 2.0], requires_grad=True)
    with pytest.raises(RuntimeError, match=r"Tensor \+=: a leaf tensor that requires grad is being "
                                           r"used in an in-place operation"):
        leaf += 1.0
    with mr.no_grad():
        leaf -= 0.5                                     # as an optimizer does: allowed
    assert leaf.numpy().tolist() == [0.5, 1.5] and leaf._version == 1
    inner = leaf * 2
    with pytest.raises(RuntimeError, match=r"Tensor \*=: this tensor is part of the graph "
                                           r"\(made by Mul\) and minires does not record "
                                           r"in-place operations"):
        inner *= 2.0
    plain = mr.tensor([1.0, 2.0])
    with pytest.raises(RuntimeError, match=r"Tensor \+=: the other operand requires grad"):
        plain += leaf
    with pytest.raises(RuntimeError, match=r"Tensor zero_\(\): a leaf tensor that requires grad"):
        leaf.zero_()


def test_in_place_operators_check_shape_and_dtype():
    a = mr.tensor([1.0, 2.0])
    with pytest.raises(ValueError, match=r"Tensor \+=: cannot update a tensor of shape \(2,\) "
                                         r"in place with an operand of shape \(3, 2\): "
                                         r"the result would have shape \(3, 2\)"):
        a += np.ones((3, 2))
    with pytest.raises(ValueError,
                       match=r"Tensor -=: shapes \(2,\) and \(3,\) cannot be broadcast"):
        a -= np.ones(3)
    labels = mr.tensor([1, 2])
    with pytest.raises(TypeError, match=r"Tensor /=: the result \(this int64 tensor / int\) cannot "
                                        r"be stored in place in a int64 tensor"):
        labels /= 2
    with pytest.raises(TypeError, match=r"Tensor \+=: the result \(this int64 tensor \+ float64\)"):
        labels += np.array([0.5, 0.5])
    with pytest.raises(TypeError, match=r"Tensor fill_\(\): expected a number, got str"):
        a.fill_("x")
    assert a._version == 0                              # nothing was changed


def test_function_and_tensor_public_members_have_docstrings():
    from minires.autograd import Function
    for cls in (mr.Tensor, Function):
        missing = [name for name, member in vars(cls).items()
                   if not name.startswith("_") and callable(getattr(member, "fget", member))
                   and not (getattr(member, "fget", member).__doc__ or "").strip()]
        assert not missing, f"{cls.__name__}: no docstring on {missing}"
    assert re.search("elementwise", mr.Tensor.__eq__.__doc__)


def test_softmax_and_log_softmax_accept_dim():
    x = mr.tensor(np.random.default_rng(0).standard_normal((3, 4)))
    np.testing.assert_allclose(F.softmax(x, dim=0).numpy(), F.softmax(x, 0).numpy())
    np.testing.assert_allclose(F.log_softmax(x, dim=1).numpy(), F.log_softmax(x).numpy())
    np.testing.assert_allclose(F.softmax(x, dim=0).numpy().sum(axis=0), 1.0)
    with pytest.raises(TypeError, match="log_softmax: got both axis=1 and dim=1"):
        F.log_softmax(x, 1, dim=1)


def test_cross_entropy_takes_integer_label_tensors():
    logits = mr.tensor(np.zeros((2, 3)), requires_grad=True)
    labels = mr.tensor(np.array([0, 2]))
    assert labels.dtype == np.int64
    assert float(F.cross_entropy(logits, labels)) == pytest.approx(np.log(3))
    with pytest.raises(TypeError, match="cross_entropy: target must hold integer class indices"):
        F.cross_entropy(logits, mr.tensor([0.0, 2.0]))


def test_numpy_functions_see_a_cpu_tensor_as_its_array():
    pred = mr.tensor(np.array([1, 2, 3, 4]))
    y = mr.tensor(np.array([1, 0, 3, 0]))
    assert np.mean(pred == y) == 0.5                 # once silently 0.0 (identity ==)
    np.testing.assert_array_equal(np.asarray(pred), [1, 2, 3, 4])
