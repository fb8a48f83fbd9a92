"""The autograd engine (minires/autograd.py) and Tensor semantics (minires/tensor.py).

Graph walk (each node once, iterative, 10,000-op chains), accumulation of
gradients, leaf/non-leaf rules, retain_graph and freed buffers, no_grad, hooks,
detach, dtype rules of ``mr.tensor`` and the errors of misuse.
"""
import sys
import threading

import numpy as np
import pytest

import minires as mr
import minires.functional as F
from minires.autograd import Function
from tests.helpers import grad_of, t32, t64


class CountingIdentity(Function):
    """y = x, counting how often backward runs (the engine must run it once per backward)."""

    calls = 0

    def forward(self, x):
        return x

    def backward(self, gy):
        CountingIdentity.calls += 1
        return (gy,)


# --- the graph walk ----------------------------------------------------------------------
def test_chain_of_10000_ops_needs_no_recursion(device):
    limit = sys.getrecursionlimit()
    x = t64([1.0, 2.0], device)
    y = x
    for _ in range(5000):                  # 10,000 ops: a multiply and an add per step
        y = y * 0.999 + 0.001
    y.sum().backward()
    assert sys.getrecursionlimit() == limit
    np.testing.assert_allclose(grad_of(x), [0.999 ** 5000] * 2, rtol=1e-9)
    del y                                  # freeing the long graph must not recurse either


def test_each_node_runs_once_in_a_diamond(device):
    """x -> a -> (b, c) -> d: a's backward runs once, after both b and c have passed it theirs."""
    CountingIdentity.calls = 0
    x = t64([1.0, 2.0], device)
    a = CountingIdentity()(x * 2)
    d = a * 3 + a * 4 + a                  # a used three times
    d.sum().backward()
    assert CountingIdentity.calls == 1
    np.testing.assert_array_equal(grad_of(x), [16.0, 16.0])


def test_gradients_of_a_reused_tensor_add_up(device):
    x = t64([1.5, -2.0, 3.0], device)
    (x * x + x).sum().backward()           # d/dx (x^2 + x) = 2x + 1
    np.testing.assert_allclose(grad_of(x), 2 * np.array([1.5, -2.0, 3.0]) + 1)


def test_gradients_accumulate_over_backward_calls_until_zeroed(device):
    x = t64([1.0, 2.0], device)
    (x * 3).sum().backward()
    (x * x).sum().backward()
    np.testing.assert_allclose(grad_of(x), [3 + 2, 3 + 4])
    x.zero_grad()
    assert x.grad is None
    (x * 3).sum().backward()
    np.testing.assert_allclose(grad_of(x), [3, 3])


def test_broadcast_gradients_are_summed_back_to_each_shape(device):
    a = t64(np.arange(3.0).reshape(3, 1), device)
    b = t64(np.arange(4.0), device)
    s = t64(2.0, device)
    (a * b + s).sum().backward()           # result (3, 4)
    assert a.grad.shape == (3, 1) and b.grad.shape == (4,) and s.grad.shape == ()
    np.testing.assert_allclose(grad_of(a), np.full((3, 1), 0 + 1 + 2 + 3))
    np.testing.assert_allclose(grad_of(b), np.full(4, 0 + 1 + 2))
    np.testing.assert_allclose(grad_of(s), 12)


def test_leaf_grads_are_owned_and_writable(device):
    """Each leaf gets its own writable gradient array (an optimizer may update it in place)."""
    a, b = t64([1.0, 2.0], device), t64([3.0, 4.0], device)
    (a + b).sum().backward()               # add hands the same array to both inputs
    a.grad *= 10
    np.testing.assert_array_equal(grad_of(b), [1.0, 1.0])
    x = t64(np.ones((2, 3)), device)
    x.sum().backward()                     # sum's backward is a read-only broadcast view
    x.grad[0, 0] = 5.0
    assert grad_of(x)[0, 0] == 5.0
    c = a + b
    c.retain_grad()
    (c * 2).sum().backward()               # c.grad, a.grad and b.grad: three arrays
    a.grad *= 10
    np.testing.assert_array_equal(grad_of(c), [2.0, 2.0])
    np.testing.assert_array_equal(grad_of(b), [3.0, 3.0])
    upstream = np.ones(2)
    y = t64([1.0, 2.0], device)
    (y + 0).backward(upstream)             # a user's gradient array is never aliased either
    y.grad *= 3
    np.testing.assert_array_equal(upstream, [1.0, 1.0])


