"""Nothing the project starts phones home: proven by watching, not by reading docs.

Each library reads its own telemetry switch with its own idea of "true"
(``fraudops.telemetry``). These tests run real commands where the network ends at
loopback and count every DNS query and outside connection they attempt.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from offline_support import require_offline_tools, run_offline, users_environment

from fraudops.telemetry import TELEMETRY_OFF

# A tracked MLflow run: MLflow 3 reports usage from a background thread when it is on.
pytestmark = pytest.mark.slow  # servers and subprocesses: tens of seconds

MLFLOW_RUN = """
{preamble}
import time
import mlflow
mlflow.set_tracking_uri("sqlite:///mlflow.db")
with mlflow.start_run():
    mlflow.log_metric("x", 1.0)
time.sleep(3)
"""


@pytest.fixture(autouse=True)
def _offline_tools() -> None:
    require_offline_tools()


def test_the_watcher_sees_a_dns_query_and_an_outside_connection(tmp_path: Path) -> None:
    script = (
        "import socket\n"
        "try: socket.getaddrinfo('example.org', 443)\n"
        "except OSError: pass\n"
        "s = socket.socket()\n"
        "try: s.connect(('10.1.2.3', 80))\n"
        "except OSError: pass\n"
    )
    run = run_offline(
        [sys.executable, "-c", script], tmp_path, users_environment(), tmp_path / "trace"
    )
    assert run.returncode == 0, run.output
    assert run.attempts.dns_queries >= 1
    assert "10.1.2.3:80" in run.attempts.outside
    assert not run.attempts.phoned_nobody


def test_mlflow_reports_usage_with_do_not_track_1_but_not_after_importing_fraudops(
    tmp_path: Path,
) -> None:
    # A fresh MLflow client: no switch of ours, and no MLFLOW_* left by other tests.
    env = {
        key: value
        for key, value in users_environment().items()
        if key not in TELEMETRY_OFF and not key.startswith("MLFLOW_")
    } | {"DO_NOT_TRACK": "1"}
    command = [sys.executable, "-c"]
    leaky = run_offline(
        [*command, MLFLOW_RUN.format(preamble="")], tmp_path, env, tmp_path / "leaky"
    )
    assert leaky.returncode == 0, leaky.output
    assert leaky.attempts.dns_queries >= 1, "MLflow no longer reports usage: update this test"

    quiet = run_offline(
        [*command, MLFLOW_RUN.format(preamble="import fraudops")], tmp_path, env, tmp_path / "q"
    )
    assert quiet.returncode == 0, quiet.output
    assert quiet.attempts.outside == [] and quiet.attempts.dns_queries == 0
