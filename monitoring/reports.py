"""The files of a monitoring run: HTML for people, JSON for machines, one folder per run.

``<reports_dir>/<run>/`` holds ``decision.json`` (the typed decision with every number,
the estimate included, so a later run can compare it with the realised quality) and, for
each Evidently snapshot, ``<name>.html`` (self-contained, no CDN) and ``<name>.json``.
The default ``reports_dir`` is ``monitoring/reports``, which git ignores.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

from fraudops.health.findings import DriftDecision
from monitoring.analysis import MonitoringResult

DECISION_FILE = "decision.json"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def run_name(decision: DriftDecision) -> str:
    """``<window time>-<window id>``: runs sort by time and name their window."""
    window = _UNSAFE.sub("-", decision.window_id).strip("-") or "window"
    return f"{decision.timestamp:%Y%m%dT%H%M%S}-{window}"


def write_reports(result: MonitoringResult, reports_dir: Path, run: str | None = None) -> Path:
    """Write RESULT under REPORTS_DIR/RUN (default ``run_name``); return that folder."""
    folder = reports_dir / (run or run_name(result.decision))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / DECISION_FILE).write_text(result.decision.model_dump_json(indent=2) + "\n")
    for name, snapshot in result.snapshots.items():
        snapshot.save_html(str(folder / f"{name}.html"))
        (folder / f"{name}.json").write_text(strict_json(snapshot.json()) + "\n")
    return folder


def load_decision(folder: Path) -> DriftDecision:
    """The decision a past run wrote, e.g. to compare its estimate with the labels now in."""
    return DriftDecision.model_validate_json((folder / DECISION_FILE).read_text())


def strict_json(text: str) -> str:
    """Evidently writes NaN for undefined values, which is not JSON: write null instead."""
    return json.dumps(_finite(json.loads(text)), indent=2, allow_nan=False)


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_finite(item) for item in value]
    return value
