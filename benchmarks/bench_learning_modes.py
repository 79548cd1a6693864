"""Learning modes through a drift, day by day: frozen vs full retrain vs warm start vs online.

    python benchmarks/bench_learning_modes.py [--seeds 0 1 2] [--customers 5000] [--jobs 2]

For each scenario (``amount_shift``, ``new_fraud_pattern``) and seed, the world is the
``none`` stream up to the change day and the scenario's stream from it (for one seed the
two share every draw up to their own change, ``fraudops.data.simulate``), with features
computed over the joined stream. Days from the simulation's start: 38 days of warm-up
(full 30-day windows), the first training week, the 7-day label delay, ``--pre-days``
served days before the change and ``--post-days`` after it.

Every mode starts from one model: XGBoost (100 trees of depth 3, as
``monitoring.scenarios`` trains it, instead of the full search, to stay quick) on the first
training week; the online learner starts by learning that week's labels. Each served day
``e`` is scored by every mode, and evaluated as the training flow evaluates a test period:
``time_split(frame, e - 14, 7, 7, 1)`` gives day ``e`` without the cards already known to be
compromised, and the training week a full retrain for day ``e`` uses. After each day:

* ``frozen`` keeps the first model (what drift does to a model nobody updates);
* ``full`` refits from scratch on the newest fully labelled week;
* ``warm_start`` adds ``learning.warm_start_rounds`` trees to its model on the newly
  labelled day (`fraudops.modeling.warm_start.continue_boosting`);
* ``online`` (`fraudops.modeling.online.OnlineLearner`) does not wait for the day's end:
  hour by hour it scores the hour's transactions, then learns, in steps of
  ``learning.online.snapshot_labels`` labels, every label that has become usable by the
  project's one label-timing rule, as serving's online shadow does.

Outputs under ``--out``: ``days.csv`` (one row per seed, scenario, mode and day: AP, card
precision@100, CPU seconds of that day's update), ``summary.md`` (the table printed at the
end) and the plot (``--plot``). "Days to recover" is read on the mean over seeds: the first
day after the change from which the trailing 3-day mean AP stays at or above 90 % of the
level the best mode holds over the last 7 days (what the new world allows).
"""

from __future__ import annotations

import argparse
import datetime as dt
import resource
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
from sklearn.metrics import average_precision_score
from xgboost import XGBClassifier

from fraudops.config import Params, Scenario, SimulateParams, load_params
from fraudops.data.schema import TRANSACTION_ID, TX_DATETIME, TX_FRAUD
from fraudops.data.simulate import simulate
from fraudops.data.split import TimeSplit, time_split
from fraudops.features.definitions import build_features, feature_columns
from fraudops.features.label_timing import label_timing
from fraudops.modeling.candidates import Candidate, fit, inputs
from fraudops.modeling.evaluation import card_precision_at_k, labels_and_cards
from fraudops.modeling.online import OnlineLearner
from fraudops.modeling.warm_start import continue_boosting

PROJECT = Path(__file__).resolve().parents[1]
SCENARIOS: tuple[Scenario, ...] = ("amount_shift", "new_fraud_pattern")
MODES = ("frozen", "full", "warm_start", "online")
WARM_UP_DAYS = 38
BATCH_MODEL = Candidate("xgboost", {"n_estimators": 100, "max_depth": 3, "learning_rate": 0.1})
START = dt.date(2018, 4, 1)
RECOVERY_SHARE = 0.9
TRAILING_DAYS = 3
STEADY_DAYS = 7
HOUR_US = 3_600_000_000


@dataclass(frozen=True)
class Plan:
    """One replay: which world, and the days it serves (offsets from ``START``)."""

    seed: int
    scenario: Scenario
    customers: int
    pre_days: int
    post_days: int

    @property
    def first_served(self) -> int:
        train = Params().train
        return WARM_UP_DAYS + train.train_days + train.delay_days

    @property
    def change(self) -> int:
        return self.first_served + self.pre_days

    @property
    def days(self) -> int:
        return self.change + self.post_days


