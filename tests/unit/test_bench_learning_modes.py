"""The learning-mode comparison runs as one command and writes its table, days and plot.

At a tiny size (300 customers, one seed) the numbers mean little; what is checked is the
protocol: every mode scores every day, all start from one model, only the batch modes pay
at the day's end, and the updates change what a mode scores once drifted labels arrive.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.model]

PROJECT = Path(__file__).resolve().parents[2]
PRE_DAYS, POST_DAYS = 2, 9


def test_the_comparison_writes_every_mode_for_every_day(tmp_path: Path) -> None:
    out = tmp_path / "out"
    done = subprocess.run(
        [
            sys.executable,
            str(PROJECT / "benchmarks" / "bench_learning_modes.py"),
            *("--seeds", "0", "--customers", "300", "--jobs", "1", "--out", str(out)),
            *("--pre-days", str(PRE_DAYS), "--post-days", str(POST_DAYS)),
        ],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr

    days = pl.read_csv(out / "days.csv")
    modes = ("frozen", "full", "warm_start", "online")
    assert days.height == 2 * len(modes) * (PRE_DAYS + POST_DAYS)
    assert set(days["mode"]) == set(modes)
    assert sorted(set(days["day"])) == list(range(-PRE_DAYS, POST_DAYS))

    # The first served day: the three batch modes still hold the one first model...
    first = days.filter(pl.col("day") == -PRE_DAYS, pl.col("mode") != "online")
    for _, same_model in first.group_by("scenario"):
        assert same_model["card_precision_at_100"].n_unique() == 1
        assert same_model["average_precision"].n_unique() == 1
    # ... and from then on a daily refit scores differently from the frozen model.
    by_mode = days.pivot(on="mode", index=["scenario", "day"], values="average_precision")
    assert (by_mode.drop_nulls()["full"] != by_mode.drop_nulls()["frozen"]).any()
    # Only updates cost CPU; the frozen model never updates.
    cpu = days.group_by("mode").agg(pl.col("update_cpu_s").sum())
    spent = dict(zip(cpu["mode"], cpu["update_cpu_s"], strict=True))
    assert spent["frozen"] == 0 and min(spent["full"], spent["warm_start"], spent["online"]) > 0

    table = (out / "summary.md").read_text().splitlines()
    assert len(table) == 2 + 2 * len(modes)
    assert "days to recover" in table[0] and "CPU s per day's update" in table[0]
    assert (out / "learning-modes.png").stat().st_size > 10_000
    assert table[0] in done.stdout
