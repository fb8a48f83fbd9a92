"""benchmarks/launch_count.py: kernel launches and host syncs of the CuPy path, counted on the CPU.

The counting stand-in for CuPy runs the GPU branches of minires (with the kernels on the CPU
emulation of tests/kernel_emulation.py); these tests pin down what the fused kernels and the
host-side label check buy: one launch per parameter for SGD, 9 per batch-norm layer and step,
and no wait for the GPU in cross_entropy when the labels come from the host.
"""
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

import minires as mr
import minires.functional as F
from minires import backend

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
try:
    import launch_count as lc
finally:
    sys.path.pop(0)


def _counted(fn):
    lc.COUNTS.__init__()
    result = fn()
    return result, lc.COUNTS


def test_cross_entropy_checks_host_labels_without_waiting_for_the_gpu():
    rng = np.random.default_rng(0)
    logits_host = rng.standard_normal((6, 4)).astype(np.float32)
    labels = rng.integers(0, 4, 6)
    want = F.cross_entropy(mr.tensor(logits_host), labels).item()
    with lc.fake_cupy():
        logits = mr.tensor(logits_host, device="cuda")
        loss, counts = _counted(lambda: F.cross_entropy(logits, labels))
        assert sum(counts.syncs.values()) == 0, counts.syncs
        assert counts.h2d["asarray"] == 1                          # the labels, once
        np.testing.assert_allclose(loss.item(), want, rtol=1e-6)
        # labels already on the device: checked there, one wait for min and max together
        on_device = backend.to_device(labels, "cuda")
        _, counts = _counted(lambda: F.cross_entropy(logits, on_device))
        assert dict(counts.syncs) == {"get": 1}
        # a bad host label is refused before anything goes to the device
        bad = labels.copy()
        bad[2] = 4
        with pytest.raises(ValueError, match=r"must lie in \[0, 4\), got values from \d to 4"):
            _counted(lambda: F.cross_entropy(logits, bad))
        assert sum(lc.COUNTS.h2d.values()) == 0
        with pytest.raises(ValueError, match=r"got values from -1 to"):
            bad[2] = -1
            F.cross_entropy(logits, backend.to_device(bad, "cuda"))


def test_the_fake_refuses_what_cupy_refuses():
    with lc.fake_cupy():
        a = backend.to_device(np.ones(3, dtype=np.float32), "cuda")
        with pytest.raises(TypeError, match="Implicit conversion"):
            np.asarray(a)
        with pytest.raises(TypeError, match="NumPy array"):
            a + np.ones(3, dtype=np.float32)
        _, counts = _counted(lambda: (a.reshape(3, 1), a[1:], a.astype(np.float32, copy=False),
                                      backend.get_array_module(a).empty(4)))
        assert sum(counts.launches.values()) == 0                  # views and allocations
        _, counts = _counted(lambda: (a * 2, a.sum(), a.copy(), float(a[0])))
        assert sum(counts.launches.values()) == 3 and dict(counts.syncs) == {"float()": 1}


@pytest.mark.skipif(shutil.which("g++") is None, reason="the kernel emulation needs g++")
@pytest.mark.parametrize("loop", ["current", "proposed"])
def test_a_resnet20_step_on_the_cupy_path(loop):
    counts, loss, loss_numpy, emulated = lc.count_step(batch_size=4, loop=loop)
    assert emulated
    np.testing.assert_allclose(loss, loss_numpy, rtol=1e-5)        # the same step as on NumPy
    n_params = 59                                                   # ResNet-20's
    assert counts.launches["kernel minires_sgd_momentum"] == n_params
    assert not any(op in counts.launches for op in ("multiply", "subtract")) or \
        counts.launches["multiply"] + counts.launches["subtract"] < 10   # SGD's are gone
    bn = [name for name in counts.launches if name.startswith("kernel minires_bn")]
    assert sum(counts.launches[name] for name in bn) == 7 * 19       # 5 forward, 4 backward,
    assert counts.launches["sum"] <= 2 * 19 + 5                      # 2 of them CuPy's .sum
    if loop == "current":      # the loss read back, the correct count, the device labels' range
        assert dict(counts.syncs) == {"item": 1, "int()": 1, "get": 1}
    else:
        assert not counts.syncs


@pytest.mark.skipif(shutil.which("g++") is None, reason="the kernel emulation needs g++")
@pytest.mark.parametrize("kwargs", [
    {"stride": 1, "padding": 1}, {"stride": 2, "padding": 1}, {"stride": 1, "padding": 0},
    {"stride": (2, 1), "padding": (1, 0), "dilation": (1, 2)}, {"stride": 1, "padding": 2,
                                                                 "dilation": 2, "groups": 2}])
def test_conv2d_on_the_cupy_path_is_the_numpy_conv2d(kwargs):
    """conv_fast's GPU route (forward_grid, backward_transposed_grid, backward_columns, with
    the GPU's grid: no wide grid, nothing to cut off) on the stand-in, the per-geometry
    kernels emulated: the NumPy conv2d's output and gradients, in float64."""
    rng = np.random.default_rng(0)
    x_np = rng.standard_normal((3, 4, 7, 6))
    w_np = rng.standard_normal((6, 4 // kwargs.get("groups", 1), 3, 3))
    b_np = rng.standard_normal(6)

    def run(device, need_x=True):
        x = mr.tensor(x_np, dtype=np.float64, device=device, requires_grad=need_x)
        w = mr.tensor(w_np, dtype=np.float64, device=device, requires_grad=True)
        b = mr.tensor(b_np, dtype=np.float64, device=device, requires_grad=True)
        y = F.conv2d(x, w, b, **kwargs)
        gy = rng.standard_normal(y.shape)
        y.backward(mr.tensor(gy, dtype=np.float64, device=device))
        grads = [t.grad for t in (x, w, b) if t.grad is not None]
        return [backend.to_numpy(a) for a in (y.data, *grads)]

    for need_x in (True, False):             # dW alone: backward_columns at stride 1 too
        state = rng.bit_generator.state
        want = run("cpu", need_x)
        rng.bit_generator.state = state
        with lc.fake_cupy():
            got = run("cuda", need_x)
        assert len(got) == len(want) == 3 + need_x
        for a, b in zip(got, want):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
