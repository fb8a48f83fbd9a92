#!/usr/bin/env python
"""Build the docs site from what the repository stores, without running a lesson.

    pip install -e ".[docs]"
    python tools/build_site.py                  # -> build/site/ (git-ignored)
    python -m http.server -d build/site 8000    # then open http://localhost:8000

The pages (mkdocs with the Material theme, settings in ``docs/site/mkdocs.yml``):

* Home, Results and experiments, Architecture, Benchmarks: README.md, cut at its ``##``
  sections (``SECTION_PAGES`` says which section goes where; the rest stays on Home),
  with its figures from ``docs/img/``; ``benchmarks/RESULTS.md`` and ``docs/results/*.md``
  as pages of their own. Links between these files are rewritten to the pages.
* Lessons: ``tutorials/README.md``, then one page per lesson. A lesson whose full-mode run
  is stored in ``docs/lessons/NN_name.ipynb`` (by ``tools/execute_lessons.py``) shows that
  run -- its prose, code, printed output and figures -- under a note saying when and on
  what it ran (and a warning if the lesson has changed since). A lesson without one shows
  its source (jupytext, no outputs) under the banner "Outputs not yet stored: run
  tools/execute_lessons.py". A fast-mode notebook is never shown as a lesson's outputs.
* API reference: mkdocstrings from the docstrings of ``API_MODULES`` (read from the
  source, nothing imported).

The lessons' TeX (``$...$``, ``$$...$$``) becomes MathML here, which browsers draw
without a script, so the site needs nothing from the network.
"""
from __future__ import annotations

import argparse
import hashlib
import html
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path, PurePosixPath

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "docs" / "site" / "mkdocs.yml"
ASSETS = ROOT / "docs" / "site" / "assets"
TUTORIALS = ROOT / "tutorials"
STORED_LESSONS = ROOT / "docs" / "lessons"
DEFAULT_OUT = ROOT / "build" / "site"

# README sections (## headings, matched by how they start) that get a page of their own.
SECTION_PAGES = [
    ("What it reaches", "experiments.md", "Results and experiments"),
    ("Architecture", "architecture.md", "Architecture"),
    ("Benchmarks", "benchmarks/index.md", "Benchmarks"),
]

# The API reference: one page per public module.
API_MODULES = ["minires", "minires.functional", "minires.nn", "minires.models", "minires.optim",
               "minires.data", "minires.train", "minires.inspect", "minires.experiments",
               "minires.checkpoint", "minires.export"]

BANNER_MISSING_TITLE = "Outputs not yet stored: run tools/execute_lessons.py"


# --- markdown helpers --------------------------------------------------------------------------

_FENCE = re.compile(r"^(```|~~~)")


def split_fenced(text: str):
    """``(is_code, chunk)`` pieces of markdown: fenced code blocks apart from the rest."""
    pieces, buf, in_code = [], [], False
    for line in text.splitlines(keepends=True):
        if _FENCE.match(line.lstrip()):
            if not in_code:
                if buf:
                    pieces.append((False, "".join(buf)))
                buf, in_code = [line], True
            else:
                buf.append(line)
                pieces.append((True, "".join(buf)))
                buf, in_code = [], False
            continue
        buf.append(line)
    if buf:
        pieces.append((in_code, "".join(buf)))
    return pieces


_CODE_SPAN = re.compile(r"(`+)(.+?)\1", re.DOTALL)


def outside_code(text: str, fn):
    """Apply ``fn`` to the parts of markdown ``text`` outside fenced code and code spans."""
    out = []
    for is_code, chunk in split_fenced(text):
        if is_code:
            out.append(chunk)
            continue
        pos = 0
        for m in _CODE_SPAN.finditer(chunk):
            out.append(fn(chunk[pos:m.start()]))
            out.append(m.group(0))
            pos = m.end()
        out.append(fn(chunk[pos:]))
    return "".join(out)


def split_sections(text: str):
    """``[(heading or None, text)]``: markdown cut before each ``## `` heading outside code."""
    sections, title, buf = [], None, []
    for is_code, chunk in split_fenced(text):
        for line in chunk.splitlines(keepends=True):
            if not is_code and line.startswith("## "):
                sections.append((title, "".join(buf)))
                title, buf = line[3:].strip(), [line]
            else:
                buf.append(line)
    sections.append((title, "".join(buf)))
    return sections


def promote_headings(text: str) -> str:
    """A ``##`` section as a page: its ``##`` becomes ``#``, ``###`` becomes ``##``, ..."""
    return "".join(line[1:] if not is_code and line.startswith("##") else line
                   for is_code, chunk in split_fenced(text)
                   for line in chunk.splitlines(keepends=True))


