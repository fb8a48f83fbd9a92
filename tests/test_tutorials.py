"""The tutorials run: every lesson in tutorials/ executes as a script in fast mode.

Each lesson runs in its own Python process (``python tutorials/NN_name.py``) with
``MINIRES_TUTORIAL_FAST=1`` (tiny synthetic data, a few steps: no CIFAR files needed),
``MINIRES_TUTORIAL_OUT`` pointing at a temporary folder (figures, run folders) and that
folder as the working directory, so a lesson cannot write into the repository. A lesson
fails the test by exiting non-zero -- an ``assert`` of one of its claims, or any error.
"""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TUTORIALS = ROOT / "tutorials"
LESSONS = sorted(TUTORIALS.glob("[0-9][0-9]_*.py"))

# The lessons the tutorial promises, in order (tutorials/README.md lists the same).
EXPECTED = [
    "00_tensors_and_backend", "01_autograd_by_hand", "02_linear_and_cross_entropy",
    "03_convolution_im2col", "04_batch_norm", "05_degradation_problem", "06_residual_block",
    "07_bottleneck_and_projection", "08_resnet_variants", "09_training_resnet20",
    "10_gpu", "11_ensembles_of_paths", "12_why_residual_nets_train_easier",
]
# Lessons that take more than a few seconds in fast mode (they train or build big models).
SLOW = {"05_degradation_problem", "06_residual_block", "07_bottleneck_and_projection",
        "08_resnet_variants", "09_training_resnet20", "11_ensembles_of_paths",
        "12_why_residual_nets_train_easier"}


def run_lesson(path, tmp_path, timeout=600):
    env = dict(os.environ)
    env.update(MINIRES_TUTORIAL_FAST="1", MINIRES_TUTORIAL_OUT=str(tmp_path / "out"),
               MPLBACKEND="Agg", PYTHONHASHSEED="0")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in [env.get("PYTHONPATH")] if p])
    return subprocess.run([sys.executable, str(path)], cwd=tmp_path, env=env, text=True,
                          capture_output=True, timeout=timeout, check=False)


def test_lessons_are_the_promised_ones():
    assert [p.stem for p in LESSONS] == EXPECTED


@pytest.mark.parametrize("path", LESSONS, ids=[p.stem for p in LESSONS])
def test_lesson_is_a_jupytext_percent_script_with_budget_and_exercises(path):
    text = path.read_text()
    cells = re.findall(r"^# %%( \[markdown\])?$", text, flags=re.MULTILINE)
    assert len(cells) >= 6, "a lesson is a sequence of cells"
    assert cells[0] == " [markdown]", "a lesson opens with a markdown header cell"
    header = text.split("# %%", 2)[1]
    assert f"# Lesson {path.stem[:2]}" in header
    assert "**Goal.**" in header and "**Budget without fast mode:**" in header
    assert "## Try this" in text
    assert "assert " in text


@pytest.mark.parametrize("path", [
    pytest.param(p, marks=pytest.mark.slow) if p.stem in SLOW else p for p in LESSONS],
    ids=[p.stem for p in LESSONS])
def test_lesson_runs_in_fast_mode(path, tmp_path):
    result = run_lesson(path, tmp_path)
    tail = (result.stdout[-3000:] + "\n--- stderr ---\n" + result.stderr[-3000:])
    assert result.returncode == 0, f"{path.name} exited with {result.returncode}:\n{tail}"
    assert f"lesson {path.stem[:2]} " in result.stdout, tail     # reached its last cell
    assert not (tmp_path / "runs").exists(), "a lesson wrote outside its output folder"
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return
    if path.stem not in ("00_tensors_and_backend", "10_gpu"):
        pngs = list((tmp_path / "out").rglob("*.png"))
        assert pngs and all(p.read_bytes()[:4] == b"\x89PNG" for p in pngs), tail
