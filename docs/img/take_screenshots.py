"""Take the pictures of the running system that the README tour and the docs show.

    python docs/img/take_screenshots.py                    # run the demo, then shoot into docs/img
    python docs/img/take_screenshots.py --worktree PATH    # shoot a finished demo's worktree
    python docs/img/take_screenshots.py --out DIR --dom-dir DIR   # elsewhere, DOM kept (tests)

A picture of a UI is only worth showing if it is the real UI on real state, so this runs
``fraudops demo`` (test pace: no wait per simulated day), then serves that demo's state with
the project's own server starters (``fraudops.local.servers``): MLflow on its registry,
Prefect on its flow-run database, the Evidently UI on its workspace and the scoring API. It
adds a few monitoring windows over the traffic the demo replayed, so the dashboard has a
series to draw rather than one point, and prints the shadow and A/B reports as a terminal
shows them. Headless Chromium (Debian's ``chromium``, installed here when missing; never a
browser download) driven by Playwright takes each page once its content has loaded, and
each PNG is reduced to a 256-colour palette so the committed pictures stay under 300 KB.

State stays where the demo puts it (the demo worktree's ``.fraudops``), never in tracked
files. Chromium starts with a fresh profile and the switches that keep it from calling
Google's services; the pages it opens are all on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import io
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from playwright.sync_api import Page, Route, sync_playwright
from playwright.sync_api import TimeoutError as PageTimeout

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
CHROMIUM = Path("/usr/bin/chromium")
#: Headless, and nothing that reaches past 127.0.0.1 on its own (updates, sync, QUIC probes).
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT = {"width": 1440, "height": 900}
MAX_PNG_BYTES = 300_000
#: Extra monitoring windows, and the days of replayed traffic each covers (from the first).
EXTRA_WINDOWS = 3
WINDOW_DAYS = 2
PAGE_TIMEOUT_MS = 90_000
#: How long to wait for a page to stop loading; MLflow's UI polls and never does.
IDLE_TIMEOUT_MS = 10_000
HOST = "127.0.0.1"
MLFLOW_ASSISTANT_CLOSE = 'button[aria-label="Close"]'
BIN = Path(sys.executable).parent


class ScreenshotError(RuntimeError):
    """A step failed; the message names the step and where its output is."""


@dataclass(frozen=True)
class Shot:
    """One picture: the page, the texts that prove it loaded, where to scroll, what to close.

    ``dismiss`` are selectors clicked when present (side panels that hide the page);
    ``scroll_to`` is a text brought to the top of the view; ``settle_ms`` lets charts draw.
    """

    name: str
    url: str
    ready: Sequence[str]
    scroll_to: str | None = None
    dismiss: Sequence[str] = ()
    settle_ms: int = 1500


# --- chromium ------------------------------------------------------------------------------


def ensure_chromium() -> None:
    """Install Debian's chromium when it is missing (as root, or through sudo)."""
    if CHROMIUM.exists():
        return
    prefix = [] if os.geteuid() == 0 else ["sudo", "-n"]
    if prefix and shutil.which("sudo") is None:
        raise ScreenshotError(
            f"{CHROMIUM} is missing; install it as root: apt-get install chromium"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = [*prefix, "apt-get", "install", "-y", "--no-install-recommends", "chromium"]
    print("installing chromium (apt-get)", flush=True)
    if subprocess.run(install, env=env, check=False).returncode != 0:
        _run_or_fail([*prefix, "apt-get", "update"], env, "apt-get update")
        _run_or_fail(install, env, "apt-get install chromium")


def _run_or_fail(args: list[str], env: dict[str, str], what: str) -> None:
    if subprocess.run(args, env=env, check=False).returncode != 0:
        raise ScreenshotError(f"`{what}` failed; see its output above")


# --- the demo and its state ----------------------------------------------------------------


def run_demo(checkout: Path) -> Path:
    """``fraudops demo`` at test pace from CHECKOUT; the worktree it ran in."""
    from fraudops.config import Settings
    from fraudops.local.servers import free_port

    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    env["PREFECT_RUNNER_POLL_FREQUENCY"] = "1"  # the drift-triggered retraining starts at once
    command = [str(BIN / "fraudops"), "demo", "--port", str(free_port()), "--seconds-per-day", "0"]
    print(f"running {' '.join(command[1:])} in {checkout}", flush=True)
    if subprocess.run(command, cwd=checkout, env=env, check=False).returncode != 0:
        raise ScreenshotError("`fraudops demo` failed; see its output above")
    home = Settings(_env_file=checkout / ".env").home  # type: ignore[call-arg]
    return checkout / home / "demo"


def use_worktree(worktree: Path) -> None:
    """Make WORKTREE's state this process's and its children's, as the demo left it."""
    from fraudops.config import get_settings

    if not (worktree / ".fraudops" / "mlflow.db").is_file():
        raise ScreenshotError(f"{worktree} holds no demo state (.fraudops/mlflow.db)")
    os.chdir(worktree)
    os.environ["FRAUDOPS_HOME"] = str(worktree / ".fraudops")
    os.environ["PATH"] = f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"
    get_settings.cache_clear()


@dataclass
class Stack:
    """The servers of one demo's state, each on a free port of 127.0.0.1."""

    mlflow_url: str
    prefect_url: str
    prefect_api_url: str
    evidently_url: str
    api_url: str


@contextlib.contextmanager
def serve_state(log_dir: Path) -> Iterator[Stack]:
    """MLflow, Prefect, the Evidently UI and the scoring API on the current state, started
    side by side (each takes 20-40 s to answer), all stopped on exit."""
    from fraudops.config import get_settings
    from fraudops.local.servers import MlflowServer, PrefectServer
    from monitoring.workspace import EvidentlyUI
    from serving.server import ServingProcess

    settings = get_settings()
    servers = {
        "mlflow": MlflowServer(settings.tracking_uri, settings.home / "mlartifacts", log_dir),
        "prefect": PrefectServer(settings.home / "prefect", log_dir),
        "evidently": EvidentlyUI(settings.monitoring_workspace, log_dir),
        "api": ServingProcess(log_dir),
    }
    with contextlib.ExitStack() as stack:
        for server in servers.values():
            stack.callback(server.stop)  # safe on a server that never started
        with ThreadPoolExecutor(len(servers)) as pool:
            for started in pool.map(lambda server: server.start(), servers.values()):
                print(f"{started.name} on {started.url}", flush=True)
        prefect = servers["prefect"]
        assert isinstance(prefect, PrefectServer)
        yield Stack(
            mlflow_url=servers["mlflow"].url,
            prefect_url=prefect.url,
            prefect_api_url=prefect.api_url,
            evidently_url=servers["evidently"].url,
            api_url=servers["api"].url,
        )


def add_monitoring_windows(prefect_api_url: str, count: int) -> int:
    """Monitor the replayed traffic in COUNT consecutive windows from its start; how many ran.

    The demo monitors once; a dashboard of one point shows no trend. These windows report
    to the Prefect server as flow runs and do not start retraining (``on_drift="none"``).
    They run here, one flow run each as ``fraudops monitor`` would make, so the monitoring
    libraries load once rather than once per window.
    """
    from fraudops.cli.base import use_prefect
    from fraudops.config import get_settings
    from fraudops.logs.journal import journal_dir, stored_days

    if "prefect" in sys.modules:  # it reads its settings once, at import
        raise ScreenshotError("Prefect was imported before its API URL was set")
    os.environ["PREFECT_API_URL"] = prefect_api_url
    use_prefect()
    from fraudops.tracking.registry import RegistryError
    from monitoring.analysis import MonitoringError
    from pipelines.monitoring_flow import ReferenceMissing, monitoring_flow

    days = stored_days(journal_dir(get_settings()))
    starts = days[: len(days) - WINDOW_DAYS + 1 : WINDOW_DAYS][:count]
    for start in starts:
        since = dt.datetime.combine(start, dt.time())
        until = since + dt.timedelta(days=WINDOW_DAYS)
        print(f"monitoring transactions from {since} to {until}", flush=True)
        try:
            outcome = monitoring_flow(
                since=since, until=until, by_transaction_time=True, on_drift="none"
            )
        except (MonitoringError, ReferenceMissing, RegistryError) as error:
            raise ScreenshotError(f"monitoring from {since} to {until} failed: {error}") from error
        print(f"window {outcome.decision.window_id}: {outcome.decision.signal}", flush=True)
    return len(starts)


# --- the CLI reports, as a terminal shows them ---------------------------------------------


def report_page(kind: str, out_dir: Path) -> Path:
    """``fraudops report KIND`` in colour, redrawn by rich as an SVG terminal in a page."""
    from rich.console import Console
    from rich.text import Text

    env = {**os.environ, "FORCE_COLOR": "1", "COLUMNS": "110", "TERM": "xterm-256color"}
    command = ["fraudops", "report", kind]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise ScreenshotError(f"`fraudops report {kind}` failed:\n{done.stdout}{done.stderr}")
    console = Console(record=True, width=110, file=io.StringIO(), force_terminal=True)
    console.print(f"$ fraudops report {kind}", style="bold")
    console.print(Text.from_ansi(done.stdout.rstrip()))
    svg = console.export_svg(title=f"fraudops report {kind}")
    page = out_dir / f"report-{kind}.html"
    page.write_text(f'<html><body style="margin:0;background:#fff">{svg}</body></html>')
    return page


# --- the pages -------------------------------------------------------------------------------


def shots(stack: Stack, pages_dir: Path) -> list[Shot]:
    """Every picture, with the text each page must show before it is taken."""
    from fraudops.config import get_settings
    from fraudops.tracking.registry import CHAMPION, configure_mlflow, version_by_alias
    from monitoring.workspace import PROJECT_NAME, open_workspace

    settings = get_settings()
    client = configure_mlflow(settings)
    champion = version_by_alias(client, settings.model_name, CHAMPION)
    if champion is None:
        raise ScreenshotError(f"the registry has no {CHAMPION} of {settings.model_name}")
    run = client.get_run(champion.run_id)
    run_url = f"{stack.mlflow_url}/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}"
    project = open_workspace(settings.monitoring_workspace).search_project(PROJECT_NAME)[0]
    evidently = f"{stack.evidently_url}/projects/{project.id}"
    return [
        Shot(
            "mlflow-run",
            run_url,
            ["average_precision", "Parameters ("],
            scroll_to="Metrics (",
            dismiss=[MLFLOW_ASSISTANT_CLOSE],
        ),
        Shot(
            "mlflow-plots",
            f"{run_url}/artifacts/plots/pr_curve.png",
            ["pr_curve.png", "roc_curve.png"],
            dismiss=[MLFLOW_ASSISTANT_CLOSE],
            settle_ms=3000,
        ),
        Shot(
            "mlflow-registry",
            f"{stack.mlflow_url}/#/models/{settings.model_name}",
            ["Aliases", CHAMPION],
            dismiss=[MLFLOW_ASSISTANT_CLOSE],
        ),
        Shot("prefect-flow-runs", f"{stack.prefect_url}/runs", ["monitoring", "Completed"]),
        Shot("prefect-automation", f"{stack.prefect_url}/automations", ["on-drift"]),
        Shot(
            "evidently-drift",
            evidently,
            ["Drift score per feature", "tx_amount"],
            scroll_to="Drift score per feature",
            settle_ms=4000,
        ),
        Shot(
            "evidently-performance",
            evidently,
            ["Recall: realised vs estimated"],
            scroll_to="Recall: realised vs estimated",
            settle_ms=4000,
        ),
        Shot("api-docs", f"{stack.api_url}/docs", ["/v1/score"]),
        Shot("report-shadow", report_page("shadow", pages_dir).as_uri(), ["Shadow"]),
        Shot("report-ab", report_page("ab", pages_dir).as_uri(), ["A/B"]),
    ]


def take(shot_list: Sequence[Shot], out: Path, dom_dir: Path | None) -> None:
    """Open each page in headless Chromium, wait for its content, save a palette PNG.

    Only 127.0.0.1 and local files are reached: any outside request is refused and named.
    """
    refused: list[str] = []
    with tempfile.TemporaryDirectory() as profile, sync_playwright() as playwright:
        browser = playwright.chromium.launch_persistent_context(
            profile,
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport=VIEWPORT,
        )
        try:
            browser.route("**/*", lambda route: _answer_locally(route, refused))
            page = browser.new_page()
            for shot in shot_list:
                _take_one(page, shot, out, dom_dir)
        finally:
            browser.close()
    for url in sorted(set(refused)):
        print(f"refused an outside request: {url}", flush=True)


def _answer_locally(route: Route, refused: list[str]) -> None:
    url = route.request.url
    parts = urlsplit(url)
    if parts.scheme in ("file", "data") or parts.hostname == HOST:
        route.continue_()
    else:
        refused.append(url)
        route.abort("blockedbyclient")


def _take_one(page: Page, shot: Shot, out: Path, dom_dir: Path | None) -> None:
    page.goto(shot.url, timeout=PAGE_TIMEOUT_MS)
    for text in shot.ready:
        try:
            page.get_by_text(text).first.wait_for(timeout=PAGE_TIMEOUT_MS)
        except PageTimeout as error:
            raise ScreenshotError(f"{shot.name}: {shot.url} never showed {text!r}") from error
    with contextlib.suppress(PageTimeout):  # some UIs poll forever; their content is there
        page.wait_for_load_state("networkidle", timeout=IDLE_TIMEOUT_MS)
    for selector in shot.dismiss:
        if page.locator(selector).count():
            page.locator(selector).first.click()
    if shot.scroll_to:
        page.get_by_text(shot.scroll_to).first.evaluate("e => e.scrollIntoView(true)")
    page.wait_for_timeout(shot.settle_ms)
    path = out / f"{shot.name}.png"
    save_png(page.screenshot(), path)
    if dom_dir is not None:
        (dom_dir / f"{shot.name}.html").write_text(page.content())
    print(f"{path} ({path.stat().st_size // 1000} KB)", flush=True)


def save_png(data: bytes, path: Path) -> None:
    """Write a screenshot as a 256-colour PNG: UIs are flat colours, so text stays sharp."""
    from PIL import Image

    image = Image.open(io.BytesIO(data)).convert("RGB")
    palette = image.quantize(colors=256, dither=Image.Dither.NONE)
    palette.save(path, optimize=True)
    if path.stat().st_size > MAX_PNG_BYTES:
        raise ScreenshotError(f"{path} is {path.stat().st_size:,} bytes, over {MAX_PNG_BYTES:,}")


# --- main ------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE, help="folder of the PNGs")
    parser.add_argument("--checkout", type=Path, default=ROOT, help="where to run the demo")
    parser.add_argument(
        "--worktree", type=Path, help="a finished demo's worktree: shoot it, run no demo"
    )
    parser.add_argument(
        "--windows", type=int, default=EXTRA_WINDOWS, help="extra monitoring windows to add"
    )
    parser.add_argument("--dom-dir", type=Path, help="also save each page's rendered DOM here")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    out = args.out.resolve()
    dom_dir = args.dom_dir.resolve() if args.dom_dir else None
    try:
        ensure_chromium()
        worktree = (args.worktree or run_demo(args.checkout.resolve())).resolve()
        use_worktree(worktree)
        out.mkdir(parents=True, exist_ok=True)
        if dom_dir is not None:
            dom_dir.mkdir(parents=True, exist_ok=True)
        logs = worktree / ".fraudops" / "logs" / "screenshots"
        with serve_state(logs) as stack, tempfile.TemporaryDirectory() as pages:
            added = add_monitoring_windows(stack.prefect_api_url, args.windows)
            print(f"{added} monitoring windows added", flush=True)
            take(shots(stack, Path(pages)), out, dom_dir)
    except ScreenshotError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
