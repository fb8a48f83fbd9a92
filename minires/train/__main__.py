"""``python -m minires.train cifar``: see ``minires.train.cli``."""
import sys

from ..__main__ import run_command
from .cli import main

sys.exit(run_command(main))
