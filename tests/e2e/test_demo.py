"""`fraudops demo` on a fresh clone, offline: the clone stays as committed, nothing phones home.

The demo once rewrote the tracked ``routing.yaml`` (its comments lost, the A/B policy left
in) and ``data.dvc``, and left an untracked ``dvc.lock``, so the suite run next in the same
clone failed a routing test. Here the demo runs as a user runs it, from the clone's root with
no FRAUDOPS_* setting, on the small project of the loop tests (``loop_support``) so it takes
minutes; afterwards the clone must be clean, its routing tests must pass, and what the demo
made must be where it says: commits on its branch, state in its worktree.

The same run proves the project phones nobody (issue 11, item 1): the demo and then the
dashboards run in a network namespace with only loopback, under strace
(``offline_support``), and must not attempt a single DNS query or outside connection.
The demo runs once per session (``finished_demo``, ``demo_support``), and the second test
photographs what it left: ``make screenshots`` (docs/img/take_screenshots.py) serves the
run's state and photographs each UI. A screenshot of an error page, a login wall or a
dashboard with nothing in it would still be a PNG, so each page's rendered DOM is kept
(``--dom-dir``) and read: the MLflow run shows its metric names, the registry the
``champion`` alias, Prefect the flow names and the drift automation, the Evidently
dashboard its panels over several monitoring windows, /docs the scoring endpoint, and the
reports their tables. Each PNG must be a full viewport under 300 KB.

It also proves the story reaches its end (issue 12, item 2): the promotion gate decides,
the summary says so, and the decision with its evidence is on the challenger's MLflow
version. The demo runs with ``--keep-running``: every URL of its summary must answer
while it waits, and SIGTERM must end it with status 0 and no process of it left behind.
"""

from __future__ import annotations

import html
import re
import subprocess
import sys
from pathlib import Path

import pytest
from demo_support import BIN, SOURCE, FinishedDemo, demo_env, git
from mlflow import MlflowClient
from offline_support import attempts, offline_prefix, users_environment
from PIL import Image

from fraudops.experiments.routing import load_routing
from fraudops.local.demo_worktree import DEMO_BRANCH
from fraudops.local.servers import free_port
from fraudops.tracking.registry import (
    CHAMPION,
    DECISION_NUMBER_PREFIX,
    DECISION_REASON_TAG,
    DECISION_TAG,
)
from pipelines.promotion import DECISION_RUN_TAG

pytestmark = pytest.mark.slow


#: Inside the demo's worktree: the Evidently UI up, its project served, then stopped.
DASHBOARDS = """
fraudops dashboards --port {port} > dashboards.log 2>&1 &
ui=$!
python -c '
import httpx, sys, time
deadline = time.monotonic() + 300
while time.monotonic() < deadline:
    try:
        projects = httpx.get("http://127.0.0.1:{port}/api/v2/projects", timeout=10).text
        if "fraudops monitoring" in projects:
            sys.exit(0)
    except httpx.HTTPError:
        pass
    time.sleep(1)
sys.exit("the Evidently UI did not serve the project within 300 s")
'
status=$?
kill -TERM $ui
wait $ui
exit $status
"""


