"""Time the training flow at the default scale, step by step, against the same steps run bare.

Usage (from the repository root; both runs together take 5-10 minutes on 2 cores):

    .venv/bin/python benchmarks/bench_training.py

The data is the workspace's `data/raw` (generated with `fraudops generate` when missing).
In one process, with every module imported first:

1. bare: the library steps of `fraudops.modeling.steps` in a row, no Prefect, no MLflow;
2. flow: `training_flow` against a real `prefect server` (started before timing), logging to
   MLflow on SQLite in a scratch home, with an empty Prefect result store, so features are
   computed, not read from cache.

Orchestration + tracking overhead = flow wall time / bare wall time (target < 1.3), and the
whole flow should finish in under 3 minutes. On a shared machine model selection (nearly
all of the time) varies between the two runs, so the script also reports the time the flow
spends outside the steps both runs share, and the ratio that time alone gives. Starting
the Prefect server and creating the MLflow database are one-off costs, reported apart.
Results go to stdout and, as JSON, to `benchmarks/out/training.json`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

PROJECT = Path(__file__).resolve().parents[1]
OUT = PROJECT / "benchmarks" / "out" / "training.json"
FLOW_TARGET_SECONDS = 180.0
OVERHEAD_TARGET = 1.3
LAST_TASK = "register model"

_T = TypeVar("_T")


def timed(times: dict[str, float], name: str, step: Callable[[], _T]) -> _T:
    started = time.perf_counter()
    value = step()
    times[name] = time.perf_counter() - started
    return value


def ensure_data() -> None:
    if not (PROJECT / "data" / "raw").is_dir():
        print("data/raw is missing: running `fraudops generate` first", flush=True)
        fraudops = Path(sys.executable).parent / "fraudops"
        subprocess.run([str(fraudops), "generate"], cwd=PROJECT, check=True)


def bare_run() -> dict[str, float]:
    from fraudops.config import get_settings, load_params
    from fraudops.modeling import steps

    settings, params = get_settings(), load_params()
    times: dict[str, float] = {}
    source = timed(
        times,
        "locate data",
        lambda: steps.workspace_data(settings.raw_dir, PROJECT / "data.dvc"),
    )
    raw = timed(times, "load data", lambda: steps.load_raw(source))
    timed(times, "validate data", lambda: steps.validate_batch(raw, params.validate_))
    features = timed(times, "build features", lambda: steps.featurise(raw, params.features))
    selection = timed(times, "select model", lambda: steps.select(features, params))
    timed(times, "evaluate on test", lambda: steps.evaluate_on_test(selection, params))
    return times


def flow_run() -> tuple[float, dict[str, float], Any]:
    from pipelines.training import training_flow

    started = time.perf_counter()
    state = training_flow(return_state=True)
    total = time.perf_counter() - started
    outcome = state.result()
    return total, task_seconds(state.state_details.flow_run_id), outcome


def task_seconds(flow_run_id: Any, timeout: float = 30.0) -> dict[str, float]:
    """Each task's wall time, Running to final state, as the Prefect server recorded it.

    Task states reach the server as events: wait until the last task has a final state.
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    runs_of = FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while True:
            runs = client.read_task_runs(flow_run_filter=runs_of)
            finished = all(run.state and run.state.is_final() for run in runs)
            last_done = any(run.name.startswith(LAST_TASK) for run in runs)
            if (finished and last_done) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    return {
        run.name.rsplit("-", 1)[0]: _wall_seconds(run)
        for run in sorted(runs, key=lambda run: run.expected_start_time)
    }


def _wall_seconds(run: Any) -> float:
    if run.start_time is None or run.end_time is None:  # a cached task never ran
        return 0.0
    return (run.end_time - run.start_time).total_seconds()


def drain_prefect_logs() -> None:
    """Send buffered logs and events while the server still listens."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=10)
    EventsWorker.drain_all(timeout=10)


def main() -> None:
    # A SIGTERM (e.g. from `timeout`) must still run the `finally` that stops the server.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    ensure_data()
    os.chdir(PROJECT)
    scratch = Path(tempfile.mkdtemp(prefix="bench-training-"))
    os.environ.update(
        {
            "FRAUDOPS_HOME": str(scratch / "home"),
            "PREFECT_RESULTS_LOCAL_STORAGE_PATH": str(scratch / "prefect-results"),
        }
    )
    from fraudops.local.servers import PrefectServer

    one_off: dict[str, float] = {}
    server = PrefectServer(scratch / "prefect", log_dir=scratch)
    timed(one_off, "start prefect server", server.start)
    try:
        os.environ["PREFECT_API_URL"] = server.api_url
        # Imports before any timing: Prefect reads PREFECT_API_URL once, here.
        import mlflow  # noqa: F401

        import pipelines.training  # noqa: F401
        from fraudops.config import get_settings
        from fraudops.tracking.registry import configure_mlflow

        timed(one_off, "create MLflow store", lambda: configure_mlflow(get_settings()))

        bare_started = time.perf_counter()
        bare = bare_run()
        bare_total = time.perf_counter() - bare_started
        flow_total, flow_steps, outcome = flow_run()
    finally:
        drain_prefect_logs()
        server.stop()

    report(one_off, bare, bare_total, flow_steps, flow_total, outcome)


def report(
    one_off: dict[str, float],
    bare: dict[str, float],
    bare_total: float,
    flow_steps: dict[str, float],
    flow_total: float,
    outcome: Any,
) -> None:
    ratio = flow_total / bare_total
    # Time the flow spends outside the library steps bare also runs: orchestration, the
    # feature cache read, MLflow logging and registration. Unlike the plain ratio, it does
    # not move when another process slows model selection in one of the two runs.
    outside = flow_total - sum(flow_steps[name] for name in bare if name in flow_steps)
    steady_ratio = (bare_total + outside) / bare_total
    print(f"\n{'step':<22}{'bare s':>10}{'flow task s':>14}")
    names = list(flow_steps) + [name for name in bare if name not in flow_steps]
    for name in names:
        bare_text = f"{bare[name]:.2f}" if name in bare else "-"
        flow_text = f"{flow_steps[name]:.2f}" if name in flow_steps else "-"
        print(f"{name:<22}{bare_text:>10}{flow_text:>14}")
    print(f"{'total (wall)':<22}{bare_total:>10.2f}{flow_total:>14.2f}")
    print(
        f"\nflow {flow_total:.1f} s (target < {FLOW_TARGET_SECONDS:.0f} s); "
        f"overhead {ratio:.3f}x over bare (target < {OVERHEAD_TARGET}x)"
    )
    print(
        f"outside the shared steps the flow spent {outside:.1f} s: "
        f"{steady_ratio:.3f}x of the bare run"
    )
    print("one-off: " + ", ".join(f"{name} {seconds:.1f} s" for name, seconds in one_off.items()))
    print(f"model: {outcome.candidate}, test AP {outcome.metrics['average_precision']:.4f}")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(
        json.dumps(
            {
                "bare_seconds": bare,
                "bare_total_seconds": bare_total,
                "flow_task_seconds": flow_steps,
                "flow_total_seconds": flow_total,
                "overhead_ratio": ratio,
                "outside_shared_steps_seconds": outside,
                "overhead_ratio_from_outside_time": steady_ratio,
                "one_off_seconds": one_off,
                "cpu_count": os.cpu_count(),
            },
            indent=2,
        )
        + "\n"
    )
    print(f"→ {OUT.relative_to(PROJECT)}")


if __name__ == "__main__":
    main()
