"""minires.checkpoint: exact round trips, arrays-only files, atomic writes, clear errors."""
import json
import os
import pickle

import numpy as np
import pytest

import minires as mr
from minires import checkpoint
from minires.checkpoint import CheckpointError
from minires.files import WriteError
from minires.optim import SGD, CosineAnnealingLR, Warmup


def small_model():
    mr.manual_seed(0)
    return mr.nn.Sequential(mr.nn.Linear(4, 3), mr.nn.BatchNorm1d(3), mr.nn.Linear(3, 2))


def trained_optimizer(model):
    opt = SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True)
    sched = Warmup(opt, 3, schedule=CosineAnnealingLR(opt, 10))
    for p in model.parameters():
        p.grad = np.full_like(p.data, 0.25)
    opt.step()
    sched.step()
    return opt, sched


def test_round_trip_is_exact(tmp_path):
    model = small_model()
    opt, sched = trained_optimizer(model)
    rng = np.random.default_rng(123)
    rng.random(5)
    meta = {"epoch": 3, "step": 17, "rng": {"data": rng.bit_generator.state},
            "best": float("-inf"), "config": {"model": "x", "milestones": [1, 2], "out": None},
            "array_in_meta": np.arange(3)}
    path = checkpoint.save(tmp_path / "ck.npz", model, opt, sched, meta)

    ck = checkpoint.load(path)
    for name, array in model.state_dict().items():
        assert ck.model[name].dtype == array.dtype
        np.testing.assert_array_equal(ck.model[name], array)
    tracked = "1.num_batches_tracked"
    assert ck.model[tracked].dtype == model.state_dict()[tracked].dtype
    saved = opt.state_dict()
    assert set(ck.optimizer["state"]) == set(saved["state"])           # int keys come back as ints
    for i, state in saved["state"].items():
        np.testing.assert_array_equal(ck.optimizer["state"][i]["momentum_buffer"],
                                      state["momentum_buffer"])
    assert ck.optimizer["param_groups"][0]["lr"] == saved["param_groups"][0]["lr"]
    assert ck.scheduler == sched.state_dict()
    assert ck.meta["rng"]["data"] == rng.bit_generator.state             # 128-bit ints intact
    assert ck.meta["best"] == float("-inf") and ck.meta["config"]["out"] is None
    np.testing.assert_array_equal(ck.meta["array_in_meta"], np.arange(3))
    assert ck.minires_version == mr.__version__

    restored = np.random.default_rng()
    restored.bit_generator.state = ck.meta["rng"]["data"]
    assert restored.random() == rng.random()


def test_restore_continues_training_identically(tmp_path):
    model = small_model()
    opt, sched = trained_optimizer(model)
    checkpoint.save(tmp_path / "ck.npz", model, opt, sched)
    twin = small_model()
    twin_opt = SGD(twin.parameters(), lr=0.1, momentum=0.9, nesterov=True)
    twin_sched = Warmup(twin_opt, 3, schedule=CosineAnnealingLR(twin_opt, 10))
    checkpoint.restore(tmp_path / "ck.npz", twin, twin_opt, twin_sched)
    for m, o, s in ((model, opt, sched), (twin, twin_opt, twin_sched)):
        for p in m.parameters():
            p.grad = np.full_like(p.data, -0.5)
        o.step()
        s.step()
    for a, b in zip(model.state_dict().values(), twin.state_dict().values()):
        np.testing.assert_array_equal(a, b)


def test_file_holds_arrays_only_and_json_metadata(tmp_path):
    path = checkpoint.save(tmp_path / "ck.npz", small_model(), meta={"note": "hi"})
    with np.load(path, allow_pickle=False) as npz:
        assert all(npz[k].dtype != object for k in npz.files)
        document = json.loads(npz["__meta__"].tobytes())
    assert document["format"] == "minires-checkpoint" and document["meta"] == {"note": "hi"}
    assert "model/0.weight" in np.load(path).files


