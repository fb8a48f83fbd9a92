"""Importing minires changes nothing in the host process; the speed settings are one explicit call.

Each check runs in a fresh interpreter, so that nothing this test process has imported or set
(pytest, other tests) can hide or fake an effect."""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_python(code, **env):
    full_env = {k: v for k, v in os.environ.items()
                if k not in ("MINIRES_NUM_THREADS", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")}
    full_env.update(env)
    full_env["PYTHONPATH"] = ROOT
    out = subprocess.run([sys.executable, "-c", code], env=full_env, capture_output=True,
                         text=True, timeout=120, check=False)
    return out


BLAS_THREADS = """
import json
from threadpoolctl import threadpool_info
def blas():
    return sorted(i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas")
import numpy as np
before = blas()
import minires as mr, minires.nn, minires.models, minires.train, minires.experiments
after_import = blas()
mr.use_speed_settings(1)
after_call = blas()
print(json.dumps([before, after_import, after_call]))
"""


def test_import_leaves_blas_threads_alone_and_the_explicit_call_sets_them():
    pytest.importorskip("threadpoolctl")
    out = run_python(BLAS_THREADS)
    assert out.returncode == 0, out.stderr
    before, after_import, after_call = json.loads(out.stdout)
    assert after_import == before
    if before and max(before) > 1:          # only visible where BLAS has several threads
        assert after_call == [1] * len(before)


FREED_MEMORY = """
import numpy as np
import minires as mr{call}
def rss_mb():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmRSS")) / 1024
arrays = [np.ones(1 << 20) for _ in range(100)]      # 100 x 8 MB
del arrays
print(rss_mb())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc and glibc malloc")
def test_import_leaves_malloc_alone():
    plain = float(run_python(FREED_MEMORY.format(call="")).stdout)
    tuned = float(run_python(FREED_MEMORY.format(call="\nmr.use_speed_settings()")).stdout)
    assert plain < 300, plain                 # freed memory went back to the system
    assert tuned > plain                      # the opt-in keeps it (its documented effect)


def test_a_bad_thread_setting_is_an_error_of_the_call_not_of_the_import():
    out = run_python("import minires as mr; print('imported')\nmr.use_speed_settings()",
                     MINIRES_NUM_THREADS="abc")
    assert "imported" in out.stdout
    assert out.returncode == 1
    assert "MINIRES_NUM_THREADS: expected a positive integer" in out.stderr and "'abc'" in out.stderr


def test_use_speed_settings_validates_its_argument():
    import minires as mr
    for bad in (0, -2, 1.5, "2"):
        with pytest.raises(ValueError, match="positive int"):
            mr.use_speed_settings(bad)


@pytest.mark.parametrize("option, value, message", [
    ("--threads", "0", "--threads: must be >= 1, got 0"),
    ("--threads", "-2", "--threads: must be >= 1, got -2"),
    ("--prefetch", "-1", "--prefetch: must be >= 0, got -1"),
    ("--warmup-epochs", "-1", "--warmup-epochs: must be >= 0, got -1.0"),
    ("--lr", "0", "--lr: must be > 0, got 0.0"),
    ("--label-smoothing", "1.5", "--label-smoothing: must be >= 0 and <= 1, got 1.5"),
    ("--epochs", "0", "--epochs: must be >= 1, got 0"),
    ("--batch-size", "0", "--batch-size: must be >= 1, got 0"),
    ("--limit-train", "0", "--limit-train: must be >= 1, got 0"),
])
def test_train_cli_refuses_numbers_out_of_range(capsys, tmp_path, option, value, message):
    from minires.train.cli import main
    with pytest.raises(SystemExit) as stop:
        main(["cifar", "--out", str(tmp_path / "run"), option, value])
    assert stop.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()             # refused before the folder is made


PLOT_THEN_BACKEND = """
import matplotlib
matplotlib.use("svg")                     # the host's choice (a notebook would have its own)
import numpy as np, minires as mr
from minires.train.loop import plot_curves
history = [{"epoch": 1, "train_loss": 2.0, "train_acc": 0.2, "test_loss": 1.9, "test_acc": 0.25}]
assert plot_curves(history, r"{path}")
print(matplotlib.get_backend())
"""


def test_fit_curves_leave_the_matplotlib_backend_alone(tmp_path):
    pytest.importorskip("matplotlib")
    out = run_python(PLOT_THEN_BACKEND.replace("{path}", str(tmp_path / "curves.png")))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "svg"
    assert (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"
