"""The docs site and the lessons as notebooks: what a learner reads before running anything.

* A lesson run as a notebook shows its figures inline (``lesson_utils.save_figure``), and
  as a script writes them and prints their path; ``tools/execute_lessons.py`` stores the
  run with its mode in the notebook's metadata, and never stores a fast-mode run as a
  lesson page.
* ``tools/build_site.py`` builds the site from what is stored (``mkdocs build --strict``:
  not one warning); it is served on localhost and every page is opened in headless
  Chromium, driven over its DevTools protocol: no console error or uncaught exception, no
  failed or non-local request (the site reads offline), every ``<img>`` loaded
  (naturalWidth > 0), every internal link (and its #anchor) resolves, and each page leaves
  a screenshot in ``build/site-screenshots/``. A lesson without a stored full-mode run says
  "Outputs not yet stored"; one with it says when it ran.

* The builder's three cases for a lesson page -- a stored full-mode run of the current
  lesson, one of an earlier version, a fast-mode run (refused) -- on stand-ins in a
  temporary folder.

Chromium is driven over its own DevTools protocol with ``websocket-client`` (pure Python,
~80 kB): Debian's ``chromium`` package is all the browser there is (no browser download,
no chromedriver whose version must match, no npm), and the protocol reports console
messages, exceptions and every request directly.

Needs ``pip install -e ".[docs]"`` and Debian's ``chromium`` (``apt-get install -y
chromium``); each test skips, saying which is missing, where they are not installed.
"""
import base64
import contextlib
import functools
import http.server
import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from html.parser import HTMLParser
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TOOLS = ROOT / "tools"
SCREENSHOTS = ROOT / "build" / "site-screenshots"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--hide-scrollbars", "--mute-audio"]


def _missing(*modules):
    return [m for m in modules if importlib.util.find_spec(m) is None]


def _need(*modules):
    if not (TOOLS / "build_site.py").exists():
        pytest.skip("tools/ is not in this copy of minires (a source distribution?)")
    missing = _missing(*modules)
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed: pip install -e '.[docs]'")


def _chromium():
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


def _load_tool(name):
    spec = importlib.util.spec_from_file_location(f"minires_tools_{name}", TOOLS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --- stored lesson notebooks: full-mode runs only ------------------------------------------------

def test_only_full_mode_runs_are_stored_as_lesson_pages():
    lessons = {p.stem for p in (ROOT / "tutorials").glob("[0-9][0-9]_*.py")}
    for nb in sorted((ROOT / "docs" / "lessons").glob("*.ipynb")):
        meta = json.loads(nb.read_text(encoding="utf-8"))["metadata"].get("minires", {})
        assert nb.stem in lessons, f"{nb.name} is no lesson of tutorials/"
        assert meta.get("mode") == "full", (
            f"{nb.name} was run in {meta.get('mode')!r} mode: only full-mode runs are lesson pages")
        for key in ("executed", "machine", "lesson_sha256", "duration_s"):
            assert key in meta, f"{nb.name}: metadata minires.{key} missing"


def test_stored_outputs_name_paths_as_a_clone_has_them(tmp_path):
    """A stored page shows ``tutorials/out/...``, not the folder the lesson happened to run in;
    paths outside the checkout are left as printed, and progress lines are still collapsed."""
    if not (TOOLS / "execute_lessons.py").exists():
        pytest.skip("tools/ is not in this copy of minires (a source distribution?)")
    tool = _load_tool("execute_lessons")
    root = tmp_path / "checkout"
    text = (f"figure: {root}/tutorials/out/06/flow.png\nstep 1\rstep 2\n"
            f"data: {tmp_path}/elsewhere/cifar\nsibling: {root}-other/x\n")
    cell = {"outputs": [{"output_type": "stream", "text": text},
                        {"output_type": "display_data", "data": {"text/plain": f"{root}/y"}}]}

    class Notebook:
        cells = [cell]

    tool.tidy_outputs(Notebook(), root)
    assert cell["outputs"][0]["text"] == (f"figure: tutorials/out/06/flow.png\nstep 2\n"
                                          f"data: {tmp_path}/elsewhere/cifar\n"
                                          f"sibling: {root}-other/x\n")
    assert cell["outputs"][1]["data"]["text/plain"] == f"{root}/y"     # only streams are tidied
    for nb in sorted((ROOT / "docs" / "lessons").glob("*.ipynb")):     # and the stored pages
        found = re.search(r"[\w.-]/tutorials/out/", nb.read_text(encoding="utf-8"))
        assert found is None, f"{nb.name} shows the folder it ran in: ...{found and found[0]}"


# --- figures: inline in a notebook, a path in a script ------------------------------------------

def test_save_figure_in_a_script_writes_the_png_and_prints_its_path(tmp_path):
    _need("matplotlib")
    code = ("import sys; sys.path.insert(0, 'tutorials')\n"
            "from lesson_utils import new_figure, save_figure\n"
            "fig = new_figure((3, 2)); fig.add_subplot().plot([0, 1], [1, 0])\n"
            f"print(repr(save_figure(fig, {str(tmp_path / 'f.png')!r})))\n")
    env = dict(os.environ, MPLBACKEND="Agg")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-2:] == [f"figure: {tmp_path / 'f.png'}", "None"]
    assert (tmp_path / "f.png").read_bytes()[:4] == b"\x89PNG"


