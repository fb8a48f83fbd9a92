#!/usr/bin/env python
"""Run the lessons as notebooks and store them with their outputs, for the docs site.

    python tools/execute_lessons.py                  # full mode, every lesson -> docs/lessons/
    python tools/execute_lessons.py --only 05,12     # full mode, lessons 05 and 12
    python tools/execute_lessons.py --fast           # fast mode -> build/lessons-fast/ (a check)

Each ``tutorials/NN_name.py`` (a Jupytext "percent" script) is read as a notebook by
jupytext, executed cell by cell in a Jupyter kernel by nbclient (working directory
``tutorials/``, as a learner opening it in Jupyter has), and written as
``NN_name.ipynb`` with every printed line and figure. The notebook's metadata
``minires`` records how it was made: the mode (``full`` or ``fast``), the date, the
machine, the versions, the commit, the lesson source's SHA-256 (so the site can tell a
stored run of an older version of the lesson) and the time it took.

Only a full-mode run (real CIFAR-10 data, the budgets stated at the top of each lesson:
about 30 minutes for all of them on a 2-core CPU) makes lesson pages: it is written to
``docs/lessons/``, which is committed, and ``tools/build_site.py`` shows it. A fast-mode
run (``--fast``: synthetic data, seconds; its numbers say nothing about ResNets) goes to
the git-ignored ``build/lessons-fast/`` and is refused in ``docs/lessons/``.

Lesson 12 reads the nets lesson 05 trained (``out_dir("05_degradation_problem")``), so
all lessons of a run share one output folder: ``$MINIRES_TUTORIAL_OUT`` if set, else
``tutorials/out/`` in full mode and a folder under ``build/`` in fast mode. Lesson 10
stops with ``SystemExit(0)`` where there is no GPU: the notebook is stored up to there
and its metadata says so. Any other error stops that lesson, which is then not stored
(its partial notebook goes to ``build/lessons-failed/``), and the script exits non-zero.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))     # this checkout's minires, installed or not (as the lessons do)
TUTORIALS = ROOT / "tutorials"
LESSONS_DIR = ROOT / "docs" / "lessons"      # committed: full-mode runs only
FAST_DIR = ROOT / "build" / "lessons-fast"   # git-ignored
FAILED_DIR = ROOT / "build" / "lessons-failed"
METADATA_KEY = "minires"


def lessons(only=None):
    """The lesson scripts, in order; ``only``: lesson numbers ("05") or names to keep."""
    paths = sorted(TUTORIALS.glob("[0-9][0-9]_*.py"))
    if not only:
        return paths
    wanted = {w.strip() for w in only if w.strip()}
    picked = [p for p in paths if p.stem[:2] in wanted or p.stem in wanted]
    unknown = wanted - {p.stem[:2] for p in picked} - {p.stem for p in picked}
    if unknown:
        raise SystemExit(f"no lesson {', '.join(sorted(unknown))} in {TUTORIALS} "
                         f"(there are {', '.join(p.stem[:2] for p in paths)})")
    return picked


def source_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gib():
    try:
        pages, size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        return round(pages * size / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        return None


def _git_commit():
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "minires", "tutorials"],
                               cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("+local changes" if dirty else "")


def machine() -> dict:
    """What the run ran on, in the words a reader needs to weigh its timings."""
    import numpy as np

    import minires as mr
    info = {"cpu": _cpu_model(), "cores": os.cpu_count(), "memory_gib": _memory_gib(),
            "os": platform.platform(terse=True), "python": platform.python_version(),
            "numpy": np.__version__, "minires": mr.__version__, "gpu": mr.gpu_available()}
    try:
        from threadpoolctl import threadpool_info
        blas = [f"{i.get('internal_api')} {i.get('version')}" for i in threadpool_info()
                if i.get("user_api") == "blas"]
        if blas:
            info["blas"] = ", ".join(blas)
    except ImportError:
        pass
    return info


_CR_LINE = re.compile(r"[^\n]*\r(?!\n)")


def collapse_progress(text: str) -> str:
    """What a terminal would show of a stream with carriage returns (progress bars): of each
    line overwritten by ``\\r``, only its last state."""
    return "\n".join(_CR_LINE.sub("", line) if "\r" in line.rstrip("\r") else line.rstrip("\r")
                     for line in text.split("\n"))


def relative_paths(text: str, root: Path = ROOT) -> str:
    """Paths inside the checkout printed as the reader's clone has them: ``/any/where/
    tutorials/out/x.png`` becomes ``tutorials/out/x.png`` (a stored page must not show the
    folder it happened to run in)."""
    return text.replace(f"{root}{os.sep}", "")


def tidy_outputs(nb, root: Path = ROOT):
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream":
                out["text"] = relative_paths(collapse_progress(out["text"]), root)
    return nb


def _stopped_cleanly(err) -> bool:
    """A cell that raised SystemExit(0) (lesson 10 without a GPU): the lesson ended itself."""
    value = str(getattr(err, "evalue", "")).strip()
    return getattr(err, "ename", "") == "SystemExit" and value in ("", "0", "None")


def execute(path: Path, fast: bool, cell_timeout: int | None, kernel: str):
    """Execute one lesson; returns (notebook, metadata, error or None)."""
    import jupytext
    from jupyter_client import KernelManager
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    nb = jupytext.read(path)
    nb.metadata.pop("jupytext", None)
    start = time.perf_counter()
    error, stopped_at = None, None
    with tempfile.TemporaryDirectory(prefix="minires-kernel-") as sockets:
        # The kernel talks over local sockets in a private folder, not over TCP.
        km = KernelManager(kernel_name=kernel, transport="ipc", ip=str(Path(sockets) / "k"))
        client = NotebookClient(nb, km=km, timeout=cell_timeout, allow_errors=False,
                                record_timing=False,
                                resources={"metadata": {"path": str(TUTORIALS)}})
        try:
            client.execute()
        except CellExecutionError as err:
            stopped_at = next((i for i, c in enumerate(nb.cells) if any(
                o.get("output_type") == "error" for o in c.get("outputs", []))), None)
            if _stopped_cleanly(err):
                print(f"  {path.stem}: stopped itself at cell {stopped_at} (SystemExit(0))")
            else:
                error = err
        finally:
            if km.has_kernel:          # nbclient leaves a kernel it was handed running
                km.shutdown_kernel(now=True)
    seconds = time.perf_counter() - start
    meta = {
        "mode": "fast" if fast else "full",
        "executed": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "duration_s": round(seconds, 1),
        "machine": machine(),
        "commit": _git_commit(),
        "lesson": f"tutorials/{path.name}",
        "lesson_sha256": source_hash(path),
        "command": "python tools/execute_lessons.py" + (" --fast" if fast else "")
                   + f" --only {path.stem[:2]}",
    }
    if stopped_at is not None and error is None:
        meta["stopped_at_cell"] = stopped_at
        meta["stopped_by"] = "SystemExit(0)"
    nb.metadata[METADATA_KEY] = meta
    return tidy_outputs(nb), meta, error


def write_notebook(nb, path: Path):
    """Validate and write atomically (a half-written notebook never replaces a good one)."""
    import nbformat
    nbformat.validate(nb)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        nbformat.write(nb, fh)
    os.replace(tmp, path)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--fast", action="store_true",
                        help="fast mode (MINIRES_TUTORIAL_FAST=1): a check that the notebooks "
                             "run, written to build/lessons-fast/, never to docs/lessons/")
    parser.add_argument("--only", default="",
                        help="comma-separated lesson numbers or names, e.g. 05,12 (default: all)")
    parser.add_argument("--out", type=Path, default=None,
                        help="where to write the notebooks (default: docs/lessons/ in full mode, "
                             "build/lessons-fast/ in fast mode)")
    parser.add_argument("--cell-timeout", type=int, default=None,
                        help="seconds one cell may run (default: no limit)")
    parser.add_argument("--kernel", default="python3", help="Jupyter kernel (default: python3)")
    args = parser.parse_args(argv)

    try:
        import jupytext  # noqa: F401
        import nbclient  # noqa: F401
    except ImportError as err:
        raise SystemExit(f"{err.name} is missing: pip install -e '.[docs]'") from None

    out = (args.out or (FAST_DIR if args.fast else LESSONS_DIR)).resolve()
    if args.fast and (out == LESSONS_DIR.resolve() or LESSONS_DIR.resolve() in out.parents):
        raise SystemExit(f"fast-mode notebooks are not lesson pages: not writing into {out} "
                         "(their numbers say nothing about ResNets); leave out --out")

    # The kernel inherits this process's environment.
    if args.fast:
        os.environ["MINIRES_TUTORIAL_FAST"] = "1"
        os.environ.setdefault("MINIRES_TUTORIAL_OUT", str(ROOT / "build" / "lessons-fast-out"))
    else:
        os.environ.pop("MINIRES_TUTORIAL_FAST", None)
    os.environ.setdefault("MPLBACKEND", "Agg")
    # Two warnings about the notebook machinery, not the lesson, that would otherwise be stored
    # with this machine's paths in them: tqdm.auto without ipywidgets (it falls back to its
    # text bar), and IPython's note on SystemExit (lesson 10 without a GPU).
    os.environ["PYTHONWARNINGS"] = ",".join(
        [w for w in [os.environ.get("PYTHONWARNINGS")] if w]
        + ["ignore:IProgress not found", "ignore:To exit:UserWarning"])
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT)] + [p for p in [os.environ.get("PYTHONPATH")] if p])

    picked = lessons(args.only.split(",") if args.only else None)
    mode = "fast" if args.fast else "full"
    print(f"{mode} mode: {len(picked)} lesson(s) -> {out}")
    failed = []
    for path in picked:
        print(f"{path.stem} ...", flush=True)
        nb, meta, error = execute(path, args.fast, args.cell_timeout, args.kernel)
        if error is not None:
            failed.append(path.stem)
            write_notebook(nb, FAILED_DIR / f"{path.stem}.ipynb")
            print(f"  FAILED after {meta['duration_s']:.0f} s: {error.ename}: {error.evalue}\n"
                  f"  (partial notebook: {FAILED_DIR / (path.stem + '.ipynb')}; not stored)")
            continue
        target = out / f"{path.stem}.ipynb"
        write_notebook(nb, target)
        print(f"  {meta['duration_s']:.0f} s -> {target}")
    if failed:
        raise SystemExit(f"{len(failed)} lesson(s) failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
