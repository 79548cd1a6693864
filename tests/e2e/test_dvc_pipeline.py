"""`fraudops generate && dvc repro` in a fresh repository, as a user runs it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from fraudops.data.versioning import data_version

pytestmark = pytest.mark.slow

PROJECT = Path(__file__).resolve().parents[2]
SMALL = {"customers": 150, "terminals": 300, "days": 45, "seed": 9}
#: Periods and candidates that fit 45 days and train in a second.
SMALL_TRAIN = {
    "train_days": 5,
    "delay_days": 3,
    "test_days": 5,
    "validation_folds": 2,
    "candidates": {"logistic_regression": {"fixed": {"max_iter": 300}, "grid": {"C": [1.0]}}},
}
XGB_SMALL = {"n_estimators": 20, "max_depth": 3}


def run(
    args: list[str], cwd: Path, *, stdout_only: bool = False, env: dict[str, str] | None = None
) -> str:
    env = {
        **os.environ,
        **(env or {}),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "DVC_NO_ANALYTICS": "1",
    }
    env.pop("FRAUDOPS_HOME", None)
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, f"{args} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout if stdout_only else done.stdout + done.stderr


def dvc(*args: str, cwd: Path, env: dict[str, str] | None = None) -> str:
    return run([sys.executable, "-m", "dvc", *args], cwd, env=env)


def dvc_json(*args: str, cwd: Path) -> dict:
    return json.loads(run([sys.executable, "-m", "dvc", *args, "--json"], cwd, stdout_only=True))


def update_params(repo: Path, section: str, key: str, value: object) -> None:
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params[section][key] = value
    (repo / "params.yaml").write_text(yaml.safe_dump(params))


def stages_run(output: str) -> set[str]:
    return {line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage")}


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A copy of the project's pipeline files in a new git + DVC repository."""
    root = tmp_path / "project"
    root.mkdir()
    for name in ("dvc.yaml", "data.dvc"):
        shutil.copy(PROJECT / name, root / name)
    (root / "data.dvc").write_text("outs:\n- path: data/raw\n")
    shutil.copytree(PROJECT / "src", root / "src", ignore=shutil.ignore_patterns("__pycache__"))
    params = yaml.safe_load((PROJECT / "params.yaml").read_text())
    params["simulate"].update(SMALL)
    params["train"].update(SMALL_TRAIN)
    # The split's gap is the label delay: Params refuses two different numbers.
    params["features"]["label_delay_days"] = SMALL_TRAIN["delay_days"]
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    run(["git", "init", "-q"], root)
    dvc("init", "-q", cwd=root)
    dvc("config", "core.analytics", "false", cwd=root)
    dvc("remote", "add", "-d", "local", str(tmp_path / "remote"), cwd=root)
    return root


#: Loaded by every Python process started with its folder on PYTHONPATH: at exit (after
#: everything else, as it registers first) it writes its argv and the files of every module
#: it loaded. So the first ``dvc repro`` records what each stage's command really loads.
_RECORD_IMPORTS = """
import atexit, json, os, sys

def _write(folder=os.environ["RECORD_IMPORTS_TO"]):
    files = [getattr(module, "__file__", None) for module in list(sys.modules.values())]
    with open(os.path.join(folder, f"{os.getpid()}.json"), "w") as out:
        json.dump({"argv": sys.argv, "files": sorted(path for path in files if path)}, out)

atexit.register(_write)
"""


def recording_imports(folder: Path) -> dict[str, str]:
    """The environment under which each Python process leaves its imports in FOLDER."""
    hook = folder / "hook"
    hook.mkdir(parents=True)
    (hook / "sitecustomize.py").write_text(_RECORD_IMPORTS)
    return {"PYTHONPATH": str(hook), "RECORD_IMPORTS_TO": str(folder)}


