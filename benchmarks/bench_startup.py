"""Start-up time: from `fraudops serve` being launched to its first scored transaction.

    .venv/bin/python benchmarks/bench_startup.py [--repeats 5]

A restarted replica is out of the pool until it scores, so this is the time an orchestrator
waits (and the time a crash costs). The model is the production-sized champion of
`bench_serving.py`, registered in a throw-away MLflow store and already in the server's disk
model cache (one serve before the timed ones fills it), as on any restart after the first.

The baseline, in the same run and interleaved with the timed serves: a bare FastAPI app with
one POST route under the same uvicorn (uvloop, httptools), which imports nothing of the
project. Its time is what Python, FastAPI and uvicorn cost before any of our code; the rest
of ours is our imports, the registry lookup and the model load.

Each measurement is a fresh process: launch, then POST a transaction every 50 ms until one
answers 200. Reported: the median and the spread over the repeats, and the ratio of the
medians. Results go to stdout and ``benchmarks/out/startup.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

import httpx
from bench_serving import MODEL_NAME, QUIET, train_and_register

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "out" / "startup.json"
BIN = Path(sys.executable).parent
TARGET_S = 8.0
TRANSACTION = {
    "transaction_id": 1,
    "timestamp": "2018-06-01T12:00:00",
    "customer_id": 7,
    "terminal_id": 11,
    "amount": 42.5,
}
BARE_APP = """
from fastapi import FastAPI

app = FastAPI()


@app.post("/v1/score")
async def score(transaction: dict) -> dict:
    return {"score": 0.0}
"""


def first_score_s(command: list[str], port: int, env: Mapping[str, str], log: Path) -> float:
    """Seconds from launching COMMAND (in the project root) to its first 200 on /v1/score."""
    url = f"http://127.0.0.1:{port}/v1/score"
    started = time.monotonic()
    with log.open("wb") as output:
        process = subprocess.Popen(
            command, env={**os.environ, **env}, cwd=ROOT, stdout=output, stderr=subprocess.STDOUT
        )
    try:
        while time.monotonic() - started < 120:
            if process.poll() is not None:
                raise RuntimeError(f"{command[0]} exited {process.returncode}: {log.read_text()}")
            try:
                if httpx.post(url, json=TRANSACTION, timeout=5).status_code == 200:
                    return time.monotonic() - started
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"{url} did not score within 120 s")
    finally:
        process.terminate()
        process.wait(timeout=60)


def serve_command(port: int) -> list[str]:
    return [str(BIN / "fraudops"), "serve", "--port", str(port), "--log-level", "warning"]


def bare_command(port: int, app_dir: Path) -> list[str]:
    return [
        str(BIN / "python"), "-m", "uvicorn", "bare_app:app", "--app-dir", str(app_dir),
        "--port", str(port),
        "--loop", "uvloop", "--http", "httptools", "--log-level", "warning",
    ]  # fmt: skip


def spread(samples: list[float]) -> dict[str, float]:
    return {
        "median_s": round(statistics.median(samples), 2),
        "min_s": round(min(samples), 2),
        "max_s": round(max(samples), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="Timed starts of each server.")
    args = parser.parse_args()
    from fraudops.local.servers import free_port

    os.environ.update(QUIET)
    with tempfile.TemporaryDirectory(prefix="bench-startup-") as folder:
        root = Path(folder)
        print("training and registering the champion…", flush=True)
        tracking_uri, _ = train_and_register(root, challenger=False)
        (root / "bare_app.py").write_text(BARE_APP)
        home = root / "serve-home"
        env = {
            "FRAUDOPS_HOME": str(home),
            "FRAUDOPS_MLFLOW_TRACKING_URI": tracking_uri,
            "FRAUDOPS_MODEL_NAME": MODEL_NAME,
        }
        log = root / "server.log"
        port = free_port()
        cached = first_score_s(serve_command(port), port, env, log)
        print(f"first serve (downloads into the disk cache): {cached:.2f} s", flush=True)
        samples: dict[str, list[float]] = {"fraudops serve": [], "bare uvicorn app": []}
        for _ in range(args.repeats):
            port = free_port()
            samples["fraudops serve"].append(first_score_s(serve_command(port), port, env, log))
            port = free_port()
            bare = first_score_s(bare_command(port, root), port, {}, log)
            samples["bare uvicorn app"].append(bare)
    report: dict[str, object] = {"cpus": os.cpu_count(), "repeats": args.repeats}
    report |= {name: spread(values) for name, values in samples.items()}
    ours = statistics.median(samples["fraudops serve"])
    bare = statistics.median(samples["bare uvicorn app"])
    report["ratio_vs_bare_uvicorn"] = round(ours / bare, 2)
    report["meets_target"] = ours < TARGET_S
    for name, values in samples.items():
        print(f"{name:<18} {spread(values)}")
    print(f"fraudops serve / bare uvicorn app: {ours / bare:.2f}x; target < {TARGET_S} s: "
          f"{'met' if ours < TARGET_S else 'NOT met'} ({ours:.2f} s)")  # fmt: skip
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(report, indent=2) + "\n")
    print(f"→ {OUT}")


if __name__ == "__main__":
    main()
