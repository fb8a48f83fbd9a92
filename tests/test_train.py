"""minires.train: the loop (fit), exact resume, signals, NaN, disk errors, recipes, and the CLI.

Runs on a tiny model and tiny random data (a few steps per epoch), so each run takes
well under a second; the CLI test writes a tiny archive in the official binary format.
"""
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import minires as mr
from minires import checkpoint
from minires.data import CIFAR10, Split
from minires.data.transforms import normalize
from minires.train import (
    RECIPES,
    Callback,
    NonFiniteLossError,
    TrainConfig,
    evaluate,
    evaluate_views,
    fit,
    main,
    recipe_config,
)
from tests.test_data import fake_cifar, write_binary

REPO = Path(__file__).resolve().parents[1]
TINY = "tests.test_train:tiny_net"


def tiny_net(num_classes=10):
    """Flatten -> Linear -> BatchNorm -> ReLU -> Dropout -> Linear: weights, BN buffers and
    dropout randomness, the three things an exact resume must carry."""
    nn = mr.nn
    return nn.Sequential(nn.Flatten(), nn.Linear(3072, 16), nn.BatchNorm1d(16), nn.ReLU(),
                         nn.Dropout(0.25), nn.Linear(16, num_classes))


def new_model():
    mr.manual_seed(0)
    return tiny_net()


def tiny_data(n_train=96, n_test=32, n_val=0, seed=0):
    rng = np.random.default_rng(seed)

    def split(n):
        return Split(rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8), rng.integers(0, 10, n))
    return CIFAR10(train=split(n_train), test=split(n_test), val=split(n_val) if n_val else None)


def config(**kw):
    """6 steps per epoch on tiny_data, a warm-up into a cosine schedule, nesterov SGD."""
    base = dict(model=TINY, epochs=3, batch_size=16, lr=0.05, warmup_epochs=0.5,
                label_smoothing=0.1, prefetch=0)
    return TrainConfig(**{**base, **kw})


def run(out=None, callbacks=(), resume=None, data=None, **kw):
    return fit(new_model(), data or tiny_data(), config(**kw), out=out, resume=resume,
               callbacks=callbacks, progress=False, verbose=False)


def new_model_from(out):
    """The model of the run folder's last checkpoint."""
    model = new_model()
    checkpoint.load_model_state(model, final_weights(out))
    return model


def final_weights(out):
    return checkpoint.load(Path(out) / "last.npz").model


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert np.array_equal(a[k], b[k]), f"{k} differs"


def without_times(history):
    return [{k: v for k, v in row.items() if "time" not in k and k != "img_per_s"}
            for row in history]


class At(Callback):
    """Call ``action(trainer)`` after global step ``step`` or at the end of epoch ``epoch``."""

    def __init__(self, action, step=None, epoch=None):
        self.action, self.step, self.epoch = action, step, epoch

    def on_step_end(self, trainer, stats):
        if stats.step == self.step:
            self.action(trainer)

    def on_epoch_end(self, trainer, metrics):
        if metrics["epoch"] == self.epoch:
            self.action(trainer)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One uninterrupted 3-epoch run: the yardstick for the resume tests."""
    out = tmp_path_factory.mktemp("reference")
    result = run(out)
    return out, result


# --- the run folder -------------------------------------------------------------------------------
def test_fit_writes_the_run_folder(reference):
    out, result = reference
    assert result.status == "completed" and result.epoch == 3 and result.global_step == 18
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    for key in ("train_loss", "train_acc", "test_loss", "test_acc", "lr", "epoch_time",
                "img_per_s"):
        assert all(np.isfinite(r[key]) for r in rows), key
    assert rows[0]["lr"] > rows[2]["lr"] > 0                          # cosine decays
    assert json.loads((out / "config.json").read_text())["model"] == TINY
    summary = json.loads((out / "summary.json").read_text())
    assert summary["final"]["test_acc"] == rows[-1]["test_acc"] and summary["steps"] == 18
    meta = checkpoint.load(out / "last.npz").meta
    assert (meta["epoch"], meta["batch"], meta["global_step"]) == (3, 0, 18)
    best = checkpoint.load(out / "best.npz").meta
    assert max(r["test_acc"] for r in rows) == rows[best["epoch"] - 1]["test_acc"]
    try:
        import matplotlib  # noqa: F401
        assert (out / "curves.png").stat().st_size > 1000
    except ImportError:
        assert not (out / "curves.png").exists()


class Steps(Callback):
    """Every step's StepStats, and what the trainer says at that moment."""

    def __init__(self):
        self.stats, self.positions = [], []

    def on_step_end(self, trainer, stats):
        self.stats.append(stats)
        self.positions.append((trainer.global_step, trainer.epoch, trainer.batch))


