"""minires.export: safetensors files written by hand, read back bit for bit, loaded by PyTorch.

Without torch: round trips (every dtype, 0-d and empty tensors, byte order, layout), the
header's JSON and offsets, refusals that name the file, and the command line. With the
``safetensors`` package: its reader and writer agree with ours. With torch: an exported
resnet18 and resnet20 load into PyTorch modules with torchvision's layout (written below)
with ``strict=True``, and give the same logits as minires in eval mode; ``to_torch``
gives the same logits for every layout family (option-A and projection shortcuts, plain,
SE, pre-activation, wide with dropout, ResNeXt, the ImageNet resnet18) with the same
state_dict, and a wrongly padded option-A shortcut -- which loads just as well -- is
caught by its logits. Without torch, ``to_torch`` says ``pip install torch``; a stub
torchvision checks which layout is asked of torchvision (the real one is not installed
where these tests were written).
"""
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import minires as mr
from minires import checkpoint
from minires.checkpoint import CheckpointError
from minires.export import (
    export_safetensors,
    load_safetensors,
    safetensors_metadata,
    to_torch,
    write_safetensors,
)
from minires.export.__main__ import main

ROOT = Path(__file__).resolve().parents[1]


def raw_header(path):
    """(header length, the header as parsed JSON, length of the data part) of a file."""
    data = Path(path).read_bytes()
    n = int.from_bytes(data[:8], "little")
    return n, json.loads(data[8:8 + n].decode("utf-8")), len(data) - 8 - n


def assert_same_bits(found: dict, expected: dict):
    assert sorted(found) == sorted(expected)
    for name, array in expected.items():
        array = np.asarray(array)
        assert found[name].dtype == array.dtype.newbyteorder("="), name
        assert found[name].shape == array.shape, name
        assert found[name].tobytes() == np.ascontiguousarray(
            array.astype(array.dtype.newbyteorder("="))).tobytes(), name


def mixed_tensors():
    rng = np.random.default_rng(0)
    return {
        "conv.weight": rng.standard_normal((4, 3, 3, 3)).astype(np.float32),
        "bn.running_mean": rng.standard_normal(4).astype(np.float32),
        "bn.num_batches_tracked": np.array(123456789012, dtype=np.int64),      # 0-d int64
        "double": np.array([np.nan, -0.0, np.inf, -np.inf, 1e-310, 1.0]),     # bits, not values
        "half": np.array([1.5, -2.0, 65504.0], dtype=np.float16),
        "odd.f32": np.arange(3, dtype=np.float32),                           # 12 bytes: 8-byte
        "ints": np.array([-1, 2, -3], dtype=np.int32),                       # items must still
        "bytes": np.arange(5, dtype=np.uint8),                               # stay aligned
        "mask": np.array([True, False, True]),
        "empty": np.zeros((0, 3), dtype=np.float32),
        "big.endian": np.arange(6, dtype=">f4").reshape(2, 3),
        "transposed": np.arange(12, dtype=np.float64).reshape(3, 4).T,
    }


# --- the file format ------------------------------------------------------------------------------
def test_round_trip_is_bit_exact(tmp_path):
    tensors = mixed_tensors()
    path = write_safetensors(tmp_path / "t.safetensors", tensors, {"model": "x", "note": "é"})
    found = load_safetensors(path)
    assert_same_bits(found, tensors)
    assert all(a.flags.writeable for a in found.values())
    assert safetensors_metadata(path) == {"model": "x", "note": "é"}


def test_header_is_json_and_offsets_are_contiguous_and_aligned(tmp_path):
    tensors = mixed_tensors()
    path = write_safetensors(tmp_path / "t.safetensors", tensors, {"model": "x"})
    n, header, data_bytes = raw_header(path)
    assert n % 8 == 0                                    # the data part starts 8-byte aligned
    assert header.pop("__metadata__") == {"model": "x"}
    assert set(header) == set(tensors)
    codes = {"float32": "F32", "float64": "F64", "float16": "F16", "int64": "I64",
             "int32": "I32", "uint8": "U8", "bool": "BOOL"}
    position = 0
    for name, info in header.items():                    # header order is data order
        assert set(info) == {"dtype", "shape", "data_offsets"}
        array = tensors[name]
        assert info["dtype"] == codes[array.dtype.newbyteorder("=").name]
        assert info["shape"] == list(array.shape)
        begin, end = info["data_offsets"]
        assert begin == position and end - begin == array.nbytes
        assert begin % array.dtype.itemsize == 0         # every tensor aligned to its items
        position = end
    assert position == data_bytes


