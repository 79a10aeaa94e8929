"""The prepared GPU check cannot rot: its CPU quick mode runs every measurement path and writes its files."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_device_check_quick_mode_runs_on_the_cpu(tmp_path: Path) -> None:
    done = subprocess.run(
        ["bash", str(ROOT / "scripts" / "device_check.sh"), "--quick", "--device", "cpu", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads((tmp_path / "device_check.json").read_text())
    measured = result["measurements"]
    assert {"matmul", "synther sampler fp32", "synther training fp32", "dydiff phase fp32", "actors"} <= set(measured)
    assert all(v > 0 for v in measured["actors"].values())
    table = (tmp_path / "device_check.md").read_text()
    assert "physical floor" in table and "| synther sampler fp32" in table
    assert "torch" in (tmp_path / "versions.txt").read_text()
