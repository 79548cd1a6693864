"""Serving latency and throughput: the real server against `mlflow models serve`.

    .venv/bin/python benchmarks/bench_serving.py [--duration 15] [--workers 1]

Trains one production-sized XGBoost model (the params.yaml family and size) and a second
one on a small simulated data set, registers them as champion and challenger in a
throw-away MLflow store, starts ``fraudops serve`` (real uvicorn) and measures, each at a
fixed 500 req/s and at saturation:

* champion only;  * shadow (challenger scores every request off the response path);
* A/B 50/50;      * A/B 50/50 with the challenger shadowing the champion's half.

The scenarios take turns in rounds (champion, shadow, A/B, A/B+shadow, then again), all
fixed-rate rounds before the saturation ones, and each scenario's latencies are pooled over
its rounds: the stores grow during the run and the machine's speed drifts, and a fixed
order would charge both to the later scenarios. Every run starts once the server's shadow
and log queues are empty, so none pays for the backlog of the one before.

Then, in the same run, ``mlflow models serve`` on the champion, which takes features
(not a raw transaction), computes nothing online and logs nothing: the ratio is a floor.

The load comes from another process (this script with ``drive``): raw HTTP/1.1 keep-alive
connections on uvloop, so the client takes little of the two cores (its CPU per request is
reported beside the server's). At a fixed rate each request has a scheduled send time and latency is
measured from it, so a stalled server shows up in the percentiles (no coordinated
omission). Server CPU per request comes from /proc.

Results go to stdout and ``benchmarks/out/serving.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from fraudops.telemetry import TELEMETRY_OFF

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "out" / "serving.json"
QUIET = {**TELEMETRY_OFF, "OMP_NUM_THREADS": "1"}
ADMIN_KEY = "bench-admin-key"
MODEL_NAME = "fraud-detector"
FIXED_RATE = 500
ROUNDS = 3
CONNECTIONS_FIXED = 16
CONNECTIONS_SATURATION = 32
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


# --- the load driver (runs in its own process) ---------------------------------------------


class _Template:
    """Request bytes with a fresh transaction id per request (the store dedups ids)."""

    def __init__(self, path: str, kind: str, features: list[str], seed: int) -> None:
        self.path = path
        self.kind = kind
        self.features = features
        self.rng = random.Random(seed)
        self.next_id = seed * 10_000_000

    def request(self) -> bytes:
        if self.kind == "mlflow":
            row = [self.rng.uniform(1, 200)] + [self.rng.random() for _ in self.features[1:]]
            body = json.dumps({"dataframe_split": {"columns": self.features, "data": [row]}})
        else:
            self.next_id += 1
            seconds = self.next_id % 86_400
            body = (
                f'{{"transaction_id":{self.next_id},'
                f'"timestamp":"2018-06-01T{seconds // 3600:02d}:{seconds // 60 % 60:02d}:'
                f'{seconds % 60:02d}","customer_id":{self.rng.randrange(5000)},'
                f'"terminal_id":{self.rng.randrange(10000)},'
                f'"amount":{self.rng.uniform(1, 200):.2f}}}'
            )
        data = body.encode()
        return (
            f"POST {self.path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\n\r\n"
        ).encode() + data


async def _exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
) -> int:
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    await reader.readexactly(length)
    return status


async def _drive(host: str, port: int, args: argparse.Namespace) -> dict[str, Any]:
    features = json.loads(args.features) if args.features else []
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    clock = time.perf_counter  # uvloop's loop.time() ticks in whole milliseconds
    start = clock() + 0.2
    end = start + args.duration
    slot = 0

    async def connection(seed: int) -> None:
        nonlocal slot
        template = _Template(args.path, args.kind, features, seed)
        reader, writer = await asyncio.open_connection(host, port)
        try:
            while True:
                if args.rate:
                    due = start + slot / args.rate
                    slot += 1
                    if due >= end:
                        return
                    delay = due - clock()
                    if delay > 0:
                        await asyncio.sleep(delay)
                else:
                    due = clock()
                    if due >= end:
                        return
                status = await _exchange(reader, writer, template.request())
                latencies.append(clock() - due)
                statuses[status] = statuses.get(status, 0) + 1
        finally:
            writer.close()

    cpu_before = time.process_time()
    await asyncio.gather(*(connection(seed + 1) for seed in range(args.connections)))
    return {
        "latencies_ms": [round(latency * 1000, 3) for latency in latencies],
        "statuses": statuses,
        "seconds": max(clock(), end) - start,
        "client_cpu_s": time.process_time() - cpu_before,
    }


def _summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Percentiles of all runs' latencies together; rates and CPU over all their time."""
    ms = np.concatenate([run["latencies_ms"] for run in runs])
    statuses: dict[str, int] = {}
    for run in runs:
        for code, count in run["statuses"].items():
            statuses[str(code)] = statuses.get(str(code), 0) + count
    seconds = sum(run["seconds"] for run in runs)
    return {
        "requests": int(ms.size),
        "rps": round(ms.size / seconds, 1),
        "p50_ms": round(float(np.percentile(ms, 50)), 2),
        "p95_ms": round(float(np.percentile(ms, 95)), 2),
        "p99_ms": round(float(np.percentile(ms, 99)), 2),
        "max_ms": round(float(ms.max()), 2),
        "statuses": dict(sorted(statuses.items())),
        "server_cpu_ms_per_request": round(
            sum(run["server_cpu_s"] for run in runs) * 1000 / max(ms.size, 1), 3
        ),
        "client_cpu_ms_per_request": round(
            sum(run["client_cpu_s"] for run in runs) * 1000 / max(ms.size, 1), 3
        ),
    }


