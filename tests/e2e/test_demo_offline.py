"""`fraudops demo` on a fresh clone, offline: the clone stays as committed, nothing phones home.

The demo once rewrote the tracked ``routing.yaml`` (its comments lost, the A/B policy left
in) and ``data.dvc``, and left an untracked ``dvc.lock``, so the suite run next in the same
clone failed a routing test. Here the demo runs as a user runs it, from the clone's root with
no FRAUDOPS_* setting, on the small project of the loop tests (``loop_support``) so it takes
minutes; afterwards the clone must be clean, its routing tests must pass, and what the demo
made must be where it says: commits on its branch, state in its worktree.

The same run proves the project phones nobody (issue 11, item 1): the demo and then the
dashboards run in a network namespace with only loopback, under strace
(``offline_support``), and must not attempt a single DNS query or outside connection.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest
import yaml
from loop_support import LABEL_DELAY_DAYS, POPULATION, SMALL_MONITOR, SMALL_TRAIN
from offline_support import attempts, offline_prefix, require_offline_tools, users_environment

from fraudops.experiments.routing import load_routing
from fraudops.local.demo import DEMO_BRANCH
from fraudops.local.servers import free_port

pytestmark = pytest.mark.slow

SOURCE = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
#: Test-sized pace: no wall-clock wait per simulated day (``make demo`` waits 2 s).
TEST_SIZED: tuple[str, ...] = ("--seconds-per-day", "0")
_GIT_IDENTITY = ("-c", "user.name=fraudops test", "-c", "user.email=test@fraudops.invalid")


def git(cwd: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=False)
    assert done.returncode == 0, f"git {args} failed in {cwd}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def small_clone(root: Path) -> Path:
    """A clone of this repository whose committed params.yaml is the loop tests' small one."""
    git(SOURCE.parent, "clone", "--quiet", str(SOURCE), str(root))
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["simulate"].update(POPULATION.model_dump(mode="json"))
    params["train"].update(SMALL_TRAIN)
    params["monitor"].update(SMALL_MONITOR)
    params["features"]["label_delay_days"] = LABEL_DELAY_DAYS
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    git(root, *_GIT_IDENTITY, "commit", "--quiet", "--no-verify", "-m", "small", "params.yaml")
    return root


def demo_env() -> dict[str, str]:
    """This environment without any FRAUDOPS_ or PREFECT_ setting, as a user's shell has it.

    Only the runner's poll interval is shortened (1 s, not 10 s), so the retraining that the
    drift event creates starts at once.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FRAUDOPS_", "PREFECT_"))}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["PREFECT_RUNNER_POLL_FREQUENCY"] = "1"
    return env


def run_demo(
    clone: Path,
    prefix: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    options: Sequence[str] = TEST_SIZED,
    timeout_s: float = 1200,
) -> subprocess.CompletedProcess[str]:
    """``fraudops demo OPTIONS`` run from CLONE's root under PREFIX (a wrapper command, or
    nothing), with ENV (default ``demo_env()``) and a port of its own; stdout and stderr."""
    command = [*prefix, str(BIN / "fraudops"), "demo", "--port", str(free_port()), *options]
    return subprocess.run(
        command,
        cwd=clone,
        env=dict(demo_env() if env is None else env),
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


#: Inside the demo's worktree: the Evidently UI up, its project served, then stopped.
DASHBOARDS = """
fraudops dashboards --port {port} > dashboards.log 2>&1 &
ui=$!
python -c '
import httpx, sys, time
deadline = time.monotonic() + 300
while time.monotonic() < deadline:
    try:
        projects = httpx.get("http://127.0.0.1:{port}/api/v2/projects", timeout=10).text
        if "fraudops monitoring" in projects:
            sys.exit(0)
    except httpx.HTTPError:
        pass
    time.sleep(1)
sys.exit("the Evidently UI did not serve the project within 300 s")
'
status=$?
kill -TERM $ui
wait $ui
exit $status
"""


@pytest.mark.timeout(1800)
def test_the_demo_offline_leaves_a_fresh_clone_as_committed_and_phones_nobody(tmp_path: Path):
    """The demo (train, serve with traffic, monitor, drift-triggered retraining, reports),
    then the dashboards, run where only loopback exists and every connect is traced, as on
    a user's machine (no test or CI markers, which some libraries read as "stay quiet")."""
    require_offline_tools()
    clone = small_clone(tmp_path.resolve() / "clone")  # as git and the demo name it
    demo_trace, dashboards_trace = tmp_path / "demo.trace", tmp_path / "dashboards.trace"

    done = run_demo(clone, prefix=offline_prefix(demo_trace), env=users_environment(demo_env()))

    printed = done.stdout + done.stderr
    assert done.returncode == 0, printed[-6000:]
    assert attempts(demo_trace).phoned_nobody, attempts(demo_trace)
    assert re.search(r"challenger version \d+ is in shadow", printed), printed[-6000:]
    assert re.search(r"Shadow: \S+ v\d+ \(challenger\)", done.stdout), done.stdout
    assert "A/B: challenger vs champion" in done.stdout, done.stdout

    # The clone: nothing changed, nothing new, the defaults as committed.
    assert git(clone, "status", "--porcelain") == ""
    for tracked in ("routing.yaml", "data.dvc", "params.yaml"):
        committed = subprocess.run(
            ["git", "show", f"HEAD:{tracked}"], cwd=clone, capture_output=True, check=True
        ).stdout
        assert (clone / tracked).read_bytes() == committed, tracked
    suite = subprocess.run(
        [str(BIN / "pytest"), "-q", "-p", "no:cacheprovider", "tests/unit/test_routing.py"],
        cwd=clone,
        env=demo_env(),
        capture_output=True,
        text=True,
        check=False,
    )
    assert suite.returncode == 0, suite.stdout[-4000:]

    # What the demo made is where it said: data versions as commits on its branch, its
    # worktree clean, its live routing policy in that worktree's state directory.
    worktree = clone / ".fraudops" / "demo"
    state = worktree / ".fraudops"
    assert f"a git worktree on branch {DEMO_BRANCH}" in printed
    assert f"cd {worktree} && fraudops dashboards" in printed
    assert (worktree / "monitoring" / "workspace").is_dir()
    assert f"--backend-store-uri sqlite:///{state / 'mlflow.db'}" in printed
    assert (state / "mlflow.db").is_file()
    versions = git(clone, "log", "--format=%H", f"HEAD..{DEMO_BRANCH}").split()
    assert len(versions) == 2, git(clone, "log", "--oneline", f"HEAD..{DEMO_BRANCH}")
    for commit in versions:
        assert "data.dvc" in git(clone, "show", "--name-only", "--format=", commit).split()
    assert git(worktree, "status", "--porcelain") == ""
    assert (worktree / "dvc.lock").is_file()
    live = load_routing(state / "routing.yaml")
    assert live.mode == "ab" and live.shadow is not None

    script = DASHBOARDS.format(port=free_port())
    ui = subprocess.run(
        [*offline_prefix(dashboards_trace), "sh", "-c", script],
        cwd=worktree,
        env=users_environment(demo_env()),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert ui.returncode == 0, ui.stdout + ui.stderr + (worktree / "dashboards.log").read_text()
    assert attempts(dashboards_trace).phoned_nobody, attempts(dashboards_trace)
