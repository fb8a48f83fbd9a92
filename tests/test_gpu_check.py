"""benchmarks/gpu_check.py must not waste a GPU lease: --require-gpu fails at once without a GPU,
and the GPU tests it runs are the GPU-path files, in parallel, with timeouts when it can."""
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from minires.backend import gpu_available

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.skipif(gpu_available(), reason="this machine has a GPU: the check would run")
def test_require_gpu_fails_at_once_without_a_gpu(tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"),
                          "--require-gpu", "--out-dir", str(tmp_path)],
                         capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 3, out.stdout + out.stderr
    assert "--require-gpu: CuPy sees no usable GPU here; nothing was run" in out.stdout
    assert not (tmp_path / "summary.json").exists()


def test_the_gpu_tests_are_the_gpu_path_files():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import gpu_check
    finally:
        sys.path.pop(0)
    cmd = gpu_check.gpu_test_command(SimpleNamespace(dry_run=False, test_workers=8))
    assert cmd[cmd.index("-m") + 3] == "gpu" or "gpu" in cmd
    assert all(f in cmd for f in gpu_check.GPU_TEST_FILES)
    assert all((ROOT / f).is_file() for f in gpu_check.GPU_TEST_FILES)
