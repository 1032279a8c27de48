"""The benchmark harness runs end to end (CPU backend without a GPU; a one-shape GPU run
with a GPU) and reports a checked, timed result for gatednorm beside its peers."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


def test_bench_cli_writes_checked_figures(tmp_path):
    path = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "-m", "gatednorm", "bench", "--quick", "--tokens", "1,32", "--heads", "24",
         "--variants", "bf16", "--json", str(path)],
        capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(path.read_text())
    assert report["rows"], "no shapes were timed"
    for row in report["rows"]:
        assert row["ours_ok"], row            # checked against the reference before timing
        assert row["ours_s"] > 0 and row["ours_GBps"] > 0
        for peer in report["peers"]:          # each installed peer is checked and timed
            if peer in report["missing"]:
                continue
            assert not row.get(f"{peer}_error"), (peer, row)
            assert row.get(f"{peer}_s") is not None, (peer, row)
            assert row.get(f"{peer}_ok", True), (peer, row)
    assert "ours us" in proc.stdout           # the table is printed


def test_bench_plot(tmp_path):
    pytest.importorskip("matplotlib")
    from gatednorm import bench

    report = bench.run(quick=True, variants=("bf16",), tokens=(1,), heads=(24,))
    bench.plot(report, tmp_path / "p.png")
    assert (tmp_path / "p.png").stat().st_size > 1000


def test_bench_plot_without_matplotlib_says_so(tmp_path):
    """--plot with no matplotlib: a one-line error naming the option, before any timing."""
    try:
        import matplotlib  # noqa: F401
        pytest.skip("matplotlib is installed")
    except ImportError:
        pass
    proc = subprocess.run([sys.executable, "-m", "gatednorm", "bench", "--quick", "--plot", str(tmp_path / "p.png")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "--plot: needs matplotlib" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert "ours us" not in proc.stdout  # nothing was timed
