"""``python -m minires.experiments NAME [options]`` (``--list`` shows the names).

A user's mistake (an unknown name or option value, missing data, a folder that already
holds results, an unreadable checkpoint) is reported in one line on stderr with exit
status 2; Ctrl-C stops with status 130 and keeps everything finished so far.

``--threads N`` sets the CPU threads of the run (``minires.use_speed_settings(N)``);
``--no-progress`` is accepted for symmetry with ``python -m minires.train``: the
experiments draw no progress bars, only plain lines, so there is nothing to switch off.
"""
import shutil
import sys
import textwrap

from . import EXPERIMENTS, get_experiment, make_parser, run_experiment
from .options import ExperimentError


def listing() -> str:
    """What --list and --help print: the usage, then each experiment with its whole
    description, wrapped to the terminal (at most 100 columns)."""
    width = min(shutil.get_terminal_size((100, 24)).columns, 100)
    lines = ["usage: python -m minires.experiments NAME [options]   (NAME --help for its options)",
             "       python -m minires.experiments --list | --version", ""]
    for name in EXPERIMENTS:
        text = " ".join(get_experiment(name).DESCRIPTION.split())
        lines.append(textwrap.fill(text, width=width, initial_indent=f"  {name:<18} ",
                                   subsequent_indent=" " * 21, break_on_hyphens=False))
    return "\n".join(lines)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help", "--list"):
        print(listing())
        return 0
    if argv[0] == "--version":
        from minires import __version__
        print(f"minires {__version__}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in EXPERIMENTS:
        print(f"unknown experiment {name!r}; expected one of: {', '.join(EXPERIMENTS)}",
              file=sys.stderr)
        return 2
    from minires.checkpoint import CheckpointError
    from minires.data import DataError
    try:
        threads = make_parser(name).parse_args(rest).threads      # argparse exits on a mistake
        from minires.speed import use_speed_settings
        speed = use_speed_settings(threads)  # threads and memory for speed, as the training CLI
        if threads:
            print(f"threads: {speed['threads']}", file=sys.stderr)
        run_experiment(name, rest)
    except KeyboardInterrupt:
        print(f"\n{name}: stopped. What finished is kept; run the same command with --resume "
              f"(and the --out it printed) to continue.", file=sys.stderr)
        return 130
    except SystemExit as stop:
        return stop.code or 0                           # argparse's own exits (--help, errors)
    except ExperimentError as err:                      # a refusal: one line, what to change
        message = str(err)
        prefix = "" if message.startswith(f"{name}:") else f"{name}: "
        print(prefix + message, file=sys.stderr)
        return 2
    except (ValueError, DataError, CheckpointError, OSError) as err:
        print(f"{name}: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    from minires.__main__ import run_command
    from minires.blas_kernel import rerun_with_fastest_kernel
    rerun_with_fastest_kernel()      # under the fastest OpenBLAS kernel (measured once per machine)
    sys.exit(run_command(main))
