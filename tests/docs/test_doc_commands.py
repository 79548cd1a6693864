"""Every command of docs/architecture.md and docs/interview-map.md runs and succeeds.

Blocks marked ``<!-- check: fast -->`` run in every suite run, ``slow`` ones are marked
slow. Each block is one test. Its ``pytest`` lines name tests of this suite, which runs
them itself: running them again in a child pytest cost this suite two minutes and proved
nothing more. What a page can get wrong is a name, or a slow test in a fast block, so the
named tests of all blocks of a kind are collected in one pytest process with that kind's
marker filter, and each block checks that its own were selected. The rest of the block
runs as a bash script from the repository root with ``.venv/bin`` first on PATH and a fresh
FRAUDOPS_HOME.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from docs.markdown import ROOT, Block, checked

BIN = Path(sys.executable).parent
SCRIPT_TIMEOUT_S = {"fast": 180, "slow": 900}
COLLECT_TIMEOUT_S = 300


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


class PytestBatch:
    """The named tests of every block of one kind, collected together once, on first need."""

    def __init__(self, kind: str, folder: Path) -> None:
        self.kind = kind
        self.folder = folder
        self._selected: set[str] | None = None
        self.output = ""

    def selected(self) -> set[str]:
        """The node ids (``path::name[parameters]``) the kind's blocks name and select."""
        if self._selected is None:
            targets = sorted({t for block in checked(self.kind) for t in block.pytest_targets()})
            command = [str(BIN / "pytest"), "--collect-only", "-q", "-p", "no:cacheprovider"]
            if self.kind == "fast":
                command += ["-m", "not slow"]
            done = subprocess.run(
                [*command, *targets],
                cwd=ROOT,
                env=_environment(self.folder / "home"),
                capture_output=True,
                text=True,
                timeout=COLLECT_TIMEOUT_S,
                check=False,
            )
            self.output = done.stdout[-6000:] + done.stderr[-3000:]
            self._selected = {line for line in done.stdout.splitlines() if "::" in line}
        return self._selected


@pytest.fixture(scope="module")
def batches(tmp_path_factory: pytest.TempPathFactory) -> dict[str, PytestBatch]:
    return {
        kind: PytestBatch(kind, tmp_path_factory.mktemp(f"{kind}-tests"))
        for kind in SCRIPT_TIMEOUT_S
    }


def _problems(block: Block, batch: PytestBatch, tmp_path: Path) -> list[str]:
    """What went wrong with BLOCK: a cited test the suite does not have (or, in a fast block,
    does not run fast), a failed script."""
    problems = []
    targets = block.pytest_targets()
    selected = batch.selected() if targets else set()
    for target in targets:
        if not any(
            target in (node, node.split("[", 1)[0]) or node.startswith(f"{target}::")
            for node in selected
        ):
            hint = " (a slow test: mark the block slow)" if batch.kind == "fast" else ""
            problems.append(
                f"{block.id}: {target} is not a test of the suite{hint}\n{batch.output}"
            )
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
