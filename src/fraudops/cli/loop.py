"""Commands of the production loop: monitor, retrain, simulate-traffic, serve-flows, demo."""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from fraudops.cli.base import (
    ByTransactionTime,
    LabelsBy,
    Last,
    Since,
    Until,
    app,
    console,
    fail,
    use_prefect,
)
from fraudops.config import Scenario, get_settings, load_params

# --- the loop: monitoring, retraining, traffic ---------------------------------------------

OnDrift = Annotated[
    Literal["auto", "event", "direct", "none"],
    typer.Option(help="On drift: an event with a Prefect server, else a direct call (auto)."),
]


@app.command()
def monitor(
    since: Since = None,
    until: Until = None,
    last: Last = None,
    by_transaction_time: ByTransactionTime = False,
    labels_by: LabelsBy = None,
    window_id: Annotated[str | None, typer.Option(help="Name of the window.")] = None,
    on_drift: OnDrift = "auto",
) -> None:
    """Drift and quality of a window of served traffic against the champion's training data."""
    use_prefect()
    from fraudops.tracking.registry import RegistryError
    from monitoring.analysis import MonitoringError
    from pipelines.monitoring_flow import ReferenceMissing, monitoring_flow

    try:
        outcome = monitoring_flow(
            since=since,
            until=until,
            last_n=last,
            by_transaction_time=by_transaction_time,
            labels_by=labels_by,
            window_id=window_id,
            on_drift=on_drift,
        )
    except (MonitoringError, ReferenceMissing, RegistryError) as exc:
        raise fail(str(exc)) from exc
    decision = outcome.decision
    colour = "red" if decision.is_drift else "green"
    console.print(f"window {decision.window_id}: [{colour}]{decision.signal}[/]")
    for reason in decision.reasons:
        console.print(f"  {reason}")
    console.print(f"report {outcome.report_dir}, MLflow run {outcome.run_id}")
    if outcome.retraining:
        console.print(f"retraining requested: {outcome.retraining}")


@app.command()
def retrain(
    signal: Annotated[str, typer.Option(help="The signal it answers, as a tag.")] = "manual",
    window_id: Annotated[str, typer.Option(help="The window that showed it.")] = "",
    monitoring_run: Annotated[str, typer.Option(help="The monitoring run behind it.")] = "",
    requested_by: Annotated[
        str | None, typer.Option(help="Who asks, recorded as a tag (default: your user name).")
    ] = None,
    reason: Annotated[str, typer.Option(help="Why you ask, recorded as a tag.")] = "",
) -> None:
    """Version the matured traffic, train a challenger on it, and shadow it in serving.

    A request by hand: the cool-down that spaces out drift-triggered runs does not apply.
    """
    use_prefect()
    from fraudops.data.validation import BatchRejected
    from fraudops.data.versioning import VersioningError
    from fraudops.tracking.registry import RegistryError
    from pipelines.retraining import retrain_flow

    try:
        outcome = retrain_flow(
            signal=signal,
            window_id=window_id,
            monitoring_run_id=monitoring_run,
            trigger="manual",
            requested_by=requested_by or _user_name(),
            reason=reason,
        )
    except (BatchRejected, RegistryError, VersioningError, FileNotFoundError) as exc:
        raise fail(str(exc)) from exc
    if outcome.status == "skipped":
        console.print(f"[yellow]skipped[/]: {outcome.reason}")
        return
    model = "the online learner" if outcome.version is None else f"version {outcome.version}"
    console.print(
        f"[green]retrained[/] ({outcome.learning_mode}): {model} on data "
        f"{outcome.data_version} ({len(outcome.batch_days)} new days); {outcome.routing}"
    )


def _user_name() -> str:
    """The operating system's name for whoever runs the command, recorded as who asked."""
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login name in the environment or the user database
        return "unknown"


