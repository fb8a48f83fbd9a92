"""``python -m minires.train cifar``: see ``minires.train.cli``."""
import sys

from ..__main__ import run_command
from ..blas_kernel import rerun_with_fastest_kernel

rerun_with_fastest_kernel()          # under the fastest OpenBLAS kernel (measured once per machine)

from .cli import main  # noqa: E402  (after the re-run: nothing heavier is loaded twice)

sys.exit(run_command(main))
