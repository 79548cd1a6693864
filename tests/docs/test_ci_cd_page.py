"""docs/ci-cd.md cannot point at nothing: its command blocks are marked and run (fast ones
here; the slow one is `make ci-repro` and `make quality-gate`, which tests/ci runs), and the
files, make targets and anchors it names exist."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from docs.markdown import DOCS, KINDS, ROOT, anchor, blocks, headings

PAGE = DOCS / "ci-cd.md"
_NAMED = re.compile(r"`((?:ci|tests|src|docs|\.github)/[\w./-]+|Makefile|params\.yaml)`")
_TARGET = re.compile(r"^([a-z][\w-]*)\s*:(?!=)", re.M)


def test_every_shell_block_is_marked_fast_or_slow() -> None:
    shell = [block for block in blocks(PAGE) if block.is_shell]
    assert shell
    assert all(block.kind in KINDS and block.kind != "runbook" for block in shell), [
        block.id for block in shell if block.kind is None
    ]


def test_every_make_target_the_page_names_exists() -> None:
    targets = set(_TARGET.findall((ROOT / "Makefile").read_text()))
    named = set(re.findall(r"`make ([a-z][\w-]*)`", PAGE.read_text()))
    named |= {
        line.split()[1]
        for block in blocks(PAGE)
        if block.is_shell
        for line in block.code.splitlines()
        if line.startswith("make ")
    }
    assert named and named <= targets, sorted(named - targets)


def test_every_named_file_and_anchor_exists() -> None:
    text = re.sub(r"^```.*?^```", "", PAGE.read_text(), flags=re.S | re.M)
    missing = [path for path in _NAMED.findall(text) if not (ROOT / path).exists()]
    assert not missing, missing
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        file_part, _, fragment = target.partition("#")
        path = (PAGE.parent / file_part).resolve() if file_part else PAGE
        assert path.exists(), target
        if fragment:
            assert fragment in {anchor(heading) for _, heading in headings(path)}, target


@pytest.mark.parametrize(
    "block", [b for b in blocks(PAGE) if b.kind == "fast"], ids=lambda block: block.id
)
def test_fast_block_runs(block, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    env = {key: value for key, value in os.environ.items() if not key.startswith("FRAUDOPS_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["FRAUDOPS_HOME"] = str(tmp_path / "home")
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", block.code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
