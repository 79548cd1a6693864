"""The model-quality gate of CI: a change may not make the pipeline's model worse than main's.

``ci/repro_small.py`` reproduces the pipeline on a small generated data set and writes its
metrics to ``ci/model-quality/metrics.json``; main holds the same file as committed. This
script judges the two with the promotion gate's own code (``holdout_checks`` and ``decide``
of ``fraudops.experiments.promotion_gate``, tolerance ``promote.tolerance`` of params.yaml):
main's numbers play the champion, the change's the challenger, so a pull request is held to
the rule a retrained model is. It fails too when the metrics committed with the change are
not the ones the change reproduces (stale: main's baseline would go wrong after the merge).

It writes a Markdown summary (the verdict, ``dvc metrics diff`` and where ``dvc plots diff``
put its pages) to stdout and, on GitHub, to ``$GITHUB_STEP_SUMMARY``. Exit status: 0 passed,
1 regression or stale metrics, 2 the inputs could not be read.

    python ci/quality_gate.py [--baseline-ref REF] [--plots-dir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from fraudops.config import load_params
from fraudops.experiments.promotion_gate import GateDecision, decide, holdout_checks

METRICS = Path("ci/model-quality/metrics.json")
DATA_REPORT = Path("ci/model-quality/data.json")
#: The PR and ROC tables and their axes, as dvc.yaml declares them for the pipeline.
PLOTS = {"pr": ("recall", "precision"), "roc": ("fpr", "tpr")}
#: How far a committed metric may be from the reproduced one and still be the same number
#: (the small run is seeded; this only absorbs floating-point differences between machines).
SAME = 1e-4


class GateError(RuntimeError):
    """An input of the gate is missing or unreadable; the message says which."""


def git_show(ref: str, path: Path) -> dict[str, float] | None:
    """The JSON file PATH as committed at REF; None when REF does not have it."""
    done = subprocess.run(
        ["git", "show", f"{ref}:{path.as_posix()}"], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        if "exists on disk, but not in" in done.stderr or "does not exist in" in done.stderr:
            return None
        raise GateError(f"git cannot read {path} at {ref}: {done.stderr.strip()}")
    return _metrics(done.stdout, f"{ref}:{path}")


def _metrics(text: str, where: str) -> dict[str, float]:
    try:
        values = json.loads(text)
    except json.JSONDecodeError as exc:
        raise GateError(f"{where} is not JSON: {exc}") from exc
    if not isinstance(values, dict):
        raise GateError(f"{where} is not a JSON object of metrics")
    return {key: value for key, value in values.items() if isinstance(value, int | float)}


def default_ref() -> str:
    """``origin/main`` where it exists (a CI checkout), else the local ``main``."""
    for ref in ("origin/main", "main"):
        found = subprocess.run(
            ["git", "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"],
            capture_output=True,
            check=False,
        )
        if found.returncode == 0:
            return ref
    raise GateError("no main branch to compare with: pass --baseline-ref")


def judge(
    baseline: Mapping[str, float], candidate: Mapping[str, float], tolerance: Mapping[str, float]
) -> GateDecision:
    """The promotion gate's decision with main as champion and the change as challenger."""
    try:
        return decide(holdout_checks(baseline, candidate, tolerance))
    except KeyError as exc:
        message = str(exc.args[0]).replace("champion", "baseline")
        raise GateError(message.replace("challenger", "change")) from exc


def stale(
    committed: Mapping[str, float] | None,
    candidate: Mapping[str, float],
    tolerance: Mapping[str, float],
) -> list[str]:
    """Gated metrics whose committed value is not what the change reproduces."""
    if committed is None:
        return [f"{METRICS} is not committed"]
    return [
        f"{metric}: committed {committed.get(metric, float('nan')):.6f}, "
        f"reproduced {candidate[metric]:.6f}"
        for metric in tolerance
        if not abs(committed.get(metric, float("inf")) - candidate[metric]) <= SAME
    ]


def table(
    baseline: Mapping[str, float], candidate: Mapping[str, float], tolerance: Mapping[str, float]
) -> str:
    rows = ["| metric | main | this change | change | tolerance |", "|---|---|---|---|---|"]
    for metric, allowed in tolerance.items():
        old, new = baseline[metric], candidate[metric]
        rows.append(f"| {metric} | {old:.4f} | {new:.4f} | {new - old:+.4f} | {allowed:g} |")
    return "\n".join(rows)


def dvc_report(ref: str, plots_dir: Path) -> str:
    """`dvc metrics diff` as Markdown, and `dvc plots diff` of each curve into PLOTS_DIR."""
    targets = [str(path) for path in (METRICS, DATA_REPORT)]
    diff = _dvc("metrics", "diff", ref, "--targets", *targets, "--md").strip()
    lines = ["### dvc metrics diff", "", diff or "No metric changed.", "", "### dvc plots diff", ""]
    plots_dir.mkdir(parents=True, exist_ok=True)
    for name, (x, y) in PLOTS.items():
        out = plots_dir / name
        table_file = (METRICS.parent / f"{name}.csv").as_posix()
        _dvc("plots", "diff", ref, "--targets", table_file, "-x", x, "-y", y, "-o", str(out))
        lines.append(f"- {name.upper()} curve, {ref} against this change: `{out}/index.html`")
    return "\n".join(lines)


def _dvc(*args: str) -> str:
    command = [sys.executable, "-m", "dvc", *args]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise GateError(f"`dvc {' '.join(args)}` failed: {(done.stderr or done.stdout).strip()}")
    return done.stdout


def run_gate(ref: str, plots_dir: Path) -> tuple[bool, str]:
    """(passed, Markdown summary) of the gate against the metrics committed at REF."""
    tolerance = load_params().promote.tolerance
    if not METRICS.exists():
        raise GateError(f"no {METRICS}: run `make ci-repro` first")
    candidate = _metrics(METRICS.read_text(), str(METRICS))
    baseline = git_show(ref, METRICS)
    if baseline is None:
        return True, f"## Model-quality gate: passed\n\n{ref} has no {METRICS}: nothing to compare."
    decision = judge(baseline, candidate, tolerance)
    outdated = stale(git_show("HEAD", METRICS), candidate, tolerance)
    passed = decision.promote and not outdated
    lines = [f"## Model-quality gate: {'passed' if passed else 'FAILED'}", ""]
    lines += [table(baseline, candidate, tolerance), "", f"Against {ref}: {decision.reason}."]
    if outdated:
        lines += [
            "",
            f"The committed {METRICS} is not what this change reproduces "
            f"({'; '.join(outdated)}): run `make ci-repro` and commit {METRICS.parent}/.",
        ]
    return passed, "\n".join([*lines, "", dvc_report(ref, plots_dir)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline-ref", help="git revision to compare with (default: main)")
    parser.add_argument("--plots-dir", type=Path, default=Path("dvc_plots"))
    args = parser.parse_args(argv)
    try:
        passed, summary = run_gate(args.baseline_ref or default_ref(), args.plots_dir)
    except (GateError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(summary)
    if os.environ.get("GITHUB_STEP_SUMMARY"):
        with open(os.environ["GITHUB_STEP_SUMMARY"], "a") as file:
            file.write(summary + "\n")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
