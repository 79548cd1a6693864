"""Server processes: real MLflow and Prefect servers, and how a child process group stops."""

from __future__ import annotations

import re
import sys
import uuid
from pathlib import Path

import httpx
import mlflow
import pytest

from fraudops.config import Settings
from fraudops.local.servers import MlflowServer, PrefectServer, ServerError, ServerProcess
from fraudops.tracking.registry import configure_mlflow


def test_prefect_server_runs_a_flow_readable_through_the_client(
    prefect_server: PrefectServer, prefect_api: str
) -> None:
    from prefect import flow
    from prefect.client.orchestration import get_client

    assert httpx.get(f"{prefect_api}/health", timeout=5).json() is True
    flow_name = f"smoke-{uuid.uuid4().hex[:8]}"

    @flow(name=flow_name)
    def add(a: int, b: int) -> int:
        return a + b

    state = add(2, 3, return_state=True)
    assert state.is_completed()
    assert state.result() == 5

    with get_client(sync_client=True) as client:
        assert str(client.api_url).rstrip("/") == prefect_api
        run = client.read_flow_run(state.state_details.flow_run_id)
        assert run.state is not None and run.state.is_completed()
        assert client.read_flow(run.flow_id).name == flow_name


def test_mlflow_server_proxies_artifacts_into_its_destination(
    mlflow_server: MlflowServer, mlflow_settings: Settings
) -> None:
    configure_mlflow(mlflow_settings)
    marker = uuid.uuid4().hex
    with mlflow.start_run() as run:
        mlflow.log_text(marker, "note.txt")
    assert run.info.artifact_uri.startswith("mlflow-artifacts:")
    stored = [path.read_text() for path in mlflow_server.artifacts_dir.rglob("note.txt")]
    assert marker in stored


def test_a_port_in_use_is_refused_before_starting(
    mlflow_server: MlflowServer, tmp_path: Path
) -> None:
    taken = MlflowServer("sqlite:///unused.db", tmp_path, tmp_path, port=mlflow_server.port)
    with pytest.raises(ServerError, match="already in use"):
        taken.start()
    assert not taken.log_path.exists()


def test_a_failed_start_quotes_the_log(tmp_path: Path) -> None:
    broken = MlflowServer("nosuchscheme://store", tmp_path / "artifacts", tmp_path)
    with pytest.raises(ServerError, match=r"(?s)exited with status.*nosuchscheme"):
        broken.start()


# A server that ignores SIGTERM and leaves a child that ignores it too: the worst case
# for stopping. It prints its child's pid and what telemetry setting it was given.
STUBBORN_SERVER = """
import http.server, os, signal, subprocess, sys
signal.signal(signal.SIGTERM, signal.SIG_IGN)
child = subprocess.Popen([sys.executable, "-c",
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"])
print(f"child={child.pid} DO_NOT_TRACK={os.environ['DO_NOT_TRACK']}", flush=True)

class Ok(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.end_headers()

http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Ok).serve_forever()
"""


class StubbornServer(ServerProcess):
    name = "stubborn"

    def command(self) -> list[str]:
        return [sys.executable, "-c", STUBBORN_SERVER, str(self.port)]


def _running(pid: int) -> bool:
    """Alive and not a zombie (an orphan's zombie may wait a while for its reaper)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_stop_kills_the_whole_group_when_sigterm_is_ignored(tmp_path: Path) -> None:
    with StubbornServer(tmp_path, stop_grace=1.0) as server:
        assert server.is_healthy()
        log = server.log_path.read_text()
        child = int(re.search(r"child=(\d+)", log).group(1))
        assert "DO_NOT_TRACK=true" in log
        assert _running(child)
    assert not server.is_healthy()
    assert not _running(child)