def test_callbacks_get_each_steps_numbers_and_they_add_up_to_the_epochs_row():
    steps = Steps()
    result = run(callbacks=[steps], epochs=2, limit_train=88)          # 6 steps, the last of 8
    stats = steps.stats
    assert [(s.step, s.epoch, s.batch) for s in stats] == \
        [(e * 6 + b, e + 1, b) for e in range(2) for b in range(1, 7)]
    assert steps.positions == [(s.step, s.epoch - 1, s.batch) for s in stats]
    assert [s.examples for s in stats[:6]] == [16] * 5 + [8]
    for epoch, row in enumerate(result.history, 1):
        mine = [s for s in stats if s.epoch == epoch]
        seen = sum(s.examples for s in mine)
        assert row["train_loss"] == pytest.approx(sum(s.loss * s.examples for s in mine) / seen)
        assert row["train_acc"] == sum(s.correct for s in mine) / seen
        assert row["lr"] == mine[-1].lr
    assert stats[0].lr == pytest.approx(0.1 * 0.05)                 # the warm-up's first step
    assert stats[0].accuracy == stats[0].correct / 16
    with pytest.raises(AttributeError):
        stats[0].loss = 0.0                                           # frozen: a record


def test_a_resumed_epoch_reports_the_sums_of_the_steps_before_the_stop(reference, tmp_path):
    """The epoch's running sums travel in the checkpoint: after a stop mid-epoch the resumed
    run's row for that epoch equals the uninterrupted run's (checked above for the weights)."""
    _, ref = reference
    steps = Steps()
    run(tmp_path, callbacks=[At(lambda t: t.request_stop(), step=9)])
    resumed = run(tmp_path, resume=tmp_path / "last.npz", callbacks=[steps])
    assert steps.stats[0].step == 10 and steps.stats[0].batch == 4
    assert without_times(resumed.history) == without_times(ref.history)


def test_training_lowers_the_loss_on_data_it_can_fit():
    data = tiny_data(n_train=32, n_test=32)
    data.test = data.train                                            # memorise 32 images
    result = fit(new_model(), data, config(epochs=15, lr=0.05, augment=False, label_smoothing=0.0),
                 progress=False, verbose=False)
    assert result.history[-1]["train_loss"] < 0.5 * result.history[0]["train_loss"]
    assert result.history[-1]["test_acc"] > 0.8


