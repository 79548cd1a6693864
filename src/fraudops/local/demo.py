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

import contextlib
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict

from rich.console import Console

from fraudops.config import get_settings
from fraudops.data.versioning import data_version
from fraudops.local.demo_api import route_ab_with_shadow, wait_for_shadow, wait_ready
from fraudops.local.demo_processes import DemoProcesses
from fraudops.local.demo_story import (
    SUMMARY_FILE,
    Story,
    ab_facts,
    ab_lines,
    decision_facts,
    decision_lines,
    drift_facts,
    number,
    shadow_facts,
    shadow_lines,
    share,
    training_facts,
)
from fraudops.local.demo_worktree import (
    DemoError,
    Worktree,
    checkout_root,
    commit_data_version,
    committed_params,
    git_output,
    make_worktree,
    where_it_is,
    worktree_settings,
)
from fraudops.timestamps import naive_utc_now

console = Console(stderr=True)


class _PrintOptions(TypedDict):
    """Keyword options of ``Console.print``, typed so that ``**`` checks each one."""

    soft_wrap: bool
    markup: bool
    highlight: bool


#: Paths and commands printed as they are: never wrapped inside a path (so they can be
#: copied, and found in the output by a test), nor read as markup or highlighted.
_VERBATIM: _PrintOptions = {"soft_wrap": True, "markup": False, "highlight": False}


@dataclass(frozen=True)
class DemoOptions:
    """The knobs of one demo; the defaults are ``make demo``."""

    port: int = 8000
    drift_days: int = 8
    seconds_per_day: float = 2.0
    ab_days: int = 3  # first days of A/B traffic, before its plan is known
    ab_max_days: int = 10
    ab_share: int = 50  # percent of customers in the challenger's arm
    keep_running: bool = False


def run_loop(options: DemoOptions) -> Worktree:
    """Run the demo in a fresh worktree of the current checkout; the worktree it used.

    Each step is the same ``fraudops`` command a user would type, run as a child process in
    the worktree against a local Prefect server and the served flows, so the demo shows
    nothing the commands cannot do on their own. With ``keep_running`` the services stay
    up after the summary until Ctrl-C or SIGTERM.
    """
    settings = get_settings()
    checkout = checkout_root(Path.cwd())
    base = git_output(checkout, "rev-parse", "HEAD")
    label_delay = committed_params(checkout, base).features.label_delay_days
    if options.drift_days <= label_delay:
        raise DemoError(
            f"--drift-days must be more than the label delay ({label_delay} days): retraining "
            "learns only from days whose labels have all arrived"
        )
    if git_output(checkout, "status", "--porcelain", "--untracked-files=no"):
        console.print(
            f"[yellow]note[/]: the demo runs commit {base[:12]}; uncommitted changes in "
            f"{checkout} are not part of it"
        )
    tree = make_worktree(checkout, checkout / settings.home / "demo", base=base)
    console.print(f"demo worktree: {tree.root} (branch {tree.branch} at {base[:12]})", **_VERBATIM)
    key = settings.admin_api_key.get_secret_value() if settings.admin_api_key else "demo-key"
    _Demo(tree, options, key).run()
    return tree


