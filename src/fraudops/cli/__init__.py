"""The `fraudops` command: one entry point for every user action.

Commands live in one module per group (``prepare``, ``lifecycle``, ``services``,
``compare``, ``loop``, ``batch``) and register on the one Typer app of ``base``. Heavy modules
(Polars, MLflow, Prefect, FastAPI, Evidently) are imported inside each command, so
``fraudops --help`` answers at once.
"""

from __future__ import annotations

# Importing a group registers its commands; this order is the order of `fraudops --help`.
# isort: off
from fraudops.cli import prepare, lifecycle, services, compare, loop, batch  # noqa: F401

# isort: on
from fraudops.cli.base import PREFECT_STARTUP_TIMEOUT, app, console
from fraudops.config import get_settings

__all__ = ["app", "main"]


def main() -> None:
    """The ``fraudops`` command: the Typer app, with Prefect's startup timeout explained.

    Any flow can be the first to start Prefect's temporary server, and on a busy machine
    it may not answer in time; the user then needs the setting to change, not a traceback.
    """
    try:
        app()
    except RuntimeError as exc:
        if PREFECT_STARTUP_TIMEOUT not in str(exc):
            raise
        timeout = get_settings().prefect_startup_timeout_s
        console.print(
            f"[bold red]error:[/] Prefect's temporary server did not start within {timeout} s. "
            "Set FRAUDOPS_PREFECT_STARTUP_TIMEOUT_S higher, or start a server "
            "(`prefect server start`) and set FRAUDOPS_PREFECT_API_URL to its API URL."
        )
        raise SystemExit(1) from None
