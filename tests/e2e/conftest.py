"""The e2e tests' shared demo run: minutes of work that two tests read (see demo_support)."""

from __future__ import annotations

import pytest
from demo_support import FinishedDemo, run_offline_demo
from offline_support import require_offline_tools


@pytest.fixture(scope="session")
def finished_demo(tmp_path_factory: pytest.TempPathFactory) -> FinishedDemo:
    """`fraudops demo --keep-running` on a small clone, offline, ended by SIGTERM."""
    require_offline_tools()
    return run_offline_demo(tmp_path_factory.mktemp("demo").resolve())
