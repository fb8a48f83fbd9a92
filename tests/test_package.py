"""A complete package: ``python -m minires`` lists the commands, the source distribution
carries the lessons, tests, benchmarks and docs, and the package index gets a readme whose
links do not break there."""
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

from minires.__main__ import COMMANDS, main

REPO = Path(__file__).resolve().parents[1]


def test_python_m_minires_lists_the_entry_points():
    proc = subprocess.run([sys.executable, "-m", "minires"], cwd=REPO, capture_output=True,
                          text=True, timeout=60, check=False)
    assert proc.returncode == 0 and not proc.stderr
    lines = proc.stdout.splitlines()
    assert all(len(line) <= 79 for line in lines)
    for module in ("minires.train", "minires.experiments", "minires.export"):
        listed = [line for line in lines if f"python -m {module} " in line]
        assert len(listed) == 1, module                                  # one line each
        assert importlib.util.find_spec(f"{module}.__main__") is not None, module
    assert len(COMMANDS) == 3


def test_python_m_minires_version_and_mistakes(capsys):
    from minires import __version__
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"minires {__version__}"
    assert main(["--help"]) == 0 and "python -m minires.train cifar" in capsys.readouterr().out
    assert main(["train"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "did you mean python -m minires.train?" in err
    assert main(["frobnicate"]) == 2
    assert "takes no arguments, got 'frobnicate'" in capsys.readouterr().err


def pyproject():
    tomllib = pytest.importorskip("tomllib")                          # Python 3.11+
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def test_the_package_index_readme_has_no_links_that_break_there():
    project = pyproject()["project"]
    assert project["readme"] == {"file": "docs/PYPI.md", "content-type": "text/markdown"}
    assert (project["license"], project["license-files"]) == ("MIT", ["LICENSE"])    # SPDX form
    text = (REPO / "docs" / "PYPI.md").read_text()
    assert text.startswith("# minires\n")
    # a package index shows the page alone: no images, and no link that is not absolute
    assert "![" not in text and "<img" not in text.lower()
    relative = [target for target in re.findall(r"\]\(([^)]*)\)", text)
                if not re.match(r"https?://", target)]
    assert not relative
    references = re.findall(r"^\[[^\]]+\]:\s*(?!https?://)", text, flags=re.MULTILINE)
    assert not references
    # the commands it shows exist
    for module in set(re.findall(r"python -m (minires[\w.]*)", text)):
        spec = importlib.util.find_spec(module if module == "minires" else module + ".__main__")
        assert spec is not None, module


def test_the_source_distribution_carries_lessons_tests_benchmarks_and_docs():
    """What MANIFEST.in adds (checked with ``python -m build --sdist`` and ``tar tzf``)."""
    rules = [line.split() for line in (REPO / "MANIFEST.in").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    for folder in ("tutorials", "tests", "benchmarks", "docs"):
        assert ["graft", folder] in rules, folder
        assert (REPO / folder).is_dir()
    assert ["include", "README.md"] in rules
    assert ["global-exclude", "*.py[cod]"] in rules
