"""The experiment flow for real: a challenger taken from shadow to an A/B test to the
promotion gate and back to champion-only routing, one run at a time, on a real Prefect
server, a real MLflow server and the real scoring API, with traffic replayed through it."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
import yaml
from loop_support import ADMIN_KEY, backfill, replay, use_project
from mlflow import MlflowClient

from fraudops.tracking.registry import CHALLENGER, CHAMPION, DECISION_TAG, configure_mlflow
from pipelines.experiment_flow import AB_STARTED_TAG, EVIDENCE_TAG_PREFIX, advance_experiment
from pipelines.promotion import DECISION_RUN_TAG
from pipelines.training import training_flow
from serving.server import ServingProcess

pytestmark = pytest.mark.slow

#: At this scale a simulated day holds about 600 transactions.
SMALL_EXPERIMENT = {"shadow_min_scored": 200, "ab_share": 50, "ab_min_days": 1, "ab_max_days": 3}


def configured_routing(url: str) -> dict:
    models = httpx.get(f"{url}/v1/models", headers={"X-API-Key": ADMIN_KEY}, timeout=30)
    return models.raise_for_status().json()["routing"]["configured"]


def test_the_challenger_goes_from_shadow_to_ab_to_a_decision_one_step_a_run(
    tmp_path: Path,
    project: Path,
    monkeypatch: pytest.MonkeyPatch,
    prefect_api: str,
    mlflow_settings,
) -> None:
    params_path = project / "params.yaml"
    params = yaml.safe_load(params_path.read_text())
    params["experiment"] = SMALL_EXPERIMENT
    params_path.write_text(yaml.safe_dump(params))
    serving = ServingProcess(tmp_path / "logs")
    settings = use_project(monkeypatch, project, serving_url=serving.url)
    training_flow()
    backfill(settings)
    client = configure_mlflow(settings)
    name = settings.model_name
    with serving:
        salt = configured_routing(serving.url)["salt"]
        # Version 1 is champion and challenger: there is no experiment to run.
        assert advance_experiment().step == "nothing"

        challenger = training_flow().version
        shadowed = advance_experiment()  # retraining's own routing step, had it been lost
        assert (shadowed.step, shadowed.challenger) == ("shadowed", challenger)
        routing = configured_routing(serving.url)
        assert routing["mode"] == "champion" and routing["shadow"]["alias"] == CHALLENGER
        assert routing["salt"] == salt
        assert advance_experiment().step == "waiting"  # no request shadow-scored yet

        _, stats = replay(settings, serving.url, 1, "none")
        assert stats.failed == 0 and stats.scored > SMALL_EXPERIMENT["shadow_min_scored"]
        started = advance_experiment()
        assert started.step == "ab_started", started.detail
        routing = configured_routing(serving.url)
        assert routing["mode"] == "ab" and routing["weights"] == {CHAMPION: 50, CHALLENGER: 50}
        assert routing["shadow"]["alias"] == CHALLENGER
        assert AB_STARTED_TAG in client.get_model_version(name, challenger).tags
        again = advance_experiment()  # nothing new: the run changes nothing
        assert again.step == "waiting" and configured_routing(serving.url) == routing

        replay(settings, serving.url, 2, "none")  # labels drained: 2 labelled days
        waiting = advance_experiment()
        assert waiting.step == "waiting", waiting.detail
        ab = json.loads((settings.home / "experiments" / f"v{challenger}" / "ab.json").read_text())
        assert ab["recommendation"] == "need_more_data"  # read, and short of its floors
        assert {arm["arm"]: arm["model_versions"] for arm in ab["arms"]} == {
            CHAMPION: ["1"],
            CHALLENGER: [challenger],
        }
        assert DECISION_TAG not in client.get_model_version(name, challenger).tags

        replay(settings, serving.url, 2, "none")  # 4 labelled days: past ab_max_days
        decided = advance_experiment()
        assert decided.step == "decided", decided.detail
        ab = json.loads((settings.home / "experiments" / f"v{challenger}" / "ab.json").read_text())
        tags = client.get_model_version(name, challenger).tags
        assert tags[DECISION_TAG] in ("promoted", "rejected")
        assert "ab_max_days" in tags[EVIDENCE_TAG_PREFIX + "decided_because"]
        assert float(tags[EVIDENCE_TAG_PREFIX + "labelled_days"]) >= 3
        assert tags[EVIDENCE_TAG_PREFIX + "ab_recommendation"] == ab["recommendation"]
        assert int(tags[EVIDENCE_TAG_PREFIX + "shadow_pairs"]) > 0
        decision_run = MlflowClient().get_run(tags[DECISION_RUN_TAG])
        assert decision_run.data.tags[DECISION_TAG] == tags[DECISION_TAG]
        routing = configured_routing(serving.url)
        assert routing["mode"] == "champion" and routing["shadow"] is None
        assert routing["weights"] == {}

        # Decided: later runs leave everything as it is.
        assert advance_experiment().step == "nothing"
        assert client.get_model_version(name, challenger).tags[DECISION_TAG] == tags[DECISION_TAG]
