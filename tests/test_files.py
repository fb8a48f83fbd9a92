"""minires.files: atomic writes, JSON, figures, and their errors."""
import json
import os

import numpy as np
import pytest

from minires import files


def test_a_write_that_fails_leaves_the_old_file_and_no_temporary(tmp_path):
    path = files.write_text(tmp_path / "a.txt", "old")

    def broken(f):
        f.write(b"half")
        raise RuntimeError("disk full")
    with pytest.raises(RuntimeError, match="disk full"):
        files.write_atomically(path, broken)
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["a.txt"]


def test_a_missing_folder_is_an_oserror_naming_the_file_and_its_kind(tmp_path):
    with pytest.raises(OSError, match="cannot write results .*b.json: the folder .*nope"):
        files.write_json(tmp_path / "nope" / "b.json", {}, what="results")


def test_json_takes_numpy_values_and_paths(tmp_path):
    path = files.write_json(tmp_path / "r.json", {"a": np.float32(0.5), "b": np.arange(3),
                                                  "c": tmp_path, "d": float("nan")})
    back = json.loads(path.read_text())
    assert back["a"] == 0.5 and back["b"] == [0, 1, 2] and back["c"] == str(tmp_path)
    assert np.isnan(back["d"])
    rows = files.write_json_lines(tmp_path / "m.jsonl", [{"x": np.int64(1)}, {"x": 2}])
    assert [json.loads(line) for line in rows.read_text().splitlines()] == [{"x": 1}, {"x": 2}]
    with pytest.raises(TypeError, match="cannot write object to JSON"):
        files.to_json({"x": object()})


def test_figures_take_the_format_their_suffix_names(tmp_path):
    pytest.importorskip("matplotlib")
    fig = files.new_figure((2, 2))
    fig.subplots().plot([0, 1])
    assert files.save_figure(fig, tmp_path / "f.pdf").read_bytes()[:5] == b"%PDF-"
    assert files.save_figure(fig, tmp_path / "f.png").read_bytes()[:4] == b"\x89PNG"
    assert files.draw_optional(lambda: fig, tmp_path / "g.png") == tmp_path / "g.png"


def test_without_matplotlib_an_asked_for_figure_raises_and_a_side_figure_is_skipped(
        tmp_path, monkeypatch, capsys):
    import builtins
    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name.startswith("matplotlib"):
            raise ImportError("No module named 'matplotlib'")
        return real_import(name, *args, **kwargs)
    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    with pytest.raises(files.MatplotlibMissing, match="pip install"):
        files.new_figure()
    assert files.draw_optional(files.new_figure, tmp_path / "c.png") is None
    assert "c.png not drawn" in capsys.readouterr().out and not (tmp_path / "c.png").exists()