def drive_main(args: argparse.Namespace) -> None:
    import uvloop

    host, port = args.target.split(":")
    print(json.dumps(uvloop.run(_drive(host, int(port), args))))


# --- processes -----------------------------------------------------------------------------


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of PID and its child processes (uvicorn workers), from /proc."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        own_pid = int(stat.parent.name)
        if own_pid == pid or int(fields[1]) == pid:
            total += (int(fields[11]) + int(fields[12])) / ticks
    return total


def _measure(
    target: str, server_pid: int, path: str, kind: str, rate: int, seconds: float, **extra: str
) -> dict[str, Any]:
    connections = CONNECTIONS_FIXED if rate else CONNECTIONS_SATURATION
    command = [
        sys.executable,
        __file__,
        "drive",
        target,
        "--path",
        path,
        "--kind",
        kind,
        "--rate",
        str(rate),
        "--duration",
        str(seconds),
        "--connections",
        str(connections),
        "--features",
        extra.get("features", ""),
    ]
    cpu_before = _cpu_seconds(server_pid)
    done = subprocess.run(
        command, capture_output=True, text=True, check=True, env={**os.environ, **QUIET}
    )
    result = json.loads(done.stdout)
    result["server_cpu_s"] = _cpu_seconds(server_pid) - cpu_before
    return result


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


def _bench_fraudops(
    root: Path, tracking_uri: str, workers: int, seconds: float
) -> dict[str, dict[str, Any]]:
    from fraudops.local.servers import free_port
    from serving.server import ServingProcess

    home = root / "serve-home"
    env = {
        **QUIET,
        "FRAUDOPS_HOME": str(home),
        "FRAUDOPS_MLFLOW_TRACKING_URI": tracking_uri,
        "FRAUDOPS_MODEL_NAME": MODEL_NAME,
        "FRAUDOPS_ROUTING_PATH": str(home / "routing.yaml"),
        "FRAUDOPS_ADMIN_API_KEY": ADMIN_KEY,
    }
    runs: dict[str, list[dict[str, Any]]] = {}
    port = free_port()
    with ServingProcess(root, port=port, workers=workers, env=env) as server:
        target = f"127.0.0.1:{port}"
        _measure(target, server.pid, "/v1/score", "fraudops", 0, 3)  # warm up
        # Fixed-rate rounds first: a saturation run leaves queues behind it (shadow jobs, log
        # rows), and each run starts only once the server has worked through them.
        for label, rate in (("fixed_500", FIXED_RATE), ("saturation", 0)):
            for _ in range(ROUNDS):
                for name, routing in SCENARIOS.items():
                    _route(server.url, routing, workers)
                    _settle(server.url)
                    run = _measure(
                        target, server.pid, "/v1/score", "fraudops", rate, seconds / ROUNDS
                    )
                    runs.setdefault(f"{name}/{label}", []).append(run)
    results = {key: _summary(scenario_runs) for key, scenario_runs in runs.items()}
    for key, result in results.items():
        name, label = key.split("/")
        print(f"fraudops {name:<10} {label:<11} {_line(result)}", flush=True)
    return results


