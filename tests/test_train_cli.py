"""minires.train: nothing lost or mixed in a run.

A run that cannot start leaves no new folder behind (exit status 2); a run that diverges
saves no non-finite weights and exits 1; a checkpoint is never used with another model
than the one it was trained as. Tiny model, tiny random data (see tests/test_train.py).
"""
import json
import subprocess
import sys

import numpy as np
import pytest

import minires as mr
from minires import checkpoint
from minires.train import NonFiniteLossError, fit, main
from tests.test_data import fake_cifar, write_binary
from tests.test_train import REPO, TINY, At, config, new_model, run, tiny_data


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """A tiny CIFAR-10 archive in the official binary format (20 images per class)."""
    folder = tmp_path_factory.mktemp("data")
    write_binary(folder, fake_cifar(n=20))
    return folder


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A finished 3-epoch run of the tiny net (its checkpoints record model=TINY)."""
    out = tmp_path_factory.mktemp("tiny-run")
    run(out)
    return out


def cli(data_dir, *options):
    return ["cifar", "--data-dir", str(data_dir), "--no-download", "--batch-size", "16",
            "--limit-train", "64", "--limit-test", "16", "--no-progress", "--prefetch", "0",
            *map(str, options)]


def one_line_error(capsys):
    """The error the command printed last on stderr (after any notes), checked."""
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    lines = err.splitlines()
    start = max(i for i, line in enumerate(lines) if line.startswith("error: "))
    return "\n".join(lines[start:])


# --- 1. the run folder appears only when the run starts -----------------------------------------
def test_cli_checks_come_before_the_run_folder(tmp_path, data_dir, tiny_run, capsys):
    """Each failed start exits 2 (a mistake in the command) with a message and leaves neither
    the run folder nor the folder above it (both new) behind."""
    parent = tmp_path / "new"
    out = parent / "run"
    failures = {
        "unknown model": (["--model", "resnet9000"], "unknown model 'resnet9000'"),
        "bad config": (["--model", TINY, "--schedule", "step"], "needs milestones"),
        "no data": (["--model", TINY, "--data-dir", tmp_path / "empty"], "CIFAR-10 is not in"),
        "resume of another model": (["--model", "resnet8", "--resume", tiny_run / "last.npz"],
                                    "holds a tests.test_train:tiny_net model"),
        # this one fails inside fit(), after the folder was made: fit removes it again
        "resume with another batch size": (["--resume", tiny_run / "last.npz", "--batch-size",
                                            "32"], "different batch_size"),
    }
    if not mr.gpu_available():
        # without CuPy: "needs CuPy"; with CuPy but no usable GPU (CI installs CuPy to compile
        # the kernels): "no CUDA GPU is usable"
        failures["no GPU"] = (["--model", TINY, "--device", "cuda"],
                              ("needs CuPy", "no CUDA GPU is usable"))
    for what, (options, message) in failures.items():
        assert main(cli(data_dir, "--out", out, *options)) == 2, what
        err = one_line_error(capsys)
        messages = message if isinstance(message, tuple) else (message,)
        assert any(m in err for m in messages), (what, err)
        assert not parent.exists(), f"{what}: left {sorted(p.name for p in parent.iterdir())}"


def test_cli_out_in_an_existing_folder_is_left_as_it_was(tmp_path, data_dir, capsys):
    assert main(cli(data_dir, "--out", tmp_path, "--model", "resnet9000")) == 2
    one_line_error(capsys)
    assert tmp_path.is_dir() and not list(tmp_path.iterdir())


def test_fit_that_cannot_start_leaves_no_new_folder(tmp_path):
    with pytest.raises(ValueError, match="no training examples"):
        fit(new_model(), tiny_data(n_train=0), config(), out=tmp_path / "a" / "b",
            progress=False, verbose=False)
    assert not (tmp_path / "a").exists()
    with pytest.raises(ValueError, match="unknown optimizer"):
        run(tmp_path / "c", optimizer="lbfgs")
    assert not (tmp_path / "c").exists()


def test_check_writable_can_leave_nothing_behind(tmp_path):
    from minires.train import check_writable
    assert check_writable(tmp_path / "a" / "b", keep=False) == tmp_path / "a" / "b"
    assert not (tmp_path / "a").exists()
    assert check_writable(tmp_path / "a" / "b").is_dir()                   # keep=True: made
    (tmp_path / "file").write_text("x")
    with pytest.raises(OSError, match="cannot write to the run folder"):
        check_writable(tmp_path / "file" / "run", keep=False)


# --- 2. divergence: no non-finite weights saved, non-zero exit ----------------------------------
def poison(trainer):
    trainer.model[1].weight.data[...] = np.inf


def test_non_finite_weights_at_the_end_of_an_epoch_are_not_saved(tmp_path):
    """The last step of epoch 2 leaves Inf weights (its loss was finite, so the per-step check
    cannot see it): nothing of epoch 2 is written, epoch 1's checkpoints stay."""
    expected = r"weights are not finite at the end of epoch 2 \(iteration 12.*1\.weight"
    with pytest.raises(NonFiniteLossError, match=expected + r".*last\.npz, is intact"):
        run(tmp_path, epochs=3, callbacks=[At(poison, step=12)])
    for name in ("last.npz", "best.npz"):
        ckpt = checkpoint.load(tmp_path / name)
        assert ckpt.meta["epoch"] == 1, name
        assert all(np.isfinite(v).all() for v in ckpt.model.values()), name
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 1