class SiteMap:
    """Which repository file each site page comes from, to rewrite links between them."""

    def __init__(self):
        self.by_repo: dict[str, str] = {}     # repo path (posix) -> site path (posix)
        self.unlinked: set[str] = set()

    def add(self, repo_path: str, site_path: str):
        self.by_repo[repo_path.rstrip("/")] = site_path

    def target(self, link: str, src_repo: str, dest_site: str):
        """The rewritten link, or None when it points to a repository file not on the site."""
        if re.match(r"^[a-z][a-z0-9+.-]*:|^#|^/", link, re.IGNORECASE):
            return link
        path, _, frag = link.partition("#")
        if not path:
            return link
        repo = os.path.normpath(str(PurePosixPath(src_repo).parent / path)).replace(os.sep, "/")
        site = self.by_repo.get(repo.rstrip("/"))
        if site is None:
            self.unlinked.add(repo)
            return None
        here = str(PurePosixPath(dest_site).parent) or "."
        rel = os.path.relpath(site, here).replace(os.sep, "/")
        return rel + ("#" + frag if frag else "")


_LINK = re.compile(r"(!?)\[([^\]]*)\]\(([^)\s]+)(\s+\"[^\"]*\")?\)")


def rewrite_links(text: str, sitemap: SiteMap, src_repo: str, dest_site: str) -> str:
    """Markdown links and images relative to ``src_repo`` made relative to ``dest_site``; a
    link to a repository file the site does not carry keeps its text, as code."""
    def one(m):
        bang, label, link, title = m.group(1), m.group(2), m.group(3), m.group(4) or ""
        new = sitemap.target(link, src_repo, dest_site)
        if new is None:
            return label or f"`{link}`"
        return f"{bang}[{label}]({new}{title})"
    # Fenced code is left alone; a link's text may hold a code span ([`x`](y)).
    return "".join(chunk if is_code else _LINK.sub(one, chunk)
                   for is_code, chunk in split_fenced(text))


def link_lesson_names(text: str, lessons: dict, dest_site: str) -> str:
    """A code span naming a lesson file (`tutorials/05_x.py` or `05_x.py`) becomes a link to
    its page."""
    def one(m):
        name = m.group(2).strip()
        stem = PurePosixPath(name).stem
        if m.group(1) == "`" and stem in lessons and name in (f"{stem}.py", f"tutorials/{stem}.py"):
            rel = os.path.relpath(lessons[stem], str(PurePosixPath(dest_site).parent) or ".")
            return f"[{m.group(0)}]({rel})"
        return m.group(0)
    out = []
    for is_code, chunk in split_fenced(text):
        out.append(chunk if is_code else re.sub(r"(?<!\[)(`)([^`\n]+)`(?!\])", one, chunk))
    return "".join(out)


# --- TeX to MathML -----------------------------------------------------------------------------

_DISPLAY_MATH = re.compile(r"\$\$(.+?)\$\$", re.DOTALL)
_INLINE_MATH = re.compile(r"(?<![\\$\w])\$(?=[^\s$])([^$\n]+?)(?<=[^\s\\])\$(?![\w$])")
_MD_SPECIAL = str.maketrans({"*": "&#42;", "_": "&#95;", "\\": "&#92;", "`": "&#96;",
                             "[": "&#91;", "]": "&#93;", "$": "&#36;", "|": "&#124;"})


def _mathml(tex: str, display: bool, problems: list) -> str | None:
    from latex2mathml.converter import convert
    try:
        markup = convert(tex.strip(), display="block" if display else "inline")
    except Exception as err:  # noqa: BLE001 -- an unsupported command: leave the TeX as it is, and say so
        problems.append(f"{tex!r}: {type(err).__name__}: {err}")
        return None
    # One line, and no character that markdown would read inside the tags' text.
    markup = re.sub(r">\s+<", "><", markup.replace("\n", " "))
    return re.sub(r">([^<]+)<", lambda m: ">" + m.group(1).translate(_MD_SPECIAL) + "<", markup)


def tex_to_mathml(markdown: str, problems: list) -> str:
    def convert(text):
        text = _DISPLAY_MATH.sub(lambda m: _mathml(m.group(1), True, problems) or m.group(0), text)
        return _INLINE_MATH.sub(lambda m: _mathml(m.group(1), False, problems) or m.group(0), text)
    return outside_code(markdown, convert)


# --- lessons -----------------------------------------------------------------------------------

