"""minires.inspect: gradient_flow, compare and the training log.

The tiny networks here are built in this file from Linear layers and a block with a
``fork`` submodule (the block contract of minires.nn.blocks), so the tests run in
milliseconds; the last tests use the real CIFAR ResNets from minires.models.
"""
import csv
import json
import math
from html.parser import HTMLParser

import numpy as np
import pytest

import minires as mr
import minires.functional as F
from minires import backend, nn
from minires.inspect import GradFlowLog, compare, gradient_flow, layer_grad_norms, plot_heatmap


# --- tiny models following the block contract -------------------------------------------
class Fork(nn.Module):
    def forward(self, x):
        return F.fork(x)


class MLPBlock(nn.Module):
    """relu(fc2(relu(fc1(x))) + x) -- or, with skip=False, the same without the shortcut."""

    def __init__(self, d, skip=True, bn=False):
        super().__init__()
        self.fork = Fork()
        self.fc1 = nn.Linear(d, d)
        self.bn1 = nn.BatchNorm1d(d) if bn else nn.Identity()
        self.relu = nn.ReLU()
        self.fc2 = nn.Linear(d, d)
        self.downsample = nn.Identity()
        self.skip = skip

    def forward(self, x):
        x_branch, x_skip = self.fork(x)
        out = self.fc2(self.relu(self.bn1(self.fc1(x_branch))))
        if self.skip:
            out = out + self.downsample(x_skip)
        return self.relu(out)


class MLPNet(nn.Module):
    def __init__(self, d=6, n=3, skip=True, bn=False, dropout=0.0):
        super().__init__()
        self.fc0 = nn.Linear(5, d)
        self.relu = nn.ReLU()
        self.layer1 = nn.Sequential(*[MLPBlock(d, skip, bn) for _ in range(n)])
        self.drop = nn.Dropout(dropout) if dropout else nn.Identity()
        self.fc = nn.Linear(d, 3)

    def forward(self, x):
        return self.fc(self.drop(self.layer1(self.relu(self.fc0(x)))))


def batch(n=12, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 5)).astype(np.float32), np.arange(n) % 3


def block_input_grads(model):
    """Register full backward hooks on each block; returns name -> list of grad_input[0]."""
    seen, handles = {}, []
    for name, block in mr.inspect.residual_blocks(model):
        def hook(module, grad_input, grad_output, name=name):
            seen.setdefault(name, []).append(grad_input[0])
        handles.append(block.register_full_backward_hook(hook))
    return seen, handles


# --- skip + branch = total ----------------------------------------------------------------
@pytest.mark.parametrize("skip", [True, False])
def test_skip_and_branch_gradients_sum_to_the_block_input_gradient(skip, device):
    mr.manual_seed(1)
    model = MLPNet(skip=skip).to(device)
    x, y = batch()
    seen, handles = block_input_grads(model)
    report = gradient_flow(model, x, y)
    for h in handles:
        h.remove()
    assert [b["name"] for b in report.blocks] == ["layer1.0", "layer1.1", "layer1.2"]
    for row in report.blocks:
        (g_in,) = seen[row["name"]]          # from the full backward hook, independent of inspect
        g_norm = float(np.linalg.norm(backend.to_numpy(g_in).astype(np.float64)))
        assert g_norm > 0
        assert row["total_grad_norm"] == pytest.approx(g_norm, rel=1e-5)
        s, b = row["skip_grad_norm"], row["branch_grad_norm"]
        if skip:
            assert row["has_skip"] and s > 0 and b > 0
            # |s + b|^2 = |s|^2 + |b|^2 + 2 cos |s||b|
            assert row["total_grad_norm"] ** 2 == pytest.approx(
                s * s + b * b + 2 * row["cosine"] * s * b, rel=1e-4)
            assert row["skip_share"] == pytest.approx(s / (s + b))
        else:
            assert not row["has_skip"] and s == 0.0 and row["cosine"] is None
            assert b == pytest.approx(row["total_grad_norm"], rel=1e-6)


