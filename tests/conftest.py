"""Shared test setup: Hypothesis profiles and the backend parameter.

Profiles: ``ci`` (default: bounded and deterministic, for CI on 2 cores) and
``thorough`` (``HYPOTHESIS_PROFILE=thorough pytest``: many more examples).

Every test that takes the ``device`` fixture runs once on NumPy ("cpu") and once
on CuPy ("cuda", marked ``gpu``); the CuPy run skips cleanly where there is no
GPU. The same test, not a copy.
"""
import os

import pytest
from hypothesis import HealthCheck, settings

from minires.backend import gpu_available

_QUIET = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture]
settings.register_profile("ci", max_examples=15, deadline=None, derandomize=True,
                          suppress_health_check=_QUIET, print_blob=True)
settings.register_profile("thorough", max_examples=300, deadline=None,
                          suppress_health_check=_QUIET, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

# The command lines measure which OpenBLAS kernel is fastest and re-run themselves under it
# (minires/blas_kernel.py); the commands the tests start keep OpenBLAS' pick instead, so no
# test writes to the user's cache or depends on the machine's answer.
os.environ.setdefault("MINIRES_BLAS_KERNEL", "default")


@pytest.fixture(params=["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def device(request):
    if request.param == "cuda" and not gpu_available():
        pytest.skip("no CUDA GPU with CuPy on this machine; GPU variant skipped")
    return request.param
