"""tools/seed_table.py on fabricated results whose table is known."""
import importlib.util
import json
from pathlib import Path

import pytest

TOOL = Path(__file__).resolve().parent.parent / "tools" / "seed_table.py"


def _tool():
    if not TOOL.exists():
        pytest.skip("tools/ is not in this copy of minires (a source distribution?)")
    spec = importlib.util.spec_from_file_location("seed_table", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _write(folder, branch_init, branch_trained, res_error, res_after, plain_error, plain_after):
    folder.mkdir(parents=True)
    nets = {n: {"init_mean_branch_ratio": branch_init, "trained_mean_branch_ratio": branch_trained}
            for n in ("plain56", "resnet56")}
    (folder / "feature-reuse.json").write_text(json.dumps({"models": nets}))
    responses = {n: {"init_mean_std": 1.0, "mean_std": 1.0} for n in
                 ("plain20", "plain56", "resnet20", "resnet56")}
    (folder / "layer-responses.json").write_text(json.dumps({"models": responses}))
    (folder / "path-lengths.json").write_text(json.dumps({"mean_length": 5.0,
                                                          "init": {"mean_length": 10.0}}))
    lesion = {"resnet56": {"test_error": res_error, "mean_error_after_lesion": res_after},
              "plain56": {"test_error": plain_error, "mean_error_after_lesion": plain_after}}
    (folder / "lesion.json").write_text(json.dumps({"models": lesion}))


def _row(out, name):
    return next(line for line in out.splitlines() if line.startswith(f"| {name} |"))


def test_seed_table_gives_means_standard_errors_and_signs(tmp_path, capsys):
    tool = _tool()
    _write(tmp_path / "seed1", 0.4, 0.2, 0.4, 0.45, 0.5, 0.7)
    _write(tmp_path / "seed2", 0.4, 0.3, 0.4, 0.45, 0.8, 0.85)
    tool.main(["--seeds", "1,2", "--results", str(tmp_path)])
    out = capsys.readouterr().out
    # -0.2 and -0.1: mean -0.15, SD 0.0707, SE 0.05; both negative
    assert _row(out, "resnet56 ‖F(x)‖/‖x‖, trained - init").endswith(
        "| -0.200 | -0.100 | -0.150 ± 0.050 | yes |")
    # a level is not a sign test
    assert _row(out, "resnet56 mean path length, trained").endswith("| 5.000 ± 0.000 | (a level) |")
    # the lesion's added error, and as a share of the accuracy above chance (0.9 - error):
    # 0.2 / 0.4 = 0.5 and 0.05 / 0.1 = 0.5
    assert "| +0.200 | +0.050 |" in _row(out, "lesion: error added, one plain56 layer")
    assert _row(out, "lesion: share of above-chance accuracy lost, plain56").endswith(
        "| +0.500 | +0.500 | +0.500 ± 0.000 | yes |")
    # equal responses: zero differences are not "the same sign"
    assert _row(out, "response std resnet56 - plain56, trained").endswith("| no |")


def test_seed_table_refuses_a_missing_file_and_one_seed(tmp_path):
    tool = _tool()
    _write(tmp_path / "seed1", 0.4, 0.2, 0.4, 0.45, 0.5, 0.7)
    (tmp_path / "seed1" / "lesion.json").unlink()
    with pytest.raises(SystemExit, match="lesion.json is missing"):
        tool.main(["--seeds", "1,2", "--results", str(tmp_path)])
    with pytest.raises(SystemExit, match="needs 2 seeds"):
        tool.main(["--seeds", "1", "--results", str(tmp_path)])
