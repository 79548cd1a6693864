"""Running the app under uvicorn: in this process (``fraudops serve``) or as a child process.

Serving settings that matter for speed, chosen here once:

* uvloop and httptools (uvicorn's fastest loop and parser), no access log (a log line per
  request costs about as much as the model call);
* one thread per model call (``OMP_NUM_THREADS=1``): XGBoost's default threads spin and
  push p99 up on a small, busy machine;
* with ``workers > 1`` every worker loads its own models and shares the SQLite or Redis
  stores; Prometheus values go through a fresh multiprocess directory so any worker can
  answer a scrape for all of them.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
from collections.abc import Mapping
from pathlib import Path

from fraudops.servers import ServerProcess, _venv_executable
from serving.metrics import MULTIPROCESS_ENV

#: Seconds uvicorn waits for requests in flight after SIGTERM before it cancels them.
GRACEFUL_SHUTDOWN_S = 30
APP_FACTORY = "serving.app:create_app"


def run(host: str, port: int, workers: int = 1, log_level: str = "info") -> None:
    """Serve until SIGINT/SIGTERM; requests in flight finish and every log row is written."""
    import uvicorn

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    metrics_dir = None
    if workers > 1:
        metrics_dir = tempfile.mkdtemp(prefix="fraudops-metrics-")
        os.environ[MULTIPROCESS_ENV] = metrics_dir
    try:
        uvicorn.run(
            APP_FACTORY,
            factory=True,
            host=host,
            port=port,
            workers=workers,
            loop="uvloop",
            http="httptools",
            access_log=False,
            log_level=log_level,
            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
        )
    finally:
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)


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
