"""``python -m minires``: what minires can run from the command line, one line each."""
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


if __name__ == "__main__":
    sys.exit(main())