def test_a_stop_with_non_finite_weights_saves_nothing(tmp_path):
    def poison_and_stop(trainer):
        poison(trainer)
        trainer.request_stop()

    with pytest.raises(NonFiniteLossError, match="not saving last.npz: the weights are not finite"):
        run(tmp_path, callbacks=[At(poison_and_stop, step=8)])
    assert checkpoint.load(tmp_path / "last.npz").meta["epoch"] == 1


@pytest.mark.filterwarnings("ignore::RuntimeWarning")            # NumPy's overflow warnings
@pytest.mark.parametrize("options, message", [
    (["--max-steps", "1", "--lr", "1e30"], "the loss is not finite at the end of epoch 1"),
    (["--epochs", "2", "--lr", "1e30"], "the training loss is nan"),
], ids=["diverges-in-the-last-step", "diverges-mid-epoch"])
def test_cli_a_diverging_run_exits_1_and_saves_no_weights(tmp_path, data_dir, capsys, options,
                                                          message):
    out = tmp_path / "run"
    assert main(cli(data_dir, "--out", out, "--model", TINY, *options)) == 1
    err = one_line_error(capsys)
    assert message in err and "no checkpoint was written" in err
    assert not (out / "best.npz").exists() and not (out / "last.npz").exists()
    assert not (out / "summary.json").exists()


def test_cli_diverging_run_prints_no_traceback(tmp_path, data_dir):
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-W", "ignore", "-m", "minires.train",
                           *cli(data_dir, "--out", out, "--model", TINY, "--max-steps", "1",
                                "--lr", "1e30")],
                          cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr and "error: the loss is not finite" in proc.stderr
    assert not (out / "best.npz").exists()


# --- 3. a checkpoint is used with its own model only --------------------------------------------
@pytest.mark.parametrize("flag", ["--eval-only", "--resume"])
def test_cli_checkpoint_of_another_model_is_refused(tmp_path, data_dir, tiny_run, capsys, flag):
    ckpt = tiny_run / "last.npz"
    before = {p.name: p.read_bytes() for p in tiny_run.iterdir()}
    assert main(cli(data_dir, flag, ckpt, "--model", "resnet8", "--epochs", "4")) == 2
    err = one_line_error(capsys)
    assert "\n" not in err
    assert err == (f"error: {flag} {ckpt}: the checkpoint holds a {TINY} model, but --model asks "
                   f"for resnet8; leave out --model to use the checkpoint's model ({TINY})")
    assert {p.name: p.read_bytes() for p in tiny_run.iterdir()} == before    # nothing touched


def test_cli_checkpoint_model_is_used_without_model_and_accepted_when_the_same(tmp_path, data_dir,
                                                                              tiny_run, capsys):
    for model in ([], ["--model", TINY]):
        assert main(cli(data_dir, "--eval-only", tiny_run / "best.npz", *model)) == 0
        report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert report["model"] == TINY


def test_cli_checkpoint_without_a_model_name_needs_model(tmp_path, data_dir, capsys):
    out = tmp_path / "custom"
    fit(new_model(), tiny_data(), config(model="custom", epochs=1), out=out, progress=False,
        verbose=False)
    assert main(cli(data_dir, "--eval-only", out / "last.npz")) == 2
    assert "the checkpoint does not name its model; pass --model" in one_line_error(capsys)
    assert main(cli(data_dir, "--eval-only", out / "last.npz", "--model", TINY)) == 0
    capsys.readouterr()


def test_cli_resume_and_eval_only_together_are_refused(tiny_run, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["cifar", "--resume", str(tiny_run / "last.npz"), "--eval-only",
              str(tiny_run / "last.npz")])
    assert exit_.value.code == 2
    assert "give one of them, not both" in capsys.readouterr().err