def test_layer_rows_match_a_manual_backward():
    mr.manual_seed(2)
    model = MLPNet()
    x, y = batch()
    report = gradient_flow(model, x, y)
    names = [r["name"] for r in report.layers]
    assert names == ["fc0", "relu",
                     "layer1.0.fc1", "layer1.0.relu", "layer1.0.fc2", "layer1.0.relu#2",
                     "layer1.1.fc1", "layer1.1.relu", "layer1.1.fc2", "layer1.1.relu#2",
                     "layer1.2.fc1", "layer1.2.relu", "layer1.2.fc2", "layer1.2.relu#2", "fc"]
    # The same pass by hand (the model was left unchanged, and has no BN or dropout).
    loss = F.cross_entropy(model(mr.tensor(x)), y)
    loss.backward()
    assert report.loss == pytest.approx(loss.item(), rel=1e-6)
    params = dict(model.named_parameters())
    for row in report.layers:
        if row["kind"] == "Linear":
            w = params[row["name"] + ".weight"]
            assert row["shape"] == list(w.shape)
            assert row["grad_norm"] == pytest.approx(np.linalg.norm(w.grad), rel=1e-5)
            assert row["weight_norm"] == pytest.approx(np.linalg.norm(w.data), rel=1e-5)
            assert row["grad_weight_ratio"] == pytest.approx(row["grad_norm"] / row["weight_norm"])
            assert row["dead_frac"] is None
        else:
            assert row["kind"] == "ReLU" and row["grad_norm"] is None and row["shape"] is None
            assert 0.0 <= row["dead_frac"] <= 1.0
    act = model.fc0(mr.tensor(x)).data
    fc0 = report.layers[0]
    assert fc0["act_mean"] == pytest.approx(act.mean(), abs=1e-6)
    assert fc0["act_std"] == pytest.approx(act.std(), rel=1e-5)


def test_dead_relu_units_are_counted():
    mr.manual_seed(3)
    model = MLPNet(d=4)
    model.fc0.bias.data[:] = [-100.0, -100.0, 0.0, 0.0]     # units 0 and 1 never fire
    model.fc0.weight.data[:2] = 0.0
    x, y = batch()
    row = next(r for r in gradient_flow(model, x, y).layers if r["name"] == "relu")
    assert row["dead_frac"] == pytest.approx(0.5)


# --- the model is left as it was -------------------------------------------------------
def test_inspection_leaves_weights_buffers_grads_modes_and_rng_unchanged(device):
    mr.manual_seed(4)
    model = MLPNet(bn=True, dropout=0.3).to(device)
    model.layer1[1].eval()                            # a mixed train/eval tree stays mixed
    x, y = batch()
    # A train-mode forward really does move the running statistics (else this test proves nothing).
    probe = MLPNet(bn=True).to(device)
    before_probe = probe.state_dict()["layer1.0.bn1.running_mean"].copy()
    probe(mr.tensor(x, device=device))
    assert not np.allclose(backend.to_numpy(probe.state_dict()["layer1.0.bn1.running_mean"]),
                           backend.to_numpy(before_probe))

    state = {k: backend.to_numpy(v) for k, v in model.state_dict().items()}
    old_grads = {}
    for name, p in model.named_parameters():
        if name.startswith("layer1.0"):               # some .grad set, others None
            p.grad = p.data * 0 + 0.5
        old_grads[name] = None if p.grad is None else (p.grad, backend.to_numpy(p.grad))
    flags = [m.training for m in model.modules()]
    rng_state = backend.get_rng_state()
    np_state = np.random.get_state()

    report = gradient_flow(model, x, y)
    assert report.mode == "train"

    after = {k: backend.to_numpy(v) for k, v in model.state_dict().items()}
    assert after.keys() == state.keys()
    for k in state:
        np.testing.assert_array_equal(after[k], state[k], err_msg=k)
    for name, p in model.named_parameters():
        if old_grads[name] is None:
            assert p.grad is None, name
        else:
            assert p.grad is old_grads[name][0], name
            np.testing.assert_array_equal(backend.to_numpy(p.grad), old_grads[name][1])
    assert [m.training for m in model.modules()] == flags
    assert backend.get_rng_state() == rng_state
    assert np.random.get_state()[1].tolist() == np_state[1].tolist()
    # and the pass did use dropout and the batch statistics: eval mode gives another loss
    assert gradient_flow(model, x, y, mode="eval").loss != pytest.approx(report.loss)
    assert [m.training for m in model.modules()] == flags


