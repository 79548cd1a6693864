"""What the GitHub workflow schema cannot see, checked offline (``make lint-ci``).

The JSON schema (``check-jsonschema --builtin-schema vendor.github-workflows``) knows the
shape of a workflow, not what it refers to. This checks the references, and the rule of this
project that a workflow holds no logic of its own:

- every ``run:`` step is exactly ``make TARGET``, TARGET a target of the Makefile, so what CI
  runs is what a developer and the tests run (settings reach it through ``env:``);
- every ``needs:`` names a job of the same workflow, and ``needs.J.outputs.O`` /
  ``steps.S.outputs.O`` name a needed job's declared output or an earlier step's id;
- every action is pinned to a version (``@v4``, a tag or a commit; a Docker image to a tag).

    python ci/check_workflows.py .github/workflows/*.yml
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import yaml

MAKEFILE = Path(__file__).resolve().parents[1] / "Makefile"
_TARGET = re.compile(r"^([a-z][\w-]*)\s*:(?!=)", re.M)
_RUN = re.compile(r"^make ([a-z][\w-]*)$")
_NEEDS_OUTPUT = re.compile(r"\bneeds\.([\w-]+)\.outputs\.([\w-]+)")
_STEP_OUTPUT = re.compile(r"\bsteps\.([\w-]+)\.outputs\.([\w-]+)")
_PINNED = re.compile(r"^(?:[\w.-]+/[\w./-]+@[\w.-]+|docker://[\w./-]+:(?!latest$)[\w.-]+|\./.+)$")


def make_targets(makefile: Path = MAKEFILE) -> set[str]:
    return set(_TARGET.findall(makefile.read_text()))


def problems(workflow: dict[str, Any], targets: set[str]) -> list[str]:
    """Every broken reference or shell logic in WORKFLOW, each as a sentence."""
    jobs: dict[str, Any] = workflow.get("jobs") or {}
    found = []
    for name, job in jobs.items():
        needs = job.get("needs") or []
        needs = [needs] if isinstance(needs, str) else list(needs)
        found += [f"job {name}: needs {need!r}, no such job" for need in needs if need not in jobs]
        found += _outputs(name, job, needs, jobs)
        for number, step in enumerate(job.get("steps") or [], start=1):
            found += _step(f"job {name}, step {number}", step, targets)
    return found


def _step(where: str, step: dict[str, Any], targets: set[str]) -> list[str]:
    if "run" in step:
        command = str(step["run"]).strip()
        match = _RUN.match(command)
        if not match:
            return [f"{where}: run {command!r} is not `make TARGET` (put the logic in make/ci)"]
        if match.group(1) not in targets:
            return [f"{where}: `{command}` names no target of the Makefile"]
        return []
    uses = str(step.get("uses", ""))
    if not _PINNED.match(uses):
        return [f"{where}: uses {uses!r} is not pinned to a version"]
    return []


def _outputs(name: str, job: dict[str, Any], needs: list[str], jobs: dict[str, Any]) -> list[str]:
    """Output references of JOB: to jobs it needs (declared outputs), to its own earlier steps."""
    found = []
    text = yaml.safe_dump(job)
    for needed, output in _NEEDS_OUTPUT.findall(text):
        declared = (jobs.get(needed) or {}).get("outputs") or {}
        if needed not in needs or output not in declared:
            found.append(f"job {name}: needs.{needed}.outputs.{output} is not a needed output")
    seen: set[str] = set()
    for step in job.get("steps") or []:
        for step_id, _ in _STEP_OUTPUT.findall(yaml.safe_dump(step)):
            if step_id not in seen:
                found.append(f"job {name}: steps.{step_id} is not an earlier step")
        if "id" in step:
            seen.add(str(step["id"]))
    for value in (job.get("outputs") or {}).values():
        found += [
            f"job {name}: output refers to steps.{step_id}, no such step"
            for step_id, _ in _STEP_OUTPUT.findall(str(value))
            if step_id not in seen
        ]
    return found


def main(argv: list[str] | None = None) -> int:
    paths = [Path(arg) for arg in (argv if argv is not None else sys.argv[1:])]
    if not paths:
        print("error: no workflow files given", file=sys.stderr)
        return 2
    targets = make_targets()
    failed = False
    for path in paths:
        try:
            workflow = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError) as exc:
            print(f"{path}: cannot read: {exc}", file=sys.stderr)
            return 2
        for problem in problems(workflow, targets):
            print(f"{path}: {problem}", file=sys.stderr)
            failed = True
    if not failed:
        print(f"ok: {len(paths)} workflow(s), every run step a make target")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
