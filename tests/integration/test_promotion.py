"""Promotion for real: challenger against champion on the holdout, decisions recorded in
MLflow (run and version tags), and the `promote` / `rollback` commands."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from mlflow import MlflowClient
from typer.testing import CliRunner

from fraudops.cli import app
from fraudops.config import Settings
from fraudops.experiments.promotion_gate import Check
from fraudops.tracking.registry import (
    CHALLENGER,
    CHAMPION,
    DECISION_NUMBER_PREFIX,
    DECISION_REASON_TAG,
    DECISION_TAG,
    PREVIOUS_CHAMPION_TAG,
    configure_mlflow,
)
from fraudops.tracking.runs import RUN_TYPE_TAG
from pipelines.promotion import DECISION_RUN_TAG, promotion_flow
from pipelines.training import training_flow

#: A single random one-split tree: far below the small models on average precision.
pytestmark = pytest.mark.slow  # servers and subprocesses: tens of seconds

WEAK_CANDIDATES = {
    "random_forest": {"fixed": {"n_estimators": 1, "max_depth": 1, "max_features": 1}, "grid": {}}
}


def aliases(client: MlflowClient, name: str) -> dict[str, str]:
    return {
        alias: str(version) for alias, version in client.get_registered_model(name).aliases.items()
    }


@pytest.fixture
def weak_params(small_params_with: Callable[[dict], Path]) -> Path:
    return small_params_with({"candidates": WEAK_CANDIDATES})


def test_a_better_challenger_is_promoted_and_a_worse_one_rejected(
    prefect_api: str, small_training: Settings, weak_params: Path
) -> None:
    name = small_training.model_name
    weak = training_flow(params_path=weak_params)
    strong = training_flow()
    client = configure_mlflow(small_training)
    assert aliases(client, name) == {CHAMPION: weak.version, CHALLENGER: strong.version}

    live_loss = Check("live A/B", passed=False, detail="A/B: challenger converts worse")
    held_back = promotion_flow(evidence=[live_loss])
    assert held_back.outcome == "rejected" and "A/B" in held_back.reason
    assert aliases(client, name)[CHAMPION] == weak.version

    promoted = promotion_flow()
    assert promoted.outcome == "promoted", promoted.reason
    # Both models' segment gaps on the holdout were compared, as one more check.
    assert "no segment gap widened beyond its tolerance" in promoted.reason
    assert (
        promoted.numbers["challenger.average_precision"]
        > (promoted.numbers["champion.average_precision"])
    )
    assert aliases(client, name)[CHAMPION] == strong.version
    tags = client.get_model_version(name, strong.version).tags
    assert tags[DECISION_TAG] == "promoted"
    assert tags[PREVIOUS_CHAMPION_TAG] == weak.version
    assert float(tags[DECISION_NUMBER_PREFIX + "challenger.average_precision"]) == pytest.approx(
        promoted.numbers["challenger.average_precision"]
    )
    decision_run = client.get_run(tags[DECISION_RUN_TAG])
    assert decision_run.info.run_id == promoted.run_id
    assert decision_run.data.tags[RUN_TYPE_TAG] == "promotion"
    assert decision_run.data.tags[DECISION_TAG] == "promoted"
    assert {"champion.average_precision", "challenger.card_precision_at_100"} <= (
        decision_run.data.metrics.keys()
    )

    worse = training_flow(params_path=weak_params)
    rejected = promotion_flow()
    assert rejected.outcome == "rejected"
    assert "average_precision" in rejected.reason
    assert aliases(client, name) == {CHAMPION: strong.version, CHALLENGER: worse.version}
    worse_tags = client.get_model_version(name, worse.version).tags
    assert worse_tags[DECISION_TAG] == "rejected"
    assert worse_tags[DECISION_REASON_TAG] == rejected.reason
    assert client.get_run(worse_tags[DECISION_RUN_TAG]).data.tags[DECISION_TAG] == "rejected"


def test_train_promote_and_rollback_from_the_command_line(
    prefect_api: str, small_training: Settings
) -> None:
    runner = CliRunner()
    name = small_training.model_name

    def fraudops(*args: str, exit_code: int = 0) -> str:
        result = runner.invoke(app, list(args))
        assert result.exit_code == exit_code, result.output
        return result.output

    assert "version 1 (challenger, champion)" in fraudops("train")
    assert "version 2 (challenger)" in fraudops("train", "--tag", "fraudops.trigger=manual")
    client = configure_mlflow(small_training)
    assert client.get_model_version(name, "2").tags["fraudops.trigger"] == "manual"

    # Same data, same parameters: the challenger equals the champion, so it is not worse.
    assert "promoted version 2" in fraudops("promote")
    assert aliases(client, name)[CHAMPION] == "2"

    assert "version 1 is champion again" in fraudops("rollback", "--reason", "bad canary")
    assert aliases(client, name)[CHAMPION] == "1"
    assert client.get_model_version(name, "2").tags[DECISION_TAG] == "rolled_back"
    assert "replaced no earlier champion" in fraudops("rollback", exit_code=1)

    fraudops("promote", "--version", "2", "--force", "--reason", "hotfix")
    assert aliases(client, name)[CHAMPION] == "2"
    assert "forced: hotfix" in client.get_model_version(name, "2").tags[DECISION_REASON_TAG]
    assert "--force needs --version" in fraudops("promote", "--force", exit_code=1)


def test_a_version_that_trained_on_holdout_days_is_not_compared(
    prefect_api: str, small_training: Settings, small_params_with: Callable[[dict], Path]
) -> None:
    champion = training_flow()
    # A one-day label delay and a one-day test: its training window reaches into the holdout
    # week (the split's gap is the label delay, so both change together).
    short = small_params_with({"delay_days": 1, "test_days": 1}, features={"label_delay_days": 1})
    training_flow(params_path=short)

    with pytest.raises(ValueError, match="inside the holdout"):
        promotion_flow()

    client = configure_mlflow(small_training)
    assert aliases(client, small_training.model_name)[CHAMPION] == champion.version
