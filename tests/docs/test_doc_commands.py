"""Every command of docs/architecture.md and docs/interview-map.md runs and succeeds.

Blocks marked ``<!-- check: fast -->`` run in every suite run, ``slow`` ones are marked
slow. Each block is one test. Its ``pytest`` lines are not started one by one: the named
tests of all blocks of a kind run in one pytest process (a start costs seconds), once, and
each block then checks its own tests' outcomes; the rest of the block runs as a bash script
from the repository root with ``.venv/bin`` first on PATH and a fresh FRAUDOPS_HOME.
"""

from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ElementTree
from collections import defaultdict
from pathlib import Path

import pytest

from docs.markdown import ROOT, Block, checked

BIN = Path(sys.executable).parent
SCRIPT_TIMEOUT_S = {"fast": 180, "slow": 900}
BATCH_TIMEOUT_S = {"fast": 600, "slow": 3000}


def _params(kind: str) -> list:
    marks = [pytest.mark.slow] if kind == "slow" else []
    return [pytest.param(block, id=block.id, marks=marks) for block in checked(kind)]


def _environment(home: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("FRAUDOPS_")}
    if os.environ.get("FRAUDOPS_REQUIRE_SERVICES"):
        env["FRAUDOPS_REQUIRE_SERVICES"] = os.environ["FRAUDOPS_REQUIRE_SERVICES"]
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["FRAUDOPS_HOME"] = str(home)
    return env


def _outcomes(report: Path) -> dict[str, list[str]]:
    """Outcomes by node id (``path::name[parameters]``) from a JUnit XML report."""
    outcomes: dict[str, list[str]] = defaultdict(list)
    for case in ElementTree.parse(report).getroot().iter("testcase"):
        module, _, cls = case.get("classname", "").partition(".Test")
        path = module.replace(".", "/") + ".py"
        name = case.get("name", "")
        node = f"{path}::{'Test' + cls + '::' if cls else ''}{name}"
        if case.find("failure") is not None or case.find("error") is not None:
            outcome = "failed"
        elif case.find("skipped") is not None:
            outcome = "skipped"
        else:
            outcome = "passed"
        outcomes[node].append(outcome)
    return outcomes


class PytestBatch:
    """The named tests of every block of one kind, run together once, on first need."""

    def __init__(self, kind: str, folder: Path) -> None:
        self.kind = kind
        self.folder = folder
        self._outcomes: dict[str, list[str]] | None = None
        self.output = ""

    def outcomes(self) -> dict[str, list[str]]:
        if self._outcomes is None:
            targets = sorted({t for block in checked(self.kind) for t in block.pytest_targets()})
            report = self.folder / "report.xml"
            command = [str(BIN / "pytest"), "-q", "-p", "no:cacheprovider", f"--junitxml={report}"]
            if self.kind == "fast":
                command += ["-m", "not slow"]
            done = subprocess.run(
                [*command, *targets],
                cwd=ROOT,
                env=_environment(self.folder / "home"),
                capture_output=True,
                text=True,
                timeout=BATCH_TIMEOUT_S[self.kind],
                check=False,
            )
            self.output = done.stdout[-6000:] + done.stderr[-3000:]
            self._outcomes = _outcomes(report) if report.exists() else {}
        return self._outcomes


@pytest.fixture(scope="module")
def batches(tmp_path_factory: pytest.TempPathFactory) -> dict[str, PytestBatch]:
    return {
        kind: PytestBatch(kind, tmp_path_factory.mktemp(f"{kind}-tests"))
        for kind in SCRIPT_TIMEOUT_S
    }


def _problems(block: Block, batch: PytestBatch, tmp_path: Path) -> list[str]:
    """What went wrong with BLOCK: cited tests that did not run or failed, a failed script."""
    problems = []
    targets = block.pytest_targets()
    outcomes = batch.outcomes() if targets else {}
    for target in targets:
        found = [
            outcome
            for node, runs in outcomes.items()
            if target in (node, node.split("[", 1)[0]) or node.startswith(f"{target}::")
            for outcome in runs
        ]
        if not found:
            hint = " (a slow test: mark the block slow)" if batch.kind == "fast" else ""
            problems.append(f"{block.id}: {target} did not run{hint}\n{batch.output}")
        elif "failed" in found:
            problems.append(f"{block.id}: {target} failed\n{batch.output}")
        elif set(found) == {"skipped"}:
            pytest.skip(f"{target} was skipped (a service it needs is missing)")
    script = block.script().strip()
    if script:
        done = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script],
            cwd=ROOT,
            env=_environment(tmp_path / "home"),
            capture_output=True,
            text=True,
            timeout=SCRIPT_TIMEOUT_S[batch.kind],
            check=False,
        )
        if done.returncode != 0:
            problems.append(
                f"{block.id} exited {done.returncode}:\n{script}\n--- stdout\n"
                f"{done.stdout[-4000:]}\n--- stderr\n{done.stderr[-4000:]}"
            )
    return problems


def test_the_pages_have_commands_of_each_kind() -> None:
    assert checked("fast") and checked("slow")


@pytest.mark.parametrize("block", _params("fast"))
def test_fast_command(block: Block, batches: dict[str, PytestBatch], tmp_path: Path) -> None:
    assert _problems(block, batches["fast"], tmp_path) == []


@pytest.mark.parametrize("block", _params("slow"))
def test_slow_command(block: Block, batches: dict[str, PytestBatch], tmp_path: Path) -> None:
    assert _problems(block, batches["slow"], tmp_path) == []
