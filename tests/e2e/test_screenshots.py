"""``make screenshots`` on a live stack: every picture shows the real page, and is small.

The script (docs/img/take_screenshots.py) runs the demo on the loop tests' small project,
serves its state and photographs each UI. A screenshot of an error page, a login wall or
a dashboard with nothing in it would still be a PNG, so each page's rendered DOM is kept
(``--dom-dir``) and read here: the MLflow run shows its metric names, the registry the
``champion`` alias, Prefect the flow names and the drift automation, the Evidently
dashboard its panels over several monitoring windows, /docs the scoring endpoint, and
the reports their tables. Each PNG must be a full viewport under 300 KB.
"""

from __future__ import annotations

import html
import re
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from e2e.test_demo_offline import SOURCE, demo_env, small_clone

pytestmark = pytest.mark.slow

SCRIPT = SOURCE / "docs" / "img" / "take_screenshots.py"
MAX_BYTES = 300_000
#: Per picture, texts its page must show: proof it is the page, with the demo's content.
EXPECTED: dict[str, tuple[str, ...]] = {
    "mlflow-run": ("Metrics (", "average_precision", "card_precision_at_100", "val_roc_auc"),
    "mlflow-plots": ("pr_curve.png", "roc_curve.png", "feature_importance.png"),
    "mlflow-registry": ("fraud-detector", "Aliases", "@ champion", "@ challenger"),
    "prefect-flow-runs": ("monitoring", "retrain", "Completed"),
    "prefect-automation": ("on-drift", "Run deployment"),
    "evidently-drift": ("fraudops monitoring", "Share of drifted features", "Score drift"),
    "evidently-performance": ("Recall: realised vs estimated", "ROC AUC: realised vs estimated"),
    "api-docs": ("/v1/score", "/v1/feedback", "/admin/routing"),
    "report-shadow": ("fraudops report shadow", "challenger"),
    "report-ab": ("fraudops report ab", "champion", "challenger"),
}
#: What an error page or an unloaded app says instead.
FAILURE_TEXTS = ("Internal Server Error", "Not Found", "Something went wrong", "Page not found")
#: At least this many monitoring windows on the dashboard: a series, not one point.
MIN_WINDOWS = 4


def visible_text(dom: str) -> str:
    """The DOM's text without scripts, styles and tags, as one whitespace-normalised line."""
    dom = re.sub(r"<(script|style)\b.*?</\1>", " ", dom, flags=re.S | re.I)
    dom = re.sub(r"<wbr\s*/?>", "", dom, flags=re.I)  # a line-break hint inside a word
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", dom)).split())


def windows_drawn(text: str) -> int:
    """Monitoring windows on the dashboard's time axis: one timestamp label per window."""
    return len(set(re.findall(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}", text)))


@pytest.mark.timeout(2400)
def test_screenshots_show_the_live_system(tmp_path: Path):
    clone = small_clone(tmp_path.resolve() / "clone")
    out, dom_dir = tmp_path / "png", tmp_path / "dom"
    command = [sys.executable, str(SCRIPT), "--checkout", str(clone), "--out", str(out)]
    done = subprocess.run(
        [*command, "--dom-dir", str(dom_dir)],
        env=demo_env(),
        capture_output=True,
        text=True,
        timeout=2000,
        check=False,
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-6000:]

    assert sorted(path.stem for path in out.glob("*.png")) == sorted(EXPECTED)
    for name, texts in EXPECTED.items():
        png = out / f"{name}.png"
        assert png.stat().st_size <= MAX_BYTES, f"{png}: {png.stat().st_size:,} bytes"
        with Image.open(png) as image:
            assert image.size == (1440, 900), (name, image.size)
            assert len(image.convert("RGB").getcolors(1 << 16) or ()) > 8, f"{name} is blank"
        text = visible_text((dom_dir / f"{name}.html").read_text())
        missing = [expected for expected in texts if expected not in text]
        assert not missing, f"{name} lacks {missing}: {text[:3000]}"
        failures = [failure for failure in FAILURE_TEXTS if failure in text]
        assert not failures, f"{name} shows {failures}: {text[:3000]}"
    drift_page = visible_text((dom_dir / "evidently-drift.html").read_text())
    assert windows_drawn(drift_page) >= MIN_WINDOWS, drift_page[:3000]

    # The pictures left the clone as committed: state went to the demo's worktree.
    status = subprocess.run(
        ["git", "status", "--porcelain"], cwd=clone, capture_output=True, text=True, check=True
    )
    assert status.stdout == ""
