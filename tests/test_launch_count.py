"""benchmarks/launch_count.py: kernel launches and host syncs of the CuPy path, counted on the CPU.

The counting stand-in for CuPy runs the GPU branches of minires (with the kernels on the CPU
emulation of tests/kernel_emulation.py); these tests pin down what the fused kernels and the
host-side label check buy: one launch per parameter for SGD, 9 per batch-norm layer and step,
and no wait for the GPU in cross_entropy when the labels come from the host; conv2d's GPU route
(per-geometry im2col / col2im, no wide grid) against NumPy's; and the training loop on the
CuPy path: no wait for the GPU within an epoch, the epoch's sums read back when needed.
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
@pytest.mark.parametrize("loop", ["trainer", "read-each-step"])
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
    assert not [site for site in counts.sites if "nn/layers.py" in site]   # BN counts on the host
    if loop == "read-each-step":   # the loss, the correct count, the device labels' range
        assert dict(counts.syncs) == {"item": 1, "int()": 1, "get": 1}
    else:                          # the Trainer's step: nothing read back
        assert not counts.syncs
        assert counts.launches["kernel minires_epoch_sums"] == 1


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


# --- the training loop on the CuPy path -----------------------------------------------------------
class _Steps(mr.train.Callback):
    """Each step's StepStats and the syncs counted so far when it ended."""

    def __init__(self):
        self.stats, self.syncs = [], []

    def on_step_end(self, trainer, stats):
        self.stats.append(stats)
        self.syncs.append(sum(lc.COUNTS.syncs.values()))


def _fit_on_the_stand_in(tmp_path=None, callbacks=(), progress=False, **kwargs):
    from tests.test_train import config, new_model, tiny_data
    with lc.fake_cupy():
        lc.COUNTS.__init__()
        return mr.train.fit(new_model(), tiny_data(), config(device="cuda", **kwargs),
                            out=tmp_path, callbacks=callbacks, progress=progress, verbose=False)


@pytest.mark.skipif(shutil.which("g++") is None, reason="the kernel emulation needs g++")
def test_the_trainer_reads_nothing_back_during_an_epoch_on_the_cupy_path():
    """On a GPU a training step waits for nothing: the loss and the count of correct
    predictions stay on the device (StepStats, EpochTotals) until the epoch ends; the epoch's
    row is what reading and adding every step's numbers gives, exactly; a StepStats read
    later is still a float and an int, one wait for each."""
    steps = _Steps()
    result = _fit_on_the_stand_in(callbacks=[steps], progress=False)
    by_epoch = [steps.syncs[e * 6:(e + 1) * 6] for e in range(3)]
    assert all(len(set(syncs)) == 1 for syncs in by_epoch)     # no wait within an epoch
    with lc.fake_cupy():
        stats = steps.stats[0]
        lc.COUNTS.__init__()
        assert type(stats.loss) is float and type(stats.correct) is int
        assert stats.loss == stats.loss and dict(lc.COUNTS.syncs) == {"float()": 1, "int()": 1}
        for epoch, row in enumerate(result.history, 1):
            mine = [s for s in steps.stats if s.epoch == epoch]
            loss_sum = 0.0
            for s in mine:
                loss_sum += s.loss * s.examples
            assert row["train_loss"] == loss_sum / 96                # bit for bit
            assert row["train_acc"] == sum(s.correct for s in mine) / 96


@pytest.mark.skipif(shutil.which("g++") is None, reason="the kernel emulation needs g++")
def test_the_trainer_on_the_cupy_path_trains_as_on_the_cpu():
    from tests.test_train import run
    cpu = run()
    gpu = _fit_on_the_stand_in(progress=False)
    for got, want in zip(gpu.history, cpu.history):
        assert got["train_acc"] == want["train_acc"]
        np.testing.assert_allclose(got["train_loss"], want["train_loss"], rtol=1e-6)


@pytest.mark.skipif(shutil.which("g++") is None, reason="the kernel emulation needs g++")
def test_the_progress_bar_reads_the_gpu_at_most_every_few_seconds(monkeypatch):
    """The bar's loss and accuracy on a GPU: read back only when the bar is shown, at most
    every Trainer.POSTFIX_SECONDS (each read is one wait for the GPU)."""
    from minires.train.loop import Trainer
    reads = []
    real = Trainer._settle
    monkeypatch.setattr(Trainer, "_settle", lambda self: reads.append(self.global_step) or
                        real(self))
    for seconds, progress in ((0.0, True), (3600.0, True), (0.0, False)):
        monkeypatch.setattr(Trainer, "POSTFIX_SECONDS", seconds)
        reads.clear()
        _fit_on_the_stand_in(epochs=1, progress=progress)
        shown = [1, 2, 3, 4, 5, 6] if seconds == 0 else [1]
        assert reads[:-2] == (shown if progress else [])          # then the epoch's end
        assert reads[-2:] == [6, 6]


