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
from collections.abc import Mapping
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


def users_environment(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """BASE (default: this environment) as on a user's machine: no marker of a test or CI."""
    env = os.environ if base is None else base
    return {key: value for key, value in env.items() if key not in _CI_MARKERS}


@dataclass(frozen=True)
class Attempts:
    """What a trace shows a run tried to reach."""

    outside: list[str]  # each ``host:port`` off loopback, or any DNS server
    dns_queries: int
    loopback: int  # connections it made on loopback: proof the trace saw the run at all

    @property
    def phoned_nobody(self) -> bool:
        return not self.outside and self.dns_queries == 0 and self.loopback > 0


@dataclass(frozen=True)
class Offline:
    """What an offline run printed, and what it tried to reach."""

    returncode: int
    output: str
    attempts: Attempts


def _is_loopback(host: str) -> bool:
    return host.startswith("127.") or host in {"::1", "::ffff:127.0.0.1"}


def offline_prefix(trace: Path) -> list[str]:
    """The argv prefix that runs a command offline, its attempts recorded in TRACE."""
    return ["unshare", "--net", "--", "sh", "-c", _SHELL, str(trace)]


def attempts(trace: Path) -> Attempts:
    """What TRACE (written by a command run under ``offline_prefix``) shows it tried."""
    outside, dns, loopback = set(), 0, 0
    text = trace.read_text() if trace.exists() else ""
    for line in text.splitlines():
        for pattern in (_INET, _INET6):
            for port, host in pattern.findall(line):
                dns += port == "53"
                if _is_loopback(host) and port != "53":
                    loopback += 1
                else:
                    outside.add(f"{host}:{port}")
    return Attempts(sorted(outside), dns, loopback)


def require_offline_tools() -> None:
    """Skip (or fail, where CI requires every service) without unshare/strace/root."""
    missing = [tool for tool in ("unshare", "strace", "ip") if shutil.which(tool) is None]
    probe = None if missing else subprocess.run(["unshare", "--net", "true"], capture_output=True)
    if probe is None or probe.returncode != 0:
        reason = probe.stderr.decode().strip() if probe else f"missing {missing}"
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
        [*offline_prefix(trace), *command],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
    )
    return Offline(done.returncode, done.stdout + done.stderr, attempts(trace))
