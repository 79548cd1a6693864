"""`docker compose up` at full size, with the defaults: how long until each step of the story.

Run as root from the repository root, after `make install` (it starts a Docker engine of its
own and stands in for the images it cannot pull, exactly as `tests/compose` does):

    .venv/bin/python benchmarks/bench_compose_story.py --minutes 45

The stack runs with the repository's own params.yaml (5,000 customers, 183 days, the 7-day
label delay) and every compose default (`.env.example`: 200 transactions a second, the
schedule none → amount_shift on replay day 7 → new_fraud_pattern on day 35). The script
only watches: the API's /ready, the registry's versions and their decision tags, and the
newest transaction time in the prediction log (the replay's simulated day). It prints, for
each step, the seconds after `up` and the replay day it happened on.

Baseline, measured in the same run: the traffic alone. From the prediction log, the seconds
the replay needed per simulated day while nothing else ran on top of it (between the API
being ready and the first retraining) give the time that scoring alone would take to reach
each step's replay day; the ratio says how much the rest of the loop (monitoring,
retraining, the experiment) added.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "compose"))
from compose_support import (  # tests/compose is not a package
    BASE_IMAGE,
    REPO,
    Engine,
    Stack,
    free_port,
    install_tools,
    missing_tools,
)

PORTS = ("API", "MLFLOW", "PREFECT", "EVIDENTLY", "PROMETHEUS", "GRAFANA")
MODEL = "fraud-detector"
TARGETS_S = {"api_ready": 180, "first_decision": 600}


class Watch:
    """What the stack shows at one moment: the API's readiness, versions, the replay's day."""

    def __init__(self, compose: Stack, urls: dict[str, str]) -> None:
        self.compose, self.urls = compose, urls
        self.first_day: dt.date | None = None

    def ready(self) -> bool:
        try:
            return httpx.get(f"{self.urls['API']}/ready", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def versions(self) -> dict[int, dict[str, str]]:
        """Each version of the model and its tags; empty while MLflow does not answer."""
        try:
            response = httpx.get(
                f"{self.urls['MLFLOW']}/api/2.0/mlflow/model-versions/search",
                params={"filter": f"name='{MODEL}'", "max_results": 100},
                timeout=30,
            )
            found = response.raise_for_status().json().get("model_versions", [])
        except (httpx.HTTPError, ValueError):
            return {}
        return {int(v["version"]): {t["key"]: t["value"] for t in v.get("tags", [])} for v in found}

    def replay_day(self) -> int | None:
        """The replay day of the newest logged transaction (0: the first replayed day)."""
        done = self.compose.run(
            "exec", "-T", "postgres", "psql", "-U", "fraudops", "-d", "fraudops", "-tAc",
            "SELECT min(tx_datetime)::date, max(tx_datetime)::date FROM predictions",
            check=False,
        )  # fmt: skip
        parts = done.stdout.strip().split("|")
        if done.returncode != 0 or len(parts) != 2 or not parts[1]:
            return None
        first, last = (dt.date.fromisoformat(part) for part in parts)
        self.first_day = self.first_day or first
        return (last - self.first_day).days


def watch_story(watch: Watch, started: float, minutes: float) -> dict[str, Any]:
    """Poll every 10 s until the second decision or the deadline; each step's time and day."""
    steps: dict[str, Any] = {}
    deadline = started + minutes * 60

    def seen(step: str, **extra: Any) -> None:
        if step not in steps:
            steps[step] = {"s": time.monotonic() - started, "day": watch.replay_day(), **extra}
            print(
                f"{steps[step]['s']:6.0f} s  day {steps[step]['day']}: {step} {extra}", flush=True
            )

    while time.monotonic() < deadline and "second_decision" not in steps:
        if "api_ready" not in steps and watch.ready():
            seen("api_ready")
        versions = watch.versions()
        for number, tags in sorted(versions.items()):
            if number < 2:
                continue
            order = "first" if number == 2 else "second"
            seen(f"{order}_retraining", version=number, signal=tags.get("fraudops.signal"))
            if "fraudops.decision" in tags and "fraudops.experiment.decided_because" in tags:
                seen(f"{order}_decision", version=number, decision=tags["fraudops.decision"])
        time.sleep(10)
    return steps


def traffic_baseline(steps: dict[str, Any]) -> float | None:
    """Seconds per replay day while only traffic ran: from API ready to the first retraining."""
    ready, retrained = steps.get("api_ready"), steps.get("first_retraining")
    if (
        not ready
        or not retrained
        or not retrained["day"]
        or retrained["day"] <= (ready["day"] or 0)
    ):
        return None
    return (retrained["s"] - ready["s"]) / (retrained["day"] - (ready["day"] or 0))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=45, help="give up after this long")
    args = parser.parse_args()
    if missing_tools():
        install_tools()
    urls = {name: f"http://127.0.0.1:{free_port()}" for name in PORTS}
    variables = {f"{name}_PORT": url.rsplit(":", 1)[1] for name, url in urls.items()}
    variables |= {"BASE_IMAGE": BASE_IMAGE, "FRAUDOPS_IMAGE": "localhost/fraudops:test"}
    variables["FRAUDOPS_TEST_PARAMS"] = str(REPO / "params.yaml")
    with Engine() as engine:
        engine.ensure_base_image()
        compose = Stack(engine, "fraudops-full", variables)
        compose.run("down", "--volumes", "--remove-orphans", "--timeout", "5")
        try:
            built = time.monotonic()
            compose.run("build")
            print(f"compose build: {time.monotonic() - built:.0f} s", flush=True)
            started = time.monotonic()
            compose.run("up", "--detach")
            steps = watch_story(Watch(compose, urls), started, args.minutes)
            if "second_decision" not in steps:
                print(compose.unhealthy_logs()[-6000:])
        finally:
            compose.run("down", "--volumes", "--remove-orphans", "--timeout", "10", check=False)
            engine.docker("image", "prune", "--force", check=False)
    per_day = traffic_baseline(steps)
    print("\nstep                      after up   replay day   traffic alone   ratio   target")
    for step, seen in steps.items():
        alone = per_day * seen["day"] + steps["api_ready"]["s"] if per_day and seen["day"] else None
        ratio = f"{seen['s'] / alone:5.2f}" if alone else "    -"
        target = TARGETS_S.get(step)
        verdict = "" if target is None else ("met" if seen["s"] <= target else "missed")
        print(
            f"{step:24} {seen['s']:7.0f} s   {seen['day']!s:>10}   "
            f"{(f'{alone:.0f} s' if alone else '-'):>13}   {ratio}   "
            f"{(f'<= {target} s {verdict}' if target else '')}"
        )
    if per_day:
        print(f"traffic alone: {per_day:.0f} s per simulated day")
    return 0 if "first_decision" in steps else 1


if __name__ == "__main__":
    sys.exit(main())
