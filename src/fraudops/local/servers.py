"""Real MLflow and Prefect servers as child processes, for the demo, the CLI and the tests.

Some behaviour exists only on a real server: Prefect event triggers do not fire on Prefect's
temporary server, and the embedded SQLite store skips MLflow's REST API and proxied
artifacts, the shape of a production deployment. A server here is a context manager that
starts the process in its own process group, waits until it answers a real request, and on
exit stops the whole group (SIGTERM, then SIGKILL after a grace period: one SIGTERM does not
always stop ``mlflow server``). Each server logs to a file; a failed start quotes its tail.
"""

from __future__ import annotations

import abc
import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import IO, Self

import httpx
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from fraudops.telemetry import TELEMETRY_OFF

HOST = "127.0.0.1"
_LOG_TAIL_LINES = 40
_DATABASE_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")


class ServerError(RuntimeError):
    """A server could not be started; the message carries the end of its log."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on at the moment of asking."""
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


def _port_in_use(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=1):
            return True
    except OSError:
        return False


def _venv_executable(name: str) -> str:
    """The console script installed beside this interpreter, not whatever is first on PATH."""
    return str(Path(sys.executable).parent / name)


def _tail(path: Path, lines: int = _LOG_TAIL_LINES) -> str:
    if not path.exists():
        return "(no log written)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


class ServerProcess(abc.ABC):
    """A server started as a child process group; subclasses say how to run and probe it."""

    name = "server"
    health_path = "/"

    def __init__(
        self,
        log_dir: Path,
        port: int | None = None,
        startup_timeout: float = 180.0,
        stop_grace: float = 10.0,
    ) -> None:
        self.port = port or free_port()
        self.log_path = Path(log_dir) / f"{self.name}.log"
        self.startup_timeout = startup_timeout
        self.stop_grace = stop_grace
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @abc.abstractmethod
    def command(self) -> list[str]:
        """The argv that runs the server in the foreground."""

    def extra_env(self) -> Mapping[str, str]:
        return {}

    def start(self) -> Self:
        """Start the process and return once it answers the health probe."""
        if _port_in_use(self.port):
            raise ServerError(f"{self.name}: port {self.port} on {HOST} is already in use")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("ab")
        env = {**os.environ, **self.extra_env(), **TELEMETRY_OFF}
        self._process = subprocess.Popen(
            self.command(),
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            self._wait_until_healthy()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_until_healthy(self) -> None:
        assert self._process is not None
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise self._start_failure(f"exited with status {self._process.returncode}")
            if self.is_healthy():
                return
            time.sleep(0.5)
        raise self._start_failure(f"not healthy after {self.startup_timeout:.0f} s")

    def _start_failure(self, what: str) -> ServerError:
        return ServerError(
            f"{self.name} on {self.url} {what}; last lines of {self.log_path}:\n"
            f"{_tail(self.log_path)}"
        )

    def is_healthy(self) -> bool:
        """Whether the server answers its probe path with 200 (any failure counts as no)."""
        try:
            return httpx.get(self.url + self.health_path, timeout=2.0).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self) -> None:
        """Stop the whole process group; safe to call twice."""
        if self._process is not None:
            group = self._process.pid  # start_new_session: the group id is the leader's pid
            _signal_group(group, signal.SIGTERM)
            deadline = time.monotonic() + self.stop_grace
            while time.monotonic() < deadline and _group_alive(group, self._process):
                time.sleep(0.2)
            _signal_group(group, signal.SIGKILL)
            self._process.wait()
            self._process = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def _signal_group(group: int, signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):  # the group is already gone
        os.killpg(group, signum)


def _group_alive(group: int, leader: subprocess.Popen[bytes]) -> bool:
    leader.poll()  # reap the leader, or its zombie keeps the group "alive"
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    return True