class _Demo:
    """One run of the story in TREE: its child processes, its environment, what it saw."""

    def __init__(self, tree: Worktree, options: DemoOptions, key: str) -> None:
        self.tree = tree
        self.options = options
        self.key = key
        self.url = f"http://127.0.0.1:{options.port}"
        self.settings = worktree_settings(tree)
        self.logs = tree.home / "logs"
        self.reports = tree.home / "reports"
        bin_dir = Path(sys.executable).parent
        self.env = {
            **os.environ,
            "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
            "FRAUDOPS_HOME": str(tree.home),
            "FRAUDOPS_ADMIN_API_KEY": key,
            "FRAUDOPS_SERVING_URL": self.url,
            # The served flows look for triggered runs every second, not every 10 s.
            "PREFECT_RUNNER_POLL_FREQUENCY": os.environ.get("PREFECT_RUNNER_POLL_FREQUENCY", "1"),
        }
        self.pace = ("--seconds-per-day", str(options.seconds_per_day))
        self.story = Story()
        self.processes = DemoProcesses(tree.root, self.env, self.logs, console)
        self.servers = contextlib.ExitStack()

    def run(self) -> None:
        from fraudops.local.servers import PrefectServer

        self.prepare_data()
        self.logs.mkdir(parents=True, exist_ok=True)
        self.reports.mkdir(parents=True, exist_ok=True)
        with self.servers:
            prefect = self.servers.enter_context(
                PrefectServer(self.tree.home / "prefect", log_dir=self.logs)
            )
            self.env["PREFECT_API_URL"] = prefect.api_url
            console.print(f"Prefect UI: {prefect.url}")
            self.story.urls["Prefect UI (flow runs, the drift automation)"] = prefect.url
            try:
                self.processes.start(
                    [sys.executable, "-m", "pipelines.deployments", "--only", "retraining"],
                    "deployments",
                )
                self.train_and_serve()
                challenger = self.drift_and_retrain()
                since = self.ab_test()
                self.decide(challenger, since)
                self.tell()
                if self.options.keep_running:
                    self.stay_up()
            finally:
                self.processes.stop_all()

    # --- the stages ------------------------------------------------------------------------

    def prepare_data(self) -> None:
        self.processes.run("fraudops", "generate", "--overwrite")
        self.processes.run("dvc", "repro")
        version = data_version(self.tree.root / "data.dvc")
        commit = commit_data_version(
            self.tree, f"demo: data version {version} and its pipeline run", "data.dvc", "dvc.lock"
        )
        self.story.add(
            "data",
            [
                f"generated and versioned: {version} (commit {commit} on {self.tree.branch})"
                if commit
                else f"generated: {version}, the version committed in data.dvc; dvc repro "
                "reproduced the committed dvc.lock, so there was nothing to commit"
            ],
            data_version=version,
            commit=commit,
        )

    def train_and_serve(self) -> None:
        from fraudops.tracking.registry import CHAMPION, configure_mlflow, version_by_alias

        self.processes.run("fraudops", "train")
        self.processes.run("fraudops", "backfill")
        self.processes.start(
            ["fraudops", "serve", "--port", str(self.options.port), "--log-level", "warning"],
            "serve",
        )
        wait_ready(self.url)
        self.story.urls["scoring API (OpenAPI page)"] = f"{self.url}/docs"
        client = configure_mlflow(self.settings)
        champion = version_by_alias(client, self.settings.model_name, CHAMPION)
        if champion is None:
            raise DemoError("training registered no champion; see its output above")
        facts = training_facts(client, self.settings, str(champion.version))
        self.story.add(
            "champion",
            [
                f"version {facts['version']} trained on {facts['data_version']}: test average "
                f"precision {number(facts['average_precision'])}, ROC AUC "
                f"{number(facts['roc_auc'])}; served at {self.url}"
            ],
            **facts,
        )

    def drift_and_retrain(self) -> str:
        """Drifted traffic until monitoring sees it; the challenger its retraining shadows."""
        days = self.options.drift_days
        # Monitoring runs once, after the last drifted day: by then the first day's labels
        # (posted once the label delay has passed) are in, so the retraining the drift
        # event starts has a matured day of traffic to learn from.
        self.processes.run(
            "fraudops",
            "simulate-traffic",
            "--days",
            str(days),
            "--scenario",
            "amount_shift",
            "--monitor-every",
            str(days),
            *self.pace,
        )
        drift = drift_facts(self.settings.monitoring_reports_dir)
        self.story.add(
            "drift",
            [
                f"{days} days of amount_shift traffic; monitoring window {drift.get('window')}: "
                f"{drift['signal']}, drifted feature share {share(drift.get('drifted_share'))}",
                *drift.get("reasons", []),
            ],
            days=days,
            **drift,
        )
        challenger = wait_for_shadow(self.url, self.processes.check_running)
        console.print(f"challenger version {challenger} is in shadow")
        version = data_version(self.tree.root / "data.dvc")
        commit = commit_data_version(
            self.tree,
            f"demo: data version {version}, with the matured drift traffic retraining learnt from",
            "data.dvc",
        )
        from fraudops.tracking.registry import configure_mlflow

        facts = training_facts(configure_mlflow(self.settings), self.settings, challenger)
        self.story.add(
            "retraining",
            [
                f"the drift event retrained: challenger version {challenger} on {version} "
                f"(commit {commit}), test average precision "
                f"{number(facts['average_precision'])}; in shadow"
            ],
            commit=commit,
            **facts,
        )
        return challenger

    def ab_test(self) -> str:
        """A/B with the challenger shadowing the rest until the test's planned sample is in.

        The test is fixed-horizon: its sample size follows from the champion's rate, known
        only once some labels are in. So a first few days run, the report says how many
        labelled transactions per arm the plan needs, and the traffic goes on, at the rate
        seen, until it has them, if that fits in ``ab_max_days``; otherwise the report's
        NEED_MORE_DATA stands, with what the plan needs. Returns the window's start.
        """
        since = naive_utc_now().replace(microsecond=0).isoformat()
        share_of_challenger = route_ab_with_shadow(self.url, self.key, self.options.ab_share)
        console.print(
            f"routing: A/B champion {100 - share_of_challenger} / challenger "
            f"{share_of_challenger}, challenger shadowing the rest"
        )
        days = self.options.ab_days
        self.processes.run("fraudops", "simulate-traffic", "--days", str(days), *self.pace)
        ab = self.report_ab(since)
        while more := more_ab_days(ab, days, self.options.ab_max_days):
            console.print(f"the A/B plan needs {more} more days of labelled traffic")
            self.processes.run("fraudops", "simulate-traffic", "--days", str(more), *self.pace)
            days += more
            ab = self.report_ab(since)
        self.story.add(
            "A/B traffic",
            [
                f"{days} days, challenger arm {share_of_challenger}% of customers and shadowing "
                f"the rest; every label posted {self.label_delay} simulated days after its "
                "transaction"
            ],
            days=days,
            challenger_share=share_of_challenger,
        )
        return since

    def report_ab(self, since: str) -> dict[str, Any]:
        ab_json = self.reports / "ab.json"
        self.processes.run("fraudops", "report", "ab", "--since", since, "--json", str(ab_json))
        return ab_facts(ab_json)

    def decide(self, challenger: str, since: str) -> None:
        """The shadow and A/B reports on the A/B window, then the gate weighing them."""
        shadow_json, ab_json = self.reports / "shadow.json", self.reports / "ab.json"
        self.processes.run(
            "fraudops", "report", "shadow", "--since", since, "--json", str(shadow_json)
        )
        ab = ab_facts(ab_json)
        self.story.add("A/B report", ab_lines(ab), **ab)
        shadow = shadow_facts(shadow_json)
        self.story.add("shadow report", shadow_lines(shadow), **shadow)
        self.processes.run(
            "fraudops", "promote", "--ab-report", str(ab_json), "--shadow-report", str(shadow_json)
        )
        from fraudops.tracking.registry import configure_mlflow

        decision = decision_facts(configure_mlflow(self.settings), self.settings, challenger)
        self.story.add("decision", decision_lines(decision), **decision)

    def tell(self) -> None:
        """The summary, printed and written; the UIs started first when they stay up."""
        if self.options.keep_running:
            self.start_uis()
        self.story.running = self.options.keep_running
        self.story.show(console)
        console.print(where_it_is(self.tree), **_VERBATIM)
        self.story.write(self.tree.home / SUMMARY_FILE)

    def start_uis(self) -> None:
        from fraudops.local.servers import MlflowServer, free_port

        mlflow = self.servers.enter_context(
            MlflowServer(
                self.settings.tracking_uri, self.tree.home / "mlartifacts", log_dir=self.logs
            )
        )
        self.story.urls["MLflow UI (runs, the registry's aliases and decisions)"] = mlflow.url
        port = free_port()
        self.processes.start(["fraudops", "dashboards", "--port", str(port)], "dashboards")
        evidently = f"http://127.0.0.1:{port}"
        wait_ready(evidently, path="/api/version")
        self.story.urls["Evidently UI (monitoring windows)"] = evidently

    def stay_up(self) -> None:
        console.print("[green]the services stay up[/]; Ctrl-C stops them")
        try:
            while self.processes.all_running():
                time.sleep(1)
        except KeyboardInterrupt:
            console.print("stopping")
            return
        raise DemoError(f"a service of the demo stopped on its own; see the logs in {self.logs}")

    @property
    def label_delay(self) -> int:
        return committed_params(self.tree.checkout, self.tree.base).features.label_delay_days


def more_ab_days(ab: dict[str, Any], days: int, max_days: int) -> int:
    """Days of traffic the A/B plan still needs after DAYS, at the labelled rate seen so far.

    0 when the test has its verdict, when no sample can show the lift (the plan has
    comparisons but no size), or when the plan needs more than MAX_DAYS in all: running
    part of the way would only delay the demo, and the report says what the plan needs.
    While the floors of any verdict are not met, as many days again, up to MAX_DAYS.
    """
    if ab["recommendation"] != "need_more_data":
        return 0
    have, required = min(ab["labelled"].values()), ab["required_per_arm"]
    if not ab["planned"]:
        return max(0, min(days, max_days - days))
    if required is None or not have:
        return 0
    more = math.ceil(days * (required - have) / have)
    return more if days + more <= max_days else 0
