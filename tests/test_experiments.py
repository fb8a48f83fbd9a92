"""minires.experiments: each experiment end to end in its --tiny configuration (synthetic data),
the verdicts on fabricated numbers, refusals, resuming, and the pieces the experiments are built
from (path selection, lesions, filter normalisation, BN calibration, correlations)."""
import json

import numpy as np
import pytest

import minires as mr
from minires import backend, nn
from minires.experiments import EXPERIMENTS, run_experiment
from minires.experiments.__main__ import main
from minires.experiments.curvature import nonconvex_share
from minires.experiments.data import balanced_subset, first_batch, pool_images, synthetic_split
from minires.experiments.degradation import format_verdict, verdict
from minires.experiments.feature_reuse import block_statistics
from minires.experiments.gradient_at_init import pearson_rows, perturbed_first_over_last
from minires.experiments.lesion import plain_lesions, residual_lesions
from minires.experiments.loss_landscape import (
    ParameterShifter,
    filter_normalised_direction,
    slice_tv_ratio,
)
from minires.experiments.nets import calibrate_batch_norm, describe_net
from minires.experiments.options import ExperimentError
from minires.experiments.path_lengths import PathSelector, summarise


def tiny(name, tmp_path, *extra, out=None):
    out = out or tmp_path / name
    results = run_experiment(name, ["--tiny", "--out", str(out), *extra])
    saved = json.loads((out / "results.json").read_text())
    assert saved["experiment"] == name and saved["complete"] is True
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert results.get("figure") is None
    else:
        if name != "all":
            assert (out / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
    return results, saved


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    """``all --tiny`` once: degradation, then every experiment on its nets."""
    out = tmp_path_factory.mktemp("chain") / "all"
    results = run_experiment("all", ["--tiny", "--out", str(out)])
    return out, results


# --- each experiment, end to end ----------------------------------------------------------------
def test_gradient_at_init_tiny(tmp_path):
    _results, saved = tiny("gradient-at-init", tmp_path)
    assert set(saved["models"]) == {"plain8", "plain14", "resnet8", "resnet14"}
    for name, r in saved["models"].items():
        assert len(r["grad_norms"]) == len(r["layer_names"]) > 0
        assert all(v > 0 for v in r["grad_norms"])
        assert len(r["correlation"]) == saved["points"] - 1
        assert len(r["first_over_last_perturbed"]) == 4       # the default --perturbations
        assert all(-1 <= c <= 1 for c in r["correlation"])
        shares = r["block_skip_shares"]
        if name.startswith("plain"):
            assert all(s == 0 for s in shares)
        else:
            assert all(s > 0 for s in shares)


def test_path_lengths_tiny(tmp_path):
    _results, saved = tiny("path-lengths", tmp_path)
    n = saved["blocks"]
    assert n == 6 and saved["lengths"] == list(range(n + 1))
    assert sum(saved["path_fraction"]) == pytest.approx(1.0)
    assert sum(saved["grad_share"]) == pytest.approx(1.0)
    assert all(v > 0 for v in saved["single_path_grad_norm"])
    assert 0 <= saved["length_reaching_50pct"] <= saved["length_reaching_90pct"] <= n


def test_lesion_tiny(tmp_path):
    _results, saved = tiny("lesion", tmp_path)
    res, plain = saved["models"]["resnet8"], saved["models"]["plain8"]
    assert [r["removed"] for r in res["lesions"]] == ["layer1.0", "layer2.0", "layer3.0"]
    # plain8: layer1.0 keeps 16 channels (both convs removable); later stages only conv2
    assert [r["removed"] for r in plain["lesions"]] == ["layer1.0.conv1", "layer1.0.conv2",
                                                        "layer2.0.conv2", "layer3.0.conv2"]
    assert all(0 <= r["test_error"] <= 1 for r in res["lesions"] + plain["lesions"])
    assert (tmp_path / "lesion" / "resnet8.npz").is_file()
    # trained weights can be reused: the same errors come back from the saved checkpoints
    _, again = tiny("lesion", tmp_path, "--from", str(tmp_path / "lesion"),
                    out=tmp_path / "again")
    assert again["models"]["resnet8"]["test_error"] == pytest.approx(res["test_error"])


def test_the_chain_runs_every_experiment_on_the_degradation_nets(chain):
    out, results = chain
    assert results["parts"] == ["degradation", "loss-landscape", "feature-reuse", "lesion",
                                "layer-responses", "path-lengths", "gradient-at-init"]
    deg = json.loads((out / "degradation" / "results.json").read_text())
    runs = deg["runs"]["0"]
    assert set(runs) == {"plain8", "plain14", "resnet8", "resnet14"}
    for r in runs.values():
        hist = r["history"]
        assert hist["steps"] and len(hist["steps"]) == len(hist["train_error"])
        assert hist["steps"][-1] == hist["steps_total"] == deg["setting"]["steps"]
        assert 0 <= r["final_train_error"] <= 1
    assert set(deg["verdict"]) == {"plain", "resnet"}
    assert (out / "degradation" / "seed-0" / "resnet14.npz").is_file()
    # the later experiments loaded those nets, at the size they were trained on
    resp = json.loads((out / "layer-responses" / "results.json").read_text())
    for name, r in resp["models"].items():
        assert r["weights"].startswith("checkpoint") and "seed-0" in r["weights"]
        depth = describe_net(name)[1]
        assert len(r["std"]) == 1 + 2 * 3 * ((depth - 2) // 6)     # stem bn1 + 2 per block
    land = json.loads((out / "loss-landscape" / "results.json").read_text())
    for r in land["models"].values():
        assert "seed-0" in r["weights"]
        assert np.array(r["surface"]).shape == (land["grid"], land["grid"])
        # the grid's centre is the trained weights: the same loss as the probe at the centre
        c = land["grid"] // 2
        assert r["surface"][c][c] == pytest.approx(r["center_loss"], rel=1e-5)
        assert 0 <= r["nonconvex_share"] <= 1 and r["slice_tv_ratio"] >= 1 - 1e-9
        assert len(r["interpolation"]["loss"]) == 15
    reuse = json.loads((out / "feature-reuse" / "results.json").read_text())
    assert set(reuse["models"]["resnet14"]) >= {"init", "trained"}
    report = (out / "report.md").read_text()
    for heading in ("Degradation", "Loss landscape", "Feature reuse", "Lesion", "Layer responses",
                    "Path lengths"):
        assert f"## {heading}" in report


def test_the_chain_resumes_only_what_is_missing(chain, tmp_path):
    import shutil
    out, _ = chain
    copy = tmp_path / "all"
    shutil.copytree(out, copy)
    net = copy / "degradation" / "seed-0" / "resnet14.npz"
    before = net.stat().st_mtime_ns
    shutil.rmtree(copy / "feature-reuse")
    (copy / "report.md").unlink()
    saved = json.loads((copy / "results.json").read_text())
    saved["complete"] = False                       # as if Ctrl-C had stopped it
    (copy / "results.json").write_text(json.dumps(saved))
    with pytest.raises(ExperimentError, match="already holds results"):
        run_experiment("all", ["--tiny", "--out", str(copy)])
    run_experiment("all", ["--tiny", "--out", str(copy), "--resume"])
    assert net.stat().st_mtime_ns == before          # the trained net was kept, not retrained
    assert (copy / "feature-reuse" / "results.json").is_file()
    assert "## Feature reuse" in (copy / "report.md").read_text()


def test_degradation_resume_keeps_finished_nets_and_refuses_another_setting(tmp_path):
    out = tmp_path / "deg"
    run_experiment("degradation", ["--tiny", "--out", str(out)])
    (out / "seed-0" / "resnet14.json").unlink()      # as if stopped while training resnet14
    results = json.loads((out / "results.json").read_text())
    results["complete"] = False
    (out / "results.json").write_text(json.dumps(results))
    kept = (out / "seed-0" / "plain8.json").stat().st_mtime_ns
    again = run_experiment("degradation", ["--tiny", "--out", str(out), "--resume"])
    assert (out / "seed-0" / "plain8.json").stat().st_mtime_ns == kept
    assert (out / "seed-0" / "resnet14.json").is_file() and again["complete"]
    results["complete"] = False
    (out / "results.json").write_text(json.dumps({**results, "complete": False}))
    with pytest.raises(ExperimentError, match="another setting"):
        run_experiment("degradation", ["--tiny", "--out", str(out), "--resume", "--steps", "4"])


def test_default_folders_never_overwrite_and_tiny_stays_apart(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    first = run_experiment("feature-reuse", ["--tiny"])
    second = run_experiment("feature-reuse", ["--tiny"])
    root = tmp_path / "runs" / "experiments"
    assert (root / "tiny" / "feature-reuse" / "results.json").is_file()
    assert (root / "tiny" / "feature-reuse-2" / "results.json").is_file()
    assert not (root / "feature-reuse").exists()      # the real runs' default stays untouched
    assert first["models"].keys() == second["models"].keys()


# --- the verdict, on fabricated numbers ------------------------------------------------------
def _fabricated(errors_by_seed, depths=(20, 56)):
    runs = {}
    for seed, errors in errors_by_seed.items():
        runs[str(seed)] = {name: {"final_train_error": e} for name, e in errors.items()}
    return {"depths": list(depths), "runs": runs}


def _errors(p20, p56, r20, r56):
    return {"plain20": p20, "plain56": p56, "resnet20": r20, "resnet56": r56}


def test_verdict_shown_when_every_seed_agrees_by_a_clear_margin():
    v = verdict(_fabricated({1: _errors(0.20, 0.60, 0.10, 0.08), 2: _errors(0.22, 0.55, 0.12, 0.10),
                             3: _errors(0.21, 0.70, 0.11, 0.09)}))
    assert v["plain"]["verdict"] == "shown" and v["resnet"]["verdict"] == "shown"
    assert v["plain"]["gaps"] == pytest.approx([0.40, 0.33, 0.49])
    assert v["plain"]["mean_gap"] == pytest.approx(0.40666, abs=1e-4)
    assert v["plain"]["std_gap"] == pytest.approx(np.std([0.40, 0.33, 0.49], ddof=1))
    assert v["plain"]["se_gap"] == pytest.approx(np.std([0.40, 0.33, 0.49], ddof=1) / np.sqrt(3))
    assert v["plain"]["effect_size"] == pytest.approx(v["plain"]["mean_gap"]
                                                      / v["plain"]["std_gap"])
    assert v["resnet"]["mean_gap"] == pytest.approx(-0.02)
    text = format_verdict(v)
    assert "SHOWN" in text and "standard error over 3 seeds" in text and "effect size" in text


def test_verdict_a_one_image_difference_is_not_shown():
    """Runs that differ by one image in 10,240 (1e-4): every seed agrees, but the gap is
    below the minimum a verdict counts."""
    one = 1 / 10240
    v = verdict(_fabricated({s: _errors(0.20, 0.20 + one, 0.10 + one, 0.10) for s in (1, 2, 3)}))
    assert v["plain"]["verdict"].startswith("not shown (no clear difference")
    assert v["resnet"]["verdict"].startswith("not shown (no clear difference")


def test_verdict_a_tie_at_the_floor_is_inconclusive():
    """Both residual nets memorise the training set: the comparison says nothing about
    optimisation, whichever is 11 images ahead."""
    v = verdict(_fabricated({s: _errors(0.2, 0.6, 0.0006, 0.0027) for s in (1, 2, 3)}))
    assert v["resnet"]["verdict"].startswith("inconclusive (both fit the training set")
    assert v["plain"]["verdict"] == "shown"


def test_verdict_needs_the_gap_to_exceed_twice_its_standard_error():
    # every seed agrees and the mean gap is above 0.01, but the spread is wide
    v = verdict(_fabricated({1: _errors(0.2, 0.201, 0.1, 0.1), 2: _errors(0.2, 0.202, 0.1, 0.1),
                             3: _errors(0.2, 0.31, 0.1, 0.1)}))
    c = v["plain"]
    assert all(g > 0 for g in c["gaps"]) and c["mean_gap"] > 0.01
    assert c["mean_gap"] < 2 * c["se_gap"]
    assert c["verdict"].startswith("not shown (no clear difference")


def test_verdict_not_shown_opposite_and_inconclusive():
    lagging = verdict(_fabricated({1: _errors(0.2, 0.6, 0.10, 0.15),
                                   2: _errors(0.2, 0.6, 0.1, 0.2)}))
    assert lagging["resnet"]["verdict"].startswith("not shown (the opposite holds")
    assert lagging["plain"]["verdict"] == "shown"
    mixed = verdict(_fabricated({1: _errors(0.2, 0.6, 0.10, 0.09), 2: _errors(0.2, 0.6, 0.1, 0.2)}))
    assert mixed["resnet"]["verdict"].startswith("not shown (no clear difference")
    stuck = verdict(_fabricated({1: _errors(0.85, 0.89, 0.3, 0.3),
                                 2: _errors(0.86, 0.88, 0.3, 0.3)}))
    assert stuck["plain"]["verdict"].startswith("inconclusive (both nets are still near chance")
    assert "plain56" in stuck["plain"]["verdict"] and "plain20" in stuck["plain"]["verdict"]
    # a deep net left near chance while the shallow one learns is degradation, not noise
    failed = verdict(_fabricated({1: _errors(0.3, 0.89, 0.3, 0.28),
                                  2: _errors(0.32, 0.70, 0.3, 0.28)}))
    assert failed["plain"]["verdict"] == "shown"
    one_seed = verdict(_fabricated({1: _errors(0.2, 0.6, 0.1, 0.05)}))
    assert one_seed["plain"]["verdict"].startswith("inconclusive (one seed")
    assert one_seed["plain"]["std_gap"] is None
    assert "no spread" in format_verdict(one_seed)


def test_ablation_table_compares_each_departure_with_the_papers_init():
    from minires.experiments.degradation import comparisons, format_table
    errors = {"plain20": 0.2, "plain56": 0.6, "plain20-dirac": 0.15, "plain56-dirac": 0.14,
              "resnet20": 0.10, "resnet56": 0.07, "resnet20-zero": 0.18, "resnet56-zero": 0.11}
    runs = {str(s): {n: {"final_train_error": e + 0.003 * s} for n, e in errors.items()}
            for s in (1, 2, 3)}
    results = {"depths": [20, 56], "runs": runs,
               "variants": ["plain", "plain-dirac", "resnet", "resnet-zero"]}
    rows = {r["question"]: r for r in comparisons(results)}
    assert rows["plain: depth 56 vs 20"]["direction"] == "higher"
    assert rows["plain-dirac: depth 56 vs 20"]["direction"] == "no clear difference"
    assert rows["resnet: depth 56 vs 20"]["direction"] == "lower"
    assert rows["identity init vs He init, plain, depth 56"]["direction"] == "lower"
    assert rows["zero-init branches vs He init, residual, depth 20"]["direction"] == "higher"
    table = format_table({**results, "comparisons": list(rows.values())})
    assert table.count("\n") == len(rows) + 1 and "B trains better" in table


# --- refusals and one-line errors ---------------------------------------------------------------
def test_cli_lists_and_refuses_unknown_names(capsys):
    assert main(["--list"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in EXPERIMENTS)
    assert main(["no-such-experiment"]) == 2
    assert "expected one of" in capsys.readouterr().err


def _one_line_error(capsys, argv, match, one_line=True):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and (len(err.splitlines()) == 1 or not one_line), err
    assert err.startswith(f"{argv[0]}:") and match in err.splitlines()[0], err


def test_user_errors_are_one_line(tmp_path, capsys):
    out = str(tmp_path / "o")
    _one_line_error(capsys, ["degradation", "--tiny", "--out", out, "--depths", "21,56"],
                    "each depth must be 6n+2")
    _one_line_error(capsys, ["degradation", "--tiny", "--out", out, "--depths", "20,x"],
                    "expected comma-separated integers")
    _one_line_error(capsys, ["degradation", "--tiny", "--out", out, "--depths", "56,20"],
                    "shallow then deep")
    _one_line_error(capsys, ["degradation", "--tiny", "--out", out, "--steps", "0"],
                    "--steps: must be positive")
    _one_line_error(capsys, ["degradation", "--tiny", "--out", out, "--seeds", "1,1"],
                    "--seeds")
    _one_line_error(capsys, ["gradient-at-init", "--tiny", "--out", out, "--perturbations", "-1"],
                    "--perturbations must be >= 0")
    _one_line_error(capsys, ["gradient-at-init", "--tiny", "--out", out, "--perturbation", "nan"],
                    "--perturbation in [0, 1)")
    _one_line_error(capsys, ["lesion", "--tiny", "--out", out, "--from", str(tmp_path)],
                    "no resnet8.npz")
    _one_line_error(capsys, ["loss-landscape", "--out", out], "needs trained nets")
    broken = tmp_path / "broken.npz"
    broken.write_bytes(b"PK\x03\x04 truncated")
    _one_line_error(capsys, ["path-lengths", "--tiny", "--out", out, "--from", str(broken)],
                    "broken.npz")
    _one_line_error(capsys, ["layer-responses", "--out", out, "--data-dir", str(tmp_path / "none"),
                             "--from", str(tmp_path / "nothing-here")], "no such folder")
    # missing data: the same instructions as the training CLI (where to put which archive)
    _one_line_error(capsys, ["gradient-at-init", "--out", out, "--data-dir",
                             str(tmp_path / "none")], "CIFAR-10 is not in", one_line=False)
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_an_existing_folder_is_refused(tmp_path, capsys):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "results.json").write_text("{}")
    _one_line_error(capsys, ["feature-reuse", "--tiny", "--out", str(out)], "already holds results")
    assert (out / "results.json").read_text() == "{}"


# --- data preparation ---------------------------------------------------------------------------
def test_pool_images_averages_blocks_and_refuses_bad_sizes():
    images = np.arange(2 * 3 * 4 * 4, dtype=np.uint8).reshape(2, 3, 4, 4)
    pooled = pool_images(images, 2)
    assert pooled.dtype == np.uint8 and pooled.shape == (2, 3, 2, 2)
    expected = np.rint(images.reshape(2, 3, 2, 2, 2, 2).mean(axis=(3, 5)))
    np.testing.assert_array_equal(pooled, expected)
    with pytest.raises(ValueError, match="cannot be pooled to 3x3"):
        pool_images(images, 3)


def test_balanced_subset_takes_the_same_count_of_every_class():
    split = synthetic_split(200, seed=4)
    sub = balanced_subset(split, 50)
    assert len(sub) == 50 and np.bincount(sub.labels, minlength=10).tolist() == [5] * 10
    again = balanced_subset(split, 50)
    np.testing.assert_array_equal(sub.images, again.images)
    with pytest.raises(ValueError, match="one per class"):
        balanced_subset(split, 5)


# --- the loss landscape's pieces ----------------------------------------------------------------
def test_filter_normalised_direction_matches_each_filter_norm_and_skips_bn_and_bias():
    mr.manual_seed(3)
    model = mr.models.get_model("resnet8")
    d = filter_normalised_direction(model, np.random.default_rng(0))
    params = dict(model.named_parameters())
    assert set(d) == set(params)
    for name, p in params.items():
        w = backend.to_numpy(p.data).astype(np.float64)
        if w.ndim < 2:
            assert not d[name].any(), name                       # BN scale/shift, biases
            continue
        axes = tuple(range(1, w.ndim))
        np.testing.assert_allclose(np.sqrt((d[name] ** 2).sum(axis=axes)),
                                   np.sqrt((w ** 2).sum(axis=axes)), rtol=1e-6)
        assert not np.allclose(d[name], w)                       # a random direction, not w
    assert any(name.startswith("fc.") and params[name].ndim == 2 for name in d)


def test_mover_moves_and_restores_exactly():
    model = mr.models.get_model("resnet8")
    before = {n: p.data.copy() for n, p in model.named_parameters()}
    shifter = ParameterShifter(model)
    d = filter_normalised_direction(model, np.random.default_rng(1))
    shifter.shift((0.5, d))
    name = "conv1.weight"
    np.testing.assert_allclose(dict(model.named_parameters())[name].data,
                               before[name] + 0.5 * d[name], rtol=1e-6, atol=1e-7)
    shifter.restore()
    for n, p in model.named_parameters():
        np.testing.assert_array_equal(p.data, before[n])


def test_roughness_numbers_on_known_surfaces():
    # (the non-convexity measures' own cases are in tests/test_landscape_measures.py)
    a = np.linspace(-1, 1, 9)
    h = 0.01
    assert nonconvex_share(lambda x, y: x ** 2 + 2 * y ** 2, a, h) == 0.0        # a bowl
    assert nonconvex_share(lambda x, y: x ** 2 - y ** 2, a, h) == 1.0            # a saddle
    assert nonconvex_share(lambda x, y: x ** 2 + y ** 2 + 0.5 * x * y, a, h) == 0.0   # tilted
    assert slice_tv_ratio(a ** 2) == pytest.approx(1.0)
    bumpy = a ** 2 + 0.3 * np.cos(12 * a)
    assert slice_tv_ratio(bumpy) > 1.5


def test_block_statistics_see_a_zero_branch_as_pure_reuse():
    mr.manual_seed(5)
    model = mr.models.get_model("resnet8", zero_init_residual=True)
    x, _ = _tiny_batch(8)
    rows = block_statistics(model, x)
    assert [r["block"] for r in rows] == ["layer1.0", "layer2.0", "layer3.0"]
    assert rows[0]["branch_ratio"] == 0.0                 # F(x) = 0 at a zero-initialised BN scale
    assert rows[0]["cosine"] == pytest.approx(1.0)        # out = relu(x) = x for x >= 0
    assert rows[1]["cosine"] is None                      # the shape changes: no cosine


# --- the pieces -----------------------------------------------------------------------------
def _tiny_batch(n=8):
    return first_batch(synthetic_split(n, seed=3), n)


def test_path_gradients_over_all_paths_add_up_to_the_full_gradient():
    """Backward is linear in the incoming gradient, so the 2**n single-path gradients sum to the
    gradient with every path open (taken here from an independent full backward hook)."""
    mr.manual_seed(0)
    model = mr.models.get_model("resnet8")
    x, y = _tiny_batch()
    selector = PathSelector(model)
    loss = mr.functional.cross_entropy(model(mr.tensor(x, requires_grad=True)), y)
    total, n = 0, len(selector.blocks)
    assert n == 3
    for mask in range(2 ** n):
        selector.open_branches = {i for i in range(n) if mask >> i & 1}
        selector.input_grad = None
        loss.backward(retain_graph=True)
        total = total + selector.input_grad
    selector.remove()
    seen = []
    first = mr.inspect.residual_blocks(model)[0][1]
    h = first.register_full_backward_hook(lambda m, gin, gout: seen.append(gin[0]))
    mr.functional.cross_entropy(model(mr.tensor(x, requires_grad=True)), y).backward()
    h.remove()
    assert np.abs(seen[0]).max() > 0
    np.testing.assert_allclose(total, seen[0], rtol=1e-3, atol=1e-6)


def test_path_selector_refuses_a_plain_network():
    with pytest.raises(ValueError, match="no shortcut"):
        PathSelector(mr.models.get_model("plain8"))


def test_summarise_weights_single_paths_by_their_count():
    s = summarise(2, [[1.0], [2.0, 4.0], [5.0]])      # lengths 0, 1, 2 with C(2,k) = 1, 2, 1
    assert s["total_grad_magnitude"] == [1.0, 6.0, 5.0]
    assert s["grad_share"] == pytest.approx([1 / 12, 6 / 12, 5 / 12])
    assert s["length_reaching_50pct"] == 1 and s["length_reaching_90pct"] == 2
    assert s["path_fraction"] == [0.25, 0.5, 0.25]
    assert s["mean_length"] == pytest.approx((6 / 12 + 2 * 5 / 12))


def test_path_lengths_with_equal_gradients_are_the_baseline_and_decay_shortens_them():
    """The known answers: equal per-path gradients give the path counts' own figures (no
    effect), gradients that fall with length give a shorter weighted mean."""
    n = 9
    flat = summarise(n, [[1.0]] * (n + 1))
    assert flat["mean_length"] == pytest.approx(n / 2)
    assert flat["length_reaching_50pct"] == flat["equal_gradients"]["length_reaching_50pct"] == 4
    assert flat["length_reaching_90pct"] == flat["equal_gradients"]["length_reaching_90pct"] == 6
    falling = summarise(n, [[0.5 ** k] for k in range(n + 1)])   # Binomial(9, 1/3) weights
    assert falling["mean_length"] == pytest.approx(n / 3)
    assert falling["length_reaching_50pct"] < 4


def test_lesions_replace_outputs_without_touching_weights():
    mr.manual_seed(1)
    model = mr.models.get_model("resnet8").eval()
    x = np.random.default_rng(0).normal(size=(4, 16, 8, 8)).astype(np.float32)
    xt = mr.tensor(np.abs(x))               # block inputs are post-ReLU, so non-negative
    block = model.layer1[0]
    state = model.state_dict()
    (label, hooks), = [les for les in residual_lesions(model) if les[0] == "layer1.0"]
    handles = [m.register_forward_hook(h) for m, h in hooks]
    with mr.no_grad():
        out = block(xt)
    for handle in handles:
        handle.remove()
    np.testing.assert_array_equal(out.numpy(), xt.numpy())    # identity shortcut, relu of x >= 0
    plain = mr.models.get_model("plain8").eval()
    (_label, hooks), = [les for les in plain_lesions(plain) if les[0] == "layer1.0.conv2"]
    conv, bn = [m for m, _ in hooks]
    assert conv is plain.layer1[0].conv2 and bn is plain.layer1[0].bn2
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(backend.to_numpy(value), backend.to_numpy(state[key]))


def test_calibrated_batch_norm_in_eval_mode_matches_train_mode_on_the_same_batch():
    mr.manual_seed(2)
    model = mr.models.get_model("resnet8")
    x, _ = _tiny_batch(16)
    with mr.no_grad():
        train_out = model.train()(mr.tensor(x)).numpy()
    calibrate_batch_norm(model, [mr.tensor(x)])
    assert not model.training
    with mr.no_grad():
        eval_out = model(mr.tensor(x)).numpy()
    # running_var is the unbiased batch variance (n/(n-1) times the one training uses)
    np.testing.assert_allclose(eval_out, train_out, rtol=2e-2, atol=2e-2)
    assert all(m.momentum == 0.1 for m in model.modules() if isinstance(m, mr.nn.BatchNorm2d))


def _two_layer_net(relu):
    mr.manual_seed(3)
    layers = [nn.Conv2d(3, 4, 3, padding=1), nn.ReLU() if relu else nn.Identity(), nn.Flatten(),
              nn.Linear(4 * 4 * 4, 10)]
    return nn.Sequential(*layers).double()


def test_perturbed_first_over_last_on_known_cases():
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((8, 3, 4, 4)), rng.integers(0, 10, 8)
    smooth = _two_layer_net(relu=False)
    exact = mr.inspect.gradient_flow(smooth, x, y).summary()["first_over_last"]
    # no perturbation: the same number every time, exactly
    assert perturbed_first_over_last(smooth, x, y, count=3, scale=0.0) == [exact] * 3
    # a smooth function (conv, linear, cross-entropy) moves by about the perturbation's size
    moved = perturbed_first_over_last(smooth, x, y, count=4, scale=1e-7)
    assert len(moved) == 4 and max(abs(m / exact - 1) for m in moved) < 1e-5
    # a large perturbation of a ReLU net moves it, and each draw differs
    kinked = perturbed_first_over_last(_two_layer_net(relu=True), x, y, count=3, scale=0.5)
    assert len(set(kinked)) == 3
    with pytest.raises(ValueError, match="count must be >= 0"):
        perturbed_first_over_last(smooth, x, y, count=-1, scale=1e-7)


def test_pearson_rows_matches_numpy():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(4, 30)), rng.normal(size=(4, 30))
    b[1] = 2 * a[1] + 1
    expected = [np.corrcoef(a[i], b[i])[0, 1] for i in range(4)]
    np.testing.assert_allclose(pearson_rows(a, b), expected, rtol=1e-12)
    assert pearson_rows(a, b)[1] == pytest.approx(1.0)


def test_degradation_resumed_with_more_seeds_adds_them(tmp_path):
    out = tmp_path / "deg"
    run_experiment("degradation", ["--tiny", "--out", str(out), "--seeds", "3"])
    first = (out / "seed-3" / "resnet14.npz").stat().st_mtime_ns
    both = run_experiment("degradation", ["--tiny", "--out", str(out), "--seeds", "3,4",
                                          "--resume"])
    assert (out / "seed-3" / "resnet14.npz").stat().st_mtime_ns == first      # kept
    assert set(both["runs"]) == {"3", "4"} and both["verdict"]["plain"]["seeds"] == 2
    assert set(both["seconds_per_seed"]) == {"3", "4"}
    # resumed with fewer seeds: the folder's results keep every seed it holds
    again = run_experiment("degradation", ["--tiny", "--out", str(out), "--seeds", "4",
                                           "--resume"])
    assert again["seeds"] == [3, 4] and set(again["runs"]) == {"3", "4"}


def test_the_presets_say_what_they_run():
    from minires.experiments import make_parser
    from minires.experiments.degradation import setting, variant_list
    parse = make_parser("degradation").parse_args
    laptop = setting(parse([]))
    assert (laptop["input_size"], laptop["train_images"], laptop["steps"]) == (8, 50000, 4000)
    assert laptop["augment"] and laptop["crop_padding"] == 1 and not laptop["milestones"]
    assert variant_list(parse([])) == ["plain", "resnet"]          # He et al.'s init only
    assert variant_list(parse(["--ablation"])) == ["plain", "plain-dirac", "resnet", "resnet-zero"]
    paper = setting(parse(["--preset", "paper"]))
    assert (paper["input_size"], paper["train_images"], paper["steps"]) == (32, 50000, 64000)
    assert paper["milestones"] == (0.5, 0.75) and paper["augment"]     # /10 at 32k and 48k
    assert paper["crop_padding"] == 4 and paper["weight_decay"] == 1e-4
    assert paper["decay_bn_bias"]                      # He et al. decay every parameter
    with pytest.raises(SystemExit):
        parse(["--preset", "desktop"])
    with pytest.raises(ValueError, match="--variants"):
        variant_list(parse(["--variants", "resnet,dense"]))


def test_ctrl_c_stops_cleanly_and_resume_finishes(tmp_path):
    """SIGINT in the middle of `all`: exit 130 with a one-line hint, the finished nets kept;
    the same command with --resume completes the chain without retraining them."""
    import os
    import signal
    import subprocess
    import sys
    import time
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = tmp_path / "all"
    cmd = [sys.executable, "-m", "minires.experiments", "all", "--tiny", "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": root, "MPLBACKEND": "Agg"}
    # A shell runs a background job (`.ci/run &`) with SIGINT ignored, and Python then leaves
    # it ignored: the child gets the default disposition back, as a terminal would give it.
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, preexec_fn=lambda: signal.signal(signal.SIGINT,
                                                                        signal.SIG_DFL))
    first_net = out / "degradation" / "seed-0" / "plain8.json"
    started = time.monotonic()
    while not first_net.exists() and proc.poll() is None and time.monotonic() < started + 120:
        time.sleep(0.05)
    ended_before = proc.poll() is not None   # the whole chain ran before the signal was sent
    waited = time.monotonic() - started
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    when = (f"SIGINT sent {waited:.1f} s after the start, first net "
            f"{'written' if first_net.exists() else 'not written'}; stderr: {err[-1500:]}")
    if ended_before:
        pytest.skip(f"the tiny chain ended (status {proc.returncode}) before the signal: {when}")
    assert proc.returncode == 130, f"status {proc.returncode}: {when}"
    assert "stopped. What finished is kept" in err and "Traceback" not in err
    kept = first_net.stat().st_mtime_ns
    done = subprocess.run(cmd + ["--resume"], env=env, capture_output=True, text=True,
                          timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    assert first_net.stat().st_mtime_ns == kept
    assert (out / "report.md").is_file()


def test_train_net_records_the_per_iteration_curve_through_fit():
    """One step per epoch: each logged window holds exactly that step's batch."""
    from minires.experiments.nets import build
    from minires.experiments.training import train_net
    split = synthetic_split(16, seed=5)
    model = build("resnet8", seed=0)
    hist = train_net(model, split, split, epochs=3, batch_size=16, log_every=1, augment=False)
    assert hist["steps"] == [1, 2, 3] and hist["epoch_steps"] == [1, 2, 3]
    assert all(0.0 <= e <= 1.0 for e in hist["train_error"] + hist["test_error"])
    assert all(np.isfinite(hist["train_loss"])) and len(hist["lr"]) == 3
    assert not hist["diverged"] and hist["steps_total"] == 3
    # with steps, batches are full: 40 images at batch 16 give 2 steps per epoch
    hist = train_net(build("resnet8", seed=0), synthetic_split(40, seed=6), None, steps=5,
                     batch_size=16, log_every=2)
    assert hist["steps"] == [2, 4, 5] and hist["test_error"] == []


@pytest.mark.filterwarnings("ignore::RuntimeWarning")            # NumPy's overflow warnings
def test_train_net_stops_a_diverging_model_and_says_so(capsys):
    from minires.experiments.nets import build
    from minires.experiments.training import train_net
    model = build("plain8", seed=0)
    hist = train_net(model, synthetic_split(32, seed=7), None, steps=4, batch_size=16, lr=1e6,
                     warmup_frac=0.0, log_every=1)
    out = capsys.readouterr().out
    assert hist["diverged"] and "stopping this model" in out     # loss or weights not finite
    assert "seconds" in hist


# --- nets, their initialisation, and measuring them untrained -------------------------------------
def test_net_names_say_how_the_weights_start():
    from minires.experiments.nets import build, net_name, split_net_name
    assert split_net_name("resnet56-zero") == ("resnet56", "zero")
    assert split_net_name("plain20") == ("plain20", "paper")
    assert net_name("plain56", "dirac") == "plain56-dirac" and net_name("resnet8") == "resnet8"
    with pytest.raises(ValueError, match="plain nets only"):
        split_net_name("resnet56-dirac")
    with pytest.raises(ValueError, match="unknown initialisation"):
        split_net_name("resnet56-fixup")
    zero = build("resnet8-zero", seed=1)
    assert all(float(abs(b.bn2.weight.data).max()) == 0 for b in zero.layer1)
    paper = build("resnet8", seed=1)
    assert all(float(b.bn2.weight.data.min()) == 1 for b in paper.layer1)


def test_dirac_init_starts_each_block_conv_near_the_identity():
    from minires.experiments.nets import DIRAC_NOISE, build
    he, dirac = build("plain8", seed=2), build("plain8-dirac", seed=2)
    for (name, a), (_, b) in zip(he.named_parameters(), dirac.named_parameters()):
        if name.startswith("layer") and name.endswith("weight") and a.data.ndim == 4:
            O, I = a.shape[:2]
            eye = np.zeros(a.shape)
            eye[np.arange(min(O, I)), np.arange(min(O, I)), 1, 1] = 1
            np.testing.assert_allclose(b.data, eye + DIRAC_NOISE * a.data, atol=1e-6)
        else:                                   # stem, BN and fc keep He et al.'s draws
            np.testing.assert_array_equal(a.data, b.data)
    # with the identity, a 16-channel stride-1 conv passes its input through (up to the noise)
    conv = dirac.layer1[0].conv1
    x = mr.tensor(np.random.default_rng(0).normal(size=(2, 16, 6, 6)).astype(np.float32))
    with mr.no_grad():
        y = conv(x).data
    assert np.corrcoef(y.ravel(), x.data.ravel())[0, 1] > 0.95


def test_an_untrained_net_is_measured_with_calibrated_batch_norm():
    """Running statistics of an untrained net are (0, 1): BN would not normalise. initial_net
    calibrates them on training images first, so each BN's output on those images has mean 0
    and variance 1 per channel (scale 1, shift 0), as it would in training -- up to the
    unbiased running variance (n / (n - 1)) carried through the layers."""
    from minires.experiments.nets import initial_net
    x, _ = first_batch(synthetic_split(64, seed=4), 64)
    net = initial_net("plain8", seed=3, calibration_x=x)
    assert not net.training
    outs = {}
    handles = [m.register_forward_hook(lambda m, i, o, n=n: outs.__setitem__(n, o.data.copy()))
               for n, m in net.named_modules() if isinstance(m, mr.nn.BatchNorm2d)]
    with mr.no_grad():
        net(mr.tensor(x))
    for h in handles:
        h.remove()
    assert len(outs) == 7
    for name, o in outs.items():
        np.testing.assert_allclose(o.mean(axis=(0, 2, 3)), 0, atol=2e-2, err_msg=name)
        np.testing.assert_allclose(o.var(axis=(0, 2, 3)), 1, rtol=5e-2, err_msg=name)
    # without calibration the same eval-mode pass does not normalise (the artefact)
    from minires.experiments.nets import build
    raw = build("plain8", seed=3).eval()
    stem = []
    h = raw.bn1.register_forward_hook(lambda m, i, o: stem.append(o.data.var()))
    with mr.no_grad():
        raw(mr.tensor(x))
    h.remove()
    assert abs(stem[0] - 1) > 0.1


def test_feature_reuse_and_layer_responses_calibrate_the_untrained_nets(tmp_path):
    _, saved = tiny("feature-reuse", tmp_path)
    assert saved["calibration_images"] == 256
    _, resp = tiny("layer-responses", tmp_path)
    assert resp["calibration_images"] > 0
    for r in resp["models"].values():
        assert len(r["init_std"]) == len(r["std"])
        # calibrated BN at initialisation: every response has std 1 (scale 1) up to sampling
        assert r["init_mean_std"] == pytest.approx(1.0, abs=0.1)
    assert resp["orderings"] and all("reading" in o for o in resp["orderings"])


def test_nets_from_never_mixes_seeds(tmp_path):
    from minires.experiments.nets import build
    from minires.experiments.weights import nets_from, save_weights
    run = tmp_path / "deg"
    for seed, names in ((3, ["plain8"]), (10, ["plain8", "resnet8"]), (2, ["resnet8"])):
        (run / f"seed-{seed}").mkdir(parents=True)
        for n in names:
            save_weights(build(n, seed), run / f"seed-{seed}" / f"{n}.npz",
                         meta={"model": n, "init": "paper", "seed": seed})
    nets = nets_from(run, ["plain8", "resnet8"])
    assert {meta["seed"] for _, meta, _ in nets.values()} == {10}     # the one seed with both
    assert nets_from(run, ["resnet8"])["resnet8"][1]["seed"] == 2      # lowest seed, numerically
    with pytest.raises(ExperimentError, match="no resnet8.npz there or in its seed-3"):
        nets_from(run, ["plain8", "resnet8"], seed=3)


def test_a_resumed_degradation_run_keeps_its_first_command(tmp_path):
    out = tmp_path / "deg"
    run_experiment("degradation", ["--tiny", "--out", str(out), "--seeds", "1"])
    first = json.loads((out / "results.json").read_text())["environment"]["command"]
    again = run_experiment("degradation", ["--tiny", "--out", str(out), "--seeds", "1,2",
                                           "--resume"])
    assert again["environment"]["command"] == first
    assert again["environment"]["resumed"][-1]["command"].endswith("--resume")


def test_layer_response_orderings_separate_learned_from_initial():
    """On made-up means whose answer is known: an ordering present before training is not
    read as learned; one that appears in training is; a 2% difference is no ordering."""
    from minires.experiments.layer_responses import orderings

    def m(init, trained):
        return {"init_mean_std": init, "mean_std": trained}

    models = {"plain20": m(1.0, 1.0), "plain56": m(1.0, 1.4), "resnet20": m(1.0, 0.7),
              "resnet56": m(1.0, 0.69), "resnet20-zero": m(0.5, 0.6), "resnet56-zero": m(0.4, 0.5)}
    read = {o["claim"]: o["reading"] for o in orderings(models)}
    assert read["resnet20 responds more weakly than plain20"].startswith("learned")
    assert read["resnet56 responds more weakly than plain56"].startswith("learned")
    assert read["resnet56 responds more weakly than resnet20"] == "not shown"     # 1.4% apart
    assert read["resnet20-zero responds more weakly than plain20"].startswith("present at init")
    assert read["resnet56-zero responds more weakly than resnet20-zero"].startswith("present")
    assert len(read) == 6