def test_non_leaf_grad_is_kept_only_after_retain_grad(device):
    x = t64([1.0, 2.0], device)
    h = x * 2
    k = x * 3
    k.retain_grad()
    (h * k).sum().backward()
    assert h.grad is None and not h.is_leaf
    np.testing.assert_allclose(grad_of(k), [2.0, 4.0])     # d(h k)/dk = h
    np.testing.assert_allclose(grad_of(x), 12 * np.array([1.0, 2.0]))  # d(6 x^2)/dx


def test_unused_output_of_a_multi_output_op(device):
    x = t64([1.0, -2.0], device)
    branches = F.fork(x)
    (branches[0] * 5).sum().backward()     # branches[1] is alive but unused: zero gradient
    np.testing.assert_array_equal(grad_of(x), [5.0, 5.0])
    x.zero_grad()
    (F.fork(x, 3)[1] * 7).sum().backward()   # the other branches were dropped at once
    np.testing.assert_array_equal(grad_of(x), [7.0, 7.0])


def test_a_none_gradient_does_not_cut_other_paths(device):
    """A backward returning None for one path must not stall the graph behind it."""
    class StopGradient(Function):
        def forward(self, x):
            return x

        def backward(self, gy):
            return (None,)

    x = t64([1.0, 2.0], device)
    a = x * 2
    (StopGradient()(a) + a * 3).sum().backward()
    np.testing.assert_array_equal(grad_of(x), [6.0, 6.0])


# --- retain_graph and freed buffers --------------------------------------------------------
def test_retain_graph_allows_a_second_backward(device):
    x = t64([1.0, 2.0], device)
    y = (x * x).sum()
    y.backward(retain_graph=True)
    y.backward()
    np.testing.assert_allclose(grad_of(x), 2 * 2 * np.array([1.0, 2.0]))


def test_second_backward_through_freed_buffers_raises(device):
    x = t64([1.0, 2.0], device)
    y = x.exp().sum()
    y.backward()
    with pytest.raises(RuntimeError, match=r"Exp.backward: the arrays saved for backward were "
                                           r"already freed.*retain_graph=True"):
        y.backward()


# --- no_grad -----------------------------------------------------------------------------
def test_no_grad_records_nothing(device):
    x = t64([1.0, 2.0], device)
    with mr.no_grad():
        y = (x * 2).exp()
        assert not mr.is_grad_enabled()
        with mr.enable_grad():
            z = x * 2
    assert mr.is_grad_enabled()
    assert y.grad_fn is None and not y.requires_grad
    assert z.grad_fn is not None
    with pytest.raises(RuntimeError, match="does not require grad"):
        y.sum().backward()


def test_no_grad_as_decorator_and_after_an_exception(device):
    x = t64([1.0, 2.0], device)

    @mr.no_grad()
    def double(t):
        """Doubles."""
        return t * 2

    assert double(x).grad_fn is None and double.__doc__ == "Doubles."
    assert (x * 2).grad_fn is not None     # switched back on after the call
    with pytest.raises(ZeroDivisionError), mr.no_grad():
        raise ZeroDivisionError
    assert mr.is_grad_enabled()


def test_no_grad_is_per_thread():
    seen = []
    with mr.no_grad():
        worker = threading.Thread(target=lambda: seen.append(mr.is_grad_enabled()))
        worker.start()
        worker.join()
    assert seen == [True]


