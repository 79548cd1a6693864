"""``fraudops demo``: the whole loop on this machine, kept out of the checkout it starts from.

A demo writes what a real deployment writes: data versions (``data.dvc``), the pipeline's
lock (``dvc.lock``), a live routing policy, databases and logs. Written into the user's
checkout, that would leave tracked files changed and the next ``make test`` failing, and a
second demo would start from the first one's leftovers. So the demo runs in a git worktree of
its own, ``FRAUDOPS_HOME/demo`` on the branch ``fraudops-demo``, made afresh from ``HEAD`` each
time:

* each data version the demo creates (the generated data, then the traffic the drift
  retraining adds) is a commit on that branch, as DVC means data versions to be, and the
  worktree's DVC cache and remote (``dvc-remote/``, git-ignored) are its own;
* its runtime state (MLflow, Prefect, the prediction log, the online store, the live routing
  policy, logs) is the worktree's own ``.fraudops``, git-ignored, so any ``fraudops`` command
  run from the worktree finds it with the default settings.

The checkout's files stay as they are: the demo reads its ``HEAD`` and, if there is one,
its ``.env`` (copied into the worktree, where it is git-ignored too); git records the branch
and the worktree in ``.git``, not in the working tree.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import yaml
from rich.console import Console

from fraudops.config import Params, Settings, get_settings
from fraudops.data.versioning import data_version
from fraudops.experiments.routing import CHAMPION, RoutingConfig, ShadowPolicy

console = Console(stderr=True)

DEMO_BRANCH = "fraudops-demo"
#: Who the demo's data-version commits are by: a name of its own, and no hook or signing
#: step that could stop a demo half-way on a machine set up for someone's own commits.
_COMMIT_CONFIG = (
    "-c",
    "user.name=fraudops demo",
    "-c",
    "user.email=demo@fraudops.invalid",
    "-c",
    "commit.gpgsign=false",
)


#: Paths and commands printed as they are: never wrapped inside a path (so they can be
#: copied, and found in the output by a test), nor read as markup or highlighted.
_VERBATIM = {"soft_wrap": True, "markup": False, "highlight": False}


class DemoError(RuntimeError):
    """A step of the demo failed; the message says which and where to look."""


@dataclass(frozen=True)
class DemoOptions:
    """The knobs of one demo; the defaults are ``make demo``."""

    port: int = 8000
    drift_days: int = 8
    seconds_per_day: float = 2.0


@dataclass(frozen=True)
class Worktree:
    """The demo's own checkout: where it runs, the branch its data versions go on."""

    checkout: Path
    root: Path
    branch: str
    base: str

    @property
    def home(self) -> Path:
        """The demo's state: the worktree's default ``.fraudops``, git-ignored there."""
        return self.root / ".fraudops"