# --- exact resume ---------------------------------------------------------------------------------
def test_resume_after_an_epoch_is_bit_identical(reference, tmp_path):
    ref_out, ref = reference
    stopped = run(tmp_path, callbacks=[At(lambda t: t.request_stop(), epoch=1)])
    assert stopped.status == "interrupted" and stopped.epoch == 1
    meta = checkpoint.load(tmp_path / "last.npz").meta
    assert (meta["epoch"], meta["batch"]) == (1, 0)
    resumed = run(tmp_path, resume=tmp_path / "last.npz")
    assert resumed.status == "completed" and resumed.global_step == 18
    assert_same_weights(final_weights(tmp_path), final_weights(ref_out))
    assert without_times(resumed.history) == without_times(ref.history)
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_mid_epoch_saves_and_resume_is_bit_identical(reference, tmp_path, sig):
    ref_out, ref = reference
    send = At(lambda t: os.kill(os.getpid(), sig), step=10)          # epoch 2, after its 4th step
    before = signal.getsignal(sig)
    stopped = run(tmp_path, callbacks=[send], prefetch=2)
    assert stopped.status == "interrupted" and stopped.signal == sig
    assert signal.getsignal(sig) is before                            # handlers restored
    assert not any(t.name == "minires-prefetch" for t in threading.enumerate())
    meta = checkpoint.load(tmp_path / "last.npz").meta
    assert (meta["epoch"], meta["batch"], meta["global_step"]) == (1, 4, 10)
    assert meta["epoch_totals"]["seen"] == 64
    resumed = run(tmp_path, resume=tmp_path / "last.npz", prefetch=2)
    assert resumed.status == "completed"
    assert_same_weights(final_weights(tmp_path), final_weights(ref_out))
    assert without_times(resumed.history) == without_times(ref.history)


def test_resume_checks_what_must_not_change(reference, tmp_path):
    ref_out, _ = reference
    with pytest.raises(ValueError, match="different batch_size .*checkpoint: 16, now: 32"):
        run(tmp_path, resume=ref_out / "last.npz", batch_size=32)
    mr.manual_seed(0)
    other = mr.nn.Sequential(mr.nn.Flatten(), mr.nn.Linear(3072, 8), mr.nn.BatchNorm1d(8),
                             mr.nn.ReLU(), mr.nn.Dropout(0.25), mr.nn.Linear(8, 10))
    with pytest.raises(checkpoint.CheckpointError,
                       match=r"1.weight: model has shape \(8, 3072\), checkpoint \(16, 3072\)"):
        fit(other, tiny_data(), config(), resume=ref_out / "last.npz", progress=False,
            verbose=False)


# --- failures -------------------------------------------------------------------------------------
def test_nan_loss_stops_with_a_message_and_keeps_the_last_checkpoint(tmp_path):
    saved = {}

    def poison(trainer):
        saved["bytes"] = (tmp_path / "last.npz").read_bytes()
        trainer.model[1].weight.data[...] = np.nan

    with pytest.raises(NonFiniteLossError, match=r"training loss is nan at epoch 2, step 3 .*"
                                                 r"last.npz, is intact"):
        run(tmp_path, callbacks=[At(poison, step=8)])
    assert (tmp_path / "last.npz").read_bytes() == saved["bytes"]
    assert checkpoint.load(tmp_path / "last.npz").meta["epoch"] == 1


