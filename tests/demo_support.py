"""The demo as the e2e tests run it: once per session, offline, kept running, then stopped.

Running ``fraudops demo`` on the loop tests' small project takes minutes, and both tests
of ``e2e/test_demo.py`` need one: the first checks what it did and that it phoned nobody,
the second photographs the state it left. `run_offline_demo` runs it as a user
does (from a fresh clone's root, no FRAUDOPS_* setting) inside a loopback-only network
namespace under strace (``offline_support``), with ``--keep-running``: once the summary
says the services are up, every URL in it is fetched, then SIGTERM ends it. What must be
read at that moment (live processes, the worktree's git status) is read before anything
else can touch the worktree.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from loop_support import LABEL_DELAY_DAYS, POPULATION, SMALL_MONITOR, SMALL_TRAIN
from offline_support import offline_prefix, users_environment

from fraudops.local.demo_story import SUMMARY_FILE
from fraudops.local.servers import free_port

SOURCE = Path(__file__).resolve().parents[1]
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


@dataclass(frozen=True)
class FinishedDemo:
    """One offline demo run, and what was seen the moment it ended."""

    clone: Path
    worktree: Path
    #: The demo's stdout, and stdout then stderr.
    stdout: str
    printed: str
    #: What KEEP_RUNNING saw: the summary, each URL's answer, the demo's exit status.
    seen: dict[str, Any] | None
    #: The wrapper's own exit status and output, for failure messages.
    wrapper: subprocess.CompletedProcess[str]
    trace: Path
    processes_left: list[str]
    worktree_status: str

    @property
    def state(self) -> Path:
        return self.worktree / ".fraudops"


def run_offline_demo(root: Path) -> FinishedDemo:
    """``fraudops demo --keep-running`` on a small clone under ROOT, offline and traced."""
    clone = small_clone(root / "clone")  # as git and the demo name it
    worktree = clone / ".fraudops" / "demo"
    trace, result, output = root / "demo.trace", root / "keep-running.json", root / "demo"
    demo = [str(BIN / "fraudops"), "demo", "--port", str(free_port()), *TEST_SIZED]
    summary = worktree / ".fraudops" / SUMMARY_FILE
    keep_running = [str(summary), str(result), str(output), *demo, "--keep-running"]
    wrapper = subprocess.run(
        [*offline_prefix(trace), str(BIN / "python"), "-c", KEEP_RUNNING, *keep_running],
        cwd=clone,
        env=users_environment(demo_env()),
        capture_output=True,
        text=True,
        timeout=2200,
        check=False,
    )
    processes_left = processes_in(clone)
    status = subprocess.run(
        ["git", "-C", str(worktree), "status", "--porcelain"],
        capture_output=True,
        text=True,
        check=False,
    )
    out, err = Path(f"{output}.out"), Path(f"{output}.err")
    stdout = out.read_text() if out.exists() else ""
    return FinishedDemo(
        clone=clone,
        worktree=worktree,
        stdout=stdout,
        printed=stdout + (err.read_text() if err.exists() else ""),
        seen=json.loads(result.read_text()) if result.exists() else None,
        wrapper=wrapper,
        trace=trace,
        processes_left=processes_left,
        worktree_status=status.stdout + status.stderr,
    )