def lesson_title(path: Path) -> str:
    """"05 · The degradation problem" from the lesson's "# Lesson 05 — The degradation problem"."""
    m = re.search(r"^# # Lesson (\d+)\s*[—:-]+\s*(.+)$", path.read_text(encoding="utf-8"),
                  re.MULTILINE)
    return f"{m.group(1)} · {m.group(2).strip()}" if m else path.stem.replace("_", " ")


def _admonition(kind: str, title: str, body: str) -> str:
    return (f'<div class="admonition {kind} minires-run-note">'
            f'<p class="admonition-title">{html.escape(title)}</p><p>{body}</p></div>')


def _describe_run(meta: dict) -> str:
    m = meta.get("machine", {})
    parts = [m.get("cpu"), f"{m['cores']} cores" if m.get("cores") else None,
             f"{m['memory_gib']} GiB" if m.get("memory_gib") else None,
             "a GPU" if m.get("gpu") else "no GPU", f"Python {m.get('python')}",
             f"NumPy {m.get('numpy')}", f"minires {m.get('minires')}"]
    where = ", ".join(html.escape(str(p)) for p in parts if p)
    took = meta.get("duration_s")
    took = f"{took / 60:.1f} min" if took and took >= 90 else f"{took:.0f} s" if took else "?"
    text = f"{where}; it took {took}"
    commit = meta.get("commit")
    if commit:   # "+" marks local changes to minires/ or tutorials/ at the time
        text += f"; commit <code>{html.escape(commit[:12])}{'+' if '+' in commit else ''}</code>"
    if "stopped_at_cell" in meta:
        text += (f"; it stopped itself at cell {meta['stopped_at_cell']} "
                 f"({html.escape(meta.get('stopped_by', ''))})")
    return text


def lesson_notebook(py: Path, notes: list, stored_dir: Path = STORED_LESSONS):
    """The notebook a lesson's page shows, with its banner, and its status: "stored" (a
    full-mode run of this very source), "stale" (a full-mode run of an earlier version) or
    "source" (no full-mode run stored: the source without outputs)."""
    import jupytext
    import nbformat

    number = py.stem[:2]
    rerun = f"<code>python tools/execute_lessons.py --only {number}</code>"
    stored = stored_dir / f"{py.stem}.ipynb"
    nb, status, banner = None, "source", None
    if stored.exists():
        candidate = nbformat.read(stored, as_version=4)
        meta = candidate.metadata.get("minires", {})
        if meta.get("mode") != "full":
            notes.append(f"{stored}: mode {meta.get('mode')!r}, not a full-mode "
                         "run: not shown (only full-mode runs are lesson pages)")
        else:
            nb = candidate
            day = html.escape(str(meta.get("executed", "?"))[:10])
            same = meta.get("lesson_sha256") == hashlib.sha256(py.read_bytes()).hexdigest()
            status = "stored" if same else "stale"
            if same:
                banner = _admonition(
                    "info", f"Outputs of a full-mode run on {day}",
                    f"Run on real CIFAR-10 data with the budget stated above, by "
                    f"{rerun}, on {_describe_run(meta)}. Your numbers will differ in the last "
                    f"digits, and the timings with your machine.")
            else:
                banner = _admonition(
                    "warning",
                    f"These outputs are from an earlier version of this lesson (run {day})",
                    f"The code and outputs below are those of that run; <code>tutorials/{py.name}"
                    f"</code> has changed since. Run {rerun} to store a run of the current "
                    f"lesson. That run: {_describe_run(meta)}.")
    if nb is None:
        nb = jupytext.read(py)
        banner = _admonition(
            "warning", BANNER_MISSING_TITLE,
            f"This page shows the lesson's source without outputs: no full-mode run of it is "
            f"stored yet. Run {rerun} (real CIFAR-10 data, the budget stated above) to store its "
            f"printed output and figures in <code>docs/lessons/</code>; the site then shows "
            f"them. Or run the lesson yourself: <code>python tutorials/{py.name}</code>.")
    nb.metadata.pop("jupytext", None)
    at = 1 if nb.cells and nb.cells[0].cell_type == "markdown" else 0
    nb.cells.insert(at, nbformat.v4.new_markdown_cell(banner))
    for i, cell in enumerate(nb.cells):   # cell ids exist from nbformat 4.5 on
        if (nb.nbformat, nb.nbformat_minor) >= (4, 5):
            cell.setdefault("id", f"cell-{i}")
        else:
            cell.pop("id", None)
    return nb, status


# --- the build ---------------------------------------------------------------------------------

