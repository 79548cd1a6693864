"""Running the app under uvicorn: in this process (``fraudops serve``) or as a child process.

Serving settings that matter for speed, chosen here once:

* uvloop and httptools (uvicorn's fastest loop and parser), no access log (a log line per
  request costs about as much as the model call);
* one thread per model call (``OMP_NUM_THREADS=1``): XGBoost's default threads spin and
  push p99 up on a small, busy machine;
* with ``workers > 1`` every worker loads its own models and shares the SQLite or Redis
  stores; Prometheus values go through a fresh multiprocess directory so any worker can
  answer a scrape for all of them.

And for robustness, set from ``FRAUDOPS_SERVE_*`` (docs/serving.md, "Connections"):

* a connection must deliver a request's headers within ``serve_header_timeout_s`` and its
  body within ``serve_body_timeout_s``, or it is closed (`ServingProtocol`); an idle
  kept-alive one is closed after ``serve_keepalive_s``. uvicorn alone closes only the last
  kind, so a thousand clients that connect and send nothing, or half a header, held the
  server's connections for good;
* after SIGTERM and the drain the process exits 0 (`GracefulServer`), not killed by the
  signal it already handled.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from types import FrameType
from typing import Any

import uvicorn
from uvicorn.config import STARTUP_FAILURE
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from fraudops.config import get_settings
from fraudops.local.servers import ServerProcess, _venv_executable
from serving.metrics import MULTIPROCESS_ENV

#: Seconds uvicorn waits for requests in flight after SIGTERM before it cancels them.
GRACEFUL_SHUTDOWN_S = 30
#: Seconds a worker may take to answer uvicorn's supervisor (its default: 5).
WORKER_HEALTHCHECK_S = 60
APP_FACTORY = "serving.app:create_app"

# What a connection owes the server: nothing (idle, or its request is being answered),
# the headers of a request, or the rest of its body.
_NOTHING, _HEADERS, _BODY = 0, 1, 2


class ServingProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a deadline on receiving each request.

    uvicorn times out only the idle gap after a response (keep-alive). A connection that
    never sends a request, or sends part of one, it keeps forever: a thousand of them
    hold a thousand sockets and file descriptors, and a slowloris client needs nothing
    more. Here the headers must all arrive within ``serve_header_timeout_s`` of the
    connection opening (or of the request's first byte on a kept-alive connection), and
    the body within ``serve_body_timeout_s`` of the headers; otherwise the connection is
    closed (a request already handed to the app sees a disconnect). Both are totals, not
    gaps between bytes, so trickling a byte at a time does not extend them.

    What is owed is read after each read from the state uvicorn keeps anyway, rather than
    from parser callbacks of our own: those cost 3 µs a request. A request that arrives
    in one read (nearly all) then costs a few attribute reads and arms no timer.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        settings = get_settings()
        self._timeouts = {
            _HEADERS: settings.serve_header_timeout_s,
            _BODY: settings.serve_body_timeout_s,
        }
        self._deadline: asyncio.TimerHandle | None = None
        self._deadline_for = _NOTHING

    # uvicorn's protocol narrows asyncio's BaseTransport to Transport, and so does this override.
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._watch()  # the first request's headers are owed from now

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        cycle = self.cycle
        if (
            self._deadline is None
            and cycle is not None
            and cycle.scope is self.scope
            and not cycle.more_body
        ):
            return  # a whole request is in and no deadline runs: the usual case
        self._watch()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _owed(self) -> int:
        if self.transport.is_closing():
            return _NOTHING
        cycle = self.cycle  # the request whose headers came last
        if cycle is None or cycle.scope is not self.scope:
            return _HEADERS  # none yet, or a newer request has begun (a new scope)
        return _BODY if cycle.more_body else _NOTHING

    def _watch(self) -> None:
        """Keep the deadline of what the client owes now: armed once, when that begins."""
        owed = self._owed()
        if owed == self._deadline_for:
            return
        self._disarm()
        if owed != _NOTHING:
            self._deadline = self.loop.call_later(self._timeouts[owed], self._expire)
            self._deadline_for = owed

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        self._deadline_for = _NOTHING

    def _expire(self) -> None:
        self._deadline = None
        self._deadline_for = _NOTHING
        if not self.transport.is_closing():
            self.transport.close()


class GracefulServer(uvicorn.Server):
    """uvicorn's server, whose SIGTERM ends in a normal exit once the drain is done.

    uvicorn (0.29 on) raises the signal that stopped it again after its shutdown, so that
    a program embedding it can react too. With SIGTERM's default action that kills the
    process after a clean drain: status -15, 143 in a shell, which systemd, Kubernetes and
    the demo report as a crash. Here the drain is the whole answer to SIGTERM, so it is not
    raised again. SIGINT keeps uvicorn's handling (a second Ctrl-C forces the exit).
    """

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if sig == signal.SIGTERM:
            self.should_exit = True  # uvicorn's own response, without recording the signal
            return
        super().handle_exit(sig, frame)


def run(host: str, port: int, workers: int = 1, log_level: str = "info") -> None:
    """Serve until SIGINT/SIGTERM; requests in flight finish and every log row is written.

    Exits 0 after a SIGTERM (or SIGINT) once the requests in flight are answered and the
    logs written.
    """
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    options: dict[str, Any] = {
        "factory": True,
        "host": host,
        "port": port,
        "loop": "uvloop",
        "http": ServingProtocol,
        "ws": "none",  # no WebSocket route; an upgrade would escape the request deadlines
        "access_log": False,
        "log_level": log_level,
        "timeout_keep_alive": get_settings().serve_keepalive_s,
        "timeout_graceful_shutdown": GRACEFUL_SHUTDOWN_S,
    }
    if workers == 1:
        _serve_in_this_process(uvicorn.Config(APP_FACTORY, **options))
        return
    # uvicorn's supervisor kills a worker that does not answer its ping within 5 s, and a
    # worker cannot answer until its interpreter has started; on a busy 2-core machine that
    # alone took longer, and workers were killed and restarted in a loop.
    options["timeout_worker_healthcheck"] = WORKER_HEALTHCHECK_S
    metrics_dir = tempfile.mkdtemp(prefix="fraudops-metrics-")
    os.environ[MULTIPROCESS_ENV] = metrics_dir
    try:
        # The supervisor returns normally after SIGTERM once its workers have drained.
        uvicorn.run(APP_FACTORY, workers=workers, **options)
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)


def _serve_in_this_process(config: uvicorn.Config) -> None:
    """What ``uvicorn.run`` does for one worker, with `GracefulServer`."""
    server = GracefulServer(config)
    with contextlib.suppress(KeyboardInterrupt):  # SIGINT, raised again after the drain
        server.run()
    if not server.started:
        sys.exit(STARTUP_FAILURE)


class ServingProcess(ServerProcess):
    """``fraudops serve`` as a child process group, for tests, benchmarks and the demo.

    Settings travel in the environment (``FRAUDOPS_*``), so the child sees what the parent
    configured; ``env`` adds or overrides values for this server only.
    """

    name = "fraudops-serve"
    health_path = "/health"

    def __init__(
        self,
        log_dir: Path,
        port: int | None = None,
        workers: int = 1,
        env: Mapping[str, str] | None = None,
        startup_timeout: float = 120.0,
        stop_grace: float = 60.0,
    ) -> None:
        super().__init__(log_dir, port, startup_timeout, stop_grace)
        self.workers = workers
        self.env = dict(env or {})

    def command(self) -> list[str]:
        return [
            _venv_executable("fraudops"),
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--workers",
            str(self.workers),
        ]

    def extra_env(self) -> Mapping[str, str]:
        return self.env

    def terminate(self, timeout: float = 60.0) -> int:
        """Send SIGTERM (as an orchestrator would) and return the exit status once it exits."""
        assert self._process is not None, "not started"
        self._process.send_signal(signal.SIGTERM)
        return self._process.wait(timeout)

    @property
    def pid(self) -> int:
        """The uvicorn process (with workers, their supervisor), to signal directly."""
        assert self._process is not None, "not started"
        return self._process.pid