def project_modules(files: list[str]) -> set[str]:
    """FILES of the project's own modules, as paths like dvc.yaml names them.

    Left out by rule (dvc.yaml says why): package ``__init__`` files, the CLI package (argument
    parsing and printing) and the telemetry switches, which every command loads.
    """
    loaded = set()
    for name in files:
        path = Path(name).resolve()
        if not path.is_relative_to(PROJECT / "src"):
            continue
        relative = path.relative_to(PROJECT).as_posix()
        if path.name == "__init__.py" or "/cli/" in relative or path.name == "telemetry.py":
            continue
        loaded.add(relative)
    return loaded


def assert_each_stage_depends_on_exactly_the_modules_it_ran(records: Path) -> None:
    ran = {}
    for record in records.glob("*.json"):
        values = json.loads(record.read_text())
        if Path(values["argv"][0]).name == "fraudops":
            ran[tuple(values["argv"][1:])] = project_modules(values["files"])
    stages = yaml.safe_load((PROJECT / "dvc.yaml").read_text())["stages"]
    for name, stage in stages.items():
        declared = {dep for dep in stage["deps"] if dep.endswith(".py")}
        command = tuple(stage["cmd"].split()[1:])
        assert command in ran, f"stage {name}: `{stage['cmd']}` did not run ({sorted(ran)})"
        missing, unused = sorted(ran[command] - declared), sorted(declared - ran[command])
        assert not missing and not unused, f"stage {name}: missing {missing}, not run {unused}"


def test_generate_then_repro_versions_data_and_reruns_only_what_changed(repo: Path, tmp_path: Path):
    run(["fraudops", "generate"], repo)
    version = data_version(repo / "data.dvc")

    records = tmp_path / "imports"
    first = stages_run(dvc("repro", cwd=repo, env=recording_imports(records)))
    assert {"validate", "featurize", "train", "evaluate"} <= first
    assert (repo / "data" / "features" / "features.parquet").exists()
    assert (repo / "models" / "model_card.json").exists()
    assert "fraud_rate" in dvc("metrics", "show", cwd=repo)
    metrics = json.loads((repo / "metrics.json").read_text())
    assert {"roc_auc", "average_precision", "card_precision_at_100"} <= metrics.keys()
    plots = dvc_json("plots", "show", cwd=repo)
    assert {"plots/pr.csv", "plots/roc.csv"} <= plots["data"].keys()
    assert stages_run(dvc("repro", cwd=repo)) == set()
    assert_each_stage_depends_on_exactly_the_modules_it_ran(records)
    run(["git", "add", "-A"], repo)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "baseline"], repo)

    update_params(repo, "train", "candidates", {"xgboost": {"fixed": XGB_SMALL, "grid": {}}})
    assert stages_run(dvc("repro", cwd=repo)) == {"train", "evaluate"}
    diff = dvc_json("metrics", "diff", cwd=repo)["metrics.json"]
    assert {"roc_auc", "average_precision"} <= diff.keys()
    assert any(change["old"] != change["new"] for change in diff.values())

    update_params(repo, "features", "label_delay_days", 2)
    update_params(repo, "train", "delay_days", 2)
    rerun = stages_run(dvc("repro", cwd=repo))
    assert "featurize" in rerun
    assert "validate" not in rerun

    shutil.rmtree(repo / "data" / "raw")
    dvc("pull", "data.dvc", cwd=repo)
    assert "up to date" in dvc("status", "data.dvc", cwd=repo)
    assert data_version(repo / "data.dvc") == version


def test_regenerating_the_same_params_gives_the_same_data_version(repo: Path):
    run(["fraudops", "generate"], repo)
    first = data_version(repo / "data.dvc")
    run(["fraudops", "generate", "--overwrite"], repo)
    assert data_version(repo / "data.dvc") == first


def test_a_drift_batch_appended_to_raw_is_a_new_data_version(repo: Path):
    run(["fraudops", "generate"], repo)
    first = data_version(repo / "data.dvc")
    run(
        [
            "fraudops",
            "generate",
            "--start",
            "2018-05-16",
            "--days",
            "5",
            "--scenario",
            "amount_shift",
        ],
        repo,
    )
    assert data_version(repo / "data.dvc") != first
    assert len(list((repo / "data" / "raw").glob("day=*"))) == SMALL["days"] + 5