class Noise(nn.Module):
    """Adds Gaussian noise from a generator the module keeps (as some layers do)."""

    def __init__(self):
        super().__init__()
        self.rng = np.random.default_rng(0)

    def forward(self, x):
        return x + mr.tensor(self.rng.normal(size=x.shape).astype(np.float32))


def test_a_generator_kept_by_a_module_is_restored_too():
    model = nn.Sequential(MLPNet(), Noise())
    x, y = batch()
    before = model[1].rng.bit_generator.state
    draws = model[1].rng.normal(size=3)
    model[1].rng.bit_generator.state = before
    gradient_flow(model, x, y)
    np.testing.assert_array_equal(model[1].rng.normal(size=3), draws)


def test_the_callers_input_tensor_is_left_alone():
    x, y = batch()
    xt = mr.tensor(x, requires_grad=True)
    gradient_flow(MLPNet(), xt, y)
    assert xt.grad is None and xt.requires_grad
    np.testing.assert_array_equal(xt.numpy(), x)


def test_hooks_are_removed_even_when_the_loss_fails():
    model = MLPNet()
    x, y = batch()
    with pytest.raises(ValueError, match="loss_fn must return a scalar"):
        gradient_flow(model, x, y, loss_fn=lambda out, y: out)
    assert all(not m._forward_hooks for m in model.modules())
    gradient_flow(model, x, y)        # still works, and leaves no hook behind either
    assert all(not m._forward_hooks for m in model.modules())


def test_bad_inputs_raise_clear_errors():
    x, y = batch()
    with pytest.raises(TypeError, match="model must be a minires.nn.Module"):
        gradient_flow(lambda t: t, x, y)
    with pytest.raises(ValueError, match="mode must be one of"):
        gradient_flow(MLPNet(), x, y, mode="training")
    with pytest.raises(ValueError, match="has no parameters"):
        gradient_flow(nn.ReLU(), x, y)
    with pytest.raises(TypeError, match="x must be a Tensor or an array"):
        gradient_flow(MLPNet(), "images", y)
    with pytest.raises(ValueError, match="non-empty dict"):
        compare({}, x, y)


def test_cpu_and_gpu_reports_agree(device):
    mr.manual_seed(5)
    model = MLPNet()
    x, y = batch()
    ref = gradient_flow(model, x, y).to_dict()
    got = gradient_flow(model.to(device), mr.tensor(x), y).to_dict()
    assert got["device"] == device
    for table in ("layers", "blocks"):
        for a, b in zip(ref[table], got[table]):
            for key, value in a.items():
                if isinstance(value, float):
                    assert b[key] == pytest.approx(value, rel=1e-4, abs=1e-7), (table, key)
                else:
                    assert b[key] == value, (table, key)


# --- the report's forms ----------------------------------------------------------------
def test_report_table_csv_dict_and_plot(tmp_path):
    mr.manual_seed(6)
    report = gradient_flow(MLPNet(), *batch())
    text = repr(report)
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 80
    assert all(line.isascii() for line in lines)
    assert "layer1.2.fc2" in text and "layer1.1" in text and "#" in text
    # every layer with a weight gets a bar; its length grows with the gradient norm
    rows = {r["name"]: r for r in report.layers}
    bars = {line.split()[0]: line.count("#") for line in lines if line.split()
            and line.split()[0] in rows and rows[line.split()[0]]["grad_norm"]}
    assert set(bars) == {n for n, r in rows.items() if r["grad_norm"]}
    by_norm = sorted(bars, key=lambda n: rows[n]["grad_norm"])
    assert [bars[n] for n in by_norm] == sorted(bars[n] for n in by_norm)

    d = report.to_dict()
    assert json.loads(json.dumps(d)) == d                     # plain data all the way down
    for key in ("name", "shape", "weight_norm", "grad_norm", "grad_weight_ratio", "act_mean",
                "act_std", "dead_frac"):
        assert key in d["layers"][0]
    for key in ("name", "skip_grad_norm", "branch_grad_norm", "total_grad_norm", "cosine"):
        assert key in d["blocks"][0]

    path = report.to_csv(tmp_path / "flow.csv")
    with open(path) as f:
        read = list(csv.DictReader(f))
    assert [r["table"] for r in read] == ["layer"] * len(d["layers"]) + ["block"] * len(d["blocks"])
    assert read[0]["shape"] == "6x5"
    assert float(read[0]["grad_norm"]) == pytest.approx(d["layers"][0]["grad_norm"])
    assert float(read[-1]["total_grad_norm"]) == pytest.approx(d["blocks"][-1]["total_grad_norm"])

    pytest.importorskip("matplotlib")
    fig = report.plot(tmp_path / "flow.png")
    assert type(fig).__name__ == "Figure"
    assert (tmp_path / "flow.png").read_bytes()[:4] == b"\x89PNG"


