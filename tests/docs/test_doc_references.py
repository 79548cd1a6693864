"""The checked pages cannot point at nothing: every command block is marked, every file and
test they name exists, every anchor they link to is there, every question of the seeds'
MLOps section is answered word for word, and the diagram has its picture."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from docs.markdown import (
    DOCS,
    KINDS,
    PAGES,
    ROOT,
    anchor,
    blocks,
    defined_tests,
    headings,
)

MAP = DOCS / "interview-map.md"
ARCHITECTURE = DOCS / "architecture.md"
SEEDS = ROOT.parent / "shared" / "seeds" / "interview-questions-2-4y.txt"
#: The "MLOps Fundamentals" section of interview-questions-2-4y.txt, word for word.
MLOPS_QUESTIONS = (
    "What is MLOps (Machine Learning Operations) and why is it important?",
    "What are the main components of an MLOps pipeline?",
    "What is a CI/CD (Continuous Integration/Deployment) pipeline in the context of ML?",
    "How would you deploy a machine learning model in a production environment?",
    "What is model versioning or a model registry, and why is it needed?",
    "How do you implement A/B testing for machine learning models?",
    "How do you monitor machine learning models in production (e.g. drift detection)?",
    "What are shadow deployments in ML, and when would you use them?",
    "What strategies are used for ML pipeline orchestration and workflow management?",
    "How do you ensure model fairness and mitigate bias in deployed systems?",
    "What role do feature stores play in ML systems?",
    "How do you handle concept drift versus data drift?",
    "What is data versioning and why is it critical in ML projects?",
    "What are popular tools for experiment tracking and model monitoring (e.g. MLflow, "
    "Kubeflow)? (MLOps tool knowledge).",
    "What is the difference between online learning and batch learning in production models? "
    "(Streaming data model updates vs batch).",
)
#: Paths the pages name that are runtime state (git-ignored), not files of the repository.
RUNTIME_PREFIXES = (
    "data/",
    "models",
    "monitoring/reports",
    "monitoring/workspace",
    "benchmarks/out",
    ".fraudops",
    "reports/",
    "plots/",
    "dvc-remote",
    "../shared/",
)
_TOP = r"(?:src|tests|serving|pipelines|monitoring|benchmarks|docs|\.ci)"
_ROOT_FILES = (
    r"(?:params\.yaml|routing\.yaml|dvc\.yaml|data\.dvc|requirements\.lock|pyproject\.toml"
    r"|Makefile|README\.md|\.env\.example)"
)
_PATH = re.compile(
    rf"^(?:{_TOP}/[\w./-]*|{_ROOT_FILES})"
    r"(?:::[\w:\[\]-]+)?$"
)
_LINK = re.compile(r"\]\(([^)\s]+)\)")


def _prose(page: Path) -> str:
    """The page without its code blocks (commands are checked by running them)."""
    return re.sub(r"^```.*?^```", "", page.read_text(), flags=re.S | re.M)


def _named_paths(page: Path) -> set[str]:
    spans = set(re.findall(r"`([^`\n]+)`", _prose(page)))
    for block in blocks(page):
        if block.is_shell:
            spans |= set(
                re.findall(r"(?<![\w/.-])((?:tests|benchmarks|docs)/[\w./:\[\]-]+)", block.code)
            )
    return {span for span in spans if _PATH.match(span) and not span.startswith(RUNTIME_PREFIXES)}


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_every_shell_block_carries_a_check_marker(page: Path) -> None:
    unmarked = [block.id for block in blocks(page) if block.is_shell and block.kind is None]
    assert not unmarked, f"bash blocks without <!-- check: fast|slow|runbook -->: {unmarked}"
    wrong = [block.id for block in blocks(page) if block.kind and block.kind not in KINDS]
    assert not wrong, f"unknown check kinds at {wrong}"
    if page.name != "runbook.md":
        assert not [block.id for block in blocks(page) if block.kind == "runbook"]
    assert not [block.id for block in blocks(page) if block.kind and not block.is_shell]


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_every_named_file_and_test_exists(page: Path) -> None:
    missing = []
    for span in sorted(_named_paths(page)):
        path, _, node = span.split("[", 1)[0].partition("::")
        target = ROOT / path
        if not target.exists() or (node and node not in defined_tests(target)):
            missing.append(span)
    assert not missing, f"{page.name} names what the repository does not have: {missing}"


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_every_link_reaches_a_file_and_anchor(page: Path) -> None:
    broken = []
    for target in _LINK.findall(_prose(page)):
        if target.startswith(("http://", "https://", "mailto:")):
            continue
        file_part, _, fragment = target.partition("#")
        path = (page.parent / file_part).resolve() if file_part else page
        if not path.exists():
            broken.append(target)
        elif fragment and path.suffix == ".md":
            anchors = {anchor(text) for _, text in headings(path)}
            if fragment not in anchors:
                broken.append(target)
    assert not broken, f"{page.name} links to nothing: {broken}"


def _questions(section_start: str, section_end: str) -> list[str]:
    levels = headings(MAP)
    texts = [text for _, text in levels]
    start, end = texts.index(section_start), texts.index(section_end)
    return [text for level, text in levels[start + 1 : end] if level == 3]


def test_every_mlops_question_is_mapped_word_for_word() -> None:
    mapped = _questions("MLOps Fundamentals", "System design for ML")
    assert mapped == list(MLOPS_QUESTIONS)


@pytest.mark.skipif(not SEEDS.exists(), reason="the seed lists live beside the repository")
def test_the_mlops_questions_are_those_of_the_seed_list() -> None:
    text = SEEDS.read_text()
    section = text[text.index("MLOps Fundamentals") :].splitlines()[1:]
    assert [line.strip() for line in section if line.strip()] == list(MLOPS_QUESTIONS)


def test_at_least_35_questions_each_with_an_answer_code_and_a_check() -> None:
    questions = _questions("MLOps Fundamentals", "Not answered yet")
    questions = [q for q in questions if q not in {"MLOps Fundamentals"}]
    assert len(questions) >= 35, len(questions)
    text = MAP.read_text()
    for question in questions:
        entry = text.split(f"### {question}\n", 1)[1].split("\n### ", 1)[0].split("\n## ", 1)[0]
        if entry.lstrip().startswith("**Not answered yet.**"):
            assert question in text.split("## Not answered yet", 1)[1], question
            continue
        for part in ("**Answer", "**Trade-off.**", "**Code.**", "<!-- check: "):
            assert part in entry, f"{question!r} has no {part}"


def test_the_diagram_has_a_small_rendered_picture() -> None:
    text = ARCHITECTURE.read_text()
    assert "```mermaid\nflowchart" in text
    assert "](img/architecture.png)" in text
    png = DOCS / "img" / "architecture.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert png.stat().st_size <= 300 * 1024