# --- hooks ---------------------------------------------------------------------------------
def test_hook_sees_and_replaces_the_gradient(device):
    x = t64([1.0, 2.0, 3.0], device)
    seen = []

    def double(g):
        seen.append(mr.tensor(g, dtype=g.dtype).numpy().copy())
        return g * 2

    handle = x.register_hook(double)
    (x * 3).sum().backward()
    np.testing.assert_array_equal(seen[0], [3.0, 3.0, 3.0])
    np.testing.assert_array_equal(grad_of(x), [6.0, 6.0, 6.0])
    handle.remove()
    x.zero_grad()
    (x * 3).sum().backward()
    assert len(seen) == 1
    np.testing.assert_array_equal(grad_of(x), [3.0, 3.0, 3.0])
    handle.remove()                        # removing twice is harmless


def test_hooks_on_non_leaves_change_what_flows_upstream(device):
    x = t64([1.0, 2.0], device)
    h = x * 2
    seen = []
    h.register_hook(lambda g: seen.append(mr.tensor(g, dtype=g.dtype).numpy().copy()))
    h.register_hook(lambda g: mr.tensor(g * 0 + 1, dtype=g.dtype, device=device))  # Tensor return
    (h * h).sum().backward()               # d/dh = 2h = [4, 8]
    np.testing.assert_array_equal(seen[0], [4.0, 8.0])
    np.testing.assert_array_equal(grad_of(x), [2.0, 2.0])   # 1 (replaced) * dh/dx
    assert h.grad is None


def test_hooks_on_fork_branches_see_each_paths_gradient(device):
    x = t64([1.0, 2.0], device)
    branch, skip = F.fork(x)
    seen = {}
    branch.register_hook(lambda g: seen.__setitem__("branch", float(g.sum())))
    skip.register_hook(lambda g: seen.__setitem__("skip", float(g.sum())))
    (branch * 5 + skip).sum().backward()
    assert seen == {"branch": 10.0, "skip": 2.0}
    np.testing.assert_array_equal(grad_of(x), [6.0, 6.0])


def test_register_hook_on_a_tensor_without_grad_raises(device):
    with pytest.raises(RuntimeError, match="register_hook: cannot register a hook on a tensor "
                                           "that does not require grad"):
        t32([1.0], device).register_hook(print)


# --- detach and requires_grad ------------------------------------------------------------------
def test_detach_cuts_the_graph_and_shares_data(device):
    x = t64([1.0, 2.0], device)
    d = (x * 2).detach()
    assert d.grad_fn is None and not d.requires_grad and d.is_leaf
    y = x * d                              # d is a constant here
    y.sum().backward()
    np.testing.assert_array_equal(grad_of(x), [2.0, 4.0])
    x2 = x.detach()
    assert x2.data is x.data


def test_integer_tensors_cannot_require_grad(device):
    with pytest.raises(TypeError, match="only floating-point tensors can require grad; this "
                                        "tensor has dtype int64"):
        mr.tensor([1, 2], dtype=np.int64, requires_grad=True, device=device)
    t = mr.tensor([1, 2], dtype=np.int32, device=device)
    with pytest.raises(TypeError, match="dtype int32"):
        t.requires_grad = True


def test_requires_grad_cannot_be_switched_off_on_a_non_leaf(device):
    y = t64([1.0], device) * 2
    with pytest.raises(RuntimeError,
                       match=r"requires_grad can only be switched off on a leaf.*detach"):
        y.requires_grad = False


# --- backward() misuse ---------------------------------------------------------------------------
def test_backward_on_a_non_scalar_needs_a_gradient(device):
    x = t64([1.0, 2.0], device)
    y = x * 2
    with pytest.raises(RuntimeError, match=r"backward\(\): grad can be implicit only for a scalar "
                                           r"output, but this tensor has shape \(2,\)"):
        y.backward()
    with pytest.raises(ValueError, match=r"backward\(grad\): grad has shape \(3,\) but the tensor "
                                         r"has shape \(2,\)"):
        y.backward(np.ones(3))
    y.backward(np.array([1.0, 10.0]))
    np.testing.assert_array_equal(grad_of(x), [2.0, 20.0])


def test_backward_of_a_leaf_itself(device):
    x = t64(3.0, device)
    x.backward()
    assert grad_of(x) == 1.0