def world(plan: Plan, params: Params) -> pl.DataFrame:
    """Features of the ``none`` stream before the change and the scenario's from it."""
    streams = {
        scenario: simulate(
            SimulateParams(
                customers=plan.customers,
                terminals=2 * plan.customers,
                days=plan.days,
                start=START,
                seed=plan.seed,
                scenario=scenario,
            )
        )
        for scenario in ("none", plan.scenario)
    }
    change = pl.lit(dt.datetime.combine(START + dt.timedelta(days=plan.change), dt.time()))
    before = streams["none"].filter(pl.col(TX_DATETIME) < change)
    after = streams[plan.scenario].filter(pl.col(TX_DATETIME) >= change)
    return build_features(pl.concat([before, after]), params.features)


class OnlineReplay:
    """The online learner fed as serving feeds it: labels in time order, once usable."""

    def __init__(self, frame: pl.DataFrame, params: Params) -> None:
        timing = label_timing(params.features)
        moment = pl.col(TX_DATETIME)
        ticks = frame.select(
            timing.tick_expr(moment).alias("tick"), timing.usable_tick_expr(moment).alias("usable")
        )
        self.tick = ticks["tick"].to_numpy()
        self.usable = ticks["usable"].to_numpy()
        self.x = inputs(frame, feature_columns(params.features))
        self.y = frame[TX_FRAUD].to_numpy()
        self.step = params.learning.online.snapshot_labels
        self.learner = OnlineLearner.new(params)
        self.learnt = 0  # rows (in time order) learnt so far

    def learn_until(self, tick: int) -> float:
        """Learn, a step at a time, the labels usable at TICK; the CPU seconds it took."""
        usable = int(np.searchsorted(self.usable, tick, side="right"))
        started = time.process_time()
        while usable - self.learnt >= self.step:
            end = self.learnt + self.step
            self.learner.learn(self.x[self.learnt : end], self.y[self.learnt : end])
            self.learnt = end
        return time.process_time() - started

    def serve_day(self, first_tick: int) -> tuple[np.ndarray, float]:
        """Scores of the day starting at FIRST_TICK, learning as its hours pass; CPU seconds."""
        rows = np.searchsorted(self.tick, [first_tick, first_tick + 24])
        scores = np.empty(rows[1] - rows[0])
        cpu = 0.0
        for hour in range(24):
            cpu += self.learn_until(first_tick + hour)
            lo, hi = np.searchsorted(self.tick, [first_tick + hour, first_tick + hour + 1])
            scores[lo - rows[0] : hi - rows[0]] = self.learner.scores(self.x[lo:hi])
        return scores, cpu


def _served_split(frame: pl.DataFrame, day: int) -> TimeSplit:
    """Day DAY (offset from START) as a one-day test period, and the week before the delay."""
    served = START + dt.timedelta(days=day)
    return time_split(
        frame, served - dt.timedelta(days=14), train_days=7, delay_days=7, test_days=1
    )


def _day_tick(day: int, params: Params) -> int:
    midnight = dt.datetime.combine(START + dt.timedelta(days=day), dt.time())
    return label_timing(params.features).tick(midnight)


def replay(plan: Plan) -> list[dict[str, object]]:
    """Every mode through every served day of PLAN's world: one row per mode and day."""
    params = load_params(PROJECT / "params.yaml")
    frame = world(plan, params).sort(TX_DATETIME, maintain_order=True)
    features, seed, k = feature_columns(params.features), params.train.seed, params.train.top_k
    first = _served_split(frame, plan.first_served)
    initial = fit(BATCH_MODEL, first.train, features, seed=seed, n_jobs=1)
    models: dict[str, XGBClassifier] = {mode: initial for mode in ("frozen", "full", "warm_start")}
    online = OnlineReplay(frame, params)
    # Warm-up days feed the features only, for the online learner as for the batch model.
    online.learnt = int(frame[TX_DATETIME].search_sorted(first.train[TX_DATETIME][0]))
    ids = frame[TRANSACTION_ID].to_numpy()
    rows: list[dict[str, object]] = []
    split = first
    for day in range(plan.first_served, plan.days):
        test = split.test
        tick = _day_tick(day, params)
        online_scores, online_cpu = online.serve_day(tick)
        lo, hi = np.searchsorted(online.tick, [tick, tick + 24])
        scores = {
            mode: model.predict_proba(inputs(test, features))[:, 1]
            for mode, model in models.items()
        }
        scores["online"] = online_scores[np.isin(ids[lo:hi], test[TRANSACTION_ID].to_numpy())]
        cpu = {"frozen": 0.0, "online": online_cpu, "full": 0.0, "warm_start": 0.0}
        if day + 1 < plan.days:
            split = _served_split(frame, day + 1)
            cpu["full"], cpu["warm_start"] = _update(models, split, features, params)
        for mode in MODES:
            rows.append(
                {
                    "seed": plan.seed,
                    "scenario": plan.scenario,
                    "mode": mode,
                    "day": day - plan.change,
                    **day_metrics(test, scores[mode], k),
                    "update_cpu_s": cpu[mode],
                }
            )
    return rows


