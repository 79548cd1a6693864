"""Serving latency and throughput: the real server, two set-ups, against `mlflow models serve`.

    .venv/bin/python benchmarks/bench_serving.py [--duration 15] [--configs sqlite,production]

Trains one production-sized XGBoost model (the params.yaml family and size) and a second
one on a small simulated data set, registers them as champion and challenger in a
throw-away MLflow store and starts ``fraudops serve`` (real uvicorn) in each configuration:

* ``sqlite``: ``--workers`` processes (one unless told), the SQLite online store and the
  SQLite prediction log, as a checkout runs it;
* ``production``: what docker-compose.yml's ``api`` service runs: two workers, the Redis
  online store and the PostgreSQL prediction log (``--redis-url``, ``--postgres-url``). The
  run gets a database and a Redis key namespace of its own, removed at the end whatever
  happens, so no other database or key is touched.

It measures each, at a fixed 500 req/s and at saturation:

* champion only;  * shadow (challenger scores every request off the response path);
* A/B 50/50;      * A/B 50/50 with the challenger shadowing the champion's half.

Both servers are up for the whole run and take turns, as the scenarios do, in rounds
(champion on each configuration, then shadow on each, ..., then again), all fixed-rate
rounds before the saturation ones, and each scenario's latencies are pooled over its rounds:
the stores grow during the run and the machine's speed drifts, and a fixed order would
charge both to the later scenarios and configurations. Every run starts once the server's
shadow and log queues are empty, so none pays for the backlog of the one before.

CPU per request comes from /proc: the server's over its whole process tree (with workers,
uvicorn's supervisor and every worker) and, for ``production``, beside it, that of the
redis-server process and of all postgres processes (backends and WAL writers): the work a
SQLite store does inside the server. Those two are read machine-wide, so measure where
nothing else uses them. Requests per CPU-second count the server and its stores.

Then, in the same run, ``mlflow models serve`` on the champion, which takes features
(not a raw transaction), computes nothing online and logs nothing: the ratio is a floor.

The load comes from another process (``load_driver.py``, which reads the CPU as well).
Results go to stdout, with each configuration's figures against the targets, and to
``benchmarks/out/serving.json``.

A little over 400 lines: setting up the two configurations' throw-away stores and
cleaning them after any failure is most of it; the load itself is in ``load_driver.py``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
from load_driver import Target, add_arguments, drive_main, measure, summary

from fraudops.telemetry import TELEMETRY_OFF

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "out" / "serving.json"
QUIET = {**TELEMETRY_OFF, "OMP_NUM_THREADS": "1"}
ADMIN_KEY = "bench-admin-key"
MODEL_NAME = "fraud-detector"
FIXED_RATE = 500
ROUNDS = 3
SCENARIOS = {
    "champion": {"mode": "champion"},
    "shadow": {"mode": "champion", "shadow": {"alias": "challenger"}},
    "ab": {"mode": "ab", "weights": {"champion": 50, "challenger": 50}},
    "ab+shadow": {
        "mode": "ab",
        "weights": {"champion": 50, "challenger": 50},
        "shadow": {"alias": "challenger"},
    },
}
CONFIGURATIONS = ("sqlite", "production")
#: docker-compose.yml, service ``api``: ``fraudops serve --workers 2``.
PRODUCTION_WORKERS = 2
#: The processes (by name) of the production configuration's stores.
STORE_PROCESSES = ("redis-server", "postgres")
#: The serving targets: the figure of ``_ratios`` each one reads, as printed, and when met.
TARGETS: tuple[tuple[str, str, Callable[[float], bool]], ...] = (
    ("saturation_rps", "champion req/s at saturation >= 1,500", lambda rps: rps >= 1500),
    ("p99_ms_at_500", "champion p99 ms at 500 req/s < 10", lambda ms: ms < 10),
    ("shadow_p50_increase_at_500", "shadow's p50 increase at 500 req/s < 0.05", lambda x: x < 0.05),
)


# --- servers -------------------------------------------------------------------------------


def train_and_register(root: Path, *, challenger: bool = True) -> tuple[str, list[str]]:
    """A fresh MLflow store with the champion (params.yaml size) and, unless told otherwise,
    the challenger; returns the store's URI and the models' feature columns."""
    from fraudops.config import CandidateGrid, Params, Settings, SimulateParams, TrainParams
    from fraudops.data.datasets import write_raw
    from fraudops.data.simulate import simulate
    from fraudops.features.definitions import feature_columns
    from fraudops.modeling.steps import train_bare, workspace_data
    from fraudops.tracking.registry import configure_mlflow, register
    from fraudops.tracking.runs import log_training_run

    write_raw(simulate(SimulateParams(customers=500, terminals=1000, days=40)), root / "raw")
    settings = Settings(home=root / "home", mlflow_tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    client = configure_mlflow(settings)
    source = workspace_data(root / "raw", root / "untracked.dvc")
    champion = {"n_estimators": 300, "learning_rate": 0.05, "max_depth": 4, "max_bin": 4096}
    models = [champion, {**champion, "max_depth": 3}] if challenger else [champion]
    for hyperparams in models:
        grid = {"xgboost": CandidateGrid(fixed=hyperparams)}
        params = Params(train=TrainParams(validation_folds=1, candidates=grid))
        register(client, log_training_run(train_bare(source, params)).model_uri, MODEL_NAME)
    return settings.tracking_uri, feature_columns(Params().features)


def _wait_ready(url: str, process: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url} exited with status {process.returncode}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{url} not ready after {timeout} s")


def _workers(configuration: str, args: argparse.Namespace) -> int:
    return PRODUCTION_WORKERS if configuration == "production" else args.workers


@contextmanager
def _serving(
    root: Path, tracking_uri: str, configuration: str, args: argparse.Namespace
) -> Iterator[Target]:
    """``fraudops serve`` in CONFIGURATION, with a home of its own (routing file, logs and,
    for ``sqlite``, the stores)."""
    from fraudops.local.servers import free_port
    from serving.server import ServingProcess

    home = root / f"serve-{configuration}"
    env = {
        **QUIET,
        "FRAUDOPS_HOME": str(home),
        "FRAUDOPS_MLFLOW_TRACKING_URI": tracking_uri,
        "FRAUDOPS_MODEL_NAME": MODEL_NAME,
        "FRAUDOPS_ROUTING_PATH": str(home / "routing.yaml"),
        "FRAUDOPS_ADMIN_API_KEY": ADMIN_KEY,
    }
    production = configuration == "production"
    workers = _workers(configuration, args)
    port = free_port()
    with ExitStack() as stack:  # on the way out: the server stops, then its stores go
        if production:
            env |= stack.enter_context(_production_stores(args.postgres_url, args.redis_url))
        server = stack.enter_context(ServingProcess(home, port=port, workers=workers, env=env))
        stores = STORE_PROCESSES if production else ()
        yield Target(f"127.0.0.1:{port}", server.pid, workers=workers, stores=stores)


@contextmanager
def _production_stores(postgres_url: str, redis_url: str) -> Iterator[dict[str, str]]:
    """The settings (as docker-compose.yml names them) of a throw-away prediction log
    database and Redis key namespace, both removed on the way out, whatever happened."""
    from fraudops.local.servers import create_postgres_database, drop_postgres_database

    token = uuid.uuid4().hex[:12]
    namespace = f"bench-serving-{token}"
    database_url = create_postgres_database(postgres_url, f"bench_serving_{token}")
    try:
        yield {
            "FRAUDOPS_PREDICTION_LOG_URL": database_url,
            "FRAUDOPS_ONLINE_STORE_URL": redis_url,
            "FRAUDOPS_ONLINE_STORE_NAMESPACE": namespace,
        }
    finally:
        try:
            _delete_namespace(redis_url, namespace)
        finally:
            drop_postgres_database(database_url)


def _delete_namespace(url: str, namespace: str) -> None:
    """Delete the keys of NAMESPACE (the store's keys are ``namespace:kind:id``), no others."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        keys = list(client.scan_iter(match=f"{namespace}:*", count=10_000))
        for start in range(0, len(keys), 10_000):
            client.delete(*keys[start : start + 10_000])
    finally:
        client.close()


def _bench_fraudops(
    root: Path, tracking_uri: str, args: argparse.Namespace
) -> dict[str, dict[str, dict[str, Any]]]:
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {name: {} for name in args.configs}
    with ExitStack() as stack:
        targets = {
            name: stack.enter_context(_serving(root, tracking_uri, name, args))
            for name in args.configs
        }
        for target in targets.values():
            measure(target, 0, 3)  # warm up
        # Fixed-rate rounds first: a saturation run leaves queues behind it (shadow jobs, log
        # rows), and each run starts only once the server has worked through them.
        turns = itertools.product(
            (("fixed_500", FIXED_RATE), ("saturation", 0)),
            range(ROUNDS),
            SCENARIOS.items(),
            targets.items(),
        )
        for (label, rate), _, (scenario, routing), (name, target) in turns:
            _route(target, routing)
            _settle(target.url)
            run = measure(target, rate, args.duration / ROUNDS)
            runs[name].setdefault(f"{scenario}/{label}", []).append(run)
    results = {
        name: {key: summary(key_runs) for key, key_runs in by_key.items()}
        for name, by_key in runs.items()
    }
    for name, by_key in results.items():
        for key, result in by_key.items():
            scenario, label = key.split("/")
            print(f"{name:<10} {scenario:<10} {label:<11} {_line(result)}", flush=True)
    return results


def _route(target: Target, routing: dict[str, Any]) -> None:
    put = httpx.put(
        f"{target.url}/admin/routing", json=routing, headers={"X-API-Key": ADMIN_KEY}, timeout=10
    )
    put.raise_for_status()
    if target.workers > 1:
        time.sleep(1.5)  # other workers pick the routing file up within a second


def _settle(url: str, timeout: float = 60) -> None:
    """Wait until no shadow job and no log row is queued (the gauges update each second)."""
    queues = ("fraudops_shadow_queue_depth ", "fraudops_prediction_log_queue_depth ")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(1.1)
        lines = httpx.get(f"{url}/metrics", timeout=10).text.splitlines()
        depths = [float(line.split()[-1]) for line in lines if line.startswith(queues)]
        if len(depths) == len(queues) and not any(depths):
            return
    raise RuntimeError(f"the server's queues did not drain within {timeout} s")


def _bench_mlflow(
    tracking_uri: str, features: list[str], workers: int, seconds: float
) -> dict[str, Any]:
    from fraudops.local.servers import free_port

    port = free_port()
    bin_dir = str(Path(sys.executable).parent)
    env = {
        **os.environ,
        **QUIET,
        "MLFLOW_TRACKING_URI": tracking_uri,
        "PATH": f"{bin_dir}:{os.environ.get('PATH', '')}",
    }
    command = [
        f"{bin_dir}/mlflow",
        "models",
        "serve",
        "-m",
        f"models:/{MODEL_NAME}@champion",
        "--env-manager",
        "local",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(workers),
    ]
    process = subprocess.Popen(
        command,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        _wait_ready(f"http://127.0.0.1:{port}/ping", process, timeout=180)
        spec = json.dumps(features)
        target = Target(f"127.0.0.1:{port}", process.pid, "mlflow", "/invocations", spec, workers)
        measure(target, 0, 3)  # warm up
        # Saturation only: it cannot sustain the fixed 500 req/s.
        result = summary([measure(target, 0, seconds)])
        print(f"{'mlflow models serve':<21} {'saturation':<11} {_line(result)}", flush=True)
    finally:
        os.killpg(process.pid, 15)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, 9)
            process.wait()
    return result


def _line(result: dict[str, Any]) -> str:
    stores = "".join(
        f" + {name} {ms:.2f}" for name, ms in result["store_cpu_ms_per_request"].items()
    )
    return (
        f"{result['rps']:>8.1f} req/s  p50 {result['p50_ms']:>7.2f}  p95 {result['p95_ms']:>7.2f}"
        f"  p99 {result['p99_ms']:>7.2f} ms  cpu {result['server_cpu_ms_per_request']:.2f}"
        f"{stores} ms/req  {result['statuses']}"
    )


def bench_main(args: argparse.Namespace) -> None:
    os.environ.update(QUIET)
    # A SIGTERM (a timeout, a cancelled job) unwinds as an error does: the servers stop, and
    # the run's database and Redis keys are removed.
    signal.signal(signal.SIGTERM, lambda signum, _: sys.exit(128 + signum))
    with tempfile.TemporaryDirectory(prefix="bench-serving-") as folder:
        root = Path(folder)
        print("training and registering the models…", flush=True)
        tracking_uri, features = train_and_register(root)
        results = _bench_fraudops(root, tracking_uri, args)
        if not args.skip_mlflow:
            mlflow = _bench_mlflow(tracking_uri, features, args.workers, args.duration)
            results["mlflow"] = {"champion/saturation": mlflow}
    workers = {name: _workers(name, args) for name in args.configs}
    report: dict[str, Any] = {"workers": workers, "duration_s": args.duration}
    report |= {"cpus": os.cpu_count(), "results": results}
    report["ratios"] = {name: _ratios(results[name], results.get("mlflow")) for name in workers}
    print(json.dumps(report["ratios"], indent=2))
    _print_targets(report["ratios"])
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(report, indent=2) + "\n")
    print(f"→ {OUT}")