def test_backward_checks_the_ops_it_runs(device):
    class WrongShape(Function):
        def forward(self, x):
            return x.sum()

        def backward(self, gy):
            return (gy.reshape(1, 1, 1),)

    class WrongCount(Function):
        def forward(self, x):
            return x

        def backward(self, gy):
            return gy, gy

    x = t64([1.0, 2.0], device)
    with pytest.raises(RuntimeError, match=r"WrongShape.backward returned a gradient of shape "
                                           r"\(1, 1, 1\) for an input of shape \(2,\)"):
        WrongShape()(x).backward()
    with pytest.raises(RuntimeError, match="WrongCount.backward returned 2 gradients for 1 inputs"):
        WrongCount()(x).sum().backward()


def test_truth_value_only_for_one_element(device):
    assert bool(t32(2.0, device)) and not bool(t32([0.0], device))
    assert (t32(3.0, device) > 2.0)
    with pytest.raises(ValueError, match=r"truth value of a tensor of shape \(2,\) is ambiguous"):
        bool(t32([1.0, 2.0], device) > 0)


# --- mr.tensor dtype rules (DESIGN.md) -----------------------------------------------------------
@pytest.mark.parametrize("data, dtype, expected", [
    (np.zeros(2, dtype=np.float64), None, np.float64),   # a floating array keeps its dtype
    (np.zeros(2, dtype=np.float32), None, np.float32),
    (np.zeros(2, dtype=np.float16), None, np.float16),
    (np.zeros(2, dtype=np.int64), None, np.int64),       # integer / bool arrays keep theirs too
    (np.zeros(2, dtype=np.uint8), None, np.uint8),
    (np.zeros(2, dtype=bool), None, np.bool_),
    ([1.0, 2.0], None, np.float32),                      # Python floats -> float32 (as in PyTorch)
    ([1, 2.5], None, np.float32),
    ([1, 2], None, np.int64),                            # Python ints -> int64, bools -> bool
    ([True, False], None, np.bool_),
    (3, None, np.int64),
    (2.5, None, np.float32),
    (np.zeros(2, dtype=np.float64), np.float32, np.float32),   # dtype= overrides
    ([1, 2], np.float64, np.float64),
    ([1, 2], np.int64, np.int64),
])
def test_tensor_dtype_rules(device, data, dtype, expected):
    t = mr.tensor(data, dtype=dtype, device=device)
    assert t.dtype == expected and t.device == device and t.is_leaf


def test_tensor_copies_its_input(device):
    a = np.zeros(3)
    t = mr.tensor(a, device=device)
    a[0] = 1.0
    assert t.numpy()[0] == 0.0
    assert mr.tensor(t, device=device).data is not t.data


# --- what the engine needs of a tensor (autograd.TensorLike) ------------------------------
def _protocol_members(protocol):
    """The names a Protocol declares: its annotated attributes, properties and methods."""
    names = set(getattr(protocol, "__annotations__", {}))
    for name, value in vars(protocol).items():
        if isinstance(value, property) or (callable(value) and not name.startswith("__")):
            names.add(name)
    return names


def test_tensor_has_every_member_the_engine_uses():
    from minires.autograd import TensorLike

    members = _protocol_members(TensorLike)
    # guard against a walk that silently checks nothing
    assert {"data", "grad", "grad_fn", "requires_grad", "_wrap_output", "_run_hooks",
            "_retains_grad", "_version_counter"} <= members
    leaf = mr.tensor([1.0, 2.0], requires_grad=True)
    result = leaf * 2
    for t in (leaf, result, mr.nn.Parameter(np.zeros(2))):
        missing = sorted(m for m in members if not hasattr(t, m))
        assert not missing, f"{type(t).__name__} lacks {missing}, which minires.autograd uses"
        assert isinstance(t, TensorLike)
    assert hasattr(leaf._version_counter, "value")
    assert not isinstance(np.zeros(2), TensorLike)


def test_every_tensor_like_member_says_what_the_engine_needs_it_for():
    from minires.autograd import TensorLike

    for name in _protocol_members(TensorLike):
        member = vars(TensorLike)[name]
        doc = (member.fget if isinstance(member, property) else member).__doc__
        assert doc and doc.strip(), name
