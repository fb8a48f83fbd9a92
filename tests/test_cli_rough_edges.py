"""The command lines at the edges a new user hits: each bad input is answered in one line
on stderr with the right exit status (2: a mistake in the command; 1: the run failed), and
nothing is lost or half-written. Tiny model, tiny CIFAR archive (see tests/test_train_cli.py).
"""
import json
import os
import re
import subprocess
import sys
from argparse import Namespace

import numpy as np
import pytest

import minires as mr
from minires import checkpoint
from minires.checkpoint import CheckpointError
from minires.export.__main__ import main as export_main
from minires.train import main
from minires.train.cli import build_parser, invalid_number
from tests.test_data import fake_cifar, write_binary
from tests.test_train import REPO, TINY
from tests.test_train_cli import cli, one_line_error


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """A tiny CIFAR-10 archive in the official binary format (20 images per class)."""
    folder = tmp_path_factory.mktemp("data")
    write_binary(folder, fake_cifar(n=20))
    return folder


def refused_by_argparse(capsys, argv, *expected):
    """``main(argv)`` stops in argument parsing: exit 2, one line on stderr holding ``expected``."""
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    for part in expected:
        assert part in err, err
    return err


def files_of(folder):
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def train_one_epoch(data_dir, out, *options):
    """A finished 1-epoch run (4 steps: 64 images, batch 16) in ``out``."""
    assert main(cli(data_dir, "--out", out, "--model", TINY, "--epochs", "1", *options)) == 0


def steps_of(out):
    return [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]


# --- 1. a float option must be a finite number --------------------------------------------------
@pytest.mark.parametrize("flag", ["--lr", "--wd", "--momentum", "--warmup-epochs",
                                  "--label-smoothing"])
@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "NaN"])
def test_non_finite_float_options_are_refused_by_name(tmp_path, data_dir, capsys, flag, value):
    out = tmp_path / "run"
    refused_by_argparse(capsys, cli(data_dir, "--out", out, "--model", TINY, f"{flag}={value}"),
                        f"argument {flag}: expected a finite number, got {value!r}")
    assert not out.exists()


def test_non_finite_values_set_from_python_are_caught_too():
    assert invalid_number(Namespace(lr=float("nan"))) == "--lr: must be a finite number, got nan"
    assert invalid_number(Namespace(weight_decay=float("inf"))).startswith("--wd: must")


# --- 2. a run that diverges before its first checkpoint leaves no folder behind -----------------
@pytest.mark.filterwarnings("ignore::RuntimeWarning")            # NumPy's overflow warnings
def test_a_run_diverging_before_its_first_checkpoint_leaves_the_folder_as_it_was(
        tmp_path, data_dir, capsys):
    out = tmp_path / "new" / "run"
    diverging = cli(data_dir, "--out", out, "--model", TINY, "--max-steps", "1", "--lr", "1e30")
    assert main(diverging) == 1
    err = one_line_error(capsys)
    assert "\n" not in err and "no checkpoint was written" in err
    assert f"The run folder {out} was removed: it held no checkpoint" in err
    assert not (tmp_path / "new").exists()
    # the same folder is free again: no dead end pointing at a last.npz that does not exist
    assert main(cli(data_dir, "--out", out, "--model", TINY, "--max-steps", "1")) == 0
    assert (out / "last.npz").is_file()
    capsys.readouterr()


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_a_diverged_run_in_a_folder_of_the_user_removes_only_its_own_files(tmp_path, data_dir,
                                                                           capsys):
    (tmp_path / "notes.txt").write_text("mine")
    assert main(cli(data_dir, "--out", tmp_path, "--model", TINY, "--max-steps", "1",
                    "--lr", "1e30")) == 1
    err = one_line_error(capsys)
    assert f"Removed what this run wrote in {tmp_path} (config.json)" in err
    assert files_of(tmp_path) == {"notes.txt": b"mine"}


def test_an_abort_before_the_first_checkpoint_leaves_no_folder(tmp_path, data_dir, capsys,
                                                              monkeypatch):
    """A second Ctrl-C (KeyboardInterrupt out of the loop) in epoch 1: status 130, and the
    folder goes, as it held nothing to resume."""
    import minires.train.cli as train_cli

    class Abort(mr.train.Callback):
        def on_step_end(self, trainer, stats):
            raise KeyboardInterrupt

    monkeypatch.setattr(train_cli, "callbacks_from_args", lambda args, out: [Abort()])
    out = tmp_path / "run"
    assert main(cli(data_dir, "--out", out, "--model", TINY)) == 130
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err == (f"aborted without saving before the first checkpoint. The run folder {out} "
                   f"was removed: it held no checkpoint, so there was nothing to resume.")
    assert not out.exists()


