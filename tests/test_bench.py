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


def _gpu_without_device(bench, tuner, monkeypatch):
    monkeypatch.setattr(bench, "_fla_fwd_autotuner", lambda: tuner)
    gpu = object.__new__(bench._Gpu)  # the retuning bookkeeping needs no device
    gpu.retuned_picks = {}
    return gpu


USERS_PICK = {"key-below-64k": "BT: 16, num_warps: 8"}


def test_retuned_peer_tunes_afresh_and_puts_the_users_pick_back(monkeypatch):
    """A shape that was not pretuned: the retuned FLA peer starts from an empty autotuner
    cache with disk results off, records the pick it made there, and leaves the plain peer's
    cache and flag as they were, also when the peer raises."""
    from gatednorm import bench

    tuner = _FakeAutotuner()
    gpu = _gpu_without_device(bench, tuner, monkeypatch)
    row = {"variant": "bf16", "T": 1024, "H": 32}
    with gpu._peer_scope(bench.RETUNED_PEER, row):
        assert tuner.cache == {} and tuner.cache_results is False
        tuner.cache["key-below-64k"] = "BT: 32, num_warps: 4"  # what tuning on this shape stores
    assert row[f"{bench.RETUNED_PEER}_config"] == "BT: 32, num_warps: 4"
    assert tuner.cache == USERS_PICK and tuner.cache_results is True

    with pytest.raises(RuntimeError):
        with gpu._peer_scope(bench.RETUNED_PEER, dict(row)):
            tuner.cache["key-below-64k"] = "half-tuned"
            raise RuntimeError("peer failed")
    assert tuner.cache == USERS_PICK and tuner.cache_results is True

    with gpu._peer_scope("fla_rms_norm_gated", row):  # the plain peer: nothing touched
        assert tuner.cache == USERS_PICK


def test_pretuned_picks_serve_their_own_shape(monkeypatch):
    """pretune_fla tunes each shape from an empty cache before anything is timed and keeps
    each shape's pick; the retuned peer then runs with its shape's pick (nothing left to
    tune), and the plain peer's cache is back after both."""
    from gatednorm import bench

    tuner = _FakeAutotuner()
    gpu = _gpu_without_device(bench, tuner, monkeypatch)
    seen = []

    def first_call(variant, T, H):  # stands in for one FLA call: its autotuner tunes
        seen.append((dict(tuner.cache), tuner.cache_results))
        tuner.cache["key-below-64k"] = f"pick for {variant} T={T} H={H}"

    gpu._fla_first_call = first_call
    shapes = [("bf16", 1, 24), ("bf16", 1024, 32)]
    gpu.pretune_fla(shapes)
    assert seen == [({}, False), ({}, False)]
    assert gpu.retuned_picks == {s: {"key-below-64k": f"pick for {s[0]} T={s[1]} H={s[2]}"} for s in shapes}
    assert tuner.cache == USERS_PICK and tuner.cache_results is True

    row = {"variant": "bf16", "T": 1024, "H": 32}
    with gpu._peer_scope(bench.RETUNED_PEER, row):
        assert tuner.cache == {"key-below-64k": "pick for bf16 T=1024 H=32"} and tuner.cache_results is False
    assert row[f"{bench.RETUNED_PEER}_config"] == "pick for bf16 T=1024 H=32"
    assert tuner.cache == USERS_PICK and tuner.cache_results is True