def _ratios(
    results: dict[str, dict[str, Any]], mlflow: dict[str, dict[str, Any]] | None
) -> dict[str, Any]:
    """One configuration's figures for the targets, and its CPU-efficiency ratios."""
    champion, shadow = results["champion/fixed_500"], results["shadow/fixed_500"]
    saturation = results["champion/saturation"]
    ratios: dict[str, Any] = {
        "saturation_rps": saturation["rps"],
        "p99_ms_at_500": champion["p99_ms"],
        "shadow_p50_increase_at_500": round(shadow["p50_ms"] / champion["p50_ms"] - 1, 3),
    }
    ratios["targets_met"] = {key: met(ratios[key]) for key, _, met in TARGETS}
    for name, result in results.items():
        ratios[f"{name}: requests per CPU-second"] = round(1000 / _cpu_ms(result))
    if mlflow:
        theirs = mlflow["champion/saturation"]
        ratios["throughput_vs_mlflow_serve"] = round(saturation["rps"] / theirs["rps"], 1)
        ratios["cpu_per_request_vs_mlflow_serve"] = round(_cpu_ms(theirs) / _cpu_ms(saturation), 1)
    return ratios


def _cpu_ms(result: dict[str, Any]) -> float:
    """CPU per request of the server and its stores: in-process SQLite is in the first."""
    return float(
        result["server_cpu_ms_per_request"] + sum(result["store_cpu_ms_per_request"].values())
    )