def stage(src: Path, notes: list, stored_dir: Path = STORED_LESSONS) -> dict:
    """Write every page into ``src`` (emptied first); returns the mkdocs ``nav`` and a summary."""
    import nbformat
    import yaml

    if src.exists():
        shutil.rmtree(src)
    docs = src / "docs"
    (docs / "img").mkdir(parents=True)
    sitemap = SiteMap()
    for png in sorted((ROOT / "docs" / "img").glob("*")):
        shutil.copy2(png, docs / "img" / png.name)
        sitemap.add(f"docs/img/{png.name}", f"img/{png.name}")
    shutil.copytree(ASSETS, docs / "assets")

    lesson_paths = sorted(TUTORIALS.glob("[0-9][0-9]_*.py"))
    lessons = {p.stem: f"lessons/{p.stem}.ipynb" for p in lesson_paths}
    for p in lesson_paths:
        sitemap.add(f"tutorials/{p.name}", lessons[p.stem])
    sitemap.add("tutorials", "lessons/index.md")
    sitemap.add("tutorials/README.md", "lessons/index.md")
    sitemap.add("README.md", "index.md")
    sitemap.add("benchmarks/RESULTS.md", "benchmarks/results.md")
    results = sorted((ROOT / "docs" / "results").glob("*.md"))
    for md in results:
        sitemap.add(f"docs/results/{md.name}", f"results/{md.stem}.md")

    # README, cut into pages
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    pages = {"index.md": []}
    titles = {}
    for heading, text in split_sections(readme):
        page = next(((p, t) for start, p, t in SECTION_PAGES
                     if heading and heading.startswith(start)), None)
        if page is None:
            pages["index.md"].append(text)
        else:
            pages[page[0]] = [promote_headings(text)]
            titles[page[0]] = page[1]
    if "benchmarks/index.md" in pages:
        pages["benchmarks/index.md"].append(
            "\nEvery optimisation with its before/after figures, command, machine and load: "
            "[the benchmark results](benchmarks/RESULTS.md).\n")
    if "experiments.md" in pages and results:
        pages["experiments.md"].append(
            "\n## More results\n\n" + "".join(
                f"- [{_md_title(md)}](docs/results/{md.name})\n" for md in results))

    def write_md(site_path: str, text: str, src_repo: str):
        text = rewrite_links(text, sitemap, src_repo, site_path)
        text = link_lesson_names(text, lessons, site_path)
        out = docs / site_path
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text, encoding="utf-8")

    for site_path, parts in pages.items():
        write_md(site_path, "".join(parts), "README.md")
    write_md("lessons/index.md", (TUTORIALS / "README.md").read_text(encoding="utf-8"),
             "tutorials/README.md")
    write_md("benchmarks/results.md",
             (ROOT / "benchmarks" / "RESULTS.md").read_text(encoding="utf-8"),
             "benchmarks/RESULTS.md")
    for md in results:
        write_md(f"results/{md.stem}.md", md.read_text(encoding="utf-8"), f"docs/results/{md.name}")
        for other in sorted((ROOT / "docs" / "results").glob(f"{md.stem}*")):
            if other.suffix != ".md":
                shutil.copy2(other, docs / "results" / other.name)

    # Lessons
    status = {}
    math_problems: list = []
    for p in lesson_paths:
        nb, status[p.stem] = lesson_notebook(p, notes, stored_dir)
        for cell in nb.cells:
            if cell.cell_type == "markdown":
                text = tex_to_mathml(cell.source, math_problems)
                text = rewrite_links(text, sitemap, f"tutorials/{p.name}", lessons[p.stem])
                cell.source = link_lesson_names(text, lessons, lessons[p.stem])
        with open(docs / lessons[p.stem], "w", encoding="utf-8") as fh:
            nbformat.write(nb, fh)
    notes.extend(f"TeX left as it is: {p}" for p in math_problems)

    # API reference
    (docs / "api").mkdir()
    api_pages = []
    for mod in API_MODULES:
        page = f"api/{mod}.md"
        (docs / page).write_text(f"::: {mod}\n    options:\n      heading_level: 1\n",
                                 encoding="utf-8")
        api_pages.append({mod: page})
    (docs / "api" / "index.md").write_text(
        "# API reference\n\nGenerated from the docstrings (the same text `help()` shows), "
        "one page per public module:\n\n"
        + "".join(f"- [`{m}`]({m}.md)\n" for m in API_MODULES), encoding="utf-8")

    notes.extend(f"link to a file the site does not carry, kept as text: {u}"
                 for u in sorted(sitemap.unlinked))

    nav = [{"Home": "index.md"}]
    nav.append({"Lessons": [{"Overview": "lessons/index.md"}]
                + [{lesson_title(p): lessons[p.stem]} for p in lesson_paths]})
    if "experiments.md" in pages:
        nav.append({titles["experiments.md"]: ["experiments.md"]
                    + [{_md_title(md): f"results/{md.stem}.md"} for md in results]})
    if "architecture.md" in pages:
        nav.append({titles["architecture.md"]: "architecture.md"})
    bench = [{"Overview": "benchmarks/index.md"}] if "benchmarks/index.md" in pages else []
    nav.append({"Benchmarks": bench + [{"Results": "benchmarks/results.md"}]})
    nav.append({"API reference": [{"Overview": "api/index.md"}] + api_pages})

    config = yaml.safe_load(CONFIG.read_text(encoding="utf-8"))
    config.update(docs_dir=str(docs), site_dir=None, nav=nav,
                  hooks=[str(CONFIG.parent / hook) for hook in config.get("hooks", [])])
    for plugin in config["plugins"]:
        if isinstance(plugin, dict) and "mkdocstrings" in plugin:
            python = plugin["mkdocstrings"]["handlers"]["python"]
            python["paths"] = [str(ROOT)]
            python["options"]["extensions"] = [
                str(CONFIG.parent / ext) for ext in python["options"].get("extensions", [])]
        if isinstance(plugin, dict) and "mkdocs-jupyter" in plugin:
            plugin["mkdocs-jupyter"]["cache_dir"] = str(ROOT / "build" / "mkdocs-jupyter-cache")
    return {"config": config, "lessons": status}


