"""``python -m minires``: what minires can run from the command line, one line each."""
import os
import signal
import sys

from . import __version__

# (command, what it does): the entry points of the package, in the order a newcomer meets them
COMMANDS = (
    ("python -m minires.train cifar", "train a ResNet on CIFAR-10"),
    ("python -m minires.experiments NAME", "run an experiment of the ResNet papers"),
    ("python -m minires.export CKPT", "write a checkpoint as .safetensors"),
)


def usage() -> str:
    """The text ``python -m minires`` prints: the version and one line per entry point."""
    width = max(len(command) for command, _ in COMMANDS)
    lines = [f"minires {__version__}: a from-scratch deep-learning framework on NumPy,",
             "for learning how residual networks work.", "", "Commands:"]
    lines += [f"  {command:<{width}}  {what}" for command, what in COMMANDS]
    lines += ["", "Each command's --help lists its options (experiments: --list, its names).",
              "From Python: import minires as mr; help(mr)."]
    return "\n".join(lines)


def main(argv=None) -> int:
    """List the entry points (exit 0); ``--version`` prints the version; anything else is a
    mistake, answered in one line on stderr with exit status 2."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    if argv[0] == "--version":
        print(f"minires {__version__}")
        return 0
    modules = [command.split()[2] for command, _ in COMMANDS]          # minires.train ...
    guess = f"minires.{argv[0]}"
    hint = (f"did you mean python -m {guess}?" if guess in modules else
            f"the commands are {', '.join('python -m ' + m for m in modules)}")
    print(f"python -m minires takes no arguments, got {argv[0]!r}: {hint}", file=sys.stderr)
    return 2


def run_command(main, argv=None):
    """Run a command line's ``main(argv)`` and return its exit status, ending quietly when
    stdout is closed early (``python -m minires | head -1``): no BrokenPipeError traceback,
    status 141 (128 + SIGPIPE, what a shell reports for a command stopped that way).

    Every ``python -m minires...`` runs through this; ``sys.exit(run_command(main))``.
    """
    try:
        try:
            status = main(argv)
        except SystemExit as stop:               # argparse's --help, --version and mistakes
            status = stop.code
        sys.stdout.flush()                       # a closed pipe shows here, not at exit
    except BrokenPipeError:
        # what is still buffered would fail again when Python flushes stdout at exit
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return 128 + getattr(signal, "SIGPIPE", 13)
    return status


if __name__ == "__main__":
    sys.exit(run_command(main))