class MlflowServer(ServerProcess):
    """``mlflow server`` with one worker and no job runner (about 30 s to healthy, 620 MB).

    Artifacts are proxied by the server (``mlflow-artifacts:/``) into ``artifacts_dir``, so
    clients need nothing but the URL. Health means an API call works, not only ``/health``,
    which skips the host check and the database.
    """

    name = "mlflow-server"
    health_path = "/api/2.0/mlflow/experiments/search?max_results=1"

    def __init__(
        self,
        backend_store_uri: str,
        artifacts_dir: Path,
        log_dir: Path,
        port: int | None = None,
        startup_timeout: float = 180.0,
    ) -> None:
        super().__init__(log_dir, port, startup_timeout)
        self.backend_store_uri = backend_store_uri
        self.artifacts_dir = Path(artifacts_dir).resolve()

    def command(self) -> list[str]:
        return [
            _venv_executable("mlflow"),
            "server",
            "--backend-store-uri",
            self.backend_store_uri,
            "--artifacts-destination",
            self.artifacts_dir.as_uri(),
            "--host",
            HOST,
            "--port",
            str(self.port),
            "--workers",
            "1",
        ]

    def extra_env(self) -> Mapping[str, str]:
        return {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


class PrefectServer(ServerProcess):
    """``prefect server start`` with its own home: SQLite there, or a given PostgreSQL URL.

    A real server (not Prefect's temporary one) is what event triggers need.
    """

    name = "prefect-server"
    health_path = "/api/health"

    def __init__(
        self,
        home: Path,
        log_dir: Path,
        port: int | None = None,
        database_url: str | None = None,
        startup_timeout: float = 180.0,
    ) -> None:
        super().__init__(log_dir, port, startup_timeout)
        self.home = Path(home).resolve()
        self.database_url = database_url

    @property
    def api_url(self) -> str:
        return f"{self.url}/api"

    def command(self) -> list[str]:
        return [_venv_executable("prefect"), "server", "start", "--host", HOST]

    def extra_env(self) -> Mapping[str, str]:
        if self.database_url:
            database = with_driver(self.database_url, "postgresql+asyncpg")
        else:
            database = f"sqlite+aiosqlite:///{self.home / 'prefect.db'}"
        return {
            "PREFECT_HOME": str(self.home),
            "PREFECT_SERVER_API_HOST": HOST,
            # The UI reads the API port from here; with only --port it calls 4200.
            "PREFECT_SERVER_API_PORT": str(self.port),
            "PREFECT_API_DATABASE_CONNECTION_URL": database,
            "PREFECT_API_URL": self.api_url,
        }


def with_driver(url: str, driver: str) -> str:
    """URL with its SQLAlchemy driver replaced (MLflow wants psycopg2, Prefect asyncpg)."""
    return make_url(url).set(drivername=driver).render_as_string(hide_password=False)


def create_postgres_database(server_url: str, name: str | None = None) -> str:
    """Create an empty database on SERVER_URL's PostgreSQL server and return its URL.

    A fresh database per server keeps MLflow's and Prefect's migrations, and every test
    session, from seeing each other's tables.
    """
    name = _plain_database_name(name or f"fraudops_{uuid.uuid4().hex[:12]}")
    _run_admin(server_url, f'CREATE DATABASE "{name}"')
    return with_database(server_url, name)


def drop_postgres_database(database_url: str) -> None:
    """Drop the database DATABASE_URL names, closing its open connections first."""
    name = _plain_database_name(make_url(database_url).database)
    admin_url = with_database(database_url, "postgres")
    _run_admin(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _plain_database_name(name: str | None) -> str:
    """The name is spliced into SQL (DDL takes no parameters), so only plain names pass."""
    if not name or not _DATABASE_NAME.fullmatch(name):
        raise ValueError(f"not a plain PostgreSQL database name: {name!r}")
    return name


def with_database(url: str, database: str) -> str:
    return make_url(url).set(database=database).render_as_string(hide_password=False)


def _run_admin(url: str, statement: str) -> None:
    """CREATE/DROP DATABASE cannot run inside a transaction, hence autocommit."""
    engine = sa.create_engine(with_driver(url, "postgresql+psycopg2"), isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            connection.execute(sa.text(statement))
    finally:
        engine.dispose()
