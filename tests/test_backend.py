"""minires/backend.py and device handling: NumPy by default, CuPy only when asked for.

``import minires`` must stay light (no CuPy, under 0.5 s); asking for "cuda"
without CuPy or a GPU says how to install the ``gpu`` extra; mixing devices in
one op names the op and both devices.
"""
import subprocess
import sys

import numpy as np
import pytest

import minires as mr
import minires.functional as F
from minires import backend
from tests.helpers import grad_of, t32, t64

GPU = backend.gpu_available()


def test_get_array_module_is_numpy_for_cpu_data():
    assert backend.get_array_module(np.ones(2)) is np
    assert backend.get_array_module(np.ones(2), 3.0, [1, 2]) is np
    assert backend.get_array_module() is np
    assert backend.device_of(np.ones(2)) == "cpu"
    assert mr.get_array_module is backend.get_array_module


def test_get_array_module_follows_the_device(device):
    x = t32([1.0, 2.0], device)
    xp = backend.get_array_module(x.data)
    assert isinstance(x.data, xp.ndarray)
    assert (xp is np) == (device == "cpu")
    assert backend.device_of(x.data) == device == x.device


def test_the_dispatch_helpers_agree_with_get_array_module(device):
    """backend.py's one idiom per question: is_array, is_cupy_array, device_of and
    array_module_for answer alike for the same data."""
    x = t32([1.0, 2.0], device).data
    xp = backend.get_array_module(x)
    assert backend.is_array(x) and backend.is_cupy_array(x) == (xp is not np)
    assert backend.array_module_for(backend.device_of(x)) is xp
    assert backend.array_module_for(None) is np
    for not_an_array in (1.0, [1.0], None, mr.tensor([1.0])):
        assert not backend.is_array(not_an_array)
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        backend.array_module_for("tpu")


def test_device_round_trip_keeps_values_leafness_and_grad(device):
    x = t64([1.0, -2.0], device)
    (x * 3).sum().backward()
    y = x.to("cpu").to(device)
    assert y.device == device and y.is_leaf and y.requires_grad
    np.testing.assert_array_equal(y.numpy(), [1.0, -2.0])
    np.testing.assert_array_equal(grad_of(y), [3.0, 3.0])
    assert x.to(device) is x                      # already there: no copy
    assert isinstance(x.cpu().data, np.ndarray) and isinstance(x.numpy(), np.ndarray)


def test_to_rejects_unknown_devices_and_non_leaves(device):
    x = t32([1.0], device)
    with pytest.raises(ValueError,
                       match=r"unknown device 'tpu': expected one of \('cpu', 'cuda'\)"):
        x.to("tpu")
    with pytest.raises(RuntimeError, match="to\\(\\): move leaf tensors"):
        (t32([1.0], device, requires_grad=True) * 2).to("cpu" if device == "cuda" else "cuda")


@pytest.mark.skipif(GPU, reason="a GPU with CuPy is present, so 'cuda' works here")
def test_cuda_without_cupy_or_gpu_says_how_to_install_it():
    x = t32([1.0, 2.0])
    with pytest.raises(RuntimeError, match=r"device 'cuda'.*nvidia-smi.*pip install "
                                           r"'minires\[cuda12\]' or 'minires\[cuda13\]'"):
        x.to("cuda")
    with pytest.raises(RuntimeError, match=r"minires\[cuda12\]"):
        mr.tensor([1.0], device="cuda")
    assert mr.gpu_available() is False


@pytest.mark.gpu
@pytest.mark.skipif(not GPU, reason="needs CuPy and a CUDA GPU")
def test_mixing_devices_names_the_op_and_both_devices():
    a, b = t32([1.0, 2.0], "cpu"), t32([3.0, 4.0], "cuda")
    with pytest.raises(RuntimeError,
                       match=r"Add: inputs are on different devices \(cpu and cuda\)"):
        a + b
    with pytest.raises(RuntimeError,
                       match=r"MatMul: inputs are on different devices \(cpu and cuda\)"):
        a @ b
    with pytest.raises(RuntimeError, match=r"cannot combine a cpu array with a tensor on cuda"):
        b + np.ones(2, dtype=np.float32)


def test_manual_seed_makes_the_default_generator_repeatable():
    mr.manual_seed(123)
    first = backend.default_rng().random(4)
    state = backend.get_rng_state()
    after = backend.default_rng().random(4)
    mr.manual_seed(123)
    np.testing.assert_array_equal(backend.default_rng().random(4), first)
    backend.set_rng_state(state)
    np.testing.assert_array_equal(backend.default_rng().random(4), after)


def _run_python(code):
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)


def test_import_does_not_load_cupy():
    out = _run_python("import sys, minires, minires.functional; print('cupy' in sys.modules)")
    assert out.stdout.strip() == "False"


def test_import_loads_no_heavy_optional_module():
    """Import time is measured in benchmarks/import_time.py (timing asserts are flaky on a
    shared machine); what makes it slow is checkable: none of these may load at import."""
    heavy = ("cupy", "matplotlib", "tqdm", "minires.nn", "minires.train", "minires.data")
    out = _run_python("import sys, minires; print([m for m in %r if m in sys.modules])" % (heavy,))
    assert out.stdout.strip() == "[]"


def test_ops_keep_data_on_its_device(device):
    x = t32(np.ones((2, 3)), device, requires_grad=True)
    y = F.relu(x @ t32(np.ones((3, 2)), device)).sum()
    y.backward()
    assert y.device == device and x.grad is not None
    assert backend.device_of(x.grad) == device
