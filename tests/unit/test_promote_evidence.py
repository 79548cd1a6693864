"""`fraudops promote --ab-report/--shadow-report`: a report is weighed only when it is one,
and only for the version it judged; anything else is refused with a plain error.

The reports are real ones (``analyse_ab`` / ``analyse_shadow`` on prediction-log frames);
a report that does reach the gate is proven by the demo (tests/e2e/test_demo.py),
whose decision lands on the challenger's MLflow version with the shadow's numbers.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from fraudops.cli import app
from fraudops.config import TrainParams
from fraudops.experiments.ab_report import analyse_ab
from fraudops.experiments.shadow_report import analyse_shadow
from unit.test_ab_report import FAST, log_frame


def promote(*args: str) -> str:
    result = CliRunner().invoke(app, ["promote", *args])
    assert result.exit_code == 1, result.output
    return " ".join(result.output.split())  # rich wraps long errors


@pytest.fixture(scope="module")
def ab_report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real A/B result whose challenger arm was served by version 2 (analysed once)."""
    frame = log_frame(np.random.default_rng(21), 4000, {"champion": 2.0, "challenger": 4.0})
    path = tmp_path_factory.mktemp("reports") / "ab.json"
    path.write_text(analyse_ab(frame, FAST, top_k=100).model_dump_json())
    return path


def test_a_report_on_another_version_is_refused(ab_report: Path, tmp_path: Path) -> None:
    assert "served by versions 2, not by version 3 alone" in promote(
        "--version", "3", "--ab-report", str(ab_report)
    )
    empty = analyse_shadow(
        log_frame(np.random.default_rng(1), 10, {"champion": 1.0}, weights=(1.0,)).assign(
            is_shadow=False, request_id="r", latency_ms=1.0, model_name="m", model_alias="champion"
        ),
        FAST,
        TrainParams(),
    )
    shadow = tmp_path / "shadow.json"
    shadow.write_text(empty.model_dump_json())
    assert "the shadow was None, not version 3" in promote(
        "--version", "3", "--shadow-report", str(shadow)
    )


def test_missing_and_foreign_reports_are_refused(ab_report: Path, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.json"
    refused = promote("--version", "2", "--ab-report", str(missing))
    # rich may wrap a long temporary path anywhere, even inside the path: compare unspaced.
    assert f"cannotread{missing}" in refused.replace(" ", "")
    assert "is not a ShadowReport written by --json" in promote(
        "--version", "2", "--shadow-report", str(ab_report)
    )
    garbage = tmp_path / "garbage.json"
    garbage.write_text("not json")
    assert "is not a ABResult written by --json" in promote(
        "--version", "2", "--ab-report", str(garbage)
    )


def test_a_forced_promotion_weighs_no_report(ab_report: Path) -> None:
    assert "--force skips the gate" in promote(
        "--version", "2", "--force", "--ab-report", str(ab_report)
    )
