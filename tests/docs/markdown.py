"""Reading the checked pages: their command blocks, the files and tests they name.

Convention (stated for readers in docs/interview-map.md, "How this page is checked"): every
fenced ``bash`` block of a checked page is preceded by a marker comment,

    <!-- check: fast -->      run by tests/docs/test_doc_commands.py in every suite run
    <!-- check: slow -->      the same, marked slow (trains, serves or starts servers)
    <!-- check: runbook -->   run in order by tests/docs/test_runbook.py against a live system

Lines of a block that run ``pytest`` on named tests are gathered into one pytest run per
kind (starting pytest costs seconds); the rest of a block runs as one bash script.
"""

from __future__ import annotations

import ast
import re
import shlex
from dataclasses import dataclass
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
PAGES = (DOCS / "architecture.md", DOCS / "interview-map.md", DOCS / "runbook.md")
KINDS = ("fast", "slow", "runbook")
SHELL_LANGUAGES = ("bash", "sh", "shell", "console", "zsh")

_MARKER = re.compile(r"^<!--\s*check:\s*(\S+)\s*-->$")
_FENCE = re.compile(r"^(`{3,})(\S*)\s*$")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*$")


@dataclass(frozen=True)
class Block:
    """One fenced code block of a page, with the marker before it and its section."""

    page: Path
    line: int  # 1-based line of the opening fence
    language: str
    kind: str | None  # the marker's kind, None without a marker
    section: str  # the anchor of the nearest heading above it
    code: str

    @property
    def id(self) -> str:
        return f"{self.page.name}:{self.line}"

    @property
    def is_shell(self) -> bool:
        return self.language in SHELL_LANGUAGES

    def logical_lines(self) -> list[str]:
        """Lines with backslash continuations joined (a heredoc's lines are kept as they are)."""
        lines: list[str] = []
        pending = ""
        for raw in self.code.splitlines():
            if raw.endswith("\\"):
                pending += raw[:-1] + " "
                continue
            lines.append(pending + raw)
            pending = ""
        if pending:
            lines.append(pending)
        return lines

    def pytest_targets(self) -> list[str]:
        """The test paths and node ids of the block's ``pytest`` lines."""
        targets = []
        for line in self.logical_lines():
            if is_pytest_line(line):
                targets += [arg for arg in shlex.split(line)[1:] if not arg.startswith("-")]
        return targets

    def script(self) -> str:
        """The block without its ``pytest`` lines: what runs as a bash script."""
        return "\n".join(line for line in self.logical_lines() if not is_pytest_line(line))


def is_pytest_line(line: str) -> bool:
    words = line.split()
    return bool(words) and words[0] == "pytest"


def anchor(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


@cache
def blocks(page: Path) -> tuple[Block, ...]:
    found: list[Block] = []
    lines = page.read_text().splitlines()
    section = ""
    marker: str | None = None
    i = 0
    while i < len(lines):
        line = lines[i]
        heading = _HEADING.match(line)
        fence = _FENCE.match(line)
        if heading:
            section = anchor(heading.group(2))
        elif fence:
            end = i + 1
            while end < len(lines) and lines[end].strip() != fence.group(1):
                end += 1
            found.append(
                Block(page, i + 1, fence.group(2), marker, section, "\n".join(lines[i + 1 : end]))
            )
            i = end
        if line.strip():
            match = _MARKER.match(line.strip())
            marker = match.group(1) if match else None
        i += 1
    return tuple(found)


def checked(kind: str) -> list[Block]:
    return [block for page in PAGES for block in blocks(page) if block.kind == kind]


def headings(page: Path) -> list[tuple[int, str]]:
    """(level, text) of every heading outside code blocks."""
    found = []
    inside = False
    for line in page.read_text().splitlines():
        if _FENCE.match(line):
            inside = not inside
            continue
        match = _HEADING.match(line)
        if match and not inside:
            found.append((len(match.group(1)), match.group(2)))
    return found


@cache
def defined_tests(path: Path) -> frozenset[str]:
    """``name`` and ``Class::name`` of every test function and method in a test file."""
    tree = ast.parse(path.read_text())
    names = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            names.add(node.name)
        elif isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef):
                    names.add(f"{node.name}::{item.name}")
    return frozenset(names)
