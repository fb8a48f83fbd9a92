"""Choosing the OpenBLAS kernel by measurement (minires/blas_kernel.py).

The choice rule and the cache on made-up rates (whose answer is known); the re-run on a
recorded ``os.execv`` (never a real one); the probe itself once, in a subprocess, where
NumPy's BLAS is OpenBLAS.
"""
import os
import sys

import pytest

from minires import blas_kernel


def rates(default, haswell, skylake):
    return {"default": {"kernel": "SkylakeX", "seconds": default},
            "Haswell": {"kernel": "Haswell", "seconds": haswell},
            "SkylakeX": {"kernel": "SkylakeX", "seconds": skylake}}


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(blas_kernel, "_machine_key", lambda: "test machine")
    return tmp_path / "minires" / "blas-kernel.json"


@pytest.mark.parametrize("seconds, choice", [
    ((1.00, 0.80, 1.00), "Haswell"),     # 20% faster: taken
    ((1.00, 0.97, 1.00), ""),            # 3% is within noise: OpenBLAS' pick kept
    ((1.00, 1.30, 0.90), "SkylakeX"),
    ((0.80, 1.00, 0.81), ""),            # the pick is the fastest
])
def test_the_fastest_kernel_is_chosen_only_when_clearly_faster(cache, monkeypatch, seconds,
                                                                choice):
    monkeypatch.setattr(blas_kernel, "measure", lambda: rates(*seconds))
    assert blas_kernel.fastest()["choice"] == choice


def test_the_measurement_is_cached_per_machine(cache, monkeypatch):
    calls = []
    monkeypatch.setattr(blas_kernel, "measure", lambda: calls.append(1) or rates(1, 0.5, 1))
    assert blas_kernel.fastest()["choice"] == "Haswell"
    assert cache.exists()
    assert blas_kernel.fastest()["choice"] == "Haswell" and len(calls) == 1     # from the cache
    monkeypatch.setattr(blas_kernel, "_machine_key", lambda: "another machine")
    blas_kernel.fastest()
    assert len(calls) == 2                                # another machine: measured again
    blas_kernel.fastest(refresh=True)
    assert len(calls) == 3


@pytest.fixture
def execv(monkeypatch):
    """Record os.execv instead of replacing the test process; start from a clean environment."""
    calls = []
    monkeypatch.setattr(os, "execv", lambda path, argv: calls.append((path, list(argv))))
    for name in ("OPENBLAS_CORETYPE", "_MINIRES_BLAS_RERUN", "MINIRES_BLAS_KERNEL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(blas_kernel, "core_name", lambda: "SkylakeX")
    return calls


def test_a_faster_kernel_reruns_the_same_command_under_it(execv, monkeypatch, capsys):
    monkeypatch.setattr(blas_kernel, "fastest",
                        lambda note: {"choice": "Haswell", "rates": rates(1.0, 0.8, 1.0)})
    monkeypatch.setattr(sys, "orig_argv", ["python", "-m", "minires.train", "cifar", "--x"],
                        raising=False)
    blas_kernel.rerun_with_fastest_kernel()
    assert execv == [(sys.executable, ["python", "-m", "minires.train", "cifar", "--x"])]
    assert os.environ["OPENBLAS_CORETYPE"] == "Haswell"
    err = capsys.readouterr().err
    assert "Haswell kernel" in err and "1.25x as fast" in err and "MINIRES_BLAS_KERNEL" in err


@pytest.mark.parametrize("env", [{"OPENBLAS_CORETYPE": "Zen"}, {"MINIRES_BLAS_KERNEL": "default"},
                                 {"_MINIRES_BLAS_RERUN": "1"}])
def test_the_users_choice_and_a_rerun_are_left_alone(execv, monkeypatch, env):
    monkeypatch.setattr(blas_kernel, "fastest", lambda note: pytest.fail("measured anyway"))
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    blas_kernel.rerun_with_fastest_kernel()
    assert execv == []


def test_openblas_pick_being_fastest_changes_nothing(execv, monkeypatch):
    monkeypatch.setattr(blas_kernel, "fastest",
                        lambda note: {"choice": "", "rates": rates(1, 1, 1)})
    blas_kernel.rerun_with_fastest_kernel()
    assert execv == [] and "OPENBLAS_CORETYPE" not in os.environ


def test_a_named_kernel_is_used_without_measuring(execv, monkeypatch):
    monkeypatch.setattr(blas_kernel, "fastest", lambda note: pytest.fail("measured anyway"))
    monkeypatch.setenv("MINIRES_BLAS_KERNEL", "Haswell")
    blas_kernel.rerun_with_fastest_kernel()
    assert len(execv) == 1 and os.environ["OPENBLAS_CORETYPE"] == "Haswell"


def test_the_probe_measures_every_shape_under_the_kernel_asked_for():
    if blas_kernel.core_name() is None:
        pytest.skip("NumPy's BLAS is not OpenBLAS (or does not report its kernel)")
    found = blas_kernel.measure(candidates=("", "Haswell"), rounds=1, repeats=1)
    assert found["Haswell"]["kernel"] == "Haswell"         # OPENBLAS_CORETYPE reached the child
    for row in found.values():
        assert row["seconds"] > 0
        assert len([k for k in row if k not in ("kernel", "seconds")]) == 3 * 3
        assert all(v > 0 for k, v in row.items() if k not in ("kernel",))
