"""`make bench` still runs: every benchmark at a tiny scale, printing its table (no timing is asserted here)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.acceptance
ROOT = Path(__file__).resolve().parent.parent


def test_the_benchmarks_run_at_a_tiny_scale(tmp_path: Path) -> None:
    out = tmp_path / "benchmarks.md"
    result = subprocess.run(
        [sys.executable, "-m", "bench.run", "--scale", "tiny", "--write", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    table = [line for line in result.stdout.splitlines() if line.startswith("| ")]
    numbers = {line.split("|")[1].strip().split(".")[0] for line in table[2:]}
    assert numbers == {"1", "2", "3", "4", "5", "6", "7"}
    assert "n/a" not in "".join(line for line in table if line.startswith("| 3."))
    assert all("errors 0" in line for line in table if line.startswith("| 1."))
    assert "Measured on" in out.read_text()
