"""`dvc repro` of the project's pipeline on a small generated data set, for CI.

Why a scratch project: the real data lives in a DVC remote a hosted runner cannot reach and
takes minutes to train on, and generating in the checkout would overwrite a developer's
``data/``. So this copies the pipeline (``dvc.yaml``, ``src/`` for its code dependencies and
``params.yaml`` with ``ci/small-params.yaml`` laid over it) into a fresh git + DVC repository,
runs ``fraudops generate`` and ``dvc repro`` there, and copies what the pipeline measured
(metrics, data report, PR and ROC tables) into ``--out``: by default ``ci/model-quality/``,
the files committed on main that ``ci/quality_gate.py`` compares a change against.

    python ci/repro_small.py [--out DIR] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
OVERLAY = ROOT / "ci" / "small-params.yaml"
DEFAULT_OUT = ROOT / "ci" / "model-quality"
#: What the pipeline writes (dvc.yaml's metrics and plots) -> the file name kept in --out.
OUTPUTS = {
    "metrics.json": "metrics.json",
    "reports/data.json": "data.json",
    "plots/pr.csv": "pr.csv",
    "plots/roc.csv": "roc.csv",
}


class ReproFailed(RuntimeError):
    """A command of the small run failed; the message names it and carries its output."""


def overlaid(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    """BASE with OVERLAY's keys replaced section by section (one level deep, as params are)."""
    merged = {key: dict(value) if isinstance(value, dict) else value for key, value in base.items()}
    for section, values in overlay.items():
        if section not in merged:
            raise ReproFailed(f"{OVERLAY.name}: params.yaml has no section {section!r}")
        merged[section].update(values)
    return merged


def small_params() -> dict[str, Any]:
    base = yaml.safe_load((ROOT / "params.yaml").read_text())
    return overlaid(base, yaml.safe_load(OVERLAY.read_text()) or {})


def run(args: list[str], cwd: Path) -> str:
    """Run ARGS in CWD with this interpreter's bin first on PATH (its ``fraudops``, ``dvc``)."""
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "DVC_NO_ANALYTICS": "1",
    }
    env.pop("FRAUDOPS_HOME", None)  # the scratch project keeps its own state
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise ReproFailed(f"`{' '.join(args)}` failed:\n{done.stdout}{done.stderr}")
    return done.stdout + done.stderr


def build_project(root: Path) -> None:
    """A new git + DVC repository holding the pipeline, its code and the small params."""
    root.mkdir(parents=True)
    shutil.copy(ROOT / "dvc.yaml", root / "dvc.yaml")
    shutil.copytree(ROOT / "src", root / "src", ignore=shutil.ignore_patterns("__pycache__"))
    (root / "params.yaml").write_text(yaml.safe_dump(small_params(), sort_keys=False))
    (root / "data.dvc").write_text("outs:\n- path: data/raw\n")
    dvc = [sys.executable, "-m", "dvc"]
    run(["git", "init", "-q"], root)
    run([*dvc, "init", "-q"], root)
    run([*dvc, "config", "core.analytics", "false"], root)
    run([*dvc, "remote", "add", "-d", "local", str(root.parent / "remote")], root)


def reproduce(root: Path, out: Path) -> None:
    """Generate the data, reproduce every stage, copy the measured files into OUT."""
    run(["fraudops", "generate"], root)
    run([sys.executable, "-m", "dvc", "repro"], root)
    out.mkdir(parents=True, exist_ok=True)
    for produced, kept in OUTPUTS.items():
        shutil.copy(root / produced, out / kept)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where the results go")
    parser.add_argument("--keep", type=Path, help="build the scratch project here and keep it")
    args = parser.parse_args(argv)
    started = time.monotonic()
    try:
        if args.keep:
            build_project(args.keep)
            reproduce(args.keep, args.out)
        else:
            with tempfile.TemporaryDirectory(prefix="fraudops-ci-") as scratch:
                build_project(Path(scratch) / "project")
                reproduce(Path(scratch) / "project", args.out)
    except (ReproFailed, OSError, yaml.YAMLError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    elapsed = time.monotonic() - started
    print(f"dvc repro on the small data: {elapsed:.0f} s; results in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