def _git(cwd: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        output = (done.stderr or done.stdout).strip()
        raise DemoError(f"`git {' '.join(args)}` failed in {cwd}: {output}")
    return done.stdout.strip()


def checkout_root(start: Path) -> Path:
    """The top of the git checkout holding START; the demo needs one to branch from."""
    try:
        return Path(_git(start, "rev-parse", "--show-toplevel"))
    except (DemoError, FileNotFoundError) as error:
        raise DemoError(
            f"the demo runs in a git worktree of this project, and {start} is not in a git "
            f"checkout: {error}"
        ) from error


def committed_params(checkout: Path, base: str) -> Params:
    """params.yaml as committed at BASE: the parameters the demo's worktree will hold."""
    return Params.model_validate(
        yaml.safe_load(_git(checkout, "show", f"{base}:params.yaml")) or {}
    )


def make_worktree(
    checkout: Path, path: Path, branch: str = DEMO_BRANCH, base: str | None = None
) -> Worktree:
    """A fresh worktree at PATH on BRANCH, reset to BASE (default: the checkout's HEAD).

    A previous demo's worktree there is removed first, state and all: every demo starts
    from the committed project, never from the last one's registry, log or routing.
    """
    base = base or _git(checkout, "rev-parse", "HEAD")
    path = path.resolve()
    listed = _git(checkout, "worktree", "list", "--porcelain").splitlines()
    if f"worktree {path}" in listed:
        _git(checkout, "worktree", "remove", "--force", str(path))
    shutil.rmtree(path, ignore_errors=True)
    _git(checkout, "worktree", "prune")
    path.parent.mkdir(parents=True, exist_ok=True)
    _git(checkout, "worktree", "add", "--quiet", "-B", branch, str(path), base)
    env_file = checkout / ".env"
    if env_file.is_file():  # the user's settings, as the checkout has them (ignored there too)
        shutil.copy2(env_file, path / ".env")
    return Worktree(checkout=checkout, root=path, branch=branch, base=base)


def commit_data_version(tree: Worktree, message: str, *paths: str) -> str | None:
    """Commit PATHS on the demo's branch with MESSAGE; the new commit, or None if unchanged."""
    _git(tree.root, "add", "--", *paths)
    staged = subprocess.run(
        ["git", "diff", "--cached", "--quiet"], cwd=tree.root, check=False
    ).returncode
    if staged == 0:
        return None
    _git(tree.root, *_COMMIT_CONFIG, "commit", "--quiet", "--no-verify", "-m", message)
    return _git(tree.root, "rev-parse", "--short", "HEAD")


def run_loop(options: DemoOptions) -> Worktree:
    """Run the demo in a fresh worktree of the current checkout; the worktree it used.

    Each step is the same ``fraudops`` command a user would type, run as a child process in
    the worktree against a local Prefect server and the served flows, so the demo shows
    nothing the commands cannot do on their own.
    """
    from fraudops.local.servers import PrefectServer

    settings = get_settings()
    checkout = checkout_root(Path.cwd())
    base = _git(checkout, "rev-parse", "HEAD")
    label_delay = committed_params(checkout, base).features.label_delay_days
    if options.drift_days <= label_delay:
        raise DemoError(
            f"--drift-days must be more than the label delay ({label_delay} days): retraining "
            "learns only from days whose labels have all arrived"
        )
    if _git(checkout, "status", "--porcelain", "--untracked-files=no"):
        console.print(
            f"[yellow]note[/]: the demo runs commit {base[:12]}; uncommitted changes in "
            f"{checkout} are not part of it"
        )
    tree = make_worktree(checkout, checkout / settings.home / "demo", base=base)
    console.print(f"demo worktree: {tree.root} (branch {tree.branch} at {base[:12]})", **_VERBATIM)

    bin_dir = Path(sys.executable).parent
    url = f"http://127.0.0.1:{options.port}"
    key = settings.admin_api_key.get_secret_value() if settings.admin_api_key else "demo-key"
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "FRAUDOPS_HOME": str(tree.home),
        "FRAUDOPS_ADMIN_API_KEY": key,
        "FRAUDOPS_SERVING_URL": url,
    }
    pace = ("--seconds-per-day", str(options.seconds_per_day))

    def run(*args: str) -> None:
        console.rule(" ".join(args))
        if subprocess.run(list(args), cwd=tree.root, env=env, check=False).returncode != 0:
            raise DemoError(f"`{' '.join(args)}` failed; see its output above")

    run("fraudops", "generate", "--overwrite")
    run("dvc", "repro")
    commit_data_version(
        tree,
        f"demo: data version {data_version(tree.root / 'data.dvc')} and its pipeline run",
        "data.dvc",
        "dvc.lock",
    )
    logs = tree.home / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    with PrefectServer(tree.home / "prefect", log_dir=logs) as prefect:
        env["PREFECT_API_URL"] = prefect.api_url
        console.print(f"Prefect UI: {prefect.url}")
        children = [
            subprocess.Popen(
                [sys.executable, "-m", "pipelines.deployments", "--only", "retraining"],
                cwd=tree.root,
                env=env,
                stdout=(logs / "deployments.log").open("w"),
                stderr=subprocess.STDOUT,
            )
        ]
        try:
            run("fraudops", "train")
            run("fraudops", "backfill")
            children.append(
                subprocess.Popen(
                    ["fraudops", "serve", "--port", str(options.port), "--log-level", "warning"],
                    cwd=tree.root,
                    env=env,
                )
            )
            wait_ready(url)
            # Monitoring runs once, after the last drifted day: by then the first day's labels
            # (posted once the label delay has passed) are in, so the retraining the drift
            # event starts has a matured day of traffic to learn from.
            run(
                "fraudops",
                "simulate-traffic",
                "--days",
                str(options.drift_days),
                "--scenario",
                "amount_shift",
                "--monitor-every",
                str(options.drift_days),
                *pace,
            )
            console.print(f"challenger version {wait_for_shadow(url)} is in shadow")
            commit_data_version(
                tree,
                f"demo: data version {data_version(tree.root / 'data.dvc')}, with the matured "
                "drift traffic retraining learnt from",
                "data.dvc",
            )
            route_ab_with_shadow(url, key)
            run("fraudops", "simulate-traffic", "--days", "1", "--no-drain-labels", *pace)
            run("fraudops", "report", "shadow")
            run("fraudops", "report", "ab")
        finally:
            for child in children:
                child.terminate()
                child.wait(timeout=60)
    console.rule("done")
    show_where(tree)
    return tree


