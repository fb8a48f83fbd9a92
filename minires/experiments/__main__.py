"""``python -m minires.experiments NAME [options]`` (``--list`` shows the names).

A user's mistake (an unknown name or option value, missing data, a folder that already
holds results, an unreadable checkpoint) is reported in one line on stderr with exit
status 2; Ctrl-C stops with status 130 and keeps everything finished so far.
"""
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
    from minires.checkpoint import CheckpointError
    from minires.data import DataError
    try:
        from minires.speed import use_speed_settings
        use_speed_settings()                 # threads and memory for speed, as the training CLI
        run_experiment(name, rest)
    except KeyboardInterrupt:
        print(f"\n{name}: stopped. What finished is kept; run the same command with --resume "
              f"(and the --out it printed) to continue.", file=sys.stderr)
        return 130
    except SystemExit as stop:
        if isinstance(stop.code, str):                  # our one-line refusals
            prefix = "" if stop.code.startswith(f"{name}:") else f"{name}: "
            print(prefix + stop.code, file=sys.stderr)
            return 2
        return stop.code or 0                           # argparse's own exits (--help, errors)
    except (ValueError, DataError, CheckpointError, OSError) as err:
        print(f"{name}: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