def test_compare_side_by_side(tmp_path):
    mr.manual_seed(7)
    x, y = batch()
    models = {"plain": MLPNet(skip=False), "resnet": MLPNet(skip=True)}
    cmp = compare(models, x, y)
    text = repr(cmp)
    assert max(len(line) for line in text.splitlines()) <= 80
    assert "plain" in text and "resnet" in text
    for name, model in models.items():
        s = cmp.to_dict()["summary"][name]
        rep = gradient_flow(model, x, y)
        assert s["first_grad_norm"] == pytest.approx(rep.layers[0]["grad_norm"], rel=1e-6)
        assert s["last_grad_norm"] == pytest.approx(rep.layers[-1]["grad_norm"], rel=1e-6)
        assert s["first_over_last"] == pytest.approx(s["first_grad_norm"] / s["last_grad_norm"])
    assert cmp.to_dict()["summary"]["plain"]["mean_skip_share"] == 0.0
    assert cmp.to_dict()["summary"]["resnet"]["mean_skip_share"] > 0
    with open(cmp.to_csv(tmp_path / "cmp.csv")) as f:
        assert [r["model"] for r in csv.DictReader(f)] == ["plain", "resnet"]
    pytest.importorskip("matplotlib")
    assert type(cmp.plot(tmp_path / "cmp.png")).__name__ == "Figure"