@pytest.mark.timeout(2400)
def test_the_demo_offline_leaves_a_fresh_clone_as_committed_and_phones_nobody(
    finished_demo: FinishedDemo, tmp_path: Path
):
    """The demo (train, serve with traffic, monitor, drift-triggered retraining, shadow, A/B
    with its labels, the promotion decision), kept running until SIGTERM, then the
    dashboards, run where only loopback exists and every connect is traced, as on a
    user's machine (no test or CI markers, which some libraries read as "stay quiet")."""
    demo = finished_demo
    clone, worktree, state = demo.clone, demo.worktree, demo.state
    printed, stdout, seen = demo.printed, demo.stdout, demo.seen
    assert demo.wrapper.returncode == 0 and seen is not None, (
        demo.wrapper.stdout + demo.wrapper.stderr + printed[-6000:]
    )
    assert seen["summary"] is not None, printed[-6000:]
    assert seen["returncode"] == 0, printed[-6000:]
    assert demo.processes_left == []
    assert attempts(demo.trace).phoned_nobody, attempts(demo.trace)
    assert re.search(r"challenger version \d+ is in shadow", printed), printed[-6000:]
    assert re.search(r"Shadow: \S+ v\d+ \(challenger\)", stdout), stdout
    assert "A/B: challenger vs champion" in stdout, stdout

    # While it ran: the API, Prefect, MLflow and Evidently each answered at its URL.
    urls = seen["summary"]["urls"]
    assert len(urls) == 4 and seen["answers"] == dict.fromkeys(urls, 200), seen

    # The decision: in the summary, and on the challenger's MLflow version with its evidence.
    found = re.search(
        r"decision: (promoted|rejected) version (\d+); champion is version (\d+)", printed
    )
    assert found, printed[-6000:]
    outcome, judged, champion = found.groups()
    assert (champion == judged) == (outcome == "promoted")
    decision = seen["summary"]["decision"]
    assert (decision["outcome"], decision["version"]) == (outcome, judged)
    # Both URIs: an earlier test in the session may have set MLflow's global registry URI,
    # which a client given only a tracking URI would read the model versions from.
    store = f"sqlite:///{state / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=store, registry_uri=store)
    name = "fraud-detector"
    tags = client.get_model_version(name, judged).tags
    assert tags[DECISION_TAG] == outcome
    assert tags[DECISION_REASON_TAG] == decision["reason"]
    assert str(client.get_registered_model(name).aliases[CHAMPION]) == champion
    numbers = {key.removeprefix(DECISION_NUMBER_PREFIX) for key in tags}
    assert {"challenger.average_precision", "champion.average_precision"} <= numbers
    assert "shadow.agreement" in numbers, tags  # the shadow report's verdict was weighed
    decision_run = client.get_run(tags[DECISION_RUN_TAG])
    assert decision_run.data.tags[DECISION_TAG] == outcome
    assert decision_run.data.metrics["challenger.average_precision"] == pytest.approx(
        float(tags[DECISION_NUMBER_PREFIX + "challenger.average_precision"])
    )

    # The clone: nothing changed, nothing new, the defaults as committed.
    assert git(clone, "status", "--porcelain") == ""
    for tracked in ("routing.yaml", "data.dvc", "params.yaml"):
        committed = subprocess.run(
            ["git", "show", f"HEAD:{tracked}"], cwd=clone, capture_output=True, check=True
        ).stdout
        assert (clone / tracked).read_bytes() == committed, tracked
    suite = subprocess.run(
        [str(BIN / "pytest"), "-q", "-p", "no:cacheprovider", "tests/unit/test_routing.py"],
        cwd=clone,
        env=demo_env(),
        capture_output=True,
        text=True,
        check=False,
    )
    assert suite.returncode == 0, suite.stdout[-4000:]

    # What the demo made is where it said: data versions as commits on its branch, its
    # worktree clean, its live routing policy in that worktree's state directory.
    assert f"a git worktree on branch {DEMO_BRANCH}" in printed
    assert f"cd {worktree} && fraudops dashboards" in printed
    assert (worktree / "monitoring" / "workspace").is_dir()
    assert f"--backend-store-uri sqlite:///{state / 'mlflow.db'}" in printed
    assert (state / "mlflow.db").is_file()
    versions = git(clone, "log", "--format=%H", f"HEAD..{DEMO_BRANCH}").split()
    assert len(versions) == 2, git(clone, "log", "--oneline", f"HEAD..{DEMO_BRANCH}")
    for commit in versions:
        assert "data.dvc" in git(clone, "show", "--name-only", "--format=", commit).split()
    assert demo.worktree_status == ""
    assert (worktree / "dvc.lock").is_file()
    live = load_routing(state / "routing.yaml")
    assert live.mode == "ab" and live.shadow is not None

    trace = tmp_path / "dashboards.trace"
    script = DASHBOARDS.format(port=free_port())
    ui = subprocess.run(
        [*offline_prefix(trace), "sh", "-c", script],
        cwd=worktree,
        env=users_environment(demo_env()),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert ui.returncode == 0, ui.stdout + ui.stderr + (worktree / "dashboards.log").read_text()
    assert attempts(trace).phoned_nobody, attempts(trace)


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
def test_screenshots_show_the_live_system(finished_demo: FinishedDemo, tmp_path: Path):
    clone, worktree = finished_demo.clone, finished_demo.worktree
    assert finished_demo.seen is not None, finished_demo.printed[-6000:]
    out, dom_dir = tmp_path / "png", tmp_path / "dom"
    command = [sys.executable, str(SCRIPT), "--worktree", str(worktree), "--out", str(out)]
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
