"""The demo stops waiting as soon as a service it waits on has died, and says where to look."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest
from rich.console import Console

from fraudops.local.demo_api import wait_for_shadow
from fraudops.local.demo_processes import DemoProcesses
from fraudops.local.demo_worktree import DemoError
from fraudops.tracking import registry  # noqa: F401  (imported by the wait; not timed)


def test_a_dead_flows_process_ends_the_wait_for_a_challenger_at_once(tmp_path: Path) -> None:
    processes = DemoProcesses(tmp_path, {}, tmp_path, Console(quiet=True))
    processes.start(
        [sys.executable, "-c", "print('no deployments'); raise SystemExit(3)"], "deployments"
    )
    processes.start([sys.executable, "-c", "import time; time.sleep(60)"], "api")
    try:
        processes.services["deployments"].wait(timeout=30)
        started = time.monotonic()
        with pytest.raises(DemoError) as error:
            wait_for_shadow("http://127.0.0.1:9", processes.check_running, timeout_s=900)
        assert time.monotonic() - started < 30  # not the 900 s timeout
        message = str(error.value)
        assert "deployments process exited with status 3" in message
        assert str(tmp_path / "deployments.log") in message
        assert "no deployments" in (tmp_path / "deployments.log").read_text()
        assert processes.services["api"].poll() is None  # the living one is not blamed
    finally:
        processes.stop_all()