# --- during training -------------------------------------------------------------------
def test_gradflow_log_writes_every_n_steps_and_a_heatmap(tmp_path):
    mr.manual_seed(8)
    model = MLPNet()
    x, y = batch()
    log = GradFlowLog(model, tmp_path / "gradflow.jsonl", every=2)
    written = []
    for step in range(1, 6):
        model.zero_grad()
        F.cross_entropy(model(mr.tensor(x)), y).backward()
        expected = layer_grad_norms(model)
        if log(step, epoch=0):
            written.append((step, expected))
    lines = (tmp_path / "gradflow.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["step"] for r in records] == [2, 4]
    for rec, (step, expected) in zip(records, written):
        assert rec["step"] == step and list(rec["grad_norm"]) == list(expected)
        assert rec["grad_norm"]["fc0"] == pytest.approx(expected["fc0"])
    assert list(records[0]["grad_norm"])[:2] == ["fc0", "layer1.0.fc1"]
    assert all(math.isfinite(v) and v > 0 for v in records[0]["grad_norm"].values())
    with pytest.raises(ValueError, match="every must be a positive int"):
        GradFlowLog(model, tmp_path / "x.jsonl", every=0)
    pytest.importorskip("matplotlib")
    plot_heatmap(tmp_path / "gradflow.jsonl", tmp_path / "heat.png")
    assert (tmp_path / "heat.png").read_bytes()[:4] == b"\x89PNG"


# --- the real CIFAR networks (conv blocks, option-A shortcuts that subsample and pad) ----------
def test_resnet8_and_plain8_blocks_and_the_three_line_repl(device):
    mr.manual_seed(9)
    rng = np.random.default_rng(9)
    x = rng.standard_normal((4, 3, 8, 8)).astype(np.float32)
    y = np.array([0, 3, 5, 9])
    models = {"plain8": mr.models.plain8().to(device), "resnet8": mr.models.resnet8().to(device)}
    for name, model in models.items():
        seen, handles = block_input_grads(model)
        report = gradient_flow(model, x, y)
        for h in handles:
            h.remove()
        assert [b["name"] for b in report.blocks] == ["layer1.0", "layer2.0", "layer3.0"]
        for row in report.blocks:
            (g_in,) = seen[row["name"]]
            g_norm = float(np.linalg.norm(backend.to_numpy(g_in).astype(np.float64)))
            assert row["total_grad_norm"] == pytest.approx(g_norm, rel=1e-4)
            assert row["has_skip"] == name.startswith("resnet")
        names, _norms = report.weight_grad_norms()
        assert len(names) == 8 and names[0] == "conv1" and names[-1] == "fc"   # depth 8
    text = repr(compare(models, x, y))
    assert "plain8" in text and "resnet8" in text
    assert max(len(line) for line in text.splitlines()) <= 80


def test_train_cli_inspect_every_writes_gradflow_and_a_heatmap(tmp_path):
    from minires.train import main
    from tests.test_data import fake_cifar, write_binary
    data_dir = tmp_path / "data"
    write_binary(data_dir, fake_cifar(n=20))
    out = tmp_path / "run"
    assert main(["cifar", "--data-dir", str(data_dir), "--no-download", "--out", str(out),
                 "--model", "tests.test_train:tiny_net", "--epochs", "2", "--batch-size", "16",
                 "--limit-train", "64", "--limit-test", "16", "--no-progress", "--prefetch", "0",
                 "--inspect-every", "3"]) == 0
    records = [json.loads(line) for line in (out / "gradflow.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [3, 6]            # 4 steps per epoch, 2 epochs
    assert [r["epoch"] for r in records] == [1, 2]
    assert list(records[0]["grad_norm"]) == ["1", "2", "5"]  # Linear, BatchNorm1d, Linear
    assert all(v > 0 for r in records for v in r["grad_norm"].values())
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return
    assert (out / "gradflow.png").read_bytes()[:4] == b"\x89PNG"


# --- the model's name, the legends, the HTML form -------------------------------------------
def small_images(n=4, seed=9):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 3, 8, 8)).astype(np.float32), np.arange(n) % 10


def test_the_report_names_the_model_as_the_user_did():
    x, y = small_images()
    assert gradient_flow(mr.models.plain8(), x, y).model_name == "plain8"        # its builder
    assert gradient_flow(mr.models.get_model("resnet8"), x, y).model_name == "resnet8"
    assert mr.models.plain8().builder_name == "plain8"
    report = gradient_flow(mr.models.plain8(), x, y, name="my plain net")
    assert report.model_name == "my plain net"
    assert report.header().startswith("gradient flow of my plain net: batch 4")
    assert report.to_dict()["model"] == "my plain net"
    # the CIFAR family builders name what they build; anything else gets its class name,
    # never a bare "CifarResNet" for a plain net
    assert gradient_flow(mr.models.cifar_plain(8), x, y).model_name == "plain8"
    assert gradient_flow(mr.models.cifar_resnet(8), x, y).model_name == "resnet8"
    unnamed = mr.models.CifarResNet(mr.nn.BasicBlock, [1, 1, 1], shortcut=False)
    assert gradient_flow(unnamed, x, y).model_name == "CifarResNet (plain: no shortcuts)"
    assert gradient_flow(MLPNet(), *batch()).model_name == "MLPNet"
    cmp = compare({"deep plain": mr.models.plain8(), "res": mr.models.resnet8()}, x, y)
    assert [cmp[k].model_name for k in ("deep plain", "res")] == ["deep plain", "res"]
    with pytest.raises(TypeError, match="name must be a non-empty str .*got 3"):
        gradient_flow(MLPNet(), *batch(), name=3)
    with pytest.raises(TypeError, match="each key of models must be a non-empty str"):
        compare({"": MLPNet()}, *batch())


def check_legend(head, footer, legend):
    """Every heading of ``head`` is explained in ``footer``, in the order of the columns."""
    rest = head
    for heading, _ in legend:
        assert heading in rest, heading
        rest = rest.replace(heading, "", 1)
    assert not rest.strip(), f"a column without an explanation: {rest.strip()!r}"
    explained = [line.split("  ")[0] for line in footer.splitlines() if not line.startswith(" ")]
    assert [h for h, _ in legend] == explained[:len(legend)]


def test_every_column_of_the_printed_tables_is_explained_in_a_footer():
    from minires.inspect import BLOCK_LEGEND, COMPARE_LEGEND, LAYER_LEGEND
    x, y = small_images()
    report = gradient_flow(mr.models.resnet8(), x, y)
    for table, legend in ((report.layers_table(), LAYER_LEGEND),
                          (report.blocks_table(), BLOCK_LEGEND)):
        lines = table.splitlines()
        assert all(len(line) <= 79 and line.isascii() for line in lines)
        rule = [i for i, line in enumerate(lines) if line == "-" * 79]
        assert len(rule) == 2                       # under the heading, above the footer
        check_legend(lines[0], "\n".join(lines[rule[1] + 1:]), legend)
        assert lines[-1].startswith("bar scale: one '#' for ")
    assert "no bar for 0" in report.layers_table()
    assert report.layers_table(legend=False).splitlines()[-1].startswith("fc ")
    cmp_lines = repr(compare({"plain8": mr.models.plain8(), "resnet8": mr.models.resnet8()},
                             x, y)).splitlines()
    assert all(len(line) <= 79 and line.isascii() for line in cmp_lines)
    footer = cmp_lines[cmp_lines.index("-" * 79, 3) + 1:]
    check_legend(cmp_lines[1], "\n".join(footer), COMPARE_LEGEND)


def test_the_legend_says_what_the_code_computes():
    """dead: the share of units (a channel at a position) zero for every example; act mean
    and act std over all elements (std divided by n); skip share a ratio of norms."""
    x, y = small_images(n=6)
    mr.manual_seed(0)
    model = mr.models.resnet8()
    seen = {}

    def keep(module, inputs, output):
        seen.setdefault("out", output.data)          # returns None: the output stays as it is

    handle = model.relu.register_forward_hook(keep)
    report = gradient_flow(model, x, y)
    handle.remove()
    out = seen["out"]                                               # (N, C, H, W)
    row = next(r for r in report.layers if r["name"] == "relu")
    assert row["dead_frac"] == pytest.approx(1 - (out > 0).any(axis=0).mean())
    assert row["act_mean"] == pytest.approx(float(out.astype(np.float64).mean()))
    assert row["act_std"] == pytest.approx(float(out.astype(np.float64).std(ddof=0)))
    for b in report.blocks:
        s, g = b["skip_grad_norm"], b["branch_grad_norm"]
        assert b["skip_share"] == pytest.approx(s / (s + g))
        line = next(line for line in report.blocks_table().splitlines()
                    if line.startswith(b["name"] + " "))
        assert f"{100 * b['skip_share']:.0f}%" in line


class _Tags(HTMLParser):
    """Collects start tags, text and whether every tag was closed in order."""

    def __init__(self):
        super().__init__()
        self.open, self.starts, self.text, self.balanced = [], [], [], True

    def handle_starttag(self, tag, attrs):
        self.open.append(tag)
        self.starts.append(tag)

    def handle_endtag(self, tag):
        self.balanced &= bool(self.open) and self.open.pop() == tag

    def handle_data(self, data):
        self.text.append(data)


def parse_html(text):
    parser = _Tags()
    parser.feed(text)
    parser.close()
    assert parser.balanced and not parser.open
    return parser


def test_repr_html_is_a_plain_escaped_table_with_its_legend():
    from minires.inspect import BLOCK_LEGEND, COMPARE_LEGEND, LAYER_LEGEND
    x, y = small_images()
    report = gradient_flow(mr.models.resnet8(), x, y, name="<b>net</b> & co")
    page = report._repr_html_()
    assert "<b>net</b>" not in page and "&lt;b&gt;net&lt;/b&gt; &amp; co" in page
    parsed = parse_html(page)
    assert parsed.starts.count("table") == 2
    assert parsed.starts.count("tr") == 2 + len(report.layers) + len(report.blocks)
    assert parsed.starts.count("dt") == len(LAYER_LEGEND) + len(BLOCK_LEGEND)
    text = "".join(parsed.text)
    for heading, explanation in LAYER_LEGEND + BLOCK_LEGEND:
        assert heading in text and explanation in text
    assert "layer1.0.conv1" in text and "<script" not in page

    cmp = compare({"a<plain>": mr.models.plain8(), "resnet8": mr.models.resnet8()}, x, y)
    parsed = parse_html(cmp._repr_html_())
    assert parsed.starts.count("tr") == 3
    text = "".join(parsed.text)
    assert "a<plain>" in text and all(h in text for h, _ in COMPARE_LEGEND)
    no_blocks = gradient_flow(nn.Sequential(nn.Flatten(), nn.Linear(192, 10)), x, y)
    assert "no residual blocks" in "".join(parse_html(no_blocks._repr_html_()).text)