def test_a_folder_with_an_earlier_run_but_no_checkpoint_is_not_a_dead_end(tmp_path, data_dir,
                                                                          capsys):
    """A run killed before its first checkpoint (SIGKILL, an older minires) left config.json:
    the refusal says there is nothing to resume, instead of suggesting --resume last.npz."""
    (tmp_path / "config.json").write_text("{}")
    assert main(cli(data_dir, "--out", tmp_path, "--model", TINY)) == 2
    err = one_line_error(capsys)
    assert "holds files of an earlier run (config.json) but no checkpoint (last.npz), so there " \
           "is nothing to resume" in err and "--resume" not in err
    assert files_of(tmp_path) == {"config.json": b"{}"}
    assert main(cli(data_dir, "--resume", tmp_path)) == 2       # and --resume says so too
    assert "there is nothing to resume" in one_line_error(capsys)


# --- 3. --resume and --eval-only take a run folder -----------------------------------------------
def test_resume_and_eval_only_take_a_run_folder(tmp_path, data_dir, capsys):
    out = tmp_path / "run"
    train_one_epoch(data_dir, out)
    assert main(cli(data_dir, "--resume", out, "--epochs", "2")) == 0       # its last.npz
    assert steps_of(out) == [4, 8]
    capsys.readouterr()
    assert main(cli(data_dir, "--eval-only", out)) == 0                      # its best.npz
    captured = capsys.readouterr()
    assert json.loads(captured.out.splitlines()[-1])["checkpoint"] == str(out / "best.npz")
    assert f"evaluating {out / 'best.npz'}" in captured.err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(cli(data_dir, "--resume", empty)) == 2
    assert f"--resume {empty}: the folder has no last.npz" in one_line_error(capsys)


# --- 4. --max-steps that asks for nothing, or for more than the run will do ----------------------
def test_max_steps_at_or_below_the_checkpoint_is_refused_and_nothing_is_touched(tmp_path, data_dir,
                                                                                capsys):
    out = tmp_path / "run"
    train_one_epoch(data_dir, out)
    before = files_of(out)
    for steps in ("4", "3"):
        assert main(cli(data_dir, "--resume", out / "last.npz", "--max-steps", steps)) == 2
        err = one_line_error(capsys)
        assert "\n" not in err and "the checkpoint is at iteration 4 (1 epochs done)" in err
        assert f"--max-steps is {steps}: nothing to train; give a --max-steps above 4" in err
    assert main(cli(data_dir, "--resume", out / "last.npz")) == 2       # its 1 epoch is done
    assert "--epochs is 1" not in (err := one_line_error(capsys))
    assert "the checkpoint's epochs is 1: nothing to train; give more epochs, e.g. --epochs 2" \
        in err
    assert files_of(out) == before


def test_max_steps_within_an_epoch_that_closed_early_is_refused(tmp_path, data_dir, capsys):
    """--max-steps 6 closes epoch 2 after 2 of its 4 steps; --max-steps 8 ends in epoch 2,
    which is done: refused. --max-steps 12 trains epoch 3 (4 steps) and stops at 10, with a
    note saying so before the run starts."""
    out = tmp_path / "run"
    assert main(cli(data_dir, "--out", out, "--model", TINY, "--max-steps", "6")) == 0
    assert steps_of(out) == [4, 6]
    capsys.readouterr()
    before = files_of(out)
    assert main(cli(data_dir, "--resume", out, "--max-steps", "8")) == 2
    err = one_line_error(capsys)
    assert "--max-steps 8 ends in epoch 2 (epochs of 4 iterations), which it has closed" in err
    assert "give a --max-steps above 8 to train epoch 3" in err
    assert files_of(out) == before
    assert main(cli(data_dir, "--resume", out, "--max-steps", "12")) == 0
    assert "note: the run will stop at iteration 10, before --max-steps 12" in \
           capsys.readouterr().err
    assert steps_of(out) == [4, 6, 10]