def test_file_bytes_match_the_specification_exactly(tmp_path):
    path = write_safetensors(tmp_path / "t.safetensors",
                             {"a": np.array([1.0, 2.0], dtype=np.float32),
                              "n": np.array(3, dtype=np.int64)}, {"k": "v"})
    data = path.read_bytes()
    n = int.from_bytes(data[:8], "little")
    text = data[8:8 + n]
    assert text.rstrip(b" ") == (b'{"__metadata__":{"k":"v"},'
                                 b'"n":{"dtype":"I64","shape":[],"data_offsets":[0,8]},'
                                 b'"a":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}}')
    assert data[8 + n:] == (3).to_bytes(8, "little") + np.array([1, 2], "<f4").tobytes()


@given(st.dictionaries(
    st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=8)
      .filter(lambda s: s != "__metadata__"),
    hnp.arrays(st.sampled_from([np.float64, np.float32, np.float16, np.int64, np.int32,
                                np.int16, np.int8, np.uint64, np.uint32, np.uint16, np.uint8,
                                np.bool_]),
               hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=4)),
    max_size=6))
def test_round_trip_of_drawn_tensors(tensors):
    with tempfile.TemporaryDirectory() as folder:
        path = write_safetensors(Path(folder) / "t.safetensors", tensors)
        assert_same_bits(load_safetensors(path), tensors)
        assert raw_header(path)[0] % 8 == 0


def test_tensors_of_a_model_and_minires_tensors_are_accepted(tmp_path):
    path = write_safetensors(tmp_path / "t.safetensors", {"w": mr.tensor(np.ones(3))})
    assert_same_bits(load_safetensors(path), {"w": np.ones(3)})


def test_what_the_format_cannot_hold_is_refused_and_nothing_is_written(tmp_path):
    path = tmp_path / "t.safetensors"
    path.write_bytes(b"old")
    with pytest.raises(TypeError, match="'z'.*complex128"):
        write_safetensors(path, {"a": np.ones(2), "z": np.ones(2, dtype=complex)})
    with pytest.raises(ValueError, match="metadata"):
        write_safetensors(path, {"a": np.ones(2)}, {"epoch": 3})
    with pytest.raises(ValueError, match="__metadata__"):
        write_safetensors(path, {"__metadata__": np.ones(2)})
    assert path.read_bytes() == b"old"
    assert sorted(os.listdir(tmp_path)) == ["t.safetensors"]       # no temporary file left


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "t.safetensors"
    path.write_bytes(b"old")

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space"):
        write_safetensors(path, {"a": np.ones(2)})
    assert path.read_bytes() == b"old"
    assert sorted(os.listdir(tmp_path)) == ["t.safetensors"]


def test_new_files_get_the_usual_permissions(tmp_path):
    umask = os.umask(0o022)
    try:
        path = write_safetensors(tmp_path / "t.safetensors", {"a": np.ones(2)})
    finally:
        os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o644           # not mkstemp's owner-only 0o600


def _damaged(tmp_path, data: bytes):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(data)
    return path


def _file(header: dict, data: bytes) -> bytes:
    text = json.dumps(header).encode()
    return len(text).to_bytes(8, "little") + text + data


