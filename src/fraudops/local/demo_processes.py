"""The demo's child processes: its steps in the foreground, its services in the background.

Each child leads a process group of its own, so stopping it stops whatever it started
too, and an interrupted demo leaves none of its children behind.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from pathlib import Path

from rich.console import Console

from fraudops.local.demo_worktree import DemoError


class DemoProcesses:
    """The children of one demo, run in CWD with ENV (read at each start, so it may grow)."""

    def __init__(self, cwd: Path, env: dict[str, str], logs: Path, console: Console) -> None:
        self.cwd = cwd
        self.env = env
        self.logs = logs
        self.console = console
        #: The background services by name; each logs to LOGS/NAME.log.
        self.services: dict[str, subprocess.Popen[bytes]] = {}

    def run(self, *args: str) -> None:
        """Run a step in the foreground, in a process group of its own so that an
        interrupted demo leaves none of its children behind."""
        self.console.rule(" ".join(args))
        child = subprocess.Popen(list(args), cwd=self.cwd, env=self.env, start_new_session=True)
        try:
            returncode = child.wait()
        finally:
            stop(child)
        if returncode != 0:
            raise DemoError(f"`{' '.join(args)}` failed; see its output above")

    def start(self, args: list[str], name: str) -> None:
        """Start a service in the background, logging to LOGS/NAME.log."""
        with (self.logs / f"{name}.log").open("w") as log:
            self.services[name] = subprocess.Popen(
                args,
                cwd=self.cwd,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def all_running(self) -> bool:
        return all(child.poll() is None for child in self.services.values())

    def check_running(self) -> None:
        """Raise DemoError naming a service that has exited, and where its log is: a wait
        on what that service would have done can then end at once, not at its timeout."""
        for name, child in self.services.items():
            if (returncode := child.poll()) is not None:
                log = self.logs / f"{name}.log"
                raise DemoError(f"the {name} process exited with status {returncode}; see {log}")

    def stop_all(self) -> None:
        """Stop the services, the last started first."""
        for child in reversed(self.services.values()):
            stop(child)


def stop(child: subprocess.Popen[bytes], grace_s: float = 30.0) -> None:
    """Stop CHILD's whole process group (it leads one): SIGTERM, SIGKILL after GRACE_S."""
    if child.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(timeout=grace_s)
    with contextlib.suppress(ProcessLookupError):  # what the leader left of its group
        os.killpg(child.pid, signal.SIGKILL)
    child.wait()
