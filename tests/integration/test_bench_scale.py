"""The scaling benchmark at a toy size: it runs both paths, checks them and draws its plot."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[2]

#: A LocalCluster of worker processes starts, and XGBoost trains four times.
pytestmark = [pytest.mark.slow, pytest.mark.model]


def test_a_toy_size_runs_both_paths_with_equal_results(tmp_path: Path) -> None:
    out, plot = tmp_path / "scale.json", tmp_path / "scaling.png"
    done = subprocess.run(
        [
            sys.executable,
            "benchmarks/bench_scale.py",
            "--sizes",
            "0.02",
            "0.04",
            "--days",
            "30",
            "--out",
            str(out),
            "--plot",
            str(plot),
            "--scratch",
            str(tmp_path),
        ],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    sizes = json.loads(out.read_text())["sizes"]
    assert [size["factor"] for size in sizes] == [0.02, 0.04]
    assert sizes[1]["generate"]["rows"] > sizes[0]["generate"]["rows"]
    for size in sizes:
        assert size["checks"]["features_equal"] and size["checks"]["scores_equal"]
        dask = size["dask"]
        assert len(dask["worker_max_rss_bytes"]) == 2
        for step in ("featurise", "train", "score"):
            assert len(dask["steps"][step]["worker_peak_bytes"]) == 2
            assert size["single"]["steps"][step]["driver_peak_bytes"] > 0
    assert "growth 0.04x/0.02x" in done.stdout
    assert plot.stat().st_size > 10_000
    assert list(tmp_path.glob("bench-scale-*")) == []  # every scratch folder removed