def _print_targets(ratios: dict[str, dict[str, Any]]) -> None:
    print(f"{'target':<42}" + "".join(f"{name:>20}" for name in ratios))
    for key, text, _ in TARGETS:
        cells = [
            f"{figures[key]:>12} {'met' if figures['targets_met'][key] else 'missed':>7}"
            for figures in ratios.values()
        ]
        print(f"{text:<42}" + "".join(cells))


def _configurations(text: str) -> list[str]:
    names = list(dict.fromkeys(name.strip() for name in text.split(",") if name.strip()))
    if not names or set(names) - set(CONFIGURATIONS):
        raise argparse.ArgumentTypeError(f"a comma-separated list of {', '.join(CONFIGURATIONS)}")
    return names


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command")
    add_arguments(
        sub.add_parser("drive", help="send load and print a JSON summary (load_driver.py)")
    )
    parser.add_argument("--duration", type=float, default=15.0, help="Seconds per measurement.")
    parser.add_argument(
        "--configs",
        type=_configurations,
        default=list(CONFIGURATIONS),
        help="Server configurations to measure, comma-separated (default: sqlite,production).",
    )
    parser.add_argument(
        "--workers", type=int, default=1, help="Worker processes of sqlite and mlflow serve."
    )
    parser.add_argument(
        "--postgres-url",
        default="postgresql+psycopg2://postgres@127.0.0.1:5432/postgres",
        help="A PostgreSQL server where the run may create (and then drops) a database.",
    )
    parser.add_argument(
        "--redis-url",
        default="redis://127.0.0.1:6379/0",
        help="The Redis database of the run's own key namespace (deleted at the end).",
    )
    parser.add_argument("--skip-mlflow", action="store_true")
    args = parser.parse_args()
    if args.command == "drive":
        drive_main(args)
    else:
        bench_main(args)


if __name__ == "__main__":
    main()