def test_max_steps_past_the_epochs_gets_a_note_before_the_run(tmp_path, data_dir, capsys):
    out = tmp_path / "run"
    train_one_epoch(data_dir, out, "--max-steps", "100")
    err = capsys.readouterr().err
    assert "note: the run will stop at iteration 4, before --max-steps 100: --epochs (1, 4 " \
           "iterations each) come first" in err
    assert steps_of(out) == [4]


# --- 5. --eval-only of an experiment's checkpoint (model named at the top of its meta) -----------
@pytest.mark.parametrize("recorded", [TINY, "resnet8-zero"])
def test_eval_only_reads_the_model_an_experiment_checkpoint_names(tmp_path, data_dir, capsys,
                                                                  recorded):
    mr.manual_seed(0)
    model = mr.models.resnet8() if recorded.startswith("resnet8") else mr.train.build_model(TINY)
    path = checkpoint.save(tmp_path / "net.npz", model,
                           meta={"model": recorded, "seed": 0, "recipe": "experiments"})
    assert main(cli(data_dir, "--eval-only", path)) == 0
    report = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert report["model"] == recorded.removesuffix("-zero") and report["test_examples"] == 16


# --- 6, 7. the experiments' listing, --threads, --no-progress ------------------------------------
@pytest.mark.parametrize("flag", ["--list", "--help"])
def test_experiments_listing_prints_whole_descriptions(capsys, flag):
    from minires.experiments import EXPERIMENTS, get_experiment
    from minires.experiments.__main__ import main as experiments_main
    assert experiments_main([flag]) == 0
    text = " ".join(capsys.readouterr().out.split())
    for name in EXPERIMENTS:
        assert " ".join(get_experiment(name).DESCRIPTION.split()) in text, name


def test_experiments_take_threads_and_no_progress(monkeypatch, capsys):
    import minires.experiments.__main__ as experiments_cli
    import minires.speed
    asked, ran = [], []
    monkeypatch.setattr(minires.speed, "use_speed_settings",
                        lambda n=None: asked.append(n) or {"threads": n})
    monkeypatch.setattr(experiments_cli, "run_experiment", lambda name, argv: ran.append(argv))
    argv = ["--tiny", "--threads", "3", "--no-progress"]
    assert experiments_cli.main(["gradient-at-init", *argv]) == 0
    assert asked == [3] and ran == [argv]
    assert "threads: 3" in capsys.readouterr().err
    assert experiments_cli.main(["gradient-at-init", "--threads", "0"]) == 2
    err = capsys.readouterr().err
    assert "argument --threads: must be >= 1, got 0" in err and "Traceback" not in err
    assert asked == [3] and len(ran) == 1                       # nothing ran


# --- 8. a closed stdout (| head -1) ends quietly -------------------------------------------------
def test_a_closed_stdout_ends_every_command_line_quietly(tmp_path, data_dir):
    ckpt = tmp_path / "net.npz"
    mr.manual_seed(0)
    checkpoint.save(ckpt, mr.train.build_model(TINY), meta={"model": TINY})
    commands = {
        "minires": [],
        "minires.experiments": ["--list"],
        "minires.train": cli(data_dir, "--eval-only", ckpt),
        "minires.export": [str(ckpt), "--to", str(tmp_path / "net.safetensors")],
    }
    for module, argv in commands.items():
        read, write = os.pipe()
        os.close(read)                                  # the reader has gone, as head -1 does
        try:
            proc = subprocess.run([sys.executable, "-m", module, *argv], cwd=REPO, stdout=write,
                                  stderr=subprocess.PIPE, text=True, timeout=120, check=False)
        finally:
            os.close(write)
        assert proc.returncode == 141 and not proc.stderr, (module, proc.stderr)


# --- 9. --version everywhere ---------------------------------------------------------------------
def test_every_command_line_has_version(capsys):
    from minires.__main__ import main as minires_main
    from minires.experiments.__main__ import main as experiments_main
    expected = f"minires {mr.__version__}"
    for run in (main, export_main):
        with pytest.raises(SystemExit) as stop:
            run(["--version"])
        assert stop.value.code == 0 and capsys.readouterr().out.strip() == expected
    for run in (minires_main, experiments_main):
        assert run(["--version"]) == 0 and capsys.readouterr().out.strip() == expected


