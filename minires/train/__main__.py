"""``python -m minires.train cifar``: see ``minires.train.cli``."""
import sys

from .cli import main

sys.exit(main())
