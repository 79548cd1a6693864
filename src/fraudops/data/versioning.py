"""Data and code versions: the DVC hash of a data directory and the git commit.

Every registered model is tagged with both, so a model can always be traced back to
the exact data and code that produced it. DVC is driven through its CLI, the
interface DVC keeps stable.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml


class VersioningError(RuntimeError):
    """A DVC or git command failed; the message carries its output."""


def _run(args: list[str], cwd: Path | None = None) -> str:
    done = subprocess.run(args, cwd=cwd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        output = (done.stderr or done.stdout).strip()
        raise VersioningError(
            f"`{' '.join(args[2:] if args[1] == '-m' else args)}` failed: {output}"
        )
    return done.stdout


def _dvc(*args: str, cwd: Path | None = None) -> str:
    return _run([sys.executable, "-m", "dvc", *args], cwd=cwd)


def data_version(dvc_file: Path) -> str:
    """The content hash DVC recorded for the tracked directory (its ``.dir`` md5)."""
    meta = yaml.safe_load(dvc_file.read_text())
    md5: str = meta["outs"][0]["md5"]
    return md5


def record_data_version(dvc_file: Path, *, push: bool = True) -> str:
    """Hash the directory DVC_FILE tracks, cache it, and push it to the default remote.

    This is ``dvc add`` for a ``.dvc`` file kept at the project root (``data.dvc``
    tracks ``data/raw``). Pushing keeps the remote complete, so any commit of the
    ``.dvc`` file can be restored later with ``dvc pull``. Returns the new hash.
    """
    root = find_repo_root(dvc_file)
    target = str(dvc_file.resolve().relative_to(root))
    _dvc("commit", "--force", "--quiet", target, cwd=root)
    if push:
        _dvc("push", "--quiet", target, cwd=root)
    return data_version(dvc_file)


def find_repo_root(path: Path) -> Path:
    """The nearest folder above PATH holding a ``.dvc`` directory."""
    for folder in [path.resolve(), *path.resolve().parents]:
        if (folder / ".dvc").is_dir():
            return folder
    raise VersioningError(f"{path} is not inside a DVC repository (no .dvc folder above it)")


def git_sha(cwd: Path | None = None) -> str:
    """The current commit, with ``-dirty`` appended when tracked files have changed."""
    try:
        sha = _run(["git", "rev-parse", "HEAD"], cwd=cwd).strip()
        dirty = _run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd).strip()
    except (VersioningError, FileNotFoundError):
        return "unknown"
    return f"{sha}-dirty" if dirty else sha