def _route(url: str, routing: dict[str, Any], workers: int) -> None:
    put = httpx.put(
        f"{url}/admin/routing", json=routing, headers={"X-API-Key": ADMIN_KEY}, timeout=10
    )
    put.raise_for_status()
    if workers > 1:
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
) -> dict[str, dict[str, Any]]:
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
    results = {}
    process = subprocess.Popen(
        command,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        _wait_ready(f"http://127.0.0.1:{port}/ping", process, timeout=180)
        target = f"127.0.0.1:{port}"
        spec = json.dumps(features)
        _measure(target, process.pid, "/invocations", "mlflow", 0, 3, features=spec)
        # Saturation only: it cannot sustain the fixed 500 req/s.
        run = _measure(target, process.pid, "/invocations", "mlflow", 0, seconds, features=spec)
        result = results["mlflow/saturation"] = _summary([run])
        print(f"mlflow models serve  saturation  {_line(result)}", flush=True)
    finally:
        os.killpg(process.pid, 15)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, 9)
            process.wait()
    return results


def _line(result: dict[str, Any]) -> str:
    return (
        f"{result['rps']:>8.1f} req/s  p50 {result['p50_ms']:>7.2f}  p95 {result['p95_ms']:>7.2f}"
        f"  p99 {result['p99_ms']:>7.2f} ms  cpu {result['server_cpu_ms_per_request']:.2f} "
        f"ms/req  {result['statuses']}"
    )


def bench_main(args: argparse.Namespace) -> None:
    os.environ.update(QUIET)
    with tempfile.TemporaryDirectory(prefix="bench-serving-") as folder:
        root = Path(folder)
        print("training and registering the models…", flush=True)
        tracking_uri, features = train_and_register(root)
        results = _bench_fraudops(root, tracking_uri, args.workers, args.duration)
        if not args.skip_mlflow:
            results |= _bench_mlflow(tracking_uri, features, args.workers, args.duration)
    report = {"workers": args.workers, "duration_s": args.duration, "cpus": os.cpu_count()}
    report["results"] = results
    report["ratios"] = _ratios(results)
    print(json.dumps(report["ratios"], indent=2))
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(report, indent=2) + "\n")
    print(f"→ {OUT}")


def _ratios(results: dict[str, dict[str, Any]]) -> dict[str, float]:
    ratios = {}
    champion, shadow = results["champion/fixed_500"], results["shadow/fixed_500"]
    ratios["shadow_p50_increase_at_500"] = round(shadow["p50_ms"] / champion["p50_ms"] - 1, 3)
    for name, result in results.items():
        ratios[f"{name}: requests per CPU-second"] = round(
            1000 / result["server_cpu_ms_per_request"]
        )
    if "mlflow/saturation" in results:
        ours, theirs = results["champion/saturation"], results["mlflow/saturation"]
        ratios["throughput_vs_mlflow_serve"] = round(ours["rps"] / theirs["rps"], 1)
        ratios["cpu_per_request_vs_mlflow_serve"] = round(
            theirs["server_cpu_ms_per_request"] / ours["server_cpu_ms_per_request"], 1
        )
    return ratios


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command")
    drive = sub.add_parser("drive", help="(internal) send load and print a JSON summary")
    drive.add_argument("target", help="host:port")
    drive.add_argument("--path", default="/v1/score")
    drive.add_argument("--kind", choices=["fraudops", "mlflow"], default="fraudops")
    drive.add_argument("--rate", type=int, default=0, help="req/s; 0 means as fast as possible")
    drive.add_argument("--duration", type=float, default=10.0)
    drive.add_argument("--connections", type=int, default=16)
    drive.add_argument("--features", default="")
    parser.add_argument("--duration", type=float, default=15.0, help="Seconds per measurement.")
    parser.add_argument("--workers", type=int, default=1, help="Server worker processes.")
    parser.add_argument("--skip-mlflow", action="store_true")
    args = parser.parse_args()
    if args.command == "drive":
        drive_main(args)
    else:
        bench_main(args)


if __name__ == "__main__":
    main()
