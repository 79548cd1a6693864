"""The model-quality gate for real: a git + DVC repository whose main holds the committed
metrics of ci/model-quality, a branch that changes them, and ci/quality_gate.py (what
`make quality-gate` runs) judging the branch as CI does."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from ci.support import BIN, ROOT, ci_script, run
from fraudops.config import load_params

quality_gate = ci_script("quality_gate")
COMMITTED = ROOT / "ci" / "model-quality"
TOLERANCE = load_params(ROOT / "params.yaml").promote.tolerance
AP = "average_precision"


def git(repo: Path, *args: str) -> str:
    done = run(["git", "-c", "user.name=ci", "-c", "user.email=ci@example.org", *args], repo)
    assert done.returncode == 0, done.stderr
    return done.stdout


def committed_metrics() -> dict[str, float]:
    return json.loads((COMMITTED / "metrics.json").read_text())


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """main holds the project's committed model-quality files; HEAD is a branch off it."""
    root = tmp_path_factory.mktemp("gate") / "repo"
    (root / "ci").mkdir(parents=True)
    shutil.copytree(COMMITTED, root / "ci" / "model-quality")
    shutil.copy(ROOT / "params.yaml", root / "params.yaml")
    git(root, "init", "-q", "-b", "main")
    assert run([str(BIN / "dvc"), "init", "-q"], root).returncode == 0
    git(root, "add", "-A")
    git(root, "commit", "-qm", "main")
    git(root, "checkout", "-q", "-b", "change")
    return root


@pytest.fixture
def repo(template: Path, tmp_path: Path) -> Path:
    """A copy of the template this test may change (a copy costs less than `dvc init`)."""
    return Path(shutil.copytree(template, tmp_path / "repo", symlinks=True))


def change_metrics(repo: Path, *, commit: bool = True, **shifts: float) -> None:
    """The branch's reproduced metrics: main's moved by SHIFTS, committed unless told not."""
    values = committed_metrics()
    for metric, shift in shifts.items():
        values[metric] += shift
    (repo / quality_gate.METRICS).write_text(json.dumps(values, indent=2) + "\n")
    if commit:
        git(repo, "commit", "-qam", "change the model")


def gate(repo: Path, **env: str) -> tuple[int, str]:
    """What `make quality-gate BASELINE_REF=main` runs, from REPO's root."""
    script = [str(BIN / "python"), str(ROOT / "ci" / "quality_gate.py"), "--baseline-ref", "main"]
    done = run(script, repo, env)
    return done.returncode, done.stdout + done.stderr


def test_make_quality_gate_runs_the_gate_script() -> None:
    done = run(["make", "-n", "quality-gate", "BASELINE_REF=main"])
    assert ".venv/bin/python ci/quality_gate.py --baseline-ref main" in done.stdout.splitlines()


def test_the_gate_fails_a_regression(repo: Path, tmp_path: Path) -> None:
    change_metrics(repo, **{AP: -2 * TOLERANCE[AP]})
    summary = tmp_path / "summary.md"
    code, output = gate(repo, GITHUB_STEP_SUMMARY=str(summary))
    assert code == 1, output
    assert "Model-quality gate: FAILED" in output
    assert f"challenger worse: {AP}" in output
    assert "| average_precision |" in output  # dvc metrics diff's own table
    assert "Model-quality gate: FAILED" in summary.read_text()
    for curve in ("pr", "roc"):
        assert (repo / "dvc_plots" / curve / "index.html").is_file()


def test_a_change_within_the_tolerance_passes(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    change_metrics(repo, **{AP: -TOLERANCE[AP] / 2, "card_precision_at_100": 0.01})
    monkeypatch.chdir(repo)
    monkeypatch.setattr(quality_gate, "dvc_report", lambda ref, plots_dir: "")  # shown above
    passed, summary = quality_gate.run_gate("main", repo / "dvc_plots")
    assert passed, summary
    assert "Model-quality gate: passed" in summary


def test_metrics_reproduced_but_not_committed_are_stale() -> None:
    main = committed_metrics()
    assert quality_gate.stale(main, main, TOLERANCE) == []
    moved = {**main, AP: main[AP] + 0.05}
    assert [problem.split(":")[0] for problem in quality_gate.stale(main, moved, TOLERANCE)] == [AP]
    assert quality_gate.stale(None, main, TOLERANCE) == [f"{quality_gate.METRICS} is not committed"]


def test_the_gate_fails_stale_metrics_and_says_how_to_refresh_them(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    change_metrics(repo, commit=False, **{AP: 0.05})
    monkeypatch.chdir(repo)
    monkeypatch.setattr(quality_gate, "dvc_report", lambda ref, plots_dir: "")  # shown above
    passed, summary = quality_gate.run_gate("main", repo / "dvc_plots")
    assert not passed
    assert "run `make ci-repro` and commit" in summary


def test_judge_uses_the_promotion_gates_tolerance_per_metric() -> None:
    main = committed_metrics()
    for metric, allowed in TOLERANCE.items():
        assert quality_gate.judge(main, {**main, metric: main[metric] - allowed}, TOLERANCE).promote
        worse = {**main, metric: main[metric] - allowed - 1e-3}
        decision = quality_gate.judge(main, worse, TOLERANCE)
        assert not decision.promote and metric in decision.reason


def test_a_metric_the_change_did_not_measure_is_a_clear_error() -> None:
    main = committed_metrics()
    partial = {key: value for key, value in main.items() if key != AP}
    with pytest.raises(quality_gate.GateError, match="average_precision"):
        quality_gate.judge(main, partial, TOLERANCE)


def test_main_without_metrics_yet_passes_with_a_note(repo: Path) -> None:
    git(repo, "checkout", "-q", "main")
    git(repo, "rm", "-q", "-r", "ci/model-quality")
    git(repo, "commit", "-qm", "no metrics yet")
    git(repo, "checkout", "-q", "change")
    code, output = gate(repo)
    assert code == 0, output
    assert "main has no ci/model-quality/metrics.json" in output


def test_unreadable_metrics_exit_2_without_a_traceback(repo: Path) -> None:
    (repo / quality_gate.METRICS).write_text("{not json")
    code, output = gate(repo)
    assert code == 2, output
    assert "is not JSON" in output and "Traceback" not in output
