"""Run a command where nothing can leave the machine, and list what it tried to reach.

The command runs in a fresh network namespace whose only interface is loopback, under
``strace -f`` recording every ``connect``/``sendto``/``sendmsg`` of it and its children.
A DNS query shows as a datagram to port 53 (the resolver's address is not on loopback, so
it fails at once instead of waiting); any other outside address shows as itself. Servers
the command starts live in the namespace too, so they must be started by the command.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

_INET = re.compile(r'sin_port=htons\((\d+)\), sin_addr=inet_addr\("([^"]+)"\)')
_INET6 = re.compile(r'sin6_port=htons\((\d+)\).*?inet_pton\(AF_INET6, "([^"]+)"')
_SHELL = (
    "ip link set lo up && exec strace -f --seccomp-bpf -qq -e signal=none "
    '-e trace=connect,sendto,sendmsg -o "$0" -- "$@"'
)


# Variables by which MLflow and Prefect guess they run under a test or CI and stay quiet
# on their own; a user's laptop has none, so an offline run drops them all.
_CI_MARKERS = {
    "PYTEST_CURRENT_TEST", "CI", "GITHUB_ACTIONS", "GITLAB_CI", "JENKINS_URL", "TRAVIS",
    "CIRCLECI", "BUILDKITE", "TF_BUILD", "CODEBUILD_BUILD_ID", "CODEBUILD_BUILD_ARN",
    "BITBUCKET_COMMIT", "BITBUCKET_BUILD_NUMBER", "TEAMCITY_VERSION", "DRONE", "SEMAPHORE",
    "APPVEYOR", "BUDDY", "CI_NAME", "CLOUD_RUN_EXECUTION", "RUNBOT_HOST_URL",
    "RUNBOT_BUILD_NAME", "RUNBOT_WORKER_ID",
}  # fmt: skip


def users_environment(**extra: str) -> dict[str, str]:
    """This environment as on a user's machine: without the markers of a test or CI."""
    env = {key: value for key, value in os.environ.items() if key not in _CI_MARKERS}
    return {**env, **extra}


@dataclass(frozen=True)
class Offline:
    """What an offline run printed, and each outside address it tried (``host:port``)."""

    returncode: int
    output: str
    outside: list[str]
    dns_queries: int


def _is_loopback(host: str) -> bool:
    return host.startswith("127.") or host in {"::1", "::ffff:127.0.0.1"}


def _reached(trace: str) -> tuple[list[str], int]:
    outside, dns = [], 0
    for line in trace.splitlines():
        for pattern in (_INET, _INET6):
            for port, host in pattern.findall(line):
                dns += port == "53"
                if not _is_loopback(host) or port == "53":
                    outside.append(f"{host}:{port}")
    return sorted(set(outside)), dns


def require_offline_tools() -> None:
    """Skip (or fail, where CI requires every service) without unshare/strace/root."""
    missing = [tool for tool in ("unshare", "strace", "ip") if shutil.which(tool) is None]
    probe = subprocess.run(["unshare", "--net", "true"], capture_output=True, check=False)
    if missing or probe.returncode != 0:
        reason = f"missing {missing}" if missing else probe.stderr.decode().strip()
        message = f"cannot run in a loopback-only network namespace: {reason}"
        if os.environ.get("FRAUDOPS_REQUIRE_SERVICES") == "1":
            pytest.fail(message)
        pytest.skip(message)


def run_offline(
    command: list[str], cwd: Path, env: dict[str, str], trace: Path, timeout: float = 900
) -> Offline:
    """Run COMMAND offline under strace; its output and what it tried to reach.

    ENV should come from ``users_environment``: under a test runner, libraries that
    detect one keep quiet by themselves and would hide a missing switch.
    """
    done = subprocess.run(
        ["unshare", "--net", "--", "sh", "-c", _SHELL, str(trace), *command],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
    )
    outside, dns = _reached(trace.read_text() if trace.exists() else "")
    return Offline(done.returncode, done.stdout + done.stderr, outside, dns)
