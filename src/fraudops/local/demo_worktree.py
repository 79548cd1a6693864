"""The demo's own git worktree: where it runs, and the branch its data versions go on.

Apart from ``demo`` because it is plain git plumbing: make the worktree afresh from the
checkout's ``HEAD``, read what is committed there, commit each data version the demo
creates, and say where it all is. Why the demo runs in a worktree at all is in ``demo``'s
docstring.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import yaml

from fraudops.config import Params, Settings

DEMO_BRANCH = "fraudops-demo"
#: Who the demo's data-version commits are by: a name of its own, and no hook or signing
#: step that could stop a demo half-way on a machine set up for someone's own commits.
_COMMIT_CONFIG = (
    "-c",
    "user.name=fraudops demo",
    "-c",
    "user.email=demo@fraudops.invalid",
    "-c",
    "commit.gpgsign=false",
)


class DemoError(RuntimeError):
    """A step of the demo failed; the message says which and where to look."""


@dataclass(frozen=True)
class Worktree:
    """The demo's own checkout: where it runs, the branch its data versions go on."""

    checkout: Path
    root: Path
    branch: str
    base: str

    @property
    def home(self) -> Path:
        """The demo's state: the worktree's default ``.fraudops``, git-ignored there."""
        return self.root / ".fraudops"


def git_output(cwd: Path, *args: str) -> str:
    """What `git ARGS` prints in CWD; a failure is a DemoError naming the command."""
    done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        output = (done.stderr or done.stdout).strip()
        raise DemoError(f"`git {' '.join(args)}` failed in {cwd}: {output}")
    return done.stdout.strip()


def checkout_root(start: Path) -> Path:
    """The top of the git checkout holding START; the demo needs one to branch from."""
    try:
        return Path(git_output(start, "rev-parse", "--show-toplevel"))
    except (DemoError, FileNotFoundError) as error:
        raise DemoError(
            f"the demo runs in a git worktree of this project, and {start} is not in a git "
            f"checkout: {error}"
        ) from error


def committed_params(checkout: Path, base: str) -> Params:
    """params.yaml as committed at BASE: the parameters the demo's worktree will hold."""
    return Params.model_validate(
        yaml.safe_load(git_output(checkout, "show", f"{base}:params.yaml")) or {}
    )


def make_worktree(
    checkout: Path, path: Path, branch: str = DEMO_BRANCH, base: str | None = None
) -> Worktree:
    """A fresh worktree at PATH on BRANCH, reset to BASE (default: the checkout's HEAD).

    A previous demo's worktree there is removed first, state and all: every demo starts
    from the committed project, never from the last one's registry, log or routing.
    """
    base = base or git_output(checkout, "rev-parse", "HEAD")
    path = path.resolve()
    listed = git_output(checkout, "worktree", "list", "--porcelain").splitlines()
    if f"worktree {path}" in listed:
        git_output(checkout, "worktree", "remove", "--force", str(path))
    shutil.rmtree(path, ignore_errors=True)
    git_output(checkout, "worktree", "prune")
    path.parent.mkdir(parents=True, exist_ok=True)
    git_output(checkout, "worktree", "add", "--quiet", "-B", branch, str(path), base)
    env_file = checkout / ".env"
    if env_file.is_file():  # the user's settings, as the checkout has them (ignored there too)
        shutil.copy2(env_file, path / ".env")
    return Worktree(checkout=checkout, root=path, branch=branch, base=base)


def commit_data_version(tree: Worktree, message: str, *paths: str) -> str | None:
    """Commit PATHS on the demo's branch with MESSAGE; the new commit, or None if unchanged."""
    git_output(tree.root, "add", "--", *paths)
    staged = subprocess.run(
        ["git", "diff", "--cached", "--quiet"], cwd=tree.root, check=False
    ).returncode
    if staged == 0:
        return None
    git_output(tree.root, *_COMMIT_CONFIG, "commit", "--quiet", "--no-verify", "-m", message)
    return git_output(tree.root, "rev-parse", "--short", "HEAD")


def worktree_settings(tree: Worktree) -> Settings:
    """The settings the demo's commands see: the worktree's ``.env``, its home, and every
    relative path taken from the worktree, as the commands run there."""
    found = Settings(_env_file=tree.root / ".env", home=tree.home)
    paths = ("data_dir", "monitoring_workspace", "monitoring_reports_dir")
    return found.model_copy(update={name: tree.root / getattr(found, name) for name in paths})


def where_it_is(tree: Worktree) -> str:
    """Where the demo's data versions and state are, and the commands that open them."""
    demo_settings = Settings(home=tree.home)
    log = git_output(tree.root, "log", "--oneline", f"{tree.base}..{tree.branch}")
    return (
        f"The demo ran in {tree.root}, a git worktree on branch {tree.branch}; "
        f"{tree.checkout} is as it was.\n"
        f"Data versions, committed on {tree.branch}:\n"
        + "".join(f"  {line}\n" for line in log.splitlines())
        + f"State (MLflow, Prefect, prediction log, live routing, logs): {tree.home}\n"
        f"Dashboards: cd {tree.root} && fraudops dashboards, then open http://127.0.0.1:8085\n"
        f"MLflow UI:  mlflow ui --backend-store-uri {demo_settings.tracking_uri}\n"
        f"Remove it:  git worktree remove --force {tree.root} && git branch -D {tree.branch}"
    )