def day_metrics(test: pl.DataFrame, scores: np.ndarray, k: int) -> dict[str, float | None]:
    """AP (None on a day without fraud, where it means nothing) and card precision@K."""
    y, cards, days = labels_and_cards(test)
    ap = float(average_precision_score(y, scores)) if y.any() else None
    return {
        "average_precision": ap,
        "card_precision_at_100": card_precision_at_k(y, scores, cards, days, k),
    }


def _update(
    models: dict[str, XGBClassifier], after: TimeSplit, features: list[str], params: Params
) -> tuple[float, float]:
    """The batch modes' end-of-day updates for the day AFTER serves; their CPU seconds."""
    seed = params.train.seed
    started = time.process_time()
    models["full"] = fit(BATCH_MODEL, after.train, features, seed=seed, n_jobs=1)
    full = time.process_time() - started
    newest = after.train.filter(pl.col(TX_DATETIME).dt.date() == after.train_end)
    started = time.process_time()
    models["warm_start"] = continue_boosting(
        models["warm_start"].get_booster(),
        BATCH_MODEL,
        newest,
        features,
        rounds=params.learning.warm_start_rounds,
        seed=seed,
        n_jobs=1,
    )
    return full, time.process_time() - started


# --- the summary --------------------------------------------------------------------------


def _mean_curves(days: pl.DataFrame) -> pl.DataFrame:
    """Per scenario, mode and day: the mean over seeds of each metric."""
    return (
        days.group_by("scenario", "mode", "day")
        .agg(pl.col("average_precision", "card_precision_at_100", "update_cpu_s").mean())
        .sort("scenario", "mode", "day")
    )


def days_to_recover(curves: pl.DataFrame, scenario: str, mode: str) -> int | None:
    """The first day after the change from which MODE's trailing AP stays near the best level."""
    post = curves.filter(pl.col("scenario") == scenario, pl.col("day") >= 0)
    last = post["day"].max()
    assert isinstance(last, int)
    steady = (
        post.filter(pl.col("day") > last - STEADY_DAYS)
        .group_by("mode")
        .agg(pl.col("average_precision").mean())
    )
    level = RECOVERY_SHARE * float(steady["average_precision"].max())  # type: ignore[arg-type]
    trailing = (
        post.filter(pl.col("mode") == mode)
        .sort("day")["average_precision"]
        .rolling_mean(TRAILING_DAYS, min_samples=1)
        .to_numpy()
    )
    below = np.flatnonzero(trailing < level)
    if len(below) == 0:
        return 0
    return None if below[-1] == len(trailing) - 1 else int(below[-1] + 1)