@pytest.mark.skipif(shutil.which("g++") is None, reason="the kernel emulation needs g++")
def test_a_nan_loss_on_the_cupy_path_stops_at_the_next_read_and_saves_nothing(tmp_path):
    """On a GPU the loss is checked when it is read back (here: the end of epoch 2), not at
    each step; nothing diverged is saved, the checkpoint of epoch 1 stays."""
    from tests.test_train import At

    def poison(trainer):
        saved["bytes"] = (tmp_path / "last.npz").read_bytes()
        trainer.model[1].weight.data[...] = lc.DeviceArray(np.array(np.nan, np.float32))

    saved = {}
    with pytest.raises(mr.train.NonFiniteLossError,
                       match=r"training loss became nan .*epoch 2.* between iteration 7 and 12; "
                             r"on a GPU .*last.npz, is intact"):
        _fit_on_the_stand_in(tmp_path, callbacks=[At(poison, step=8)], progress=False)
    assert (tmp_path / "last.npz").read_bytes() == saved["bytes"]


@pytest.mark.skipif(shutil.which("g++") is None, reason="the kernel emulation needs g++")
def test_a_stop_mid_epoch_on_the_cupy_path_saves_the_epochs_sums(tmp_path):
    from minires import checkpoint
    from tests.test_train import At
    steps = _Steps()
    stop = At(lambda t: t.request_stop(), step=9)
    result = _fit_on_the_stand_in(tmp_path, callbacks=[steps, stop], progress=False)
    assert result.status == "interrupted"
    totals = checkpoint.load(tmp_path / "last.npz").meta["epoch_totals"]
    with lc.fake_cupy():
        mine = steps.stats[6:9]
        loss_sum = 0.0
        for s in mine:
            loss_sum += s.loss * s.examples
        assert (totals["loss_sum"], totals["correct"], totals["seen"]) == \
            (loss_sum, sum(s.correct for s in mine), 48)


# --- batch norm's counter stays on the host -------------------------------------------------------
def test_num_batches_tracked_stays_on_the_host_and_counts_without_a_launch(tmp_path):
    """BatchNorm's num_batches_tracked is a host buffer (Module._host_buffers): NumPy on every
    device, so counting a batch launches nothing and the cumulative average (momentum=None)
    reads it without a wait; state_dict, load_state_dict and checkpoints carry it as on the
    CPU."""
    from minires import checkpoint
    nn = mr.nn
    mr.manual_seed(0)
    x_host = np.random.default_rng(0).standard_normal((8, 3)).astype(np.float32)
    cpu = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4, momentum=None))
    mr.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4, momentum=None))
    with lc.fake_cupy():
        model.to("cuda")
        bn = model[1]
        assert isinstance(bn.num_batches_tracked.data, np.ndarray)
        assert bn.running_mean.device == "cuda" and bn.num_batches_tracked.device == "cpu"
        x = mr.tensor(x_host, device="cuda")
        model(x)
        _, counts = _counted(lambda: model(x))
        assert not [site for site in counts.sites if "nn/layers.py" in site], counts.sites
        assert not counts.syncs
        assert int(bn.num_batches_tracked.item()) == 2
        state = model.state_dict()
        assert isinstance(state["1.num_batches_tracked"], np.ndarray)
        assert backend.is_cupy_array(state["1.running_mean"])
        checkpoint.save(tmp_path / "ck.npz", model)
        twin = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4, momentum=None)).to("cuda")
        checkpoint.restore(tmp_path / "ck.npz", twin)
        assert int(twin[1].num_batches_tracked.item()) == 2
        assert isinstance(twin[1].num_batches_tracked.data, np.ndarray)
        twin[1].num_batches_tracked.data = backend.to_device(np.array(5), "cuda")
        twin.to("cuda")                                  # put back on the host by to()
        assert isinstance(twin[1].num_batches_tracked.data, np.ndarray)
        model.to("cpu")
    cpu(mr.tensor(x_host))
    cpu(mr.tensor(x_host))                               # the same running statistics
    for name, value in cpu.state_dict().items():
        np.testing.assert_allclose(model.state_dict()[name], value, rtol=1e-6, err_msg=name)
