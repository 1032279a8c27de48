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


class _FakeAutotuner:
    """Stands in for FLA's Triton autotuner: a cache of picks by key, and disk caching."""

    def __init__(self):
        self.cache = {"key-below-64k": "BT: 16, num_warps: 8"}
        self.cache_results = True


def test_retuned_peer_tunes_afresh_and_puts_the_users_pick_back(monkeypatch):
    """The retuned FLA peer starts each shape from an empty autotuner cache with disk results
    off, records the pick it made there, and leaves the plain peer's cache and flag as they
    were, also when the peer raises."""
    from gatednorm import bench

    tuner = _FakeAutotuner()
    monkeypatch.setattr(bench, "_fla_fwd_autotuner", lambda: tuner)
    gpu = object.__new__(bench._Gpu)  # _peer_scope needs no device
    row = {}
    with gpu._peer_scope(bench.RETUNED_PEER, row):
        assert tuner.cache == {} and tuner.cache_results is False
        tuner.cache["key-below-64k"] = "BT: 32, num_warps: 4"  # what tuning on this shape stores
    assert row[f"{bench.RETUNED_PEER}_config"] == "BT: 32, num_warps: 4"
    assert tuner.cache == {"key-below-64k": "BT: 16, num_warps: 8"} and tuner.cache_results is True

    with pytest.raises(RuntimeError):
        with gpu._peer_scope(bench.RETUNED_PEER, {}):
            tuner.cache["key-below-64k"] = "half-tuned"
            raise RuntimeError("peer failed")
    assert tuner.cache == {"key-below-64k": "BT: 16, num_warps: 8"} and tuner.cache_results is True

    with gpu._peer_scope("fla_rms_norm_gated", row):  # the plain peer: nothing touched
        assert tuner.cache == {"key-below-64k": "BT: 16, num_warps: 8"}
