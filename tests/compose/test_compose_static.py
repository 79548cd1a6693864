"""The compose file and the Dockerfile, checked without a Docker engine (seconds)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml
from compose_support import COMPOSE_FILE, OVERRIDE_FILE, REPO, compose_binary

SCHEMA = Path(__file__).with_name("compose-spec.json")
ONE_SHOT = {"bootstrap"}
SCALE_SERVICES = {"dask-scheduler", "dask-worker", "api-replica", "balancer"}
NGINX_CONF = REPO / "deploy" / "nginx" / "nginx.conf"


@pytest.fixture(scope="module")
def spec() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def _compose(
    *args: str, files: tuple[Path, ...] = (COMPOSE_FILE,), env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    command = [str(compose_binary()), "--project-directory", str(REPO)]
    for path in files:
        command += ["-f", str(path)]
    return subprocess.run([*command, *args], capture_output=True, text=True, env=env, check=False)


def _config_q(
    *files: Path, env: dict[str, str] | None = None, profiles: tuple[str, ...] = ()
) -> subprocess.CompletedProcess:
    options = [arg for profile in profiles for arg in ("--profile", profile)]
    return _compose(*options, "config", "-q", files=files, env=env)


def test_compose_file_matches_the_compose_spec_schema(spec: dict) -> None:
    schema = json.loads(SCHEMA.read_text())
    errors = [e.message for e in jsonschema.Draft7Validator(schema).iter_errors(spec)]
    assert errors == []
    assert "version" not in spec


@pytest.mark.parametrize("profiles", [(), ("scale",)], ids=["default", "scale"])
def test_compose_v2_accepts_the_file_and_the_test_override(profiles: tuple[str, ...]) -> None:
    alone = _config_q(COMPOSE_FILE, profiles=profiles)
    assert alone.returncode == 0, alone.stderr
    env = {
        "PATH": "/usr/bin:/bin",
        "BASE_IMAGE": "localhost/base:test",
        "FRAUDOPS_TEST_PARAMS": str(REPO / "params.yaml"),
    }
    both = _config_q(COMPOSE_FILE, OVERRIDE_FILE, env=env, profiles=profiles)
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
    # A variable passed through by name only (`KEY:` with no value) is read from .env too.
    variables |= {key for key, value in spec["x-fraudops-env"].items() if value is None}
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


# --- the `scale` profile -----------------------------------------------------------------


def _services(*profiles: str) -> set[str]:
    options = [arg for profile in profiles for arg in ("--profile", profile)]
    done = _compose(*options, "config", "--services")
    assert done.returncode == 0, done.stderr
    return set(done.stdout.split())


def _resolved(env: dict[str, str]) -> dict:
    """The file as Compose resolves it with the profile on, variables from ENV only."""
    done = _compose("--profile", "scale", "config", "--format", "json", env=env)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _port(command: list[str]) -> str:
    return command[command.index("--port") + 1]


def test_the_scale_profile_adds_its_services_and_leaves_the_default_stack_alone(
    spec: dict,
) -> None:
    unprofiled = {name for name, service in spec["services"].items() if "profiles" not in service}
    assert _services() == unprofiled
    assert _services("scale") == unprofiled | SCALE_SERVICES
    for name in SCALE_SERVICES:
        assert spec["services"][name]["profiles"] == ["scale"], name


def test_the_dask_address_reaches_the_containers_only_when_it_is_set() -> None:
    """Passed by name: unset stays unset (an empty value would be an address to refuse)."""
    path = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    address = "tcp://dask-scheduler:8786"
    unset = _resolved(path)["services"]
    given = _resolved({**path, "FRAUDOPS_DASK_ADDRESS": address})["services"]
    for service in ("bootstrap", "flows", "api-replica"):
        assert unset[service]["environment"]["FRAUDOPS_DASK_ADDRESS"] is None, service
        assert given[service]["environment"]["FRAUDOPS_DASK_ADDRESS"] == address, service


def test_dask_workers_join_the_scheduler_the_documented_address_names(spec: dict) -> None:
    scheduler, worker = spec["services"]["dask-scheduler"], spec["services"]["dask-worker"]
    address = f"tcp://dask-scheduler:{_port(scheduler['command'])}"
    assert worker["command"][:3] == ["dask", "worker", address]
    assert worker["deploy"]["replicas"] == "${DASK_WORKERS:-2}"
    assert worker["image"] == scheduler["image"] == spec["services"]["api"]["image"]
    assert f"# FRAUDOPS_DASK_ADDRESS={address}\n" in (REPO / ".env.example").read_text()


def test_api_replicas_serve_as_the_api_does_and_only_through_the_balancer(spec: dict) -> None:
    api, replica = spec["services"]["api"], spec["services"]["api-replica"]
    assert replica["image"] == api["image"] and "build" not in replica
    assert replica["command"][:-1] == api["command"][:-1]  # only the worker count differs
    for key in ("environment", "volumes", "healthcheck", "stop_grace_period"):
        assert replica[key] == api[key], key
    assert "ports" not in replica
    assert replica["deploy"]["replicas"] == "${API_REPLICAS:-2}"


# nginx's configuration, read as nginx reads it: directives end with `;` or open a block.
_Directive = tuple[str, list[str], list | None]


def _nginx_blocks(text: str) -> list[_Directive]:
    """The directives of an nginx file as (name, arguments, block or None); ValueError when
    a directive is not closed or a brace does not match."""
    tokens = re.findall(r"\"[^\"]*\"|'[^']*'|[{};]|[^\s{};\"']+", re.sub(r"#[^\n]*", "", text))
    block, end = _nginx_block(tokens, 0, inner=False)
    assert end == len(tokens)
    return block


def _nginx_block(tokens: list[str], at: int, inner: bool) -> tuple[list[_Directive], int]:
    block: list[_Directive] = []
    words: list[str] = []
    while at < len(tokens):
        token, at = tokens[at], at + 1
        if token == "}":
            if not inner or words:
                raise ValueError(f"unexpected '}}' after {words}")
            return block, at
        if token in ";{" and not words:
            raise ValueError(f"{token!r} without a directive")
        if token == ";":
            block.append((words[0], words[1:], None))
            words = []
        elif token == "{":
            children, at = _nginx_block(tokens, at, inner=True)
            block.append((words[0], words[1:], children))
            words = []
        else:
            words.append(token.strip("\"'"))
    if inner or words:
        raise ValueError(f"unclosed block or directive at the end: {words}")
    return block, at


def _nginx_find(block: list[_Directive], *path: str) -> list[list[str]]:
    """The arguments of every directive at PATH (block names, then the directive's name)."""
    first, *rest = path
    found = [(args, children) for name, args, children in block if name == first]
    if not rest:
        return [args for args, _ in found]
    return [hit for _, children in found for hit in _nginx_find(children or [], *rest)]


def test_the_balancer_is_official_nginx_in_front_of_every_replica(spec: dict) -> None:
    from fraudops.config import Settings

    balancer = spec["services"]["balancer"]
    assert re.fullmatch(r"nginx:\d+\.\d+(\.\d+)?-alpine", balancer["image"])
    assert "./deploy/nginx/nginx.conf:/etc/nginx/nginx.conf:ro" in balancer["volumes"]
    http = _nginx_blocks(NGINX_CONF.read_text())
    replica_port = _port(spec["services"]["api-replica"]["command"])
    ((upstream, *_),) = _nginx_find(http, "http", "upstream")
    assert [args[0] for args in _nginx_find(http, "http", "upstream", "server")] == [
        f"api-replica:{replica_port}"
    ]
    assert _nginx_find(http, "http", "server", "location", "proxy_pass") == [[f"http://{upstream}"]]
    (published,) = balancer["ports"]
    assert _nginx_find(http, "http", "server", "listen") == [[published.rsplit(":", 1)[1]]]
    # nginx lets an idle connection go before uvicorn would close it under nginx's feet.
    ((idle,),) = _nginx_find(http, "http", "upstream", "keepalive_timeout")
    assert float(idle.removesuffix("s")) < Settings.model_fields["serve_keepalive_s"].default
    # A POST is never sent to a second replica: a score is computed and logged once.
    ((*retried,),) = _nginx_find(http, "http", "server", "location", "proxy_next_upstream")
    assert "non_idempotent" not in retried
    with pytest.raises(ValueError):
        _nginx_blocks("http { server { listen 8080 } }")


@pytest.fixture(scope="module")
def nginx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An nginx binary: the machine's, or Debian's package unpacked (not installed: nothing
    is started or changed on the machine) in a temporary folder."""
    found = shutil.which("nginx")
    if found:
        return Path(found)
    if not (shutil.which("apt-get") and shutil.which("dpkg-deb")):
        pytest.skip("no nginx and no apt-get to fetch Debian's; the parsed checks stand")
    folder = tmp_path_factory.mktemp("nginx")
    fetched = subprocess.run(
        ["apt-get", "download", "nginx"], cwd=folder, capture_output=True, text=True, check=False
    )
    packages = sorted(folder.glob("nginx_*.deb"))
    if fetched.returncode != 0 or not packages:
        pytest.skip(f"Debian's nginx could not be fetched: {fetched.stderr[-500:]}")
    subprocess.run(["dpkg-deb", "-x", str(packages[0]), str(folder / "root")], check=True)
    return folder / "root" / "usr" / "sbin" / "nginx"


def _nginx_t(nginx: Path, text: str, folder: Path) -> subprocess.CompletedProcess:
    """`nginx -t` on TEXT, the replicas' name (known to the stack's DNS only) as 127.0.0.1
    and nginx's scratch folders under FOLDER rather than the system's."""
    kinds = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    scratch = "".join(f"{kind}_temp_path {folder / kind};\n" for kind in kinds)
    conf = folder / "nginx.conf"
    conf.write_text(
        text.replace("api-replica:", "127.0.0.1:").replace("http {", "http {\n" + scratch, 1)
    )
    pid = f"pid {folder / 'nginx.pid'};"
    return subprocess.run(
        [str(nginx), "-t", "-e", "stderr", "-p", str(folder), "-c", str(conf), "-g", pid],
        capture_output=True,
        text=True,
        check=False,
    )


def test_nginx_accepts_the_balancer_config(nginx: Path, tmp_path: Path) -> None:
    text = NGINX_CONF.read_text()
    done = _nginx_t(nginx, text, tmp_path)
    assert done.returncode == 0, done.stderr
    assert "test is successful" in done.stderr
    broken = _nginx_t(nginx, text.replace("keepalive 64;", "keepalive sixty-four;"), tmp_path)
    assert broken.returncode != 0
    assert "keepalive" in broken.stderr
