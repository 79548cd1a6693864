"""A training run logged to the real MLflow server carries the fairness tables and plot."""

from __future__ import annotations

import mlflow
import pytest

from fraudops.config import Settings, load_params
from fraudops.fairness.segment_metrics import METRICS
from fraudops.fairness.segments import SEGMENTS
from fraudops.modeling.steps import train_bare, workspace_data
from fraudops.tracking.registry import configure_mlflow
from fraudops.tracking.runs import (
    FAIRNESS_GAPS,
    FAIRNESS_PLOT,
    FAIRNESS_SEGMENTS,
    log_training_run,
)


def test_a_training_run_logs_the_segment_table_gaps_and_plot(
    small_training: Settings, mlflow_settings: Settings
) -> None:
    params = load_params()
    raw_dir = small_training.data_dir / "raw"
    result = train_bare(workspace_data(raw_dir, raw_dir / "absent.dvc"), params)
    client = configure_mlflow(mlflow_settings)
    run_id = log_training_run(result).run_id

    artifacts = {item.path for item in client.list_artifacts(run_id, "fairness")}
    assert {FAIRNESS_SEGMENTS, FAIRNESS_GAPS} <= artifacts
    plot = client.list_artifacts(run_id, "plots")
    assert any(item.path == FAIRNESS_PLOT and item.file_size > 10_000 for item in plot)

    table = mlflow.load_table(FAIRNESS_SEGMENTS, run_ids=[run_id])
    assert set(table["segment"]) == set(SEGMENTS)
    assert {f"{metric}_{bound}" for metric in METRICS for bound in ("low", "high")} <= set(table)
    test_rows = result.selection.split.test.height
    for segment in SEGMENTS:
        assert table.loc[table["segment"] == segment, "n_transactions"].sum() == test_rows
    frauds = table.loc[table["segment"] == "tenure", "n_frauds"].sum()
    recall = table.loc[table["segment"] == "tenure"]
    caught = (recall["recall"].fillna(0) * recall["n_frauds"]).sum()
    assert caught / frauds == pytest.approx(result.evaluation.metrics["recall"])

    gaps = mlflow.load_table(FAIRNESS_GAPS, run_ids=[run_id])
    assert len(gaps) == 2 * len(SEGMENTS)
