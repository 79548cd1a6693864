"""`fraudops report`: live evidence from the prediction log, shadow and A/B."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from fraudops.config import ABParams, get_settings, load_params

if TYPE_CHECKING:
    import pandas as pd
    from rich.table import Table
    from sqlalchemy import Engine

    from fraudops.experiments.report_parts import ReportWindow


from fraudops.cli.base import ByTransactionTime, LabelsBy, Last, Since, Until, app, console, fail

report_app = typer.Typer(
    no_args_is_help=True, help="Live evidence from the prediction log: shadow and A/B reports."
)
app.add_typer(report_app, name="report")

JsonOut = Annotated[Path | None, typer.Option("--json", help="Also write the result as JSON.")]


@report_app.command("shadow")
def report_shadow(
    since: Since = None,
    until: Until = None,
    last: Last = None,
    by_transaction_time: ByTransactionTime = False,
    labels_by: LabelsBy = None,
    shadow_version: Annotated[
        str | None, typer.Option(help="Shadow model version (default: the newest logged).")
    ] = None,
    json_out: JsonOut = None,
) -> None:
    """Served model vs its shadow on the same requests: agreement, flips, latency."""
    from fraudops.experiments.shadow_report import analyse_shadow, read_shadow_window, shadow_table

    params = load_params()
    window = _report_window(since, until, last, by_transaction_time, labels_by)
    frame = _read_prediction_log(lambda engine: read_shadow_window(engine, window))
    report = analyse_shadow(
        frame, params.ab, params.train, shadow_version=shadow_version, window=window
    )
    _show_report(shadow_table(report), report.model_dump_json(indent=2), json_out)


@report_app.command("ab")
def report_ab(
    since: Since = None,
    until: Until = None,
    last: Last = None,
    by_transaction_time: ByTransactionTime = False,
    labels_by: LabelsBy = None,
    control: Annotated[str | None, typer.Option(help="Control arm (default: params.yaml).")] = None,
    treatment: Annotated[
        str | None, typer.Option(help="Treatment arm (default: params.yaml).")
    ] = None,
    min_detectable_lift: Annotated[
        float | None,
        typer.Option(help="Relative lift the test is sized to detect (default: params.yaml)."),
    ] = None,
    json_out: JsonOut = None,
) -> None:
    """Per-arm metrics with intervals, tests, the sample needed, and a recommendation."""
    from pydantic import ValidationError

    from fraudops.cli.ab_table import ab_table
    from fraudops.experiments.ab_report import analyse_ab
    from fraudops.fairness.window_segments import RawHistory, SegmentSource

    params = load_params()
    given = {
        "control_arm": control,
        "treatment_arm": treatment,
        "min_detectable_lift": min_detectable_lift,
    }
    overrides = {key: value for key, value in given.items() if value is not None}
    try:
        ab = ABParams.model_validate(params.ab.model_dump() | overrides)
    except ValidationError as exc:
        raise fail("; ".join(error["msg"] for error in exc.errors())) from exc
    window = _report_window(since, until, last, by_transaction_time, labels_by)
    frame = _read_prediction_log(lambda engine: window.read(engine, "served"))
    segments = SegmentSource(RawHistory.of(get_settings()), params)
    result = analyse_ab(frame, ab, top_k=params.train.top_k, window=window, segments=segments)
    _show_report(ab_table(result), result.model_dump_json(indent=2), json_out)


def _report_window(
    since: dt.datetime | None,
    until: dt.datetime | None,
    last: int | None,
    by_transaction_time: bool,
    labels_by: dt.datetime | None,
) -> ReportWindow:
    """The window as given; labels as known now unless LABELS_BY, so a rerun is repeatable."""
    from fraudops.experiments.report_parts import ReportWindow

    return ReportWindow(
        start=since,
        end=until,
        last_n=last,
        time_column="tx_datetime" if by_transaction_time else "logged_at",
        labels_received_by=labels_by or dt.datetime.now(dt.UTC),
    )


def _read_prediction_log(read: Callable[[Engine], pd.DataFrame]) -> pd.DataFrame:
    from fraudops.logs.database import open_prediction_log
    from fraudops.logs.errors import PredictionLogUnavailableError

    try:
        engine = open_prediction_log(get_settings().log_url)
    except PredictionLogUnavailableError as exc:
        raise fail(str(exc)) from exc
    try:
        return read(engine)
    finally:
        engine.dispose()


def _show_report(table: Table, document: str, json_out: Path | None) -> None:
    Console().print(table)
    if json_out:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(document + "\n")
        console.print(f"result → {json_out}")
