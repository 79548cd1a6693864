"""The workflows hold no logic that is not run here: each shell step is a make target that a
local check runs, `make lint-ci` passes on them, and its checks fail on broken workflows."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from ci.support import BIN, ROOT, ci_script, run

WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
#: Each make target a workflow runs, and what runs it on this machine.
RUN_LOCALLY = {
    "install": "the .venv every test runs in is built by it",
    "lint": ".ci/run",
    "test": ".ci/run",
    "test-fast": ".ci/run",  # `make test` there runs every test that test-fast selects
    "lint-ci": "tests/ci/test_workflows.py::test_make_lint_ci_passes_on_the_workflows",
    "ci-repro": "tests/ci/test_repro_small.py::test_make_ci_repro_reproduces_the_committed_metrics",
    "quality-gate": "tests/ci/test_quality_gate.py::test_make_quality_gate_runs_the_gate_script",
    "release-model": "tests/ci/test_release_model.py",
}
check_workflows = ci_script("check_workflows")


def run_steps() -> list[tuple[str, str]]:
    steps = []
    for path in WORKFLOWS:
        for job in yaml.safe_load(path.read_text())["jobs"].values():
            steps += [(path.name, step["run"]) for step in job["steps"] if "run" in step]
    return steps


def test_there_are_a_ci_and_a_cd_workflow_with_make_steps() -> None:
    assert [path.name for path in WORKFLOWS] == ["cd.yml", "ci.yml"]
    assert {name for name, _ in run_steps()} == {"cd.yml", "ci.yml"}


@pytest.mark.parametrize(("workflow", "command"), run_steps())
def test_each_shell_step_is_a_make_target_that_runs_here(workflow: str, command: str) -> None:
    target = command.removeprefix("make ")
    assert command == f"make {target}", f"{workflow}: {command!r}"
    assert target in RUN_LOCALLY, f"{workflow}: nothing here runs `make {target}`"
    where, _, test = RUN_LOCALLY[target].partition("::")
    if where == ".ci/run":
        assert re.search(rf"^make (test|{re.escape(target)})$", (ROOT / where).read_text(), re.M)
    elif where.startswith("tests/"):
        source = (ROOT / where).read_text()
        assert not test or f"def {test}(" in source, RUN_LOCALLY[target]
        assert f'"{target}"' in source or f"make {target}" in source, RUN_LOCALLY[target]
    dry_run = run(["make", "-n", target])
    assert dry_run.returncode == 0, dry_run.stderr


def test_make_lint_ci_passes_on_the_workflows() -> None:
    done = run(["make", "lint-ci"], timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "every run step a make target" in done.stdout


def test_the_schema_check_fails_a_workflow_with_an_unknown_key(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yml"
    text = (ROOT / ".github" / "workflows" / "ci.yml").read_text()
    broken.write_text(text.replace("    steps:\n", "    stepz:\n", 1))
    checked = ["check-jsonschema", "--builtin-schema", "vendor.github-workflows", str(broken)]
    done = run(checked)
    assert done.returncode == 1
    assert "stepz" in done.stdout or "'steps' is a required property" in done.stdout, done.stdout


def _broken(job: dict, step: dict) -> dict:
    return {"jobs": {"a": {"runs-on": "ubuntu-latest", "steps": [step]}, "b": job}}


@pytest.mark.parametrize(
    ("workflow", "expected"),
    [
        (_broken({}, {"run": "pip install -e . && pytest"}), "is not `make TARGET`"),
        (_broken({}, {"run": "make no-such-target"}), "names no target"),
        (_broken({}, {"uses": "actions/checkout"}), "not pinned"),
        (_broken({}, {"uses": "docker://rhysd/actionlint:latest"}), "not pinned"),
        (_broken({"needs": "c", "steps": []}, {"run": "make lint"}), "no such job"),
        (
            _broken(
                {
                    "needs": "a",
                    "steps": [{"run": "make lint", "env": {"X": "${{ needs.a.outputs.x }}"}}],
                },
                {"run": "make lint"},
            ),
            "not a needed output",
        ),
        (
            _broken(
                {}, {"uses": "actions/checkout@v4", "with": {"ref": "${{ steps.s.outputs.r }}"}}
            ),
            "not an earlier step",
        ),
    ],
)
def test_check_workflows_names_what_is_broken(workflow: dict, expected: str) -> None:
    found = check_workflows.problems(workflow, check_workflows.make_targets())
    assert len(found) == 1 and expected in found[0], found


def test_check_workflows_exits_1_on_a_broken_file(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yml"
    broken.write_text(yaml.safe_dump(_broken({}, {"run": "echo hi"})))
    done = run([str(BIN / "python"), "ci/check_workflows.py", str(broken)])
    assert done.returncode == 1
    assert "broken.yml: job a, step 1: run 'echo hi' is not `make TARGET`" in done.stderr


def test_pre_commit_hooks_are_local_and_download_nothing() -> None:
    config = yaml.safe_load((ROOT / ".pre-commit-config.yaml").read_text())
    hooks = [hook for repo in config["repos"] for hook in repo["hooks"]]
    assert [repo["repo"] for repo in config["repos"]] == ["local"]
    assert {hook["language"] for hook in hooks} <= {"system", "unsupported"}
    for hook in hooks:
        tool = hook["entry"].split()[0]
        assert tool == "make" or tool.startswith(".venv/bin/"), hook["id"]
        if tool == "make":
            assert hook["entry"].split()[1] in check_workflows.make_targets()
    assert {"ruff", "ruff-format", "mypy", "workflows", "compose-schema", "hadolint"} == {
        hook["id"] for hook in hooks
    }


@pytest.mark.parametrize(
    ("hook", "files"),
    [
        ("ruff", ["ci/quality_gate.py", "ci/repro_small.py", "ci/check_workflows.py"]),
        ("compose-schema", ["docker-compose.yml"]),
        ("hadolint", ["Dockerfile"]),
    ],
)
def test_a_pre_commit_hook_runs_offline_and_passes(
    hook: str, files: list[str], tmp_path: Path
) -> None:
    command = [str(BIN / "pre-commit"), "run", hook, "--files", *files]
    done = run(command, env={"PRE_COMMIT_HOME": str(tmp_path)}, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Passed" in done.stdout