@app.command("simulate-traffic")
def simulate_traffic(
    days: Annotated[int, typer.Option(min=1, help="Simulated days to replay.")] = 14,
    scenario: Annotated[Scenario, typer.Option(help="Drift scenario of every day.")] = "none",
    schedule: Annotated[
        str | None,
        typer.Option(
            help="Scenario by replay day instead, day 0 the first day ever replayed: "
            '"none:0,amount_shift:7,new_fraud_pattern:28".'
        ),
    ] = None,
    url: Annotated[str | None, typer.Option(help="Scoring API (default: serving_url).")] = None,
    rate: Annotated[float, typer.Option(min=0, help="Transactions/s; 0: unthrottled.")] = 0.0,
    seconds_per_day: Annotated[
        float, typer.Option(min=0, help="Wall-clock seconds per simulated day.")
    ] = 2.0,
    drain_labels: Annotated[
        bool, typer.Option(help="After the last day, run the clock on until all labels are in.")
    ] = True,
    monitor_every: Annotated[
        int, typer.Option(min=0, help="Run monitoring every N simulated days (0: never).")
    ] = 0,
    window_days: Annotated[int, typer.Option(min=1, help="Days each monitoring run sees.")] = 7,
) -> None:
    """Replay the days after the training data through the API, each label once usable
    (features.label_delay_days after its transaction, to the hour).

    A replay continues where the last one into the same journal stopped, labels still owed
    included. Drift decisions are printed as monitoring runs write them (alongside, or with
    --monitor-every in this process).
    """
    from fraudops.local.scenario_schedule import ScenarioSchedule, ScheduleError, scheduled_days
    from fraudops.local.traffic import ReplayConfig, replay
    from fraudops.logs.journal import journal_dir, next_day, stored_days

    if schedule is not None and scenario != "none":
        raise fail("give --scenario or --schedule, not both")
    try:
        plan = ScenarioSchedule.parse(schedule) if schedule else ScenarioSchedule.constant(scenario)
    except ScheduleError as exc:
        raise fail(f"--schedule {exc}") from exc
    settings = get_settings()
    params = load_params()
    base_url = url or settings.serving_url or "http://127.0.0.1:8000"
    journal = journal_dir(settings)
    try:
        start = next_day(settings.raw_dir, journal)
    except FileNotFoundError as exc:
        raise fail(str(exc)) from exc
    origin = next(iter(stored_days(journal)), start)
    transactions = scheduled_days(params.simulate, start, days, plan, origin)
    config = ReplayConfig(
        base_url=base_url,
        rate=rate,
        seconds_per_day=seconds_per_day,
        label_delay_days=params.features.label_delay_days,
        drain_labels=drain_labels,
    )
    watcher = _DecisionWatcher(settings.monitoring_reports_dir)
    on_day_end = _monitor_hook(monitor_every, window_days, start, watcher)
    first = (start - origin).days
    phases = ", ".join(f"{name} from day {day}" for day, _, name in plan.segments(first, days))
    console.print(
        f"replaying {transactions.height:,} transactions, {start} + {days} days "
        f"(replay days {first}-{first + days - 1}: {phases}), to {base_url}"
    )
    columns = (TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        bar = progress.add_task("transactions", total=transactions.height)
        stats = replay(
            transactions,
            config,
            journal=journal,
            on_progress=lambda sent: progress.update(bar, completed=sent),
            on_day_end=on_day_end,
        )
    watcher.show_new()
    console.print(
        f"{stats.scored:,} scored, {stats.failed:,} failed, {stats.labels_posted:,} labels "
        f"posted ({stats.labels_failed:,} failed) over {stats.days} days"
    )
    for error in stats.errors:
        console.print(f"  [red]{error}[/]")
    if stats.failed or stats.labels_failed:
        raise typer.Exit(code=1)


class _DecisionWatcher:
    """Prints each monitoring decision written under the reports folder, once."""

    def __init__(self, reports_dir: Path) -> None:
        self.reports_dir = reports_dir
        self.seen = set(self._files())

    def _files(self) -> list[Path]:
        return sorted(self.reports_dir.glob("*/decision.json"))

    def show_new(self) -> None:
        for path in self._files():
            if path in self.seen:
                continue
            self.seen.add(path)
            decision = json.loads(path.read_text())
            colour = "red" if decision["signal"] in ("data_drift", "concept_drift") else "green"
            console.print(
                f"monitoring {decision['window_id']}: [{colour}]{decision['signal']}[/] "
                f"{'; '.join(decision['reasons'])}"
            )


def _monitor_hook(
    every: int, window_days: int, first_day: dt.date, watcher: _DecisionWatcher
) -> Callable[[dt.date], None]:
    """At the end of each simulated day: run monitoring when due, print new decisions."""

    def at_day_end(day: dt.date) -> None:
        if every and ((day - first_day).days + 1) % every == 0:
            use_prefect()
            from pipelines.monitoring_flow import monitoring_flow

            end = dt.datetime.combine(day + dt.timedelta(days=1), dt.time())
            try:
                monitoring_flow(
                    since=end - dt.timedelta(days=window_days), until=end, by_transaction_time=True
                )
            except Exception as exc:  # monitoring must never stop the traffic
                console.print(f"[red]monitoring failed[/]: {exc}")
        watcher.show_new()

    return at_day_end


@app.command("serve-flows")
def serve_flows(
    interval: Annotated[float, typer.Option(min=1, help="Seconds between monitoring runs.")] = 3600,
    window: Annotated[int, typer.Option(min=1, help="Newest predictions per run.")] = 20_000,
    advance_interval: Annotated[
        float, typer.Option(min=1, help="Seconds between steps of the challenger's experiment.")
    ] = 60,
) -> None:
    """Serve the scheduled monitoring, the drift-triggered retraining and the experiment's
    progression (shadow, A/B, promotion gate) until stopped.

    Event triggers need a real Prefect server: set FRAUDOPS_PREFECT_API_URL. With
    FRAUDOPS_FLOWS_METRICS_PORT set, the model-level Prometheus series are served too.
    """
    settings = get_settings()
    if not settings.prefect_api_url and not os.environ.get("PREFECT_API_URL"):
        raise fail("event triggers need a Prefect server: set FRAUDOPS_PREFECT_API_URL")
    use_prefect()
    from pipelines.deployments import serve_flows as serve_deployments

    if settings.flows_metrics_port:
        from monitoring.exporter import start_exporter

        try:
            start_exporter(settings, settings.flows_metrics_port, settings.flows_metrics_host)
        except OSError as exc:
            raise fail(
                f"model metrics cannot listen on {settings.flows_metrics_host}:"
                f"{settings.flows_metrics_port}: {exc}"
            ) from exc
        console.print(
            f"model metrics on http://{settings.flows_metrics_host}:"
            f"{settings.flows_metrics_port}/metrics"
        )
    serve_deployments(interval, window, advance_interval_s=advance_interval)


@app.command()
def demo(
    port: Annotated[int, typer.Option(help="Port of the scoring API.")] = 8000,
    drift_days: Annotated[
        int, typer.Option(help="Days of drifted traffic: more than the label delay.")
    ] = 8,
    seconds_per_day: Annotated[
        float, typer.Option(min=0, help="Wall-clock seconds per simulated day of traffic.")
    ] = 2.0,
    ab_days: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="First days of A/B traffic, before its plan is known "
            "(default: params.yaml experiment.ab_min_days).",
        ),
    ] = None,
    ab_max_days: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Most days of A/B traffic: a larger plan is not run "
            "(default: params.yaml experiment.ab_max_days).",
        ),
    ] = None,
    keep_running: Annotated[
        bool, typer.Option(help="After the summary, keep every service up until Ctrl-C.")
    ] = False,
) -> None:
    """The whole loop on this machine, from data to a promotion decision.

    Data, DVC, training, serving, drift, retraining, shadow, A/B with its labels, and the
    promotion gate weighing them; then a summary of each stage and every URL. It runs in a
    git worktree of its own (FRAUDOPS_HOME/demo, branch fraudops-demo), where its data
    versions are commits and its state is git-ignored: this checkout stays as committed.
    """
    import signal
    import sys

    from fraudops.local.demo import DemoOptions, run_loop
    from fraudops.local.demo_worktree import DemoError

    # The A/B runs by the numbers the experiment/advance deployment of the compose stack uses.
    experiment = load_params().experiment
    first_days = ab_days or experiment.ab_min_days
    options = DemoOptions(
        port=port,
        drift_days=drift_days,
        seconds_per_day=seconds_per_day,
        ab_days=first_days,
        ab_max_days=max(ab_max_days or experiment.ab_max_days, first_days),
        ab_share=experiment.ab_share,
        keep_running=keep_running,
    )
    # SIGTERM unwinds like Ctrl-C, so every service the demo started is stopped with it.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        run_loop(options)
    except DemoError as exc:
        raise fail(str(exc)) from exc
