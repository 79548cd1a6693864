"""Every command of docs/runbook.md, in the page's order, against a live system.

The system is the one the loop tests build: a git + DVC project with a local remote and
seven weeks of simulated data, a real Prefect server, an MLflow registry under
FRAUDOPS_HOME, a real ``fraudops serve`` and eight days of replayed traffic with their
labels. Each ``<!-- check: runbook -->`` block runs as a bash script from the project root,
as an operator would type it; after a section (or a block) the test checks that the system
is in the state the page says. What an operator brings (the version to promote, a labels
file, the data revision to restore, a restarted server with a new key) the test provides
where the page asks for it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import polars as pl
import pytest
from loop_support import (
    ADMIN_KEY,
    backfill,
    current_data_version,
    in_remote,
    replay,
    use_project,
)

from docs.markdown import DOCS, Block, blocks, checked
from fraudops.config import Settings, get_settings
from fraudops.data.schema import TRANSACTION_ID, TX_FRAUD
from fraudops.logs.database import open_prediction_log
from fraudops.logs.readers import read_predictions
from fraudops.tracking.registry import CHALLENGER, CHAMPION, configure_mlflow, version_by_alias
from pipelines.retraining import REASON_TAG, REQUESTED_BY_TAG
from pipelines.training import training_flow
from serving.server import ServingProcess

pytestmark = pytest.mark.slow

RUNBOOK = DOCS / "runbook.md"
BIN = Path(sys.executable).parent
REPLAY_DAYS = 8  # one more than the label delay: the first replayed days mature
FIRST_DAYS = 49  # loop_support.POPULATION.days
GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "runbook test",
    "GIT_AUTHOR_EMAIL": "runbook@fraudops.invalid",
    "GIT_COMMITTER_NAME": "runbook test",
    "GIT_COMMITTER_EMAIL": "runbook@fraudops.invalid",
    "GIT_CONFIG_COUNT": "1",
    "GIT_CONFIG_KEY_0": "commit.gpgsign",
    "GIT_CONFIG_VALUE_0": "false",
}


class Operator:
    """Runs runbook blocks from the project root with the environment an operator has."""

    def __init__(self, project: Path) -> None:
        self.project = project
        self.env = {
            **os.environ,
            **GIT_IDENTITY,
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        }
        self.ran: list[str] = []

    def run(self, block: Block) -> str:
        done = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", block.code],
            cwd=self.project,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        assert done.returncode == 0, (
            f"{block.id} ({block.section}) exited {done.returncode}:\n{block.code}\n"
            f"--- stdout\n{done.stdout[-4000:]}\n--- stderr\n{done.stderr[-4000:]}"
        )
        self.ran.append(block.id)
        return done.stdout


def git(project: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", *args],
        cwd=project,
        env={**os.environ, **GIT_IDENTITY},
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


def served(url: str) -> dict:
    """Alias → version being served, and the active routing, as /v1/models says."""
    answer = httpx.get(f"{url}/v1/models", timeout=30).json()
    return {
        "versions": {model["alias"]: model["version"] for model in answer["models"]},
        "active": answer["routing"]["active"],
    }


def champion(settings: Settings) -> str:
    client = configure_mlflow(settings)
    return str(version_by_alias(client, settings.model_name, CHAMPION).version)


def test_every_runbook_command_runs_against_a_live_system(
    tmp_path: Path, project: Path, prefect_api: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    serving = ServingProcess(tmp_path / "logs")
    settings = use_project(monkeypatch, project, serving_url=serving.url, retrain_cooldown_s="3600")
    assert training_flow().version == "1"  # champion and challenger
    assert training_flow().version == "2"  # challenger
    git(project, "add", "data.dvc", "params.yaml", ".dvc/config")
    git(project, "commit", "-q", "-m", "data: first version")
    first_commit = git(project, "rev-parse", "HEAD")
    first_version = current_data_version(project)
    backfill(settings)
    operator = Operator(project)
    state: dict[str, str] = {}
    corrections: list[tuple[int, int]] = []

    # What the operator brings, and what the page says the system then shows; keyed by
    # (section anchor, index of the block in its section).
    def before_promotion() -> None:
        operator.env["VERSION"] = "1"

    def labels_file() -> None:
        engine = open_prediction_log(get_settings().log_url)
        try:
            logged = set(read_predictions(engine)["transaction_id"])
        finally:
            engine.dispose()
        rows = replayed.filter(pl.col(TRANSACTION_ID).is_in(list(logged))).head(3)
        corrections.extend(
            (tx, 1 - label) for tx, label in rows.select(TRANSACTION_ID, TX_FRAUD).rows()
        )
        lines = [f"{tx} {label}" for tx, label in corrections]
        (project / "labels.txt").write_text("\n".join(lines) + "\n")

    def corrected() -> None:
        """The corrections are the labels that count (the log writer stores them within
        its flush interval, so wait for it)."""
        assert corrections
        deadline = time.monotonic() + 30
        while True:
            engine = open_prediction_log(get_settings().log_url)
            try:
                rows = read_predictions(engine).set_index("transaction_id")
            finally:
                engine.dispose()
            labels = [(tx, int(rows.loc[tx, "label"])) for tx, _ in corrections]
            if labels == corrections or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert labels == corrections, state["output"]
        assert state["output"].count('"status":"recorded"') == len(corrections), state["output"]

    def shadowing() -> None:
        assert served(serving.url)["active"]["shadow"]["alias"] == CHALLENGER

    def champion_only() -> None:
        active = served(serving.url)["active"]
        assert active["mode"] == CHAMPION and active.get("shadow") is None

    def ab_on() -> None:
        assert served(serving.url)["active"]["weights"] == {"champion": 90, "challenger": 10}

    def serves_champion(version: str) -> Callable[[], None]:
        def check() -> None:
            assert champion(settings) == version
            assert served(serving.url)["versions"][CHAMPION] == version

        return check

    def retrained() -> None:
        client = configure_mlflow(settings)
        challenger = version_by_alias(client, settings.model_name, CHALLENGER)
        assert str(challenger.version) == "3"
        assert challenger.tags[REQUESTED_BY_TAG] == "oncall"
        assert "data_drift alert" in challenger.tags[REASON_TAG]
        state["retrained_version"] = current_data_version(project)
        assert state["retrained_version"] != first_version
        assert in_remote(project, state["retrained_version"])
        assert served(serving.url)["versions"][CHALLENGER] == "3"

    def committed() -> None:
        assert len(git(project, "log", "--format=%H", "--", "data.dvc").splitlines()) == 2

    def fresh_machine() -> None:
        operator.env["DATA_REV"] = first_commit
        shutil.rmtree(project / ".dvc" / "cache")  # only the remote has the files now

    def restored() -> None:
        assert current_data_version(project) == first_version
        assert len(list((project / "data" / "raw").glob("day=*"))) == FIRST_DAYS

    def newest_again() -> None:
        assert current_data_version(project) == state["retrained_version"]
        assert len(list((project / "data" / "raw").glob("day=*"))) > FIRST_DAYS

    def restart_with_new_key() -> None:
        nonlocal serving
        new_key = state["output"].strip()
        assert len(new_key) >= 32 and new_key != ADMIN_KEY
        serving.stop()
        serving = ServingProcess(
            tmp_path / "logs-new-key", port=serving.port, env={"FRAUDOPS_ADMIN_API_KEY": new_key}
        ).start()
        operator.env |= {"FRAUDOPS_ADMIN_API_KEY": new_key, "OLD_ADMIN_API_KEY": ADMIN_KEY}

    def decided() -> None:
        assert '"signal"' in state["output"]

    before: dict[tuple[str, int], Callable[[], None]] = {
        ("promote-a-challenger", 0): before_promotion,
        ("replay-or-correct-labels", 1): labels_file,
        ("restore-a-data-version-from-the-dvc-remote", 0): fresh_machine,
        ("rotate-the-admin-key", 1): restart_with_new_key,
    }
    after: dict[tuple[str, int], Callable[[], None]] = {
        ("change-shadow-routing", 0): shadowing,
        ("change-shadow-routing", 3): champion_only,
        ("run-an-ab-test-start-pause-resume-end", 0): ab_on,
        ("run-an-ab-test-start-pause-resume-end", 1): champion_only,
        ("run-an-ab-test-start-pause-resume-end", 2): ab_on,
        ("run-an-ab-test-start-pause-resume-end", 3): champion_only,
        ("promote-a-challenger", 0): serves_champion("2"),
        ("promote-a-challenger", 1): serves_champion("2"),
        ("promote-a-challenger", 2): serves_champion("1"),
        ("roll-back", 0): serves_champion("2"),
        ("replay-or-correct-labels", 1): corrected,
        ("retrain-by-hand-and-record-the-data-version", 0): retrained,
        ("retrain-by-hand-and-record-the-data-version", 1): committed,
        ("restore-a-data-version-from-the-dvc-remote", 0): restored,
        ("restore-a-data-version-from-the-dvc-remote", 1): newest_again,
        ("respond-to-an-alert", 1): decided,
    }

    serving.start()
    try:
        replayed, stats = replay(settings, serving.url, REPLAY_DAYS, "none")
        assert stats.failed == 0 and stats.labels_failed == 0, stats.errors
        position: dict[str, int] = {}
        for block in blocks(RUNBOOK):
            if block.kind != "runbook":
                continue
            key = (block.section, position.setdefault(block.section, 0))
            position[block.section] += 1
            if key in before:
                before.pop(key)()
            state["output"] = operator.run(block)
            if key in after:
                after.pop(key)()
    finally:
        serving.stop()

    assert operator.ran == [block.id for block in checked("runbook")]
    assert not before and not after, f"steps the page no longer has: {[*before, *after]}"