@pytest.fixture(scope="module")
def fast_runs(tmp_path_factory):
    """Lessons 01 and 10 run as notebooks in fast mode (tools/execute_lessons.py --fast)."""
    _need("jupytext", "nbclient", "ipykernel", "matplotlib", "nbformat")
    tmp = tmp_path_factory.mktemp("fast-runs")
    env = dict(os.environ, MINIRES_TUTORIAL_OUT=str(tmp / "out"), MPLBACKEND="Agg")
    cmd = [sys.executable, str(TOOLS / "execute_lessons.py"), "--fast", "--only", "01,10",
           "--out", str(tmp / "nb")]
    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
                            check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    return tmp


@pytest.mark.slow
def test_a_lesson_run_as_a_notebook_shows_its_figures_inline(fast_runs):
    """Lesson 01 through jupytext -> nbclient: the figure is an image/png output."""
    tmp_path = fast_runs
    env = dict(os.environ, MINIRES_TUTORIAL_OUT=str(tmp_path / "out"), MPLBACKEND="Agg")
    nb = json.loads((tmp_path / "nb" / "01_autograd_by_hand.ipynb").read_text(encoding="utf-8"))
    outputs = [o for c in nb["cells"] for o in c.get("outputs", [])]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert images, "no figure shown inline"
    assert all(base64.b64decode(o["data"]["image/png"])[:4] == b"\x89PNG" for o in images)
    assert "PosixPath" not in json.dumps(outputs), "a cell shows a path instead of its figure"
    assert not [o for o in outputs if o.get("output_type") == "error"]
    meta = nb["metadata"]["minires"]
    assert meta["mode"] == "fast" and meta["lesson"] == "tutorials/01_autograd_by_hand.py"
    assert meta["machine"]["cores"] and meta["executed"][:2] == "20"
    assert list((tmp_path / "out").rglob("*.png")), "the PNG files are still written"

    # lesson 10 without a GPU ends itself with SystemExit(0): stored, and the metadata says so
    nb10 = json.loads((tmp_path / "nb" / "10_gpu.ipynb").read_text(encoding="utf-8"))
    if not nb10["metadata"]["minires"]["machine"]["gpu"]:
        assert nb10["metadata"]["minires"]["stopped_by"] == "SystemExit(0)"

    # and a fast-mode run is refused where lesson pages live
    refused = subprocess.run([sys.executable, str(TOOLS / "execute_lessons.py"), "--fast", "--only",
                              "01", "--out", str(ROOT / "docs" / "lessons")], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=120, check=False)
    assert refused.returncode != 0 and "not lesson pages" in refused.stderr
    assert not (ROOT / "docs" / "lessons" / "01_autograd_by_hand.ipynb").exists() or json.loads(
        (ROOT / "docs" / "lessons" / "01_autograd_by_hand.ipynb").read_text())["metadata"][
        "minires"]["mode"] == "full"


