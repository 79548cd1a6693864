"""Usage telemetry off, for this process and every process it starts.

Several libraries of the stack report usage to their makers by default, each reading its
own switch with its own idea of a true value: MLflow 3 stays on with ``DO_NOT_TRACK=1``
(it accepts only ``true``) and never reads ``MLFLOW_ENABLE_TELEMETRY``; Evidently's UI is
off with ``DO_NOT_TRACK`` set to anything; Prefect's client takes ``1``/``true``/``yes``,
its server a setting of its own. ``fraudops/__init__`` calls ``switch_off`` on import, so
the values below reach the CLI, serving, the flows and, through the environment they
inherit, every server and tool those start (``mlflow server``, ``prefect server``,
``evidently ui``, ``dvc``). They are set, not defaulted: a stray ``DO_NOT_TRACK=1`` in a
user's shell would otherwise leave MLflow reporting.

``tests/e2e/test_offline.py`` proves the result: the main commands run in a network
namespace with loopback only, under ``strace``, and no DNS query or outside connection is
attempted.
"""

from __future__ import annotations

import os

TELEMETRY_OFF: dict[str, str] = {
    # The shared convention; "true" is the one value every reader here accepts.
    "DO_NOT_TRACK": "true",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DVC_NO_ANALYTICS": "1",
    # iterative-telemetry, the sender DVC and Evidently share: off when set at all.
    "ITERATIVE_DO_NOT_TRACK": "true",
    "NML_DISABLE_USAGE_LOGGING": "1",
}


def switch_off() -> None:
    """Set every library's own telemetry switch in this process's environment."""
    os.environ.update(TELEMETRY_OFF)