def test_full_disk_during_a_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    real_write = checkpoint._write_npz
    calls = []

    def fill_the_disk(fileobj, arrays):
        calls.append(1)
        if len(calls) > 2:        # epoch 1 writes last.npz and best.npz, then the disk is full
            fileobj.write(b"PK partial")
            raise OSError(28, "No space left on device")
        real_write(fileobj, arrays)

    monkeypatch.setattr(checkpoint, "_write_npz", fill_the_disk)
    with pytest.raises(OSError, match="No space left on device"):
        run(tmp_path)
    assert checkpoint.load(tmp_path / "last.npz").meta["epoch"] == 1
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_unwritable_run_folder_fails_before_training(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    began = []
    with pytest.raises(OSError, match="cannot write to the run folder .*file/run"):
        run(tmp_path / "file" / "run", callbacks=[At(began.append, step=1)])
    assert not began


def test_an_existing_run_is_not_overwritten(reference):
    ref_out, _ = reference
    before = (ref_out / "last.npz").read_bytes()
    with pytest.raises(FileExistsError, match="holds an earlier run .*last.npz"):
        run(ref_out)
    assert (ref_out / "last.npz").read_bytes() == before


def test_a_diverged_run_folder_is_refused_without_a_resume_that_cannot_work(tmp_path):
    """A run that diverged in epoch 1 from Python leaves config.json and no checkpoint: a new
    run there is refused, and the message says what is there and that nothing can be resumed,
    instead of suggesting --resume .../last.npz, which does not exist."""
    def poison(trainer):
        trainer.model[1].weight.data[...] = np.nan

    with pytest.raises(NonFiniteLossError, match="no checkpoint was written"):
        run(tmp_path, callbacks=[At(poison, step=2)])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json"]
    with pytest.raises(FileExistsError) as refused:
        run(tmp_path)
    message = str(refused.value)
    assert "holds files of an earlier run (config.json) but no checkpoint (last.npz), so there " \
           "is nothing to resume: remove it, or choose another run folder (--out)" in message
    assert "--resume" not in message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json"]


def test_an_earlier_run_with_a_checkpoint_is_refused_with_the_resume_to_use(reference):
    ref_out, _ = reference
    with pytest.raises(FileExistsError) as refused:
        run(ref_out)
    assert f"or continue it (--resume {ref_out / 'last.npz'})" in str(refused.value)


def test_a_folder_with_any_earlier_run_file_is_refused(tmp_path):
    """last.npz deleted, best.npz and metrics.jsonl still there: a new run must not overwrite
    best.npz or append to the metrics."""
    (tmp_path / "best.npz").write_bytes(b"earlier")
    (tmp_path / "metrics.jsonl").write_text('{"epoch": 1}\n')
    with pytest.raises(FileExistsError, match="best.npz, metrics.jsonl.*nothing to resume"):
        run(tmp_path)
    assert (tmp_path / "best.npz").read_bytes() == b"earlier"
    assert (tmp_path / "metrics.jsonl").read_text() == '{"epoch": 1}\n'


# --- options --------------------------------------------------------------------------------------
def test_max_steps_ends_the_run_mid_epoch():
    result = run(epochs=None, max_steps=8)
    assert result.global_step == 8 and result.epoch == 2 and len(result.history) == 2


def test_validation_split_is_evaluated_and_chooses_best(tmp_path):
    result = run(tmp_path, data=tiny_data(n_val=16), epochs=2)
    assert {"val_loss", "val_acc", "test_loss", "test_acc"} <= set(result.history[0])
    assert result.best["split"] == "val"


def test_limits_use_the_first_examples():
    result = run(limit_train=40, limit_test=8, epochs=1)
    assert result.global_step == 3                                    # ceil(40 / 16)


def test_flip_eval_averages_the_logits_of_each_image_and_its_mirror():
    model, test = new_model(), tiny_data().test
    model.eval()
    with mr.no_grad():
        x = normalize(test.images)                                        # (N, C, H, W)
        a = model(mr.Tensor(x)).data
        b = model(mr.Tensor(np.ascontiguousarray(x[..., ::-1]))).data     # W reversed
    logits = (a + b) / 2
    shifted = logits - logits.max(axis=1, keepdims=True)
    logp = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    loss, acc = evaluate(model, test, 8, flip=True)
    assert loss == pytest.approx(-logp[np.arange(len(test)), test.labels].mean(), rel=1e-5)
    assert acc == pytest.approx((logits.argmax(axis=1) == test.labels).mean())
    assert evaluate(model, test, 8) == pytest.approx(evaluate(model, test, 32))
    assert evaluate(model, test, 8, flip=True) != pytest.approx(evaluate(model, test, 8))
    both = evaluate_views(model, test, 8)                  # one pass serves both views
    assert both[False] == pytest.approx(evaluate(model, test, 8))
    assert both[True] == pytest.approx((loss, acc))
    assert list(evaluate_views(model, test, 8, flip=False)) == [False]


def test_flip_eval_is_reported_for_the_last_epoch_only(tmp_path):
    result = run(tmp_path, epochs=2, flip_eval=True)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert "test_flip_acc" not in rows[0] and "test_flip_acc" in rows[1]
    assert rows[1]["test_flip_acc"] == pytest.approx(evaluate(new_model_from(tmp_path),
                                                              tiny_data().test, flip=True)[1])
    assert result.summary["final"]["test_flip_loss"] == pytest.approx(rows[1]["test_flip_loss"])


def test_recipes():
    paper = recipe_config("paper")
    assert (paper.lr, paper.momentum, paper.weight_decay, paper.batch_size) == (0.1, 0.9, 1e-4, 128)
    assert (paper.schedule, paper.milestones, paper.max_steps, paper.val_split) == \
        ("step", [32000, 48000], 64000, 5000)
    assert not paper.nesterov and paper.decay_bn_bias and paper.model == "resnet20"
    r110 = recipe_config("paper", model="resnet110")
    assert (r110.warmup_steps, r110.warmup_mode, r110.warmup_factor) == (400, "constant", 0.1)
    fast = recipe_config("fast")
    assert fast.model == "resnet20" and fast.epochs == RECIPES["fast"]["epochs"]
    assert fast.batch_size == 128 and fast.lr == pytest.approx(0.1) and fast.flip_eval
    assert not paper.flip_eval
    assert recipe_config("fast", batch_size=128).lr == pytest.approx(0.1)
    assert fast.nesterov and not fast.decay_bn_bias and fast.label_smoothing == 0.1
    assert recipe_config("fast", batch_size=256).lr == pytest.approx(0.2)
    assert recipe_config("fast", batch_size=256, lr=0.05).lr == 0.05
    with pytest.raises(ValueError, match="unknown recipe 'slow'; valid recipes: fast, paper"):
        recipe_config("slow")
    with pytest.raises(ValueError, match="unknown schedule 'linear'; valid: cosine, onecycle"):
        TrainConfig(schedule="linear")


@pytest.mark.parametrize("setting, value, message", [
    ("lr", 0.0, "lr must be > 0, got 0.0"),
    ("lr", float("nan"), "lr must be a finite number, got nan"),
    ("warmup_factor", float("inf"), "warmup_factor must be a finite number, got inf"),
    ("momentum", 1.5, "momentum must be >= 0 and <= 1, got 1.5"),
    ("batch_size", 0, "batch_size must be >= 1, got 0"),
    ("limit_train", 0, "limit_train must be >= 1, got 0"),
    ("crop_padding", -1, "crop_padding must be >= 0, got -1"),
    ("warmup_mode", "cubic", "unknown warmup_mode 'cubic'; valid: linear, constant"),
])
def test_train_config_checks_each_setting_against_its_declaration(setting, value, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        TrainConfig(**{setting: value})


def test_a_new_setting_is_one_declaration(monkeypatch):
    """The command line's options and ranges come from TrainConfig's fields: a field declared
    with a help text is an option, with its bounds checked, and goes into the config."""
    import dataclasses

    from minires.train import cli, recipes

    flags = {f.name: recipes.flag_of(f) for f in recipes.command_line_settings()}
    assert flags["weight_decay"] == "--wd" and flags["augment"] == "--no-augment"
    assert "warmup_mode" not in flags and "recipe" not in flags

    @dataclasses.dataclass
    class Config(TrainConfig):
        dropout_rate: float = recipes.setting(0.0, "a new option", bounds=recipes.Range(0, 1))

    monkeypatch.setattr(recipes, "TrainConfig", Config)
    monkeypatch.setattr(cli, "TrainConfig", Config)
    monkeypatch.setattr(cli, "recipe_config", lambda recipe, **given: Config(**given))
    args = cli.build_parser().parse_args(["cifar", "--dropout-rate", "2"])
    assert cli.invalid_number(args) == "--dropout-rate: must be >= 0 and <= 1, got 2.0"
    args = cli.build_parser().parse_args(["cifar", "--dropout-rate", "0.5", "--lr", "0.2"])
    assert cli.invalid_number(args) is None
    assert cli.config_from_args(args).dropout_rate == 0.5
    with pytest.raises(ValueError, match="dropout_rate must be >= 0 and <= 1, got 2"):
        Config(dropout_rate=2)


# --- the command line -----------------------------------------------------------------------------
def test_cli_help_explains_every_flag(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["cifar", "--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--model", "--recipe", "--epochs", "--batch-size", "--lr", "--momentum", "--wd",
                 "--schedule", "--label-smoothing", "--device", "--seed", "--data-dir", "--out",
                 "--resume", "--eval-only", "--limit-train", "--limit-test", "--threads",
                 "--val-split", "--prefetch", "--max-steps", "--warmup-epochs"):
        assert flag in text, flag
    assert "paper" in text and "fast" in text


def test_cli_bad_names_list_the_valid_ones(tmp_path, capsys):
    assert main(["cifar", "--model", "resnet9000", "--out", str(tmp_path / "r"),
                 "--data-dir", str(tmp_path), "--no-download"]) == 2
    assert "unknown model 'resnet9000'; valid names: " in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["cifar", "--recipe", "slow"])
    assert "invalid choice: 'slow' (choose from" in capsys.readouterr().err


def test_cli_unwritable_out_fails_before_loading_data(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    assert main(["cifar", "--out", str(tmp_path / "file" / "run"), "--data-dir",
                 str(tmp_path / "no-data"), "--no-download", "--model", TINY]) == 1
    assert "cannot write to the run folder" in capsys.readouterr().err


def test_cli_one_epoch_then_eval_only_then_resume(tmp_path, capsys):
    data_dir = tmp_path / "data"
    write_binary(data_dir, fake_cifar(n=20))
    out = tmp_path / "run"
    command = [sys.executable, "-m", "minires.train", "cifar", "--data-dir", str(data_dir),
               "--no-download", "--out", str(out), "--model", TINY, "--epochs", "1",
               "--batch-size", "16", "--limit-train", "64", "--limit-test", "16", "--no-progress"]
    proc = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    assert "epoch   1/1" in proc.stdout + proc.stderr
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 1 and rows[0]["step"] == 4
    config = json.loads((out / "config.json").read_text())
    assert config["model"] == TINY and config["recipe"] == "fast" and config["limit_train"] == 64
    assert (out / "last.npz").is_file() and (out / "best.npz").is_file()

    assert main(["cifar", "--eval-only", str(out / "last.npz"), "--data-dir", str(data_dir),
                 "--no-download", "--limit-test", "16"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["test_acc"] == pytest.approx(rows[0]["test_acc"])
    assert report["test_loss"] == pytest.approx(rows[0]["test_loss"], rel=1e-5)
    assert report["test_flip_acc"] == pytest.approx(rows[0]["test_flip_acc"])   # fast: flip_eval
    assert main(["cifar", "--eval-only", str(out / "last.npz"), "--data-dir", str(data_dir),
                 "--no-download", "--limit-test", "16", "--no-flip-eval"]) == 0
    assert "test_flip_acc" not in json.loads(capsys.readouterr().out.strip().splitlines()[-1])

    assert main(["cifar", "--resume", str(out / "last.npz"), "--epochs", "2", "--no-progress"]) == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2] and rows[1]["step"] == 8


def test_cli_ctrl_c_saves_and_exits_with_130(tmp_path):
    data_dir = tmp_path / "data"
    write_binary(data_dir, fake_cifar(n=20))
    out = tmp_path / "run"
    command = [sys.executable, "-m", "minires.train", "cifar", "--data-dir", str(data_dir),
               "--no-download", "--out", str(out), "--model", TINY, "--epochs", "10000",
               "--batch-size", "16", "--limit-train", "64", "--limit-test", "16", "--no-progress"]
    proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    try:
        for _ in range(600):                       # wait (at most a minute) for the first epoch
            if (out / "metrics.jsonl").exists() or proc.poll() is not None:
                break
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, output
    assert "SIGINT: finishing this step and saving a checkpoint" in output
    assert f"--resume {out / 'last.npz'}" in output and "Traceback" not in output
    meta = checkpoint.load(out / "last.npz").meta
    assert meta["global_step"] >= 4 and meta["config"]["epochs"] == 10000
