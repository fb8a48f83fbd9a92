"""minires.experiments: each experiment end to end in its --tiny configuration (synthetic data),
and the pieces they are built from (path selection, lesions, BN calibration, correlations)."""
import json

import numpy as np
import pytest

import minires as mr
from minires import backend
from minires.experiments import EXPERIMENTS, run_experiment
from minires.experiments.__main__ import main
from minires.experiments.common import calibrate_batch_norm, first_batch, synthetic_split
from minires.experiments.gradient_at_init import pearson_rows
from minires.experiments.lesion import plain_lesions, residual_lesions
from minires.experiments.path_lengths import PathSelector, summarise


def tiny(name, tmp_path, *extra):
    out = tmp_path / name
    results = run_experiment(name, ["--tiny", "--out", str(out), *extra])
    saved = json.loads((out / "results.json").read_text())
    assert saved["experiment"] == name
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert results["figure"] is None
    else:
        assert (out / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
    return results, saved


# --- each experiment, end to end ----------------------------------------------------------------
def test_gradient_at_init_tiny(tmp_path):
    _results, saved = tiny("gradient-at-init", tmp_path)
    assert set(saved["models"]) == {"plain8", "plain14", "resnet8", "resnet14"}
    for name, r in saved["models"].items():
        assert len(r["grad_norms"]) == len(r["layer_names"]) > 0
        assert all(v > 0 for v in r["grad_norms"])
        assert len(r["correlation"]) == saved["points"] - 1
        assert all(-1 <= c <= 1 for c in r["correlation"])
        shares = r["block_skip_shares"]
        assert all(s == 0 for s in shares) if name.startswith("plain") else all(s > 0 for s in shares)


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
    _, again = tiny("lesion", tmp_path, "--from", str(tmp_path / "lesion"))
    assert again["models"]["resnet8"]["test_error"] == pytest.approx(res["test_error"])


@pytest.mark.slow
def test_degradation_tiny_and_layer_responses_from_its_weights(tmp_path):
    _results, saved = tiny("degradation", tmp_path)
    assert set(saved["models"]) == {"plain8", "plain14", "resnet8", "resnet14"}
    for r in saved["models"].values():
        hist = r["history"]
        assert hist["steps"] and len(hist["steps"]) == len(hist["train_error"])
        assert hist["steps"][-1] == hist["steps_total"] and len(hist["test_error"]) == 1
        assert 0 <= r["final_train_error"] <= 1
    assert "plain: depth 14 ends with" in saved["verdict"]
    _, resp = tiny("layer-responses", tmp_path, "--from", str(tmp_path / "degradation"))
    for name, r in resp["models"].items():
        assert r["weights"].startswith("checkpoint")
        # stem bn1 + 2 per block; 6n+2 layers have 3n blocks
        depth = int(name.lstrip("plainresnet"))
        assert len(r["std"]) == 1 + 2 * 3 * ((depth - 2) // 6)
        assert r["layers"][0] == "bn1" and all(s > 0 for s in r["std"])


def test_cli_lists_and_refuses_unknown_names(capsys):
    assert main(["--list"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in EXPERIMENTS)
    assert main(["no-such-experiment"]) == 2
    assert "expected one of" in capsys.readouterr().err


def test_bad_options_are_refused(tmp_path):
    with pytest.raises(ValueError, match="--depths: expected comma-separated integers"):
        run_experiment("degradation", ["--tiny", "--out", str(tmp_path), "--depths", "20,x"])
    with pytest.raises(SystemExit, match="no resnet8.npz"):
        run_experiment("lesion", ["--tiny", "--out", str(tmp_path / "l"), "--from", str(tmp_path)])


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


def test_pearson_rows_matches_numpy():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(4, 30)), rng.normal(size=(4, 30))
    b[1] = 2 * a[1] + 1
    expected = [np.corrcoef(a[i], b[i])[0, 1] for i in range(4)]
    np.testing.assert_allclose(pearson_rows(a, b), expected, rtol=1e-12)
    assert pearson_rows(a, b)[1] == pytest.approx(1.0)
