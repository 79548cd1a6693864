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

It also proves the story reaches its end (issue 12, item 2): the promotion gate decides,
the summary says so, and the decision with its evidence is on the challenger's MLflow
version. The demo runs with ``--keep-running``: every URL of its summary must answer
while it waits, and SIGTERM must end it with status 0 and no process of it left behind.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from loop_support import LABEL_DELAY_DAYS, POPULATION, SMALL_MONITOR, SMALL_TRAIN
from mlflow import MlflowClient
from offline_support import attempts, offline_prefix, require_offline_tools, users_environment

from fraudops.experiments.routing import load_routing
from fraudops.local.demo_story import SUMMARY_FILE
from fraudops.local.demo_worktree import DEMO_BRANCH
from fraudops.local.servers import free_port
from fraudops.tracking.registry import (
    CHAMPION,
    DECISION_NUMBER_PREFIX,
    DECISION_REASON_TAG,
    DECISION_TAG,
)
from pipelines.promotion import DECISION_RUN_TAG

pytestmark = pytest.mark.slow

SOURCE = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
#: Test-sized pace: no wall-clock wait per simulated day (``make demo`` waits 2 s), and
#: four days of A/B traffic, however many the A/B plan would want (tests/unit/test_demo_plan
#: covers the plan).
TEST_SIZED = ("--seconds-per-day", "0", "--ab-days", "4", "--ab-max-days", "4")
#: The small population sees a fraud or two in a few days of traffic: floors that low let
#: the shadow report reach a verdict, so its evidence travels all the way to the gate.
SMALL_AB = {"min_sample": 300, "min_frauds": 1}
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
    params["ab"].update(SMALL_AB)
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


#: Inside the namespace: the demo with --keep-running (argv after the two paths); once its
#: summary says the services are up, every URL in it is fetched, then SIGTERM ends it.
#: What it saw goes to RESULT as JSON, the demo's output to OUTPUT (stdout, then stderr).
KEEP_RUNNING = """
import json, signal, subprocess, sys, time
from pathlib import Path
import httpx

summary, result, output, *command = sys.argv[1:]
summary, seen = Path(summary), {"answers": {}, "summary": None}
with open(output + ".out", "w") as out, open(output + ".err", "w") as err:
    demo = subprocess.Popen(command, stdout=out, stderr=err)
    deadline = time.monotonic() + 1800
    while demo.poll() is None and time.monotonic() < deadline:
        if summary.exists() and json.loads(summary.read_text())["running"]:
            seen["summary"] = json.loads(summary.read_text())
            break
        time.sleep(2)
    for name, url in (seen["summary"] or {}).get("urls", {}).items():
        try:
            seen["answers"][name] = httpx.get(url, timeout=30).status_code
        except httpx.HTTPError as error:
            seen["answers"][name] = repr(error)
    demo.send_signal(signal.SIGTERM)
    seen["returncode"] = demo.wait(timeout=300)
Path(result).write_text(json.dumps(seen))
"""


def processes_in(root: Path) -> list[str]:
    """Every live process whose working directory is ROOT or below it, as pid and argv."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            cwd = Path(os.readlink(proc / "cwd"))
            argv = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # not a process, gone meanwhile, or a zombie: none of them runs
            continue
        if cwd == root or root in cwd.parents:
            found.append(f"{proc.name}: {argv}")
    return found


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


@pytest.mark.timeout(2400)
def test_the_demo_offline_leaves_a_fresh_clone_as_committed_and_phones_nobody(tmp_path: Path):
    """The demo (train, serve with traffic, monitor, drift-triggered retraining, shadow, A/B
    with its labels, the promotion decision), kept running until SIGTERM, then the
    dashboards, run where only loopback exists and every connect is traced, as on a
    user's machine (no test or CI markers, which some libraries read as "stay quiet")."""
    require_offline_tools()
    clone = small_clone(tmp_path.resolve() / "clone")  # as git and the demo name it
    demo_trace, dashboards_trace = tmp_path / "demo.trace", tmp_path / "dashboards.trace"
    worktree = clone / ".fraudops" / "demo"
    state = worktree / ".fraudops"
    result, output = tmp_path / "keep-running.json", tmp_path / "demo"
    demo = [str(BIN / "fraudops"), "demo", "--port", str(free_port()), *TEST_SIZED]

    keep_running = [str(state / SUMMARY_FILE), str(result), str(output), *demo, "--keep-running"]
    kept = subprocess.run(
        [*offline_prefix(demo_trace), str(BIN / "python"), "-c", KEEP_RUNNING, *keep_running],
        cwd=clone,
        env=users_environment(demo_env()),
        capture_output=True,
        text=True,
        timeout=2200,
        check=False,
    )

    stdout = Path(f"{output}.out").read_text() if Path(f"{output}.out").exists() else ""
    printed = stdout + (Path(f"{output}.err").read_text() if Path(f"{output}.err").exists() else "")
    assert kept.returncode == 0 and result.exists(), kept.stdout + kept.stderr + printed[-6000:]
    seen = json.loads(result.read_text())
    assert seen["summary"] is not None, printed[-6000:]
    assert seen["returncode"] == 0, printed[-6000:]
    assert processes_in(clone) == []
    assert attempts(demo_trace).phoned_nobody, attempts(demo_trace)
    assert re.search(r"challenger version \d+ is in shadow", printed), printed[-6000:]
    assert re.search(r"Shadow: \S+ v\d+ \(challenger\)", stdout), stdout
    assert "A/B: challenger vs champion" in stdout, stdout

    # While it ran: the API, Prefect, MLflow and Evidently each answered at its URL.
    urls = seen["summary"]["urls"]
    assert len(urls) == 4 and seen["answers"] == dict.fromkeys(urls, 200), seen

    # The decision: in the summary, and on the challenger's MLflow version with its evidence.
    found = re.search(
        r"decision: (promoted|rejected) version (\d+); champion is version (\d+)", printed
    )
    assert found, printed[-6000:]
    outcome, judged, champion = found.groups()
    assert (champion == judged) == (outcome == "promoted")
    decision = seen["summary"]["decision"]
    assert (decision["outcome"], decision["version"]) == (outcome, judged)
    # Both URIs: an earlier test in the session may have set MLflow's global registry URI,
    # which a client given only a tracking URI would read the model versions from.
    store = f"sqlite:///{state / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=store, registry_uri=store)
    name = "fraud-detector"
    tags = client.get_model_version(name, judged).tags
    assert tags[DECISION_TAG] == outcome
    assert tags[DECISION_REASON_TAG] == decision["reason"]
    assert str(client.get_registered_model(name).aliases[CHAMPION]) == champion
    numbers = {key.removeprefix(DECISION_NUMBER_PREFIX) for key in tags}
    assert {"challenger.average_precision", "champion.average_precision"} <= numbers
    assert "shadow.agreement" in numbers, tags  # the shadow report's verdict was weighed
    decision_run = client.get_run(tags[DECISION_RUN_TAG])
    assert decision_run.data.tags[DECISION_TAG] == outcome
    assert decision_run.data.metrics["challenger.average_precision"] == pytest.approx(
        float(tags[DECISION_NUMBER_PREFIX + "challenger.average_precision"])
    )

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
