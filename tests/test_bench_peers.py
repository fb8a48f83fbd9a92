"""benchmarks/bench_peers.py (the peer table), its minires part only, at a tiny size."""
import os
import subprocess
import sys
from pathlib import Path

import minires as mr

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_peers  # noqa: E402


def test_the_parameter_count_is_resnet20s():
    assert bench_peers.resnet20_param_count() == 269_722
    model = mr.models.resnet20()
    assert sum(p.numel() for p in model.parameters()) == 269_722
    assert [s for *_, s in bench_peers.block_plan()] == [1, 1, 1, 2, 1, 1, 2, 1, 1]


def test_the_minires_step_learns_on_a_fixed_tiny_batch():
    x, y = bench_peers.fixed_batch(2, size=16)
    peer = bench_peers.build("minires", x, y, threads=1)
    assert not isinstance(peer, str), peer
    losses, ok = bench_peers.check_learns(peer)
    assert ok, losses                      # finite, and the third below the first
    assert peer.check() == "float32 held"


def test_rounds_alternate_and_a_slow_framework_stops_at_its_budget():
    calls = []

    def peer(name):
        def step():
            calls.append(name)
            return 1.0
        return bench_peers.Peer(name, "0", step, params=0)

    fast, slow = peer("fast"), peer("slow")
    times, losses = bench_peers.time_rounds([fast, slow], rounds=3, max_seconds=1e9)
    assert calls == ["fast", "slow"] * 3 and len(times["slow"]) == 3
    calls.clear()
    times, _ = bench_peers.time_rounds([fast, slow], rounds=3, max_seconds=0.0)
    assert calls == ["fast", "slow"] and len(times["fast"]) == 1    # at least one step each


def test_the_command_line_prints_a_markdown_row_and_skips_with_a_reason():
    env = dict(os.environ, MINIRES_BLAS_KERNEL="default", MINIRES_NUM_THREADS="1")
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_peers.py"),
                          "--frameworks", "minires", "--batch", "2", "--rounds", "2",
                          "--threads", "1"],
                         capture_output=True, text=True, timeout=120, env=env, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    rows = [line for line in out.stdout.splitlines() if line.startswith("| minires |")]
    assert len(rows) == 1 and "| 2 | 1.00 | - |" in rows[0], out.stdout
    assert "load average" in out.stdout and "269,722 parameters" in out.stdout


def test_a_missing_framework_or_a_different_net_is_skipped_with_the_reason(monkeypatch):
    def missing(x, y, threads):
        raise ImportError("No module named 'mygrad'")

    def smaller(x, y, threads):
        return bench_peers.Peer("mygrad", "0", lambda: 0.0, params=1234)

    monkeypatch.setitem(bench_peers.BUILDERS, "mygrad", missing)
    assert bench_peers.build("mygrad", None, None, 1).startswith("not installed")
    monkeypatch.setitem(bench_peers.BUILDERS, "mygrad", smaller)
    reason = bench_peers.build("mygrad", None, None, 1)
    assert "1,234 parameters, not ResNet-20's 269,722" in reason
