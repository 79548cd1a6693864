"""CD's model step for real: ci/release_model.sh (what `make release-model` runs) in a git +
DVC project against a real MLflow registry and Prefect server. Each release registers its
model with the release tag; the champion alias moves only when `fraudops promote` says so."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from loop_support import use_project

from ci.support import ROOT, run
from fraudops.config import Settings
from fraudops.tracking.registry import CHALLENGER, CHAMPION, configure_mlflow

pytestmark = [pytest.mark.slow, pytest.mark.service]
SCRIPT = ROOT / "ci" / "release_model.sh"
#: One one-split tree: far below the project's small XGBoost on the holdout.
WEAK = {
    "random_forest": {"fixed": {"n_estimators": 1, "max_depth": 1, "max_features": 1}, "grid": {}}
}


def release(project: Path, tag: str, **env: str) -> str:
    done = run(["bash", str(SCRIPT)], project, {"RELEASE": tag, **env}, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


def test_make_release_model_runs_the_release_script() -> None:
    done = run(["make", "-n", "release-model"])
    assert "ci/release_model.sh" in done.stdout.splitlines()


def test_a_release_is_registered_and_only_the_gate_moves_the_champion(
    project: Path,
    mlflow_settings: Settings,
    prefect_api: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    settings = use_project(monkeypatch, project)
    client = configure_mlflow(settings)
    name = settings.model_name

    def aliases() -> dict[str, str]:
        found = client.get_registered_model(name).aliases
        return {alias: str(version) for alias, version in found.items()}

    image = "ghcr.io/example/fraudops:v1.0.0@sha256:0123"
    # The first model has no champion to meet: training makes it champion, the gate agrees.
    assert "unchanged version 1" in release(project, "v1.0.0", IMAGE=image)
    assert aliases() == {CHAMPION: "1", CHALLENGER: "1"}
    first = client.get_model_version(name, "1").tags
    assert first["fraudops.release"] == "v1.0.0" and first["fraudops.image"] == image

    params = yaml.safe_load((project / "params.yaml").read_text())
    params["train"]["candidates"] = {**WEAK}
    weak = tmp_path / "weak-params.yaml"
    weak.write_text(yaml.safe_dump(params))
    output = release(project, "v1.1.0", FRAUDOPS_PARAMS_PATH=str(weak))
    assert "rejected version 2" in output
    assert aliases() == {CHAMPION: "1", CHALLENGER: "2"}
    assert client.get_model_version(name, "2").tags["fraudops.release"] == "v1.1.0"

    assert "promoted version 3" in release(project, "v1.2.0")
    assert aliases() == {CHAMPION: "3", CHALLENGER: "3"}


def test_a_release_without_its_tag_is_refused_before_anything_runs(tmp_path: Path) -> None:
    done = run(["bash", str(SCRIPT)], tmp_path, {"RELEASE": ""})
    assert done.returncode != 0
    assert "set RELEASE to the release tag" in done.stderr
