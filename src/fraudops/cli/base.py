"""The Typer app, its console, and the helpers every command group shares."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from fraudops.config import get_settings

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    help="The `fraudops` command: one entry point for every user action.",
)
console = Console(stderr=True)

DATA_DVC_FILE = Path("data.dvc")


@contextmanager
def progress_steps(total: int) -> Iterator[Callable[[str], None]]:
    """A progress bar over the named steps of a long command; call the result per step."""
    columns = (
        SpinnerColumn(),
        TextColumn("{task.description:<28}"),
        BarColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("", total=total)
        started = False

        def step(description: str) -> None:
            nonlocal started
            if started:
                progress.advance(task)
            started = True
            progress.update(task, description=description)

        yield step
        progress.update(task, completed=total, description="done")


def fail(message: str) -> typer.Exit:
    """Print MESSAGE as an error; raise the result to exit with status 1."""
    console.print(f"[bold red]error:[/] {message}")
    return typer.Exit(code=1)


PREFECT_STARTUP_TIMEOUT = "Timed out while attempting to connect to ephemeral Prefect API"


def use_prefect() -> None:
    """Point Prefect at the configured server and keep its results under FRAUDOPS_HOME.

    Prefect reads its settings once, at import, so this runs before a flow is imported.
    Without an API URL, Prefect runs flows against a temporary local server, given
    ``prefect_startup_timeout_s`` to start (``main`` explains a timeout).
    """
    settings = get_settings()
    if settings.prefect_api_url:
        os.environ.setdefault("PREFECT_API_URL", settings.prefect_api_url)
    os.environ.setdefault(
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", str(settings.prefect_startup_timeout_s)
    )
    results = (settings.home / "prefect-results").resolve()
    os.environ.setdefault("PREFECT_RESULTS_LOCAL_STORAGE_PATH", str(results))
    os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "fraudops")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def parse_tags(pairs: list[str]) -> dict[str, str]:
    tags = {}
    for pair in pairs:
        key, separator, value = pair.partition("=")
        if not separator or not key:
            raise fail(f"tag {pair!r} is not KEY=VALUE")
        tags[key] = value
    return tags


FEATURES_FILE = Path("data/features/features.parquet")


# Options of a window of the prediction log, shared by `report` and `monitor`.
MOMENT_FORMATS = ["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S"]
Since = Annotated[
    dt.datetime | None,
    typer.Option(formats=MOMENT_FORMATS, help="Window start (UTC, or transaction time)."),
]
Until = Annotated[
    dt.datetime | None, typer.Option(formats=MOMENT_FORMATS, help="Window end, exclusive.")
]
Last = Annotated[int | None, typer.Option(min=1, help="Only the newest N served predictions.")]
ByTransactionTime = Annotated[
    bool, typer.Option(help="Window on the transactions' own clock instead of logging time.")
]
LabelsBy = Annotated[
    dt.datetime | None,
    typer.Option(formats=MOMENT_FORMATS, help="Use labels received by then (default: now)."),
]
