"""How long ``python -c "import minires"`` takes, against ``import numpy`` alone.

    python benchmarks/import_time.py [--runs 7]

Prints the median and best of fresh interpreter runs. Issue 2 asks for < 0.5 s.
"""
import argparse
import statistics
import subprocess
import sys
import time


def timed(code, runs):
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times), min(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    print(f"{'python -c':<28}{'median s':>10}{'best s':>10}")
    for code in ("pass", "import numpy", "import minires"):
        med, best = timed(code, args.runs)
        print(f"{code!r:<28}{med:>10.3f}{best:>10.3f}")


if __name__ == "__main__":
    main()
