"""The compose file and the Dockerfile, checked without a Docker engine (seconds)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml
from compose_support import COMPOSE_FILE, OVERRIDE_FILE, REPO, compose_binary

SCHEMA = Path(__file__).with_name("compose-spec.json")
ONE_SHOT = {"bootstrap"}


@pytest.fixture(scope="module")
def spec() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def _config_q(*files: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    args = [str(compose_binary()), "--project-directory", str(REPO)]
    for path in files:
        args += ["-f", str(path)]
    return subprocess.run(
        [*args, "config", "-q"], capture_output=True, text=True, env=env, check=False
    )


def test_compose_file_matches_the_compose_spec_schema(spec: dict) -> None:
    schema = json.loads(SCHEMA.read_text())
    errors = [e.message for e in jsonschema.Draft7Validator(schema).iter_errors(spec)]
    assert errors == []
    assert "version" not in spec


def test_compose_v2_accepts_the_file_and_the_test_override() -> None:
    alone = _config_q(COMPOSE_FILE)
    assert alone.returncode == 0, alone.stderr
    env = {
        "PATH": "/usr/bin:/bin",
        "BASE_IMAGE": "localhost/base:test",
        "FRAUDOPS_TEST_PARAMS": str(REPO / "params.yaml"),
    }
    both = _config_q(COMPOSE_FILE, OVERRIDE_FILE, env=env)
    assert both.returncode == 0, both.stderr


def test_compose_v2_config_catches_what_the_schema_does_not(tmp_path: Path) -> None:
    """The check above can fail: a dependency on an undefined service is refused."""
    broken = tmp_path / "docker-compose.yml"
    spec = yaml.safe_load(COMPOSE_FILE.read_text())
    spec["services"]["api"]["depends_on"] = {"no-such-service": {"condition": "service_started"}}
    broken.write_text(yaml.safe_dump(spec))
    done = _config_q(broken)
    assert done.returncode != 0
    assert "no-such-service" in done.stderr


def test_every_long_running_service_is_health_checked_restarted_and_ordered(spec: dict) -> None:
    services = spec["services"]
    for name, service in services.items():
        assert "restart" in service, name
        if name not in ONE_SHOT:
            assert service.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
        for needed, how in service.get("depends_on", {}).items():
            expected = "service_completed_successfully" if needed in ONE_SHOT else "service_healthy"
            assert how["condition"] == expected, (name, needed)


def test_ports_are_published_on_loopback_only_and_overridable(spec: dict) -> None:
    published = [
        (name, port) for name, svc in spec["services"].items() for port in svc.get("ports", [])
    ]
    assert published
    for name, port in published:
        assert re.fullmatch(r"127\.0\.0\.1:\$\{[A-Z_]+_PORT:-\d+\}:\d+", port), (name, port)


def test_passwords_come_from_variables_documented_in_env_example(spec: dict) -> None:
    text = COMPOSE_FILE.read_text()
    variables = set(re.findall(r"\$\{([A-Z_]+)(?::?[-?][^}]*)?\}", text))
    example = (REPO / ".env.example").read_text()
    undocumented = sorted(v for v in variables if f"# {v}=" not in example)
    assert undocumented == []
    assert {"POSTGRES_PASSWORD", "REDIS_PASSWORD", "GRAFANA_ADMIN_PASSWORD"} <= variables


def test_hadolint_passes_on_the_dockerfile() -> None:
    hadolint = Path(sys.executable).with_name("hadolint")
    done = subprocess.run(
        [str(hadolint), str(REPO / "Dockerfile")], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_docker_build_context_leaves_state_and_secrets_out() -> None:
    ignored = (REPO / ".dockerignore").read_text().splitlines()
    assert "*" in ignored  # deny everything, then allow what the image needs
    for needed in ("requirements.lock", "params.yaml", "routing.yaml", "src/", "serving/"):
        assert f"!{needed}" in ignored, needed
    for kept_out in (".venv", ".git", ".fraudops", "data", "monitoring/workspace"):
        assert kept_out in ignored, kept_out