def test_save_refuses_what_json_cannot_hold(tmp_path):
    with pytest.raises(TypeError, match="cannot store meta/bad of type object"):
        checkpoint.save(tmp_path / "ck.npz", {"w": np.ones(2)}, meta={"bad": object()})
    assert list(tmp_path.iterdir()) == []


def test_full_disk_mid_save_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    path = checkpoint.save(tmp_path / "last.npz", small_model(), meta={"epoch": 1})
    before = path.read_bytes()

    def write_half_then_fail(fileobj, arrays):
        fileobj.write(b"PK\x03\x04 half a zip file")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoint, "_write_npz", write_half_then_fail)
    with pytest.raises(OSError, match="No space left on device"):
        checkpoint.save(path, small_model(), meta={"epoch": 2})
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["last.npz"]      # no temporary file left
    assert checkpoint.load(path).meta == {"epoch": 1}


def test_loading_never_runs_code(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    evil = np.empty(1, dtype=object)
    evil[0] = Evil()
    path = tmp_path / "evil.npz"
    np.savez(path, **{"model/w": evil, "__meta__": np.frombuffer(b"{}", np.uint8)})
    with pytest.raises(CheckpointError, match="evil.npz: cannot read it as a .npz file of arrays"):
        checkpoint.load(path)
    assert not marker.exists()
    pickled = tmp_path / "pickled.npz"
    pickled.write_bytes(pickle.dumps(Evil()))
    with pytest.raises(CheckpointError, match="pickled.npz: cannot read it"):
        checkpoint.load(pickled)
    assert not marker.exists()


def test_bad_files_are_named(tmp_path):
    with pytest.raises(CheckpointError, match="nope.npz: no such file"):
        checkpoint.load(tmp_path / "nope.npz")
    np.savez(tmp_path / "plain.npz", w=np.ones(2))
    with pytest.raises(CheckpointError, match="plain.npz: no __meta__ entry"):
        checkpoint.load(tmp_path / "plain.npz")
    future = {"format": "minires-checkpoint", "format_version": 99}
    np.savez(tmp_path / "future.npz", __meta__=np.frombuffer(json.dumps(future).encode(), np.uint8))
    with pytest.raises(CheckpointError, match="format version 99 is newer"):
        checkpoint.load(tmp_path / "future.npz")


def test_incompatible_model_lists_the_differences(tmp_path):
    path = checkpoint.save(tmp_path / "ck.npz", small_model())
    nn = mr.nn
    other = nn.Sequential(nn.Linear(4, 5), nn.BatchNorm1d(5), nn.Linear(5, 2), nn.Linear(2, 2))
    with pytest.raises(CheckpointError) as err:
        checkpoint.restore(path, other)
    message = str(err.value)
    assert "does not fit this model (Sequential)" in message
    assert "missing from the checkpoint (2): 3.weight, 3.bias" in message
    assert "0.weight: model has shape (5, 4), checkpoint (3, 4)" in message
    assert "1.running_mean: model has shape (5,), checkpoint (3,)" in message
    fewer = mr.nn.Sequential(mr.nn.Linear(4, 3))
    with pytest.raises(CheckpointError,
                       match=r"not in the model \(7\): 1.weight, 1.bias, 1.running_mean"):
        checkpoint.restore(path, fewer)


def test_save_into_a_missing_folder_names_the_target(tmp_path):
    target = tmp_path / "no-such-folder" / "model.npz"
    with pytest.raises(WriteError, match="checkpoint .*model.npz: "
                                         "the folder .*no-such-folder does not exist"):
        checkpoint.save(target, {"w": np.zeros(2, dtype=np.float32)})


def test_checkpoints_get_the_usual_file_permissions(tmp_path):
    """Not mkstemp's owner-only 0o600: a checkpoint is an ordinary file (0o666 less the umask)."""
    umask = os.umask(0o022)
    try:
        path = checkpoint.save(tmp_path / "m.npz", {"w": np.zeros(2, dtype=np.float32)})
    finally:
        os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o644