def _md_title(md: Path) -> str:
    m = re.search(r"^# (.+)$", md.read_text(encoding="utf-8"), re.MULTILINE)
    return m.group(1).strip() if m else md.stem.replace("-", " ")


def build(out: Path = DEFAULT_OUT, strict: bool = False, quiet: bool = False,
          stored_dir: Path = STORED_LESSONS) -> dict:
    """Stage the pages next to ``out`` and run mkdocs into ``out``; returns a summary.
    ``stored_dir``: where the stored lesson runs are (the tests point it elsewhere)."""
    import yaml

    out = out.resolve()
    src = out.with_name(out.name + "-src")
    notes: list = []
    t0 = time.perf_counter()
    staged = stage(src, notes, stored_dir)
    config = staged["config"]
    config["site_dir"] = str(out)
    cfg_path = src / "mkdocs.yml"
    cfg_path.write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=True),
                        encoding="utf-8")
    cmd = [sys.executable, "-m", "mkdocs", "build", "--clean", "-f", str(cfg_path)]
    if strict:
        cmd.append("--strict")
    if quiet:
        cmd.append("--quiet")
    # NO_MKDOCS_2_WARNING: Material's end-of-life notice (May 2027), printed on every build;
    # the choice of tool is discussed in docs/site/mkdocs.yml.
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1", PYTHONPATH=os.pathsep.join(
        [str(ROOT)] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    result = subprocess.run(cmd, cwd=src, env=env, check=False)
    seconds = time.perf_counter() - t0
    if result.returncode != 0:
        raise SystemExit(f"mkdocs build failed (exit {result.returncode}): {' '.join(cmd)}")
    for note in notes:
        print(f"note: {note}")
    lessons = staged["lessons"]
    counts = {k: sum(1 for v in lessons.values() if v == k) for k in ("stored", "stale", "source")}
    print(f"site built in {seconds:.1f} s -> {out}\nlessons: {counts['stored']} with stored "
          f"full-mode outputs, {counts['stale']} stored from an earlier version, "
          f"{counts['source']} source only (outputs not yet stored)")
    summary = {"out": str(out), "seconds": seconds, "lessons": lessons, "notes": notes}
    (src / "summary.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
    return summary


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help="the site's folder (default: build/site); the pages are staged "
                             "beside it, in <out>-src")
    parser.add_argument("--strict", action="store_true", help="fail on any mkdocs warning")
    parser.add_argument("--quiet", action="store_true", help="only mkdocs' warnings and errors")
    args = parser.parse_args(argv)
    missing = [name for name in ("mkdocs", "material", "mkdocs_jupyter", "mkdocstrings",
                                 "mkdocstrings_handlers.python", "jupytext", "nbformat",
                                 "latex2mathml", "yaml")
               if not _importable(name)]
    if missing:
        raise SystemExit(f"missing: {', '.join(missing)}: pip install -e '.[docs]'")
    build(args.out, strict=args.strict, quiet=args.quiet)


def _importable(name: str) -> bool:
    import importlib.util
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


if __name__ == "__main__":
    main()
