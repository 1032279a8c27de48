"""README.md's CPU example runs as written (a new user's first step; the review of
2026-12-04 found the README's one Python block unrunnable without a GPU and torch)."""
import re
from pathlib import Path

import numpy as np

import gatednorm

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_cpu_example_runs():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert blocks, "README.md has no python block"
    cpu = blocks[0]
    assert "torch" not in cpu and "device=0" not in cpu, "the first block should need no GPU"
    env: dict = {}
    before = gatednorm.get_num_threads()
    try:
        exec(compile(cpu, str(README), "exec"), env)
    finally:
        gatednorm.set_num_threads(before)
    ref = gatednorm.reference.rmsnorm_gated(env["x"], env["z"], env["w"], eps=1e-6)
    assert gatednorm.reference.compare(env["y"], ref)
    assert isinstance(env["y"], np.ndarray) and env["y"].shape == env["x"].shape
