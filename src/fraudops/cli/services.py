"""Commands that serve until stopped: the scoring API and the drift dashboards."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fraudops.cli.base import app, console, fail
from fraudops.config import get_settings, load_params


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes (one per core).")] = 1,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
) -> None:
    """Serve the scoring API (champion, A/B and shadow per routing.yaml) until stopped."""
    # Checked here: each worker reads it while uvicorn builds the app, where an error is a
    # traceback per worker.
    params_path = get_settings().params_path
    try:
        load_params(params_path)
    except FileNotFoundError:
        raise fail(
            f"{params_path} not found: run `fraudops serve` from the project root, "
            "or set FRAUDOPS_PARAMS_PATH"
        ) from None
    except (OSError, ValueError) as exc:
        raise fail(f"{params_path} cannot be used: {exc}") from None
    from serving.server import run

    run(host, port, workers, log_level)


@app.command()
def dashboards(
    workspace: Annotated[
        Path | None, typer.Option(help="Evidently workspace folder (default from settings).")
    ] = None,
    port: Annotated[int, typer.Option(help="TCP port of the UI.")] = 8085,
    host: Annotated[
        str, typer.Option(help="Interface to listen on (0.0.0.0 in a container).")
    ] = "127.0.0.1",
) -> None:
    """Create the monitoring dashboards if needed, then serve the Evidently UI until stopped."""
    import signal
    import sys
    import time

    from fraudops.features.definitions import feature_columns
    from fraudops.local.servers import ServerError
    from monitoring.workspace import EvidentlyUI, ensure_project, open_workspace

    settings = get_settings()
    path = workspace or settings.monitoring_workspace
    project = ensure_project(open_workspace(path), feature_columns(load_params().features))
    # SIGTERM must unwind like Ctrl-C, or the UI's process group outlives this command.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        with EvidentlyUI(path, log_dir=settings.home / "logs", port=port, host=host) as ui:
            typer.echo(f"dashboard: {ui.project_url(project)}")
            console.print("serving the Evidently UI; Ctrl-C stops it")
            while True:
                time.sleep(3600)
    except ServerError as exc:
        raise fail(str(exc)) from exc
    except KeyboardInterrupt:
        console.print("stopped")
