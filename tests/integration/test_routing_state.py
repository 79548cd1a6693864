"""The live routing policy is runtime state: saved under FRAUDOPS_HOME, never over the
tracked default (issue 11, item 4).

``PUT /admin/routing`` once rewrote ``routing.yaml`` in the checkout, dropping its comments
and leaving the checkout changed after a demo. Here a real server runs with the project's
own ``routing.yaml`` (copied, as its checkout holds it) as the default, and the test checks
that the default is followed until a live policy exists, that a live policy never touches
it, that the live one survives a restart, and that deleting it brings the default back.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
from serving_support import (
    LoggedModels,
    admin_headers,
    logged_models,
    register_versions,
    running_server,
    serving_env,
    unique_model_name,
)

from fraudops.experiments.routing import RoutingConfig, ShadowPolicy, load_routing

pytestmark = pytest.mark.slow  # servers and subprocesses: tens of seconds

SOURCE = Path(__file__).resolve().parents[2]
AB = RoutingConfig(mode="ab", weights={"champion": 3, "challenger": 1}, salt="state-test")
SHADOW = RoutingConfig(shadow=ShadowPolicy(alias="challenger"))


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> LoggedModels:
    return logged_models(tmp_path_factory.getbasetemp())


def client(url: str) -> httpx.Client:
    return httpx.Client(base_url=url, timeout=30)


def configured(api: httpx.Client) -> RoutingConfig:
    """The configured policy, salt included (shown to admins)."""
    view = api.get("/v1/models", headers=admin_headers()).json()
    return RoutingConfig.model_validate(view["routing"]["configured"])


def wait_for_policy(api: httpx.Client, policy: RoutingConfig, timeout_s: float = 15) -> None:
    """Workers look at the routing files once a second; give them a few."""
    deadline = time.monotonic() + timeout_s
    while configured(api) != policy:
        assert time.monotonic() < deadline, f"still {configured(api)}, not {policy}"
        time.sleep(0.2)


def test_admin_changes_go_to_the_state_directory_and_the_default_stays_as_committed(
    tmp_path: Path, models: LoggedModels
) -> None:
    name = unique_model_name()
    register_versions(models, name, 2)
    checkout, home = tmp_path / "checkout", tmp_path / "home"
    checkout.mkdir()
    default = checkout / "routing.yaml"
    default.write_bytes((SOURCE / "routing.yaml").read_bytes())
    env = serving_env(home, models, name, routing_path=str(default))
    live = home / "routing.yaml"

    with running_server(tmp_path / "logs-1", env) as server, client(server.url) as api:
        assert configured(api) == RoutingConfig()  # the shipped default: champion only

        # No live policy yet: an edit of the default is followed, as before.
        shipped = default.read_text()
        default.write_text(
            shipped.replace("mode: champion\n", "mode: champion\nshadow:\n  alias: challenger\n", 1)
        )
        wait_for_policy(api, SHADOW)
        edited = default.read_bytes()

        response = api.put(
            "/admin/routing", json=AB.model_dump(mode="json"), headers=admin_headers()
        )
        assert response.status_code == 200, response.text
        assert configured(api) == AB
        assert default.read_bytes() == edited  # comments and all: never written by serving
        assert load_routing(live) == AB
        assert sorted(p.name for p in checkout.iterdir()) == ["routing.yaml"]

    with running_server(tmp_path / "logs-2", env) as server, client(server.url) as api:
        assert configured(api) == AB  # the live policy survives a restart
        live.unlink()
        wait_for_policy(api, SHADOW)  # and without it, the default is in force again
    assert default.read_bytes() == edited
