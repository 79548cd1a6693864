"""The demo's calls to the scoring API: readiness, the challenger in shadow, A/B routing.

Apart from ``demo`` because these are plain HTTP calls with deadlines, which a test that
starts its own API uses too.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx

from fraudops.experiments.routing import CHAMPION, RoutingConfig, ShadowPolicy
from fraudops.local.demo_worktree import DemoError


def wait_ready(url: str, timeout_s: float = 120, path: str = "/ready") -> None:
    """Block until URL answers PATH with 200 (the scoring API's readiness by default)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}{path}", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise DemoError(f"{url}{path} did not answer within {timeout_s:.0f} s")


def wait_for_shadow(url: str, check_running: Callable[[], None], timeout_s: float = 900) -> str:
    """Block until retraining has put a challenger in shadow; its version.

    CHECK_RUNNING raises when a service the retraining needs has died, ending the wait.
    """
    from fraudops.tracking.registry import CHALLENGER  # imports MLflow: only once the demo needs it

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        check_running()
        models = httpx.get(f"{url}/v1/models", timeout=5).json()
        shadow = (models["routing"]["configured"].get("shadow") or {}).get("alias")
        if shadow == CHALLENGER:
            version: str = next(m["version"] for m in models["models"] if m["alias"] == CHALLENGER)
            return version
        time.sleep(5)
    raise DemoError(f"no challenger reached shadow within {timeout_s:.0f} s")


def route_ab_with_shadow(url: str, key: str, challenger_share: int) -> int:
    """Send CHALLENGER_SHARE % of customers to the challenger and shadow it on the rest.

    Half and half is the quickest A/B for its sample size; the rest is still shadowed, so
    the shadow report compares both models on the same requests.
    """
    from fraudops.tracking.registry import CHALLENGER

    weights = {CHAMPION: 100 - challenger_share, CHALLENGER: challenger_share}
    routing = RoutingConfig(mode="ab", weights=weights, shadow=ShadowPolicy(alias=CHALLENGER))
    response = httpx.put(
        f"{url}/admin/routing",
        headers={"X-API-Key": key},
        json=routing.model_dump(mode="json"),
        timeout=10,
    )
    if response.status_code != 200:
        raise DemoError(f"routing change refused: {response.status_code} {response.text}")
    return challenger_share