@pytest.mark.parametrize("data, why", [
    (b"", "only 0 bytes"),
    ((10**12).to_bytes(8, "little") + b"{}", "header length"),
    (_file({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 4),
     "data part"),                                                             # truncated
    (_file({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 12),
     "data part"),                                                             # trailing bytes
    (_file({"a": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, b"\0" * 12),
     "no gap or overlap"),
    (_file({"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, b"\0" * 8),
     "8 bytes for a F32 tensor of shape"),
    (_file({"a": {"dtype": "F32", "shape": [2]}}, b""), "header entry 'a'"),
    (_file({"a": {"dtype": "BF16", "shape": [1], "data_offsets": [0, 2]}}, b"\0\0"), "BF16"),
    (_file({"__metadata__": {"epoch": 3}}, b""), "__metadata__"),
    (b"\x02\0\0\0\0\0\0\0[]", "not a JSON object"),
    (b"\x02\0\0\0\0\0\0\0{x", "not valid JSON"),
])
def test_a_damaged_file_is_refused_by_name(tmp_path, data, why):
    path = _damaged(tmp_path, data)
    with pytest.raises(CheckpointError, match=why) as err:
        load_safetensors(path)
    assert str(path) in str(err.value)


def test_a_missing_file_is_refused_by_name(tmp_path):
    with pytest.raises(CheckpointError, match="nope.safetensors: no such file"):
        load_safetensors(tmp_path / "nope.safetensors")


# --- export_safetensors ---------------------------------------------------------------------------
def small_resnet():
    mr.manual_seed(0)
    return mr.models.resnet8()


def test_export_of_a_model_writes_its_state_dict(tmp_path):
    model = small_resnet()
    path = export_safetensors(model, tmp_path / "m.safetensors", model_name="resnet8")
    state = model.state_dict()
    found = load_safetensors(path)
    assert_same_bits(found, state)
    assert found["bn1.num_batches_tracked"].dtype == np.int64
    assert found["bn1.num_batches_tracked"].shape == ()
    meta = safetensors_metadata(path)
    assert meta == {"format": "pt", "minires_version": mr.__version__, "model": "resnet8"}
    assert safetensors_metadata(export_safetensors(model, tmp_path / "c.safetensors"))["model"] \
        == "CifarResNet"                                                  # class name by default


def test_export_keeps_float64_and_the_model_loads_back_into_minires(tmp_path):
    model = small_resnet().to(np.float64)
    path = export_safetensors(model.state_dict(), tmp_path / "m.safetensors",
                              metadata={"epoch": "3"})
    assert "model" not in safetensors_metadata(path)                     # a bare state_dict
    assert safetensors_metadata(path)["epoch"] == "3"
    found = load_safetensors(path)
    assert found["conv1.weight"].dtype == np.float64
    assert found["bn1.num_batches_tracked"].dtype == np.int64
    twin = mr.models.resnet8().to(np.float64)
    twin.load_state_dict(found)
    x = mr.tensor(np.random.default_rng(1).standard_normal((2, 3, 8, 8)))
    model.eval(), twin.eval()
    with mr.no_grad():
        np.testing.assert_array_equal(twin(x).numpy(), model(x).numpy())


@pytest.mark.parametrize("meta, name", [
    ({"config": {"model": "resnet8", "epochs": 2}}, "resnet8"),         # python -m minires.train
    ({"experiment": "degradation", "model": "plain8"}, "plain8"),       # ... experiments
    ({}, None)])
def test_export_of_a_checkpoint_file_records_its_model_name(tmp_path, meta, name):
    model = small_resnet()
    ckpt = checkpoint.save(tmp_path / "last.npz", model, meta=meta)
    path = export_safetensors(ckpt, tmp_path / "m.safetensors")
    assert safetensors_metadata(path).get("model") == name
    assert_same_bits(load_safetensors(path), model.state_dict())


def test_export_refusals_name_the_file(tmp_path):
    model = small_resnet()
    with pytest.raises(CheckpointError, match=r"no-such-folder.*does not exist"):
        export_safetensors(model, tmp_path / "no-such-folder" / "m.safetensors")
    with pytest.raises(CheckpointError, match="missing.npz: no such file"):
        export_safetensors(tmp_path / "missing.npz", tmp_path / "m.safetensors")
    (tmp_path / "damaged.npz").write_bytes(b"not a zip file")
    with pytest.raises(CheckpointError, match="damaged.npz: cannot read it"):
        export_safetensors(str(tmp_path / "damaged.npz"), tmp_path / "m.safetensors")
    checkpoint.save(tmp_path / "empty.npz", {}, meta={"model": "resnet8"})
    with pytest.raises(CheckpointError, match="empty.npz holds no model weights"):
        export_safetensors(tmp_path / "empty.npz", tmp_path / "m.safetensors")
    (tmp_path / "m.safetensors").write_bytes(b"old")
    with pytest.raises(FileExistsError, match="m.safetensors already exists"):
        export_safetensors(model, tmp_path / "m.safetensors", overwrite=False)
    assert (tmp_path / "m.safetensors").read_bytes() == b"old"
    with pytest.raises(TypeError, match="expected a model"):
        export_safetensors(3, tmp_path / "m.safetensors")


# --- the command line -----------------------------------------------------------------------------
@pytest.fixture
def ckpt_file(tmp_path):
    model = small_resnet()
    return checkpoint.save(tmp_path / "best.npz", model, meta={"config": {"model": "resnet8"}})


def test_cli_writes_the_file_and_says_how_to_load_it(ckpt_file, tmp_path, capsys):
    target = tmp_path / "r8.safetensors"
    assert main([str(ckpt_file), "--to", str(target)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"wrote {target}: resnet8, ")
    assert out[1] == f'load it in PyTorch: model.load_state_dict(' \
                     f'safetensors.torch.load_file("{target}"))'
    assert_same_bits(load_safetensors(target), checkpoint.load(ckpt_file).model)
    assert main([str(ckpt_file)]) == 0                            # default: best.safetensors
    assert (tmp_path / "best.safetensors").is_file()
    assert main([str(ckpt_file), "--to", str(tmp_path / "n.safetensors"),
                 "--model-name", "my-net"]) == 0
    assert safetensors_metadata(tmp_path / "n.safetensors")["model"] == "my-net"


def _refused(capsys, argv, *expected):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    for part in expected:
        assert part in err
    return err


def test_cli_refuses_user_mistakes_in_one_line(ckpt_file, tmp_path, capsys):
    target = tmp_path / "m.safetensors"
    _refused(capsys, [str(tmp_path / "nope.npz"), "--to", str(target)], "nope.npz: no such file")
    (tmp_path / "bad.npz").write_bytes(b"garbage")
    _refused(capsys, [str(tmp_path / "bad.npz"), "--to", str(target)], "bad.npz")
    _refused(capsys, [str(ckpt_file), "--to", str(tmp_path / "nowhere" / "m.safetensors")],
             "nowhere", "does not exist")
    _refused(capsys, [str(ckpt_file), "--to", str(tmp_path)], "is a folder")
    _refused(capsys, [str(ckpt_file), "--to", str(ckpt_file), "--force"], "the checkpoint itself")
    assert not target.exists()

    target.write_bytes(b"old")
    _refused(capsys, [str(ckpt_file), "--to", str(target)], "already exists", "--force")
    assert target.read_bytes() == b"old"
    assert main([str(ckpt_file), "--to", str(target), "--force"]) == 0
    assert_same_bits(load_safetensors(target), checkpoint.load(ckpt_file).model)


def test_python_dash_m_minires_export(ckpt_file, tmp_path):
    def run(*args):
        return subprocess.run([sys.executable, "-m", "minires.export", *map(str, args)],
                              cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)

    done = run(ckpt_file, "--to", tmp_path / "m.safetensors")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("wrote ") and (tmp_path / "m.safetensors").is_file()
    done = run(tmp_path / "missing.npz")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip() == (f"python -m minires.export: error: checkpoint "
                                   f"{tmp_path / 'missing.npz'}: no such file")


# --- the reference implementation, where it is installed ------------------------------------------
def test_the_safetensors_package_reads_our_files_and_we_read_its(tmp_path):
    st_numpy = pytest.importorskip("safetensors.numpy")
    safe_open = pytest.importorskip("safetensors").safe_open
    tensors = mixed_tensors()
    ours = write_safetensors(tmp_path / "ours.safetensors", tensors, {"model": "x"})
    assert_same_bits(st_numpy.load_file(str(ours)), tensors)
    with safe_open(str(ours), framework="numpy") as f:
        assert f.metadata() == {"model": "x"}

    native = {k: v.astype(v.dtype.newbyteorder("="), order="C") for k, v in tensors.items()}
    theirs = tmp_path / "theirs.safetensors"
    st_numpy.save_file(native, str(theirs), metadata={"model": "y"})
    assert_same_bits(load_safetensors(theirs), tensors)
    assert safetensors_metadata(theirs) == {"model": "y"}


# --- PyTorch: same layout, same logits ------------------------------------------------------
def torch_state_dict(path):
    """The file as torch tensors, without pickle: the safetensors package where installed."""
    torch = pytest.importorskip("torch")
    try:
        import safetensors.torch
    except ImportError:
        return {k: torch.from_numpy(v) for k, v in load_safetensors(path).items()}
    return safetensors.torch.load_file(str(path))


def torch_resnets():
    """torchvision's ResNet-18 layout and the CIFAR ResNet (option A), as PyTorch modules."""
    torch = pytest.importorskip("torch")
    nn = torch.nn

    class ShortcutA(nn.Module):       # parameter-free: subsample, zero-pad the channels
        def __init__(self, in_planes, out_planes, stride):
            super().__init__()
            self.extra, self.stride = out_planes - in_planes, stride

        def forward(self, x):
            x = x[:, :, ::self.stride, ::self.stride]
            before = self.extra // 2
            return nn.functional.pad(x, (0, 0, 0, 0, before, self.extra - before))

    class BasicBlock(nn.Module):      # torchvision.models.resnet.BasicBlock
        def __init__(self, inplanes, planes, stride=1, downsample=None):
            super().__init__()
            self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(planes)
            self.relu = nn.ReLU()
            self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(planes)
            self.downsample = downsample

        def forward(self, x):
            identity = x if self.downsample is None else self.downsample(x)
            out = self.relu(self.bn1(self.conv1(x)))
            return self.relu(self.bn2(self.conv2(out)) + identity)

    def make_layer(inplanes, planes, blocks, stride, option):
        downsample = None
        if stride != 1 or inplanes != planes:
            downsample = (ShortcutA(inplanes, planes, stride) if option == "A" else
                          nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride, bias=False),
                                        nn.BatchNorm2d(planes)))
        return nn.Sequential(BasicBlock(inplanes, planes, stride, downsample),
                             *[BasicBlock(planes, planes) for _ in range(1, blocks)])

    class ResNet18(nn.Module):        # torchvision.models.resnet18
        def __init__(self, num_classes=1000):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
            self.bn1 = nn.BatchNorm2d(64)
            self.relu = nn.ReLU()
            self.maxpool = nn.MaxPool2d(3, 2, 1)
            self.layer1 = make_layer(64, 64, 2, 1, "B")
            self.layer2 = make_layer(64, 128, 2, 2, "B")
            self.layer3 = make_layer(128, 256, 2, 2, "B")
            self.layer4 = make_layer(256, 512, 2, 2, "B")
            self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
            self.fc = nn.Linear(512, num_classes)

        def forward(self, x):
            x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
            x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
            return self.fc(torch.flatten(self.avgpool(x), 1))

    class CifarResNet(nn.Module):     # He et al. 2015, section 4.2: 6n+2 layers, option A
        def __init__(self, n, num_classes=10):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(16)
            self.relu = nn.ReLU()
            self.layer1 = make_layer(16, 16, n, 1, "A")
            self.layer2 = make_layer(16, 32, n, 2, "A")
            self.layer3 = make_layer(32, 64, n, 2, "A")
            self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
            self.fc = nn.Linear(64, num_classes)

        def forward(self, x):
            x = self.relu(self.bn1(self.conv1(x)))
            x = self.layer3(self.layer2(self.layer1(x)))
            return self.fc(torch.flatten(self.avgpool(x), 1))

    return {"resnet18": ResNet18, "resnet20": lambda: CifarResNet(3)}


def with_trained_looking_batch_norm(model, seed):
    """Random BN weights, biases and running statistics: eval mode must use all of them."""
    rng = np.random.default_rng(seed)
    state = model.state_dict()
    for key in [k for k in state if k.endswith("running_mean")]:
        bn = key[:-len("running_mean")]
        shape, dtype = state[key].shape, state[key].dtype
        state[bn + "running_mean"] = rng.normal(0, 0.2, shape).astype(dtype)
        state[bn + "running_var"] = rng.uniform(0.5, 2.0, shape).astype(dtype)
        state[bn + "weight"] = rng.uniform(0.5, 1.5, shape).astype(dtype)
        state[bn + "bias"] = rng.normal(0, 0.2, shape).astype(dtype)
        state[bn + "num_batches_tracked"] = np.array(rng.integers(1, 10**6), dtype=np.int64)
    model.load_state_dict(state)
    return model


@pytest.mark.parametrize("name, input_shape", [("resnet18", (2, 3, 64, 64)),
                                               ("resnet20", (4, 3, 32, 32))])
def test_pytorch_loads_the_export_and_gives_the_same_logits(tmp_path, name, input_shape):
    torch = pytest.importorskip("torch")
    mr.manual_seed(0)
    model = with_trained_looking_batch_norm(mr.models.get_model(name), seed=1).eval()
    path = export_safetensors(model, tmp_path / f"{name}.safetensors", model_name=name)

    state = torch_state_dict(path)
    assert state["bn1.num_batches_tracked"].dtype == torch.int64
    assert state["conv1.weight"].dtype == torch.float32
    twin = torch_resnets()[name]()
    twin.load_state_dict(state, strict=True)          # same names, same shapes, nothing left
    twin.eval()

    x = np.random.default_rng(2).standard_normal(input_shape).astype(np.float32)
    with mr.no_grad():
        ours = model(mr.tensor(x)).numpy()
    with torch.no_grad():
        theirs = twin(torch.from_numpy(x)).numpy()
    assert ours.shape == theirs.shape == (input_shape[0], 1000 if name == "resnet18" else 10)
    scale = np.abs(theirs).max()
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-4 * scale)
    assert np.abs(theirs - theirs.mean(axis=0)).max() > 1e-3 * scale  # inputs really differ


# --- to_torch: the model itself as a PyTorch module -----------------------------------------------
def logits_of_both(model, net, input_shape, seed=2):
    """(minires logits, PyTorch logits, their scale) on the same random batch."""
    torch = pytest.importorskip("torch")
    dtype = next(iter(model.parameters())).dtype
    x = np.random.default_rng(seed).standard_normal(input_shape).astype(dtype)
    with mr.no_grad():
        ours = model(mr.tensor(x)).numpy()
    with torch.no_grad():
        theirs = net(torch.from_numpy(x)).numpy()
    return ours, theirs, float(np.abs(ours).max())


CIFAR = (4, 3, 32, 32)
TO_TORCH_CASES = {                          # name: (builder, input shape)
    "resnet20": (mr.models.resnet20, CIFAR),                            # option A
    "plain20": (mr.models.plain20, CIFAR),                              # no shortcuts
    "resnet20-B": (lambda: mr.models.cifar_resnet(20, option="B"), CIFAR),   # projections
    "resnet8-se": (lambda: mr.models.cifar_resnet(8, se=True), CIFAR),
    "preact_resnet20": (mr.models.preact_resnet20, CIFAR),
    "wrn16_4-dropout": (lambda: mr.models.wrn16_4(dropout=0.3), (2, 3, 32, 32)),
    "resnext29_4x16d": (mr.models.resnext29_4x16d, (2, 3, 32, 32)),
    "resnet18": (mr.models.resnet18, (2, 3, 64, 64)),                 # ImageNet layout
}


@pytest.mark.parametrize("case", list(TO_TORCH_CASES))
def test_to_torch_gives_the_same_logits_in_eval_mode(case):
    torch = pytest.importorskip("torch")
    build, input_shape = TO_TORCH_CASES[case]
    mr.manual_seed(0)
    model = with_trained_looking_batch_norm(build(), seed=1).eval()
    net = to_torch(model)
    assert isinstance(net, torch.nn.Module) and not net.training
    state, theirs_state = model.state_dict(), net.state_dict()
    assert list(theirs_state) == list(state)              # same keys, same order
    for key, value in state.items():                 # running stats and counters came along
        np.testing.assert_array_equal(theirs_state[key].numpy(), value, err_msg=key)
    counters = [k for k in state if k.endswith("num_batches_tracked")]
    assert counters and all(theirs_state[k].dtype == torch.int64 for k in counters)

    ours, theirs, scale = logits_of_both(model, net, input_shape)
    assert ours.shape == theirs.shape
    np.testing.assert_allclose(theirs, ours, rtol=1e-4, atol=1e-4 * max(scale, 1.0))
    assert np.abs(ours - ours.mean(axis=0)).max() > 1e-3 * scale      # the inputs differ


@pytest.mark.parametrize("wrong", ["padding all after", "padding all before", "odd pixels"])
def test_a_wrong_option_a_shortcut_loads_but_gives_other_logits(wrong, monkeypatch):
    """Why the tests compare logits: the shortcut has no weights, so any way of padding
    its channels loads with every key matched. Each wrong variant here must be caught."""
    torch = pytest.importorskip("torch")
    from minires.export import torch_modules

    def forward(self, x):
        x = x[:, :, 1::2, 1::2] if wrong == "odd pixels" else x[:, :, ::2, ::2]
        extra = self.out_planes - self.in_planes
        before = {"padding all after": 0, "padding all before": extra}.get(wrong, extra // 2)
        return torch.nn.functional.pad(x, (0, 0, 0, 0, before, extra - before))

    mr.manual_seed(0)
    model = with_trained_looking_batch_norm(mr.models.resnet20(), seed=1).eval()
    monkeypatch.setattr(torch_modules.ShortcutA, "forward", forward)
    net = to_torch(model)                       # loads with strict=True all the same
    ours, theirs, scale = logits_of_both(model, net, CIFAR)
    assert np.abs(ours - theirs).max() > 1e-2 * scale


def test_to_torch_keeps_float64_train_mode_and_pickles(tmp_path):
    torch = pytest.importorskip("torch")
    mr.manual_seed(0)
    model = with_trained_looking_batch_norm(mr.models.resnet8(), seed=3).to(np.float64)
    net = to_torch(model)                                    # train mode, as the model is
    assert net.training and net.conv1.weight.dtype == torch.float64
    ours, theirs, scale = logits_of_both(model.eval(), net.eval(), CIFAR)
    np.testing.assert_allclose(theirs, ours, rtol=1e-10, atol=1e-10 * scale)

    torch.save(net, tmp_path / "net.pt")                     # module-level classes: picklable
    again = torch.load(tmp_path / "net.pt", weights_only=False)
    with torch.no_grad():
        x = torch.zeros(1, 3, 32, 32, dtype=torch.float64)
        assert torch.equal(again(x), net(x))


def test_to_torch_of_a_batch_norm_folded_copy():
    pytest.importorskip("torch")
    from minires.nn.utils import fuse_conv_bn
    mr.manual_seed(0)
    model = with_trained_looking_batch_norm(mr.models.resnet8(), seed=4).eval()
    ours, theirs, scale = logits_of_both(model, to_torch(fuse_conv_bn(model)), CIFAR)
    np.testing.assert_allclose(theirs, ours, rtol=1e-4, atol=1e-4 * scale)


def test_a_safetensors_file_loads_into_the_to_torch_module(tmp_path):
    pytest.importorskip("torch")
    mr.manual_seed(0)
    model = with_trained_looking_batch_norm(mr.models.resnet20(), seed=5).eval()
    path = export_safetensors(model, tmp_path / "r20.safetensors", model_name="resnet20")
    mr.manual_seed(1)
    net = to_torch(mr.models.resnet20()).eval()              # other weights ...
    net.load_state_dict(torch_state_dict(path), strict=True)  # ... replaced by the file's
    ours, theirs, scale = logits_of_both(model, net, CIFAR)
    np.testing.assert_allclose(theirs, ours, rtol=1e-4, atol=1e-4 * scale)


def test_to_torch_refuses_what_it_cannot_translate():
    pytest.importorskip("torch")
    with pytest.raises(TypeError, match=r"layer1\.0 .*SplitAttentionBlock"):
        to_torch(mr.models.resnest20())
    with pytest.raises(TypeError, match="expected a minires Module"):
        to_torch({"conv1.weight": np.zeros((1, 1, 1, 1))})

    class Doubled(mr.nn.blocks.BasicBlock):      # a forward this file cannot know
        def forward(self, x):
            return super().forward(x) * 2

    with pytest.raises(TypeError, match="Doubled overrides ResidualBlock.forward"):
        to_torch(mr.nn.Sequential(Doubled(4, 4)))

    mixed = mr.models.resnet8()
    mixed.fc.to(np.float64)
    with pytest.raises(TypeError, match="mixes floating dtypes"):
        to_torch(mixed)


def test_to_torch_without_torch_says_pip_install_torch(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)          # import torch -> ImportError
    with pytest.raises(ImportError) as err:
        to_torch(mr.models.resnet8())
    assert "pip install torch" in str(err.value) and "\n" not in str(err.value)


class AskedTorchvision(Exception):
    """Raised by the stub torchvision: to_torch asked it for a ResNet."""


@pytest.fixture
def fake_torchvision(monkeypatch):
    """A stub ``torchvision.models.resnet`` whose ResNet records how it is called: which
    layout to_torch asks torchvision for (the real one is not installed here)."""
    pytest.importorskip("torch")
    import types
    calls = []

    def resnet_class(block, layers, **kw):
        calls.append((block, layers, kw))
        raise AskedTorchvision

    resnet = types.SimpleNamespace(BasicBlock="BasicBlock", Bottleneck="Bottleneck",
                                   ResNet=resnet_class)
    models = types.SimpleNamespace(resnet=resnet)
    monkeypatch.setitem(sys.modules, "torchvision", types.SimpleNamespace(models=models))
    monkeypatch.setitem(sys.modules, "torchvision.models", models)
    monkeypatch.setitem(sys.modules, "torchvision.models.resnet", resnet)
    return calls


@pytest.mark.parametrize("name, expected", [
    ("resnet18", ("BasicBlock", [2, 2, 2, 2], {"num_classes": 7, "groups": 1,
                                               "width_per_group": 64})),
    ("resnet50", ("Bottleneck", [3, 4, 6, 3], {"num_classes": 7, "groups": 1,
                                               "width_per_group": 64})),
    ("resnext50_32x4d", ("Bottleneck", [3, 4, 6, 3], {"num_classes": 7, "groups": 32,
                                                      "width_per_group": 4})),
])
def test_to_torch_asks_torchvision_for_the_same_layout(fake_torchvision, name, expected):
    model = mr.models.get_model(name, num_classes=7)
    with pytest.raises(AskedTorchvision):
        to_torch(model)
    assert fake_torchvision == [expected]
    to_torch(model, torchvision=False)               # minires' own modules: not asked again
    assert len(fake_torchvision) == 1


def test_to_torch_uses_torchvision_only_for_its_layouts(fake_torchvision):
    to_torch(mr.models.resnet8())                    # a CIFAR layout: never torchvision
    se_resnet = mr.models.resnet18(num_classes=3)    # an SE gate torchvision's ResNet lacks
    se_resnet.layer1[0].se = mr.nn.blocks.SqueezeExcitation(64)
    to_torch(se_resnet)
    assert fake_torchvision == []
    with pytest.raises(TypeError, match="not one of torchvision's layouts"):
        to_torch(se_resnet, torchvision=True)


def test_to_torch_torchvision_true_without_torchvision(monkeypatch):
    pytest.importorskip("torch")
    monkeypatch.setitem(sys.modules, "torchvision", None)
    with pytest.raises(ImportError, match="pip install torchvision"):
        to_torch(mr.models.resnet18(), torchvision=True)
    assert isinstance(to_torch(mr.models.resnet18(num_classes=3)), sys.modules["torch"].nn.Module)
