"""``python -m minires.experiments NAME [options]`` (``--list`` shows the names)."""
import sys

from . import EXPERIMENTS, get_experiment, run_experiment


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help", "--list"):
        print("usage: python -m minires.experiments NAME [options]   (NAME --help for its options)\n")
        for name in EXPERIMENTS:
            print(f"  {name:<18} {get_experiment(name).DESCRIPTION.splitlines()[0]}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in EXPERIMENTS:
        print(f"unknown experiment {name!r}; expected one of: {', '.join(EXPERIMENTS)}",
              file=sys.stderr)
        return 2
    run_experiment(name, rest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
