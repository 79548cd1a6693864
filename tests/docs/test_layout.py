"""The layout a newcomer navigates: one name per module, and a map of it that cannot drift.

``docs/architecture.md`` ends with "Where things live": every package and module of the
library and the glue, with the first line of its docstring. The map is generated from the
code here and compared with the page, so a moved, added or renamed module fails this test
until the page says so (the failure prints the section to paste).
"""

from __future__ import annotations

import ast
from collections import Counter
from pathlib import Path

from docs.markdown import DOCS, ROOT

ARCHITECTURE = DOCS / "architecture.md"
ROOMS = (ROOT / "src" / "fraudops", ROOT / "pipelines", ROOT / "serving", ROOT / "monitoring")
START = "<!-- where-things-live: generated from the docstrings, checked by tests/docs -->"
END = "<!-- where-things-live: end -->"


def _modules() -> list[Path]:
    return sorted(
        path for room in ROOMS for path in room.rglob("*.py") if "__pycache__" not in path.parts
    )


def _summary(path: Path) -> str:
    docstring = ast.get_docstring(ast.parse(path.read_text())) or ""
    return docstring.strip().splitlines()[0] if docstring.strip() else ""


def where_things_live() -> str:
    """The section's body: a row per package (its ``__init__``) and per module."""
    rows = ["| where | what it is |", "|---|---|"]
    for path in _modules():
        relative = path.relative_to(ROOT)
        shown = f"{relative.parent}/" if path.name == "__init__.py" else str(relative)
        rows.append(f"| `{shown}` | {_summary(path).replace('|', '/')} |")
    return "\n".join(rows)


def test_no_two_modules_or_packages_share_a_name() -> None:
    names = Counter(
        path.parent.name if path.name == "__init__.py" else path.stem for path in _modules()
    )
    assert [name for name, count in names.items() if count > 1] == []


def test_every_module_says_what_it_is() -> None:
    assert [str(path) for path in _modules() if not _summary(path)] == []


def test_the_architecture_page_maps_where_things_live() -> None:
    page = ARCHITECTURE.read_text()
    assert START in page and END in page, f"add the section between {START} and {END}"
    written = page.split(START, 1)[1].split(END, 1)[0].strip()
    expected = where_things_live()
    assert written == expected, f"replace the section's table with:\n\n{expected}\n"


def test_only_the_tracking_package_imports_mlflow() -> None:
    """One MLflow seam: a change of MLflow's API is a change in ``fraudops.tracking`` only."""
    seam = ROOT / "src" / "fraudops" / "tracking"
    outside = []
    for path in _modules():
        if seam in path.parents:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [alias.name for alias in node.names] if isinstance(node, ast.Import) else
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            )  # fmt: skip
            if any(name == "mlflow" or name.startswith("mlflow.") for name in names):
                outside.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert outside == []