def show_where(tree: Worktree) -> None:
    """Where the demo's data versions and state are, and the commands that open them."""
    demo_settings = Settings(home=tree.home)
    log = _git(tree.root, "log", "--oneline", f"{tree.base}..{tree.branch}")
    console.print(
        f"The demo ran in {tree.root}, a git worktree on branch {tree.branch}; "
        f"{tree.checkout} is as it was.\n"
        f"Data versions, committed on {tree.branch}:\n"
        + "".join(f"  {line}\n" for line in log.splitlines())
        + f"State (MLflow, Prefect, prediction log, live routing, logs): {tree.home}\n"
        f"Dashboards: cd {tree.root} && fraudops dashboards, then open http://127.0.0.1:8085\n"
        f"MLflow UI:  mlflow ui --backend-store-uri {demo_settings.tracking_uri}\n"
        f"Remove it:  git worktree remove --force {tree.root} && git branch -D {tree.branch}",
        **_VERBATIM,
    )


def wait_ready(url: str, timeout_s: float = 120) -> None:
    """Block until the scoring API answers /ready with 200."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise DemoError(f"the scoring API at {url} was not ready within {timeout_s:.0f} s")


def wait_for_shadow(url: str, timeout_s: float = 900) -> str:
    """Block until retraining has put a challenger in shadow; its version."""
    from fraudops.tracking.registry import CHALLENGER  # imports MLflow: only once the demo needs it

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        models = httpx.get(f"{url}/v1/models", timeout=5).json()
        shadow = (models["routing"]["configured"].get("shadow") or {}).get("alias")
        if shadow == CHALLENGER:
            return next(m["version"] for m in models["models"] if m["alias"] == CHALLENGER)
        time.sleep(5)
    raise DemoError(f"no challenger reached shadow within {timeout_s:.0f} s")


def route_ab_with_shadow(url: str, key: str) -> None:
    """Send a fifth of customers to the challenger and shadow it on the rest."""
    from fraudops.tracking.registry import CHALLENGER

    routing = RoutingConfig(
        mode="ab", weights={CHAMPION: 80, CHALLENGER: 20}, shadow=ShadowPolicy(alias=CHALLENGER)
    )
    response = httpx.put(
        f"{url}/admin/routing",
        headers={"X-API-Key": key},
        json=routing.model_dump(mode="json"),
        timeout=10,
    )
    if response.status_code != 200:
        raise DemoError(f"routing change refused: {response.status_code} {response.text}")
    console.print("routing: A/B champion 80 / challenger 20, challenger shadowing the rest")