# --- 10. --milestones that are not numbers --------------------------------------------------------
def test_milestones_that_are_not_numbers_name_the_flag_and_the_format(tmp_path, data_dir, capsys):
    out = tmp_path / "run"
    err = refused_by_argparse(capsys, cli(data_dir, "--out", out, "--milestones", "5,x"),
                              "argument --milestones: expected whole numbers separated by "
                              "commas, e.g. 32000,48000", "got '5,x'")
    assert "lambda" not in err and not out.exists()


# --- 11, 12. a damaged checkpoint: no allow_pickle advice, exit 2 from train and export --------
def damaged_checkpoints(folder):
    """Files that are not checkpoints, each one way."""
    import pickle
    paths = {}
    paths["random"] = folder / "random.npz"
    paths["random"].write_bytes(np.random.default_rng(0).bytes(300))
    paths["pickle"] = folder / "pickle.npz"
    paths["pickle"].write_bytes(pickle.dumps({"w": 1}))
    paths["objects"] = folder / "objects.npz"
    np.savez(paths["objects"], w=np.array([{"x": 1}], dtype=object))
    paths["npy"] = folder / "single.npz"
    with open(paths["npy"], "wb") as f:
        np.save(f, np.zeros(3))
    paths["empty"] = folder / "empty.npz"
    paths["empty"].write_bytes(b"")
    paths["truncated"] = folder / "truncated.npz"
    mr.manual_seed(0)
    whole = checkpoint.save(folder / "whole.npz", mr.train.build_model(TINY),
                            meta={"model": TINY}).read_bytes()
    paths["truncated"].write_bytes(whole[:len(whole) // 2])
    return paths


def test_a_damaged_checkpoint_is_refused_without_allow_pickle_advice(tmp_path):
    for what, path in damaged_checkpoints(tmp_path).items():
        with pytest.raises(CheckpointError) as err:
            checkpoint.load(path)
        message = str(err.value)
        assert f"checkpoint {path}: cannot read it as a .npz file of arrays" in message, what
        assert "pickle.load" not in message and "allow_pickle" not in message, (what, message)
        assert "\n" not in message


def test_a_damaged_checkpoint_exits_2_from_train_and_export(tmp_path, data_dir, capsys):
    for what, path in damaged_checkpoints(tmp_path).items():
        before = path.read_bytes()
        for flag in ("--eval-only", "--resume"):
            assert main(cli(data_dir, flag, path)) == 2, (what, flag)
            err = one_line_error(capsys)
            assert "\n" not in err and "allow_pickle" not in err and str(path) in err
        assert export_main([str(path), "--to", str(tmp_path / "m.safetensors")]) == 2, what
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "allow_pickle" not in err and str(path) in err
        assert path.read_bytes() == before and not (tmp_path / "m.safetensors").exists()


# --- 13. curves.png without matplotlib says why ---------------------------------------------------
def test_a_run_without_matplotlib_says_why_curves_png_is_missing(tmp_path, data_dir, capsys,
                                                                 monkeypatch):
    """The note of minires.files.draw_optional, as the experiments print it, once per figure."""
    from minires.files import INSTALL_MATPLOTLIB
    for name in ("matplotlib", "matplotlib.figure"):
        monkeypatch.setitem(sys.modules, name, None)             # import raises ImportError
    out = tmp_path / "run"
    train_one_epoch(data_dir, out)
    printed = capsys.readouterr()
    notes = [line for line in (printed.out + printed.err).splitlines() if "not drawn" in line]
    assert notes == [f"matplotlib is not installed: curves.png not drawn ({INSTALL_MATPLOTLIB})"]
    assert not (out / "curves.png").exists() and (out / "summary.json").is_file()


# --- 14. --help and the README agree on the fast recipe -------------------------------------------
def test_help_states_the_fast_recipe_as_the_readme_does():
    from minires.train.recipes import RECIPES
    readme = (REPO / "README.md").read_text()
    found = re.search(r"\((\d+) epochs: (\d+) minutes on one 2-core AVX-512 CPU, (?:\d+-)?(\d+) "
                      r"minutes on another, slower one", readme)
    assert found, "the README's quick start no longer states the fast recipe's time"
    epochs, fastest, slowest = found.groups()
    assert int(epochs) == RECIPES["fast"]["epochs"]
    cifar = build_parser()._subparsers._group_actions[0].choices["cifar"]
    text = " ".join(cifar.format_help().split())
    assert f"fast (default): {epochs} epochs, {fastest}-{slowest} minutes on a 2-core CPU" in text
    assert "hour" not in text
