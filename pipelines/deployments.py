"""The three deployments that close the loop, served by one long-running process.

* ``monitoring/scheduled`` runs the monitoring flow every ``interval`` seconds on the
  newest ``window`` predictions;
* ``retraining/on-drift`` runs the retraining flow whenever ``fraudops.drift.detected``
  arrives from ``fraudops.monitor``, its parameters taken from the event's payload;
* ``experiment/advance`` runs the experiment flow every ``advance_interval`` seconds: it
  takes the challenger that retraining left in shadow on to an A/B test and the promotion
  gate, one step a run (``pipelines.experiment_flow``).

``serve`` needs a real ``prefect server`` (``PREFECT_API_URL``): the temporary server
Prefect starts on its own does not run event triggers reliably. Without a server nothing
is lost: the monitoring flow then calls the retraining flow itself
(``pipelines.retraining.request_retraining``), with the same parameters.

Run it with ``python -m pipelines.deployments`` (or ``fraudops serve-flows``); it serves
until stopped. Flow runs start within ``PREFECT_RUNNER_POLL_FREQUENCY`` seconds (10 by
default) of being created.
"""

from __future__ import annotations

import argparse
from typing import cast

from prefect import serve
from prefect.deployments.runner import RunnerDeployment
from prefect.events import DeploymentEventTrigger
from prefect.types.entrypoint import EntrypointType

from pipelines.experiment_flow import advance_experiment
from pipelines.monitoring_flow import monitoring_flow
from pipelines.retraining import DRIFT_EVENT, MONITOR_RESOURCE, retrain_flow

MONITOR_DEPLOYMENT = "scheduled"
RETRAIN_DEPLOYMENT = "on-drift"
ADVANCE_DEPLOYMENT = "advance"
DEFAULT_INTERVAL_S = 3600
DEFAULT_WINDOW = 20_000
DEFAULT_ADVANCE_INTERVAL_S = 60

#: The event payload fields the retraining flow takes; "{{ x }}" keeps the payload's type.
TRIGGER_PARAMETERS = {
    "signal": "{{ event.payload.signal }}",
    "window_id": "{{ event.payload.window_id }}",
    "monitoring_run_id": "{{ event.payload.monitoring_run_id }}",
    "trigger": "event",
}


def drift_trigger() -> DeploymentEventTrigger:
    """Fires once per drift event of the monitoring flow."""
    return DeploymentEventTrigger(
        expect={DRIFT_EVENT},
        match={"prefect.resource.id": MONITOR_RESOURCE},
        parameters=TRIGGER_PARAMETERS,
    )


def deployments(
    interval_s: float = DEFAULT_INTERVAL_S,
    window: int = DEFAULT_WINDOW,
    advance_interval_s: float = DEFAULT_ADVANCE_INTERVAL_S,
) -> dict[str, RunnerDeployment]:
    """The scheduled monitoring, the event-triggered retraining and the scheduled
    experiment progression, by module path."""
    monitor = monitoring_flow.to_deployment(
        name=MONITOR_DEPLOYMENT,
        interval=interval_s,
        parameters={"last_n": window},
        entrypoint_type=EntrypointType.MODULE_PATH,
        description="Drift and quality of the newest served predictions.",
    )
    retrain = retrain_flow.to_deployment(
        name=RETRAIN_DEPLOYMENT,
        triggers=[drift_trigger()],
        entrypoint_type=EntrypointType.MODULE_PATH,
        description="Retrain on matured traffic when monitoring reports drift, or when run by "
        "hand (a manual run skips the cool-down; give requested_by and reason).",
    )
    advance = advance_experiment.to_deployment(
        name=ADVANCE_DEPLOYMENT,
        interval=advance_interval_s,
        entrypoint_type=EntrypointType.MODULE_PATH,
        description="Take the challenger one step on: shadow, then A/B, then the promotion "
        "gate with the live evidence, then champion-only routing (params.yaml experiment).",
    )
    # `to_deployment` is typed for async callers too; called from sync code it returns the
    # deployment itself, never a coroutine.
    return {
        "monitoring": cast(RunnerDeployment, monitor),
        "retraining": cast(RunnerDeployment, retrain),
        "experiment": cast(RunnerDeployment, advance),
    }


def deployment_name(flow_name: str, deployment: str) -> str:
    """``flow/deployment``, the name ``run_deployment`` and the CLI take."""
    return f"{flow_name}/{deployment}"


MONITOR = deployment_name(monitoring_flow.name, MONITOR_DEPLOYMENT)
RETRAIN = deployment_name(retrain_flow.name, RETRAIN_DEPLOYMENT)
ADVANCE = deployment_name(advance_experiment.name, ADVANCE_DEPLOYMENT)


def serve_flows(
    interval_s: float = DEFAULT_INTERVAL_S,
    window: int = DEFAULT_WINDOW,
    only: str | None = None,
    advance_interval_s: float = DEFAULT_ADVANCE_INTERVAL_S,
) -> None:
    """Register the deployments (or ONLY the one named) and run their flows until stopped."""
    chosen = deployments(interval_s, window, advance_interval_s)
    serve(*(deployment for name, deployment in chosen.items() if only in (None, name)))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--interval", type=float, default=DEFAULT_INTERVAL_S, help="seconds")
    parser.add_argument("--window", type=int, default=DEFAULT_WINDOW, help="newest predictions")
    parser.add_argument(
        "--advance-interval", type=float, default=DEFAULT_ADVANCE_INTERVAL_S, help="seconds"
    )
    parser.add_argument("--only", choices=["monitoring", "retraining", "experiment"])
    args = parser.parse_args(argv)
    serve_flows(args.interval, args.window, args.only, args.advance_interval)


if __name__ == "__main__":
    main()