# --- the site in a browser ------------------------------------------------------------------

class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@contextlib.contextmanager
def serve(folder):
    handler = functools.partial(_Quiet, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


class Browser:
    """Headless Chromium over the DevTools protocol: one page (target), its events recorded."""

    def __init__(self, executable, profile):
        import websocket
        self.proc = subprocess.Popen(
            [executable, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--remote-debugging-port=0",
             "--window-size=1280,900", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        port_file = Path(profile) / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not (port_file.exists() and len(port_file.read_text().splitlines()) >= 2):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise RuntimeError("chromium did not start (no DevToolsActivePort)")
            time.sleep(0.1)
        port, path = port_file.read_text().splitlines()[:2]
        self.ws = websocket.create_connection(f"ws://127.0.0.1:{port}{path}", timeout=60,
                                              suppress_origin=True)
        self.next_id, self.events = 0, []
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        attached = self.call("Target.attachToTarget", targetId=target, flatten=True)
        self.session = attached["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.call(f"{domain}.enable", session=True)
        self.call("Emulation.setDeviceMetricsOverride", session=True, width=1280, height=900,
                  deviceScaleFactor=1, mobile=False)

    def call(self, method, session=False, **params):
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params}
        if session:
            msg["sessionId"] = self.session
        self.ws.send(json.dumps(msg))
        while True:
            reply = json.loads(self.ws.recv())
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            if "method" in reply:
                self.events.append(reply)

    def wait_for(self, method, timeout=60):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(e["method"] == method for e in self.events):
                return
            self.ws.settimeout(max(0.1, deadline - time.monotonic()))
            msg = json.loads(self.ws.recv())
            if "method" in msg:
                self.events.append(msg)
        raise TimeoutError(f"{method} not seen within {timeout} s")

    def evaluate(self, expression):
        result = self.call("Runtime.evaluate", session=True, expression=expression,
                           awaitPromise=True, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression[:60]}...: {result['exceptionDetails']}")
        return result["result"].get("value")

    def open(self, url):
        """Load ``url``; returns the problems seen while it loaded and settled."""
        self.events = []
        self.call("Page.navigate", session=True, url=url)
        self.wait_for("Page.loadEventFired")
        # Every image eager and finished (loaded or failed), then a moment for late scripts.
        self.evaluate("""Promise.all(Array.from(document.images, img => {
            img.loading = 'eager';
            return img.complete ? null : new Promise(r => { img.onload = img.onerror = r; });
        })).then(() => new Promise(r => setTimeout(r, 300)))""")
        self.drain()
        return self.problems(url)

    def drain(self):
        """Record the events still queued (a short time-out ends it)."""
        import websocket
        self.ws.settimeout(0.05)
        with contextlib.suppress(websocket.WebSocketTimeoutException):
            while True:
                msg = json.loads(self.ws.recv())
                if "method" in msg:
                    self.events.append(msg)
        self.ws.settimeout(60)

    def problems(self, url):
        base = urllib.parse.urlsplit(url)
        found = []
        for e in self.events:
            m, p = e["method"], e.get("params", {})
            if m == "Runtime.exceptionThrown":
                d = p["exceptionDetails"]
                what = d.get("exception", {}).get("description") or d.get("text")
                found.append(f"uncaught exception: {what}")
            elif m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                found.append("console.error: " + " ".join(str(a.get("value", a.get("description")))
                                                           for a in p.get("args", [])))
            elif m == "Log.entryAdded" and p["entry"].get("level") == "error":
                found.append(f"console: {p['entry'].get('text')} {p['entry'].get('url', '')}")
            elif m == "Network.loadingFailed" and not p.get("canceled"):
                found.append(f"request failed: {p.get('errorText')}")
            elif m == "Network.responseReceived" and p["response"]["status"] >= 400:
                found.append(f"HTTP {p['response']['status']}: {p['response']['url']}")
            elif m == "Network.requestWillBeSent":
                req = urllib.parse.urlsplit(p["request"]["url"])
                if req.scheme in ("http", "https", "ws", "wss") and req.netloc != base.netloc:
                    found.append(f"request outside the site: {p['request']['url']}")
        return found

    def screenshot(self, path, max_height=6000):
        size = self.call("Page.getLayoutMetrics", session=True)["cssContentSize"]
        clip = {"x": 0, "y": 0, "width": 1280, "height": min(max(size["height"], 900), max_height),
                "scale": 1}
        data = self.call("Page.captureScreenshot", session=True, format="png",
                         captureBeyondViewport=True, clip=clip)["data"]
        path.write_bytes(base64.b64decode(data))

    def close(self):
        with contextlib.suppress(Exception):
            self.ws.close()
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)


class _Anchors(HTMLParser):
    def __init__(self):
        super().__init__()
        self.ids = set()

    def handle_starttag(self, tag, attrs):
        for k, v in attrs:
            if k in ("id", "name") and v:
                self.ids.add(v)


SITE_MODULES = ("mkdocs", "material", "mkdocs_jupyter", "mkdocstrings", "mkdocstrings_handlers",
                "jupytext", "nbformat", "latex2mathml", "yaml", "websocket")


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    _need(*SITE_MODULES)
    chromium = _chromium()
    if chromium is None:
        pytest.skip("no chromium: apt-get install -y chromium (Debian's package, no download)")
    b = Browser(chromium, tmp_path_factory.mktemp("chromium-profile"))
    yield b
    b.close()


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    _need(*SITE_MODULES)
    out = tmp_path_factory.mktemp("docs") / "site"
    t0 = time.perf_counter()
    summary = _load_tool("build_site").build(out, strict=True, quiet=True)
    summary["build_s"] = time.perf_counter() - t0
    return summary


def _pages(folder):
    rels = (p.relative_to(folder).parent.as_posix() for p in folder.rglob("index.html"))
    return sorted("" if rel == "." else rel + "/" for rel in rels)


BANNERS = {"source": "Outputs not yet stored: run tools/execute_lessons.py",
           "stored": "Outputs of a full-mode run",
           "stale": "from an earlier version of this lesson"}


def check_page(browser, base, page, lessons, links, screenshot=None):
    """Open one page; returns its problems (and gathers its internal links into ``links``)."""
    problems = browser.open(base + page)
    broken = browser.evaluate(
        "Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0))"
        ".map(i => (i.currentSrc || i.src || i.outerHTML).slice(0, 100))")
    problems += [f"image not loaded: {src}" for src in broken]
    text = browser.evaluate("document.body.innerText")
    if page.startswith("lessons/") and page != "lessons/":
        stem = page.split("/")[1]
        if BANNERS[lessons[stem]].lower() not in text.lower():
            problems.append(f"lesson banner {BANNERS[lessons[stem]]!r} missing")
        if f"Lesson {stem[:2]}" not in text:
            problems.append("the lesson's own text is missing")
    if page.startswith("api/minires") and not browser.evaluate(
            "document.querySelectorAll('.doc-heading').length"):
        problems.append("API page without any documented object")
    for href in browser.evaluate("Array.from(document.querySelectorAll('a[href]'), a => a.href)"):
        if href.startswith(base):
            links.setdefault(href, page)
    if screenshot is not None:
        browser.screenshot(screenshot)
    return problems


def check_links(links, failures):
    """Every internal link answers 200 on the local server, and its #anchor exists there."""
    cache = {}
    for href, page in sorted(links.items()):
        target, _, frag = href.partition("#")
        if target not in cache:
            try:
                with urllib.request.urlopen(target, timeout=30) as resp:
                    cache[target] = (resp.status, resp.read().decode("utf-8", "replace"))
            except urllib.error.HTTPError as err:
                cache[target] = (err.code, "")
        status, body = cache[target]
        if status != 200:
            failures.setdefault(page, []).append(f"link {href}: HTTP {status}")
        elif frag and target.endswith("/"):
            parser = _Anchors()
            parser.feed(body)
            if urllib.parse.unquote(frag) not in parser.ids:
                failures.setdefault(page, []).append(f"link {href}: no #{frag} there")


def _report(failures):
    return "\n".join(f"{page}:\n  " + "\n  ".join(p) for page, p in failures.items())


@pytest.mark.slow
def test_the_site_builds_from_stored_outputs_and_every_page_works_in_chromium(site, browser):
    folder = Path(site["out"])
    pages = _pages(folder)
    lessons = site["lessons"]
    assert len(lessons) == 13 and len(pages) >= 13 + 11 + 4, pages
    if SCREENSHOTS.exists():
        shutil.rmtree(SCREENSHOTS)
    SCREENSHOTS.mkdir(parents=True)
    failures, links = {}, {}
    with serve(folder) as base:
        for page in pages:
            shot = SCREENSHOTS / ((page.strip("/").replace("/", "__") or "index") + ".png")
            problems = check_page(browser, base, page, lessons, links, shot)
            if problems:
                failures[page] = problems
        check_links(links, failures)
    shots = sorted(SCREENSHOTS.glob("*.png"))
    assert len(shots) == len(pages) and all(s.stat().st_size > 5000 for s in shots)
    assert not failures, _report(failures)
    # the experiments page carries the README's figures
    experiments = (folder / "experiments" / "index.html").read_text(encoding="utf-8")
    missing = [p.name for p in sorted((ROOT / "docs" / "img").glob("*.png"))
               if f"img/{p.name}" not in experiments]
    assert not missing, f"figures of docs/img/ not on the experiments page: {missing}"


@pytest.mark.slow
def test_a_stored_full_mode_run_is_shown_with_its_figures(fast_runs, browser, tmp_path):
    """The builder's three cases, on stand-ins made in a temporary folder (never committed):
    a stored run of the current lesson (shown, with its figures), a run of an earlier version
    (shown, with a warning), and a fast-mode run (never shown: the source instead)."""
    _need(*SITE_MODULES)
    stored = tmp_path / "stored"
    stored.mkdir()
    for stem, mode, same in [("01_autograd_by_hand", "full", True), ("10_gpu", "full", False)]:
        nb = json.loads((fast_runs / "nb" / f"{stem}.ipynb").read_text(encoding="utf-8"))
        nb["metadata"]["minires"]["mode"] = mode       # a stand-in for a full-mode run
        if not same:
            nb["metadata"]["minires"]["lesson_sha256"] = "0" * 64
        (stored / f"{stem}.ipynb").write_text(json.dumps(nb), encoding="utf-8")
    shutil.copy(fast_runs / "nb" / "01_autograd_by_hand.ipynb",
                stored / "00_tensors_and_backend.ipynb")           # a fast-mode run

    summary = _load_tool("build_site").build(tmp_path / "site", quiet=True, stored_dir=stored)
    lessons = summary["lessons"]
    assert lessons["01_autograd_by_hand"] == "stored" and lessons["10_gpu"] == "stale"
    assert lessons["00_tensors_and_backend"] == "source", "a fast-mode run was shown as a lesson"
    assert any("not a full-mode run" in n for n in summary["notes"])

    failures, links = {}, {}
    with serve(tmp_path / "site") as base:
        for stem in ("00_tensors_and_backend", "01_autograd_by_hand", "10_gpu"):
            page = f"lessons/{stem}/"
            problems = check_page(browser, base, page, lessons, links)
            if stem == "01_autograd_by_hand":
                shown = browser.evaluate(
                    "Array.from(document.images).filter(i => "
                    "i.src.startsWith('data:image/png') && i.naturalWidth > 0).length")
                if not shown:
                    problems.append("the stored run's figure is not on the page")
            if problems:
                failures[page] = problems
    assert not failures, _report(failures)
