"""The demo's own checkout: a git worktree on its branch, fresh each run, commits its data
versions there and leaves the checkout it came from alone (issue 11, item 4).

Real git on a tiny repository: seconds, where the whole demo (tests/e2e/test_demo_in_a_clone)
takes minutes.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from fraudops.local.demo_worktree import (
    DEMO_BRANCH,
    DemoError,
    checkout_root,
    commit_data_version,
    make_worktree,
    worktree_settings,
)

_IDENTITY = ("-c", "user.name=fraudops test", "-c", "user.email=test@fraudops.invalid")


def git(cwd: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=False)
    assert done.returncode == 0, f"git {args}: {done.stderr}"
    return done.stdout.strip()


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A committed project with a data version and this project's ignore rules for state."""
    root = tmp_path / "project"
    root.mkdir()
    git(root, "init", "--quiet")
    (root / ".gitignore").write_text(".env\n/.fraudops/\n")
    (root / "data.dvc").write_text("outs:\n- path: data/raw\n  md5: first.dir\n")
    git(root, "add", ".")
    git(root, *_IDENTITY, "commit", "--quiet", "-m", "first")
    (root / ".env").write_text("FRAUDOPS_MODEL_NAME=from-dotenv\n")
    return root


def test_the_demo_worktree_is_fresh_each_run_and_the_checkout_stays_as_committed(
    checkout: Path,
) -> None:
    head = git(checkout, "rev-parse", "HEAD")
    tree = make_worktree(checkout, checkout / ".fraudops" / "demo")
    assert (tree.base, tree.branch) == (head, DEMO_BRANCH)
    assert git(tree.root, "rev-parse", "HEAD") == head
    assert (tree.root / ".env").read_text() == "FRAUDOPS_MODEL_NAME=from-dotenv\n"

    # A run: a new data version, committed on the branch; state in the worktree's home.
    (tree.root / "data.dvc").write_text("outs:\n- path: data/raw\n  md5: second.dir\n")
    tree.home.mkdir()
    (tree.home / "mlflow.db").write_text("state")
    assert commit_data_version(tree, "second", "data.dvc")
    assert commit_data_version(tree, "nothing new", "data.dvc") is None
    assert git(checkout, "log", "--format=%s", f"{head}..{DEMO_BRANCH}") == "second"
    assert git(tree.root, "status", "--porcelain") == ""
    assert git(checkout, "status", "--porcelain") == ""

    # The next run starts from the committed project again, not from the last one's state.
    again = make_worktree(checkout, checkout / ".fraudops" / "demo")
    assert git(again.root, "rev-parse", "HEAD") == head
    assert "first.dir" in (again.root / "data.dvc").read_text()
    assert not again.home.exists()
    assert git(checkout, "status", "--porcelain") == ""
    assert git(checkout, "rev-parse", "HEAD") == head


def test_the_demo_needs_a_git_checkout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))  # wherever tmp is
    with pytest.raises(DemoError, match="not in a git checkout"):
        checkout_root(tmp_path)


def test_the_demo_reads_its_stages_records_where_its_commands_wrote_them(
    checkout: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The summary reads the registry, monitoring reports and data of the worktree, with
    the worktree's .env, however the demo itself was started."""
    (checkout / ".env").write_text("FRAUDOPS_MONITORING_REPORTS_DIR=reports/monitoring\n")
    tree = make_worktree(checkout, checkout / ".fraudops" / "demo")
    elsewhere = checkout.parent / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # no .env here, and relative paths would land here

    settings = worktree_settings(tree)

    assert settings.home == tree.home
    assert settings.monitoring_reports_dir == tree.root / "reports" / "monitoring"
    assert settings.raw_dir == tree.root / "data" / "raw"
    assert settings.tracking_uri == f"sqlite:///{tree.home.resolve() / 'mlflow.db'}"
