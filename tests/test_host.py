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
    assert "MINIRES_NUM_THREADS: expected a positive integer" in out.stderr
    assert "'abc'" in out.stderr


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


# --- the entry points apply the speed settings for the call only ------------------------------
# Each script prints the (BLAS threads per library as threadpoolctl reads them, minires' conv
# threads) at each point; threadpoolctl is the independent witness (minires reads OpenBLAS's
# count through its own get_num_threads).
STATE = """
import json, os
import numpy as np
from threadpoolctl import threadpool_info
import minires as mr
from minires.functional import parallel
from minires.speed import speed_settings
def state():
    return [sorted(i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"),
            parallel.num_threads()]
nn = mr.nn
def tiny_model():
    mr.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.Flatten(), nn.Linear(4 * 8 * 8, 10))
from minires.data import CIFAR10, Split
rng = np.random.default_rng(0)
split = lambda n: Split(rng.integers(0, 256, (n, 3, 8, 8), dtype=np.uint8), rng.integers(0, 10, n))
data = CIFAR10(train=split(8), test=split(4))
from minires.train import Callback, TrainConfig, evaluate, fit
config = TrainConfig(epochs=1, batch_size=4, augment=False, prefetch=0)
class Seen(Callback):
    def __init__(self, fail=False):
        self.states, self.fail = [], fail
    def on_step_end(self, trainer, loss):
        self.states.append(state())
        if self.fail:
            raise RuntimeError("stop here")
def watch(model, seen):
    model.register_forward_hook(lambda module, inputs, output: seen.append(state()))
    return model
out = {"before": state(), "cores": len(os.sched_getaffinity(0))}
"""

ENTRY_POINTS = STATE + """
seen = Seen()
fit(tiny_model(), data, config, callbacks=[seen], progress=False, verbose=False)
out["during fit"], out["after fit"] = seen.states[0], state()
try:
    fit(tiny_model(), data, config, callbacks=[Seen(fail=True)], progress=False, verbose=False)
except RuntimeError:
    out["after fit raised"] = state()
seen = []
evaluate(watch(tiny_model(), seen), data.test, fuse=False)
out["during evaluate"], out["after evaluate"] = seen[0], state()
x = np.random.default_rng(1).standard_normal((4, 3, 8, 8)).astype(np.float32)
y = np.arange(4)
seen = []
mr.inspect.gradient_flow(watch(tiny_model(), seen), x, y)
out["during gradient_flow"], out["after gradient_flow"] = seen[0], state()
def bad_loss(output, y):
    raise ValueError("bad loss")
try:
    mr.inspect.gradient_flow(tiny_model(), x, y, loss_fn=bad_loss)
except ValueError:
    out["after gradient_flow raised"] = state()
mr.inspect.compare({"a": tiny_model(), "b": tiny_model()}, x, y)
out["after compare"] = state()
seen = Seen()
fit(watch(tiny_model(), seen.states), data, config, callbacks=[seen], progress=False,
    verbose=False, speed_settings=False)
out["during fit, opted out (with its evaluation)"] = sorted(set(map(json.dumps, seen.states)))
print(json.dumps(out))
"""


def _speed(out):
    """The state the speed settings give: OpenBLAS on one thread, a conv thread per core."""
    return [[1] * len(out["before"][0]), out["cores"]]


def test_fit_evaluate_and_gradient_flow_put_the_host_threads_back():
    pytest.importorskip("threadpoolctl")
    run = run_python(ENTRY_POINTS)
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    for key in ("after fit", "after fit raised", "after evaluate", "after gradient_flow",
                "after gradient_flow raised", "after compare"):
        assert out[key] == out["before"], key
    for key in ("during fit", "during evaluate", "during gradient_flow"):
        assert out[key] == _speed(out), key
    assert out["during fit, opted out (with its evaluation)"] == [json.dumps(out["before"])]
    if max(out["before"][0] or [1]) > 1 or out["cores"] > 1:
        assert out["before"] != _speed(out)       # else the checks above could not tell


NESTING = STATE + """
with speed_settings():
    out["outer"] = state()
    with speed_settings():
        out["nested"] = state()
    with speed_settings(1):
        out["nested, one thread"] = state()
    out["outer again"] = state()
    seen = Seen()
    fit(tiny_model(), data, config, callbacks=[seen], progress=False, verbose=False)
    out["fit inside"], out["after fit inside"] = seen.states[0], state()
out["after"] = state()
try:
    with speed_settings():
        raise KeyError
except KeyError:
    out["after raised"] = state()
with speed_settings():
    mr.use_speed_settings(1)                    # an explicit call inside the block wins
out["after an explicit call inside"] = state()
mr.use_speed_settings(1)
seen = Seen()
fit(tiny_model(), data, config, callbacks=[seen], progress=False, verbose=False)
out["explicit, during fit"], out["explicit, after fit"] = seen.states[0], state()
print(json.dumps(out))
"""


def test_speed_settings_nest_and_an_explicit_choice_survives():
    pytest.importorskip("threadpoolctl")
    run = run_python(NESTING)
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    speed, one = _speed(out), [_speed(out)[0], 1]
    assert out["outer"] == out["nested"] == out["outer again"] == speed
    assert out["fit inside"] == out["after fit inside"] == speed
    assert out["nested, one thread"] == one
    assert out["after"] == out["after raised"] == out["before"]
    # use_speed_settings(1): one conv thread, kept during and after every scoped call
    assert out["after an explicit call inside"] == one
    assert out["explicit, during fit"] == out["explicit, after fit"] == one


def test_speed_settings_leave_blas_alone_when_the_environment_chose():
    pytest.importorskip("threadpoolctl")
    run = run_python(STATE + """
with speed_settings():
    out["inside"] = state()
print(json.dumps(out))
""", OPENBLAS_NUM_THREADS="2")
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    assert out["inside"] == out["before"]


def test_entry_points_refuse_a_speed_settings_that_is_not_a_bool():
    from minires.speed import scoped
    with pytest.raises(TypeError, match="expected True or False"):
        scoped(2)
