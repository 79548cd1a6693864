"""What a rejected batch says: every rule it broke, counted, with a few example rows.

A bad batch must stop the pipeline with a message that says what to fix, so every failing
rule is reported at once (not only the first). The rules themselves are in
`fraudops.data.row_rules` (rows) and `fraudops.data.validation` (schema, files, batch).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

#: Example rows (or files) shown per broken rule.
MAX_EXAMPLES = 5


@dataclass(frozen=True)
class RuleFailure:
    """One broken rule; ``offending_rows`` is None when the rule concerns the whole batch.

    ``unit`` names what ``offending_rows`` counts: rows, or files for the rules judged on
    files before any row can be read.
    """

    rule: str
    explanation: str
    offending_rows: int | None
    examples: tuple[dict[str, Any], ...]
    unit: str = "row"

    def render(self) -> str:
        count = self.offending_rows
        scope = "whole batch" if count is None else _plural(count, self.unit)
        lines = [f"{self.rule}: {self.explanation} ({scope})"]
        lines += ["    " + _render_example(example) for example in self.examples]
        return "\n".join(lines)


class BatchRejected(Exception):
    """Raised when data breaks one or more rules; ``failures`` lists every one of them."""

    def __init__(self, failures: Sequence[RuleFailure]) -> None:
        self.failures = tuple(failures)
        header = f"batch rejected: {_plural(len(self.failures), 'rule')} failed"
        super().__init__("\n".join([header, *(failure.render() for failure in self.failures)]))

    @property
    def rules(self) -> list[str]:
        return [failure.rule for failure in self.failures]


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _render_example(example: Mapping[str, Any]) -> str:
    return ", ".join(
        f"{key}={'null' if value is None else value}" for key, value in example.items()
    )