def summary(days: pl.DataFrame) -> pl.DataFrame:
    """One row per scenario and mode: AP before and in each week after, CP@100, recovery, CPU."""
    curves = _mean_curves(days)
    post_days = int(curves["day"].max()) + 1  # type: ignore[arg-type]
    weeks = [(start, min(start + 6, post_days - 1)) for start in range(0, post_days, 7)]
    rows = []
    for (scenario, mode), group in curves.group_by("scenario", "mode", maintain_order=True):
        day, ap, cp = pl.col("day"), group["average_precision"], group["card_precision_at_100"]
        row: dict[str, object] = {"scenario": scenario, "mode": mode}
        row["AP before"] = ap.filter(group["day"] < 0).mean()
        for first, last in weeks:
            row[f"AP days {first}-{last}"] = group.filter(day.is_between(first, last))[
                "average_precision"
            ].mean()
        row["CP@100 before"] = cp.filter(group["day"] < 0).mean()
        first, last = weeks[-1]
        row[f"CP@100 days {first}-{last}"] = group.filter(day.is_between(first, last))[
            "card_precision_at_100"
        ].mean()
        recovered = days_to_recover(curves, str(scenario), str(mode))
        row["days to recover"] = "never" if recovered is None else str(recovered)
        row["CPU s per day's update"] = group["update_cpu_s"].mean()
        rows.append(row)
    order = {mode: index for index, mode in enumerate(MODES)}
    table = pl.DataFrame(rows)
    return table.sort(pl.col("scenario"), pl.col("mode").replace_strict(order))


def markdown(table: pl.DataFrame) -> str:
    """TABLE as a pipe table, numbers to three places."""
    cells = [
        [f"{value:.3f}" if isinstance(value, float) else str(value) for value in row]
        for row in table.iter_rows()
    ]
    lines = ["| " + " | ".join(table.columns) + " |", "|" + "---|" * table.width]
    lines += ["| " + " | ".join(row) + " |" for row in cells]
    return "\n".join(lines)


def plot(days: pl.DataFrame, path: Path) -> None:
    """AP and card precision@100 per day, mean over seeds, one column per scenario."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = _mean_curves(days)
    scenarios = curves["scenario"].unique(maintain_order=True).to_list()
    metrics = {"average_precision": "AP", "card_precision_at_100": "card precision@100"}
    figure, axes = plt.subplots(
        len(metrics), len(scenarios), figsize=(6 * len(scenarios), 7), squeeze=False
    )
    for column, scenario in enumerate(scenarios):
        for row, (metric, label) in enumerate(metrics.items()):
            axis = axes[row][column]
            for mode in MODES:
                curve = curves.filter(pl.col("scenario") == scenario, pl.col("mode") == mode)
                axis.plot(curve["day"], curve[metric], label=mode, marker=".")
            axis.axvline(0, color="black", linestyle="--", linewidth=1)
            axis.axvline(8, color="grey", linestyle=":", linewidth=1)
            axis.set_title(f"{scenario}: {label}")
            axis.set_xlabel("day after the change (dotted: first day served after drifted labels)")
            axis.set_ylabel(label)
            axis.grid(alpha=0.3)
    axes[0][0].legend()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=80)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--customers", type=int, default=5000)
    parser.add_argument("--pre-days", type=int, default=7)
    parser.add_argument("--post-days", type=int, default=21)
    parser.add_argument("--jobs", type=int, default=2, help="replays run side by side")
    parser.add_argument("--out", type=Path, default=PROJECT / "benchmarks/out/learning-modes")
    parser.add_argument("--plot", type=Path, default=None, help="default: OUT/learning-modes.png")
    args = parser.parse_args()
    plans = [
        Plan(seed, scenario, args.customers, args.pre_days, args.post_days)
        for scenario in SCENARIOS
        for seed in args.seeds
    ]
    print(
        f"{len(plans)} replays: {args.customers:,} customers, {2 * args.customers:,} terminals, "
        f"{plans[0].days} simulated days each ({args.pre_days} served before the change, "
        f"{args.post_days} after), {args.jobs} at a time"
    )
    started, cpu = time.perf_counter(), time.process_time()
    if args.jobs > 1:
        with ProcessPoolExecutor(args.jobs) as pool:
            results = list(pool.map(replay, plans))
    else:
        results = [replay(plan) for plan in plans]
    days = pl.DataFrame([row for rows in results for row in rows])
    args.out.mkdir(parents=True, exist_ok=True)
    days.write_csv(args.out / "days.csv")
    table = markdown(summary(days))
    (args.out / "summary.md").write_text(table + "\n")
    plot(days, args.plot or args.out / "learning-modes.png")
    print(table)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    spent = time.process_time() - cpu + children.ru_utime + children.ru_stime
    print(f"wall {time.perf_counter() - started:.0f} s, CPU {spent:.0f} s; files in {args.out}")


if __name__ == "__main__":
    main()
