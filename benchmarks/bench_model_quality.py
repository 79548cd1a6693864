"""Model quality on the default simulated data: the handbook's baseline beside ours, like for like.

Run from the repository root (about 2 minutes a seed on 2 quiet cores; an hour with
three seeds on 2 cores shared with other work):

    nice .venv/bin/python benchmarks/bench_model_quality.py --seeds 0 1 2

``--report benchmarks/out/model_quality.json`` reprints the tables of a saved run; the run
saves after every pair, so a run cut short still has every pair of its finished seeds.

One data set (``simulate(params.simulate)``), three feature sets over it, two models on each:

* features: the handbook's exact rolling windows with its 7-day label delay
  (``handbook_baseline.handbook_features``), the project's
  (``fraudops.features.definitions.build_features``, whatever the checkout defines), and the
  project's with the amount ratio of the customer's 30-day window added (the ablation of
  ``features.amount_ratio_windows_days``);
* models: the handbook's best Ch.5 model (XGBoost 50 trees, learning rate 0.3, depth 3, its
  pick for AP, with the XGBoost defaults it ran on), and the project's model, chosen by
  ``fraudops.modeling.candidates.select_model`` among the candidates of ``params.yaml``.

Every pair runs on the same splits (``fraudops.data.split``): the handbook's test week
2018-08-08..14 and its four prequential test weeks 08-08..09-04, known cards removed, and
is scored with ``fraudops.modeling.evaluation.ranking_metrics``. Selection sees only the
validation folds (assessed 07-04..07-31); `check_selection_is_blind` fails the run if a
validation day reaches a test week. Each test week is scored once per pair and seed, and
nothing is chosen from those scores. Beside them: the CP@100 ceilings of each test week
(``fraud_ceiling``). ``--search-handbook-grid`` re-runs the handbook's XGBoost grid on our
validation folds instead of taking its published pick (slow: about 10 minutes a feature set).
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from fraud_ceiling import ceilings, fraud_visibility
from handbook_baseline import HandbookXGBoost, handbook_features, select_handbook_model
from pydantic import ValidationError

import fraudops.data.split as split_module
import fraudops.features.definitions as definitions_module
from fraudops.config import FeatureParams, Params, TrainParams, load_params
from fraudops.data.schema import TX_FRAUD
from fraudops.data.simulate import simulate
from fraudops.data.split import (
    HANDBOOK_TEST_START,
    TimeSplit,
    final_split,
    prequential_splits,
    validation_splits,
)
from fraudops.features.definitions import build_features, feature_columns
from fraudops.modeling.candidates import fit, fraud_scores, select_model
from fraudops.modeling.evaluation import ranking_metrics

METRICS = ("roc_auc", "average_precision", "card_precision_at_100")
OUT = Path(__file__).parent / "out" / "model_quality.json"

#: The handbook's best Ch.5 model: XGBoost 50/.3/3, its validation pick for AP.
HANDBOOK_BEST = HandbookXGBoost(n_estimators=50, learning_rate=0.3, max_depth=3)
#: Its published prequential test result (Ch.6 baseline of that model), on its own data.
HANDBOOK_PUBLISHED_PREQUENTIAL = (0.872, 0.687, 0.302)
#: Its ceilings on its own data: a perfect ranking's CP@100, test week and prequential mean.
HANDBOOK_CEILINGS = (0.397, 0.419)

FEATURE_SETS: dict[str, str] = {
    "handbook": "handbook: exact windows, label age >= 7 d",
    "ours": "ours: build_features of the measured code",
    "ours+ratio": "ours + the amount over the customer's 30-day average",
}
#: The customer window of the ``ours+ratio`` set (``features.amount_ratio_windows_days``),
#: unless ``--ratio-windows`` names others.
AMOUNT_RATIO_WINDOWS = (30,)


@dataclass(frozen=True)
class Outcome:
    """One (features, model, seed): the model used and its metrics per test week, oldest first."""

    features: str
    model: str
    seed: int
    chosen: str
    per_week: list[dict[str, float]]


def check_selection_is_blind(validation: list[TimeSplit], tests: list[TimeSplit]) -> None:
    """Fail unless every validation fold, training and assessment, ends before any test day."""
    first_test = min(fold.test_start for fold in tests)
    last_seen = max(max(fold.test_end, fold.train_end) for fold in validation)
    if last_seen >= first_test:
        raise RuntimeError(f"selection sees {last_seen}, on or after test day {first_test}")


def prequential_test_weeks(frame: pl.DataFrame, params: TrainParams) -> list[TimeSplit]:
    """Handbook Ch.5 test folds, oldest first: the single test week, then three newer ones."""
    first = final_split(frame, params).train_start
    latest = first + dt.timedelta(days=(params.validation_folds - 1) * params.test_days)
    folds = prequential_splits(frame, latest, n_folds=params.validation_folds, params=params)
    return sorted(folds, key=lambda fold: fold.test_start)


def run_ours(
    frame: pl.DataFrame, features: list[str], params: TrainParams, weeks: list[TimeSplit]
) -> tuple[str, list[dict[str, float]]]:
    """`select_model` on the validation folds, then its winner refitted on each test fold."""
    selection = select_model(frame, features, params)
    per_week = []
    for week in weeks:
        model = (
            selection.model
            if week.train_start == selection.split.train_start
            else fit(
                selection.candidate, week.train, features, seed=params.seed, n_jobs=params.n_jobs
            )
        )
        per_week.append(ranking_metrics(week.test, fraud_scores(model, week.test, features)))
    return selection.candidate.name, per_week


def run_handbook(
    point: HandbookXGBoost, features: list[str], params: TrainParams, weeks: list[TimeSplit]
) -> tuple[str, list[dict[str, float]]]:
    """The handbook's model fitted on each test fold's training week."""
    per_week = []
    for week in weeks:
        model = point.fit(week.train, features, seed=params.seed, n_jobs=params.n_jobs)
        per_week.append(ranking_metrics(week.test, fraud_scores(model, week.test, features)))
    return point.name, per_week


def code_fingerprint() -> dict[str, str]:
    """Which feature and split code was measured: file hashes, and the git commit if any."""
    found = {
        Path(module.__file__).name: hashlib.sha256(Path(module.__file__).read_bytes()).hexdigest()[
            :12
        ]
        for module in (definitions_module, split_module)
        if module.__file__
    }
    root = Path(definitions_module.__file__ or ".").parents[3]
    git = subprocess.run(
        ["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    )
    dirty = subprocess.run(
        [
            "git",
            "-C",
            str(root),
            "status",
            "--porcelain",
            "--",
            "src/fraudops/features",
            "src/fraudops/data/split.py",
        ],
        capture_output=True,
        text=True,
    )
    if git.returncode == 0:
        found["commit"] = git.stdout.strip() + (" (modified)" if dirty.stdout.strip() else "")
    else:
        found["commit"] = f"not a git checkout: {root}"
    return found


def cell(values: list[float]) -> str:
    return f"{np.mean(values):.3f} ± {np.std(values):.3f}"


def summary(outcomes: list[Outcome], test_week: int) -> list[str]:
    """Markdown rows: test week (mean ± seed std) and prequential (mean ± fold std / seed std)."""
    lines = [
        "| features | model | test AUC | test AP | test CP@100 "
        "| preq. AUC | preq. AP | preq. CP@100 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    pairs = dict.fromkeys((o.features, o.model) for o in outcomes)
    for features, model in pairs:
        runs = [o for o in outcomes if (o.features, o.model) == (features, model)]
        test = [cell([run.per_week[test_week][m] for run in runs]) for m in METRICS]
        preq = []
        for m in METRICS:
            means = [np.mean([week[m] for week in run.per_week]) for run in runs]
            fold_std = np.mean([np.std([week[m] for week in run.per_week]) for run in runs])
            preq.append(f"{np.mean(means):.3f} ± {fold_std:.3f} / {np.std(means):.3f}")
        lines.append(f"| {FEATURE_SETS[features]} | {model} | {' | '.join(test + preq)} |")
    book = " | ".join(f"{v:.3f}" for v in HANDBOOK_PUBLISHED_PREQUENTIAL)
    lines.append(f"| published (handbook data) | {HANDBOOK_BEST.name} | | | | {book} |")
    return lines


def per_week_table(
    weeks: list[str], limits: list[dict[str, float]], outcomes: list[Outcome]
) -> list[str]:
    """Markdown rows per test week: its ceilings, then each pair's CP@100 (mean over seeds)."""
    pairs = list(dict.fromkeys((o.features, o.model) for o in outcomes))
    header = " | ".join(f"{features} features, {model} model CP@100" for features, model in pairs)
    lines = [
        "| test week | invisible share of frauds | ceiling, all frauds | ceiling, visible "
        f"| {header} |",
        "|---" * (4 + len(pairs)) + "|",
    ]
    for i, (week, limit) in enumerate(zip(weeks, limits, strict=True)):
        cps = [
            np.mean(
                [
                    o.per_week[i]["card_precision_at_100"]
                    for o in outcomes
                    if (o.features, o.model) == pair
                ]
            )
            for pair in pairs
        ]
        lines.append(
            f"| {week} | {limit['invisible_share']:.3f} "
            f"| {limit['all_frauds']:.3f} | {limit['visible_frauds']:.3f} | "
            + " | ".join(f"{cp:.3f}" for cp in cps)
            + " |"
        )
    means = {key: np.mean([limit[key] for limit in limits]) for key in limits[0]}
    lines.append(
        f"| mean | {means['invisible_share']:.3f} | {means['all_frauds']:.3f} "
        f"| {means['visible_frauds']:.3f} |" + " |" * len(pairs)
    )
    return lines


def report(outcomes: list[Outcome], outcome: Outcome, started: float) -> None:
    """Keep `outcome` and print it at once, so a long run shows its progress."""
    outcomes.append(outcome)
    test_week = [round(outcome.per_week[0][m], 4) for m in METRICS]
    weeks = [round(float(np.mean([w[m] for w in outcome.per_week])), 4) for m in METRICS]
    print(
        f"{outcome.features} features, {outcome.model} model, seed {outcome.seed}: "
        f"{outcome.chosen} ({time.perf_counter() - started:.0f} s), test week {test_week}, "
        f"prequential mean {weeks}",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--search-handbook-grid", action="store_true")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument(
        "--customers", type=int, help="a smaller population for a quick check (terminals: 2x)"
    )
    parser.add_argument("--report", type=Path, help="print the tables of a saved run and stop")
    parser.add_argument(
        "--feature-sets",
        nargs="+",
        choices=list(FEATURE_SETS),
        default=list(FEATURE_SETS),
        help="which to run (the handbook's always runs: the ceilings are read on its splits)",
    )
    parser.add_argument(
        "--ratio-windows",
        type=int,
        nargs="+",
        default=list(AMOUNT_RATIO_WINDOWS),
        help="the customer windows of the ours+ratio set",
    )
    args = parser.parse_args()
    if args.report:
        print_tables(json.loads(args.report.read_text()))
        return

    started = time.perf_counter()
    params: Params = load_params()
    base = params.train.model_copy(update={"test_start": HANDBOOK_TEST_START})
    simulate_params = params.simulate
    if args.customers:
        simulate_params = simulate_params.model_copy(
            update={"customers": args.customers, "terminals": 2 * args.customers}
        )
    raw = simulate(simulate_params)
    builders: dict[str, Callable[[pl.DataFrame, Any], pl.DataFrame]] = {
        "handbook": handbook_features,
        "ours": build_features,
        "ours+ratio": build_features,
    }
    feature_params = dict.fromkeys(builders, params.features)
    try:  # validated, so a window that is not a customer window is refused by name
        feature_params["ours+ratio"] = FeatureParams.model_validate(
            params.features.model_dump() | {"amount_ratio_windows_days": args.ratio_windows}
        )
    except ValidationError as error:
        parser.error(str(error.errors()[0]["msg"]))
    names = ["handbook", *(name for name in args.feature_sets if name != "handbook")]
    frames = {name: builders[name](raw, feature_params[name]) for name in names}
    columns = {name: feature_columns(feature_params[name]) for name in names}
    weeks = {name: prequential_test_weeks(frame, base) for name, frame in frames.items()}
    for name, frame in frames.items():
        check_selection_is_blind(validation_splits(frame, base), weeks[name])
    visibility = fraud_visibility(raw, params.features)
    limits = [ceilings(week, visibility) for week in weeks["handbook"]]
    fingerprint = code_fingerprint()
    print(
        f"data: {raw.height:,} tx, {int(raw[TX_FRAUD].sum()):,} frauds; code {fingerprint}; "
        f"test weeks {[str(w.test_start) for w in weeks['handbook']]}; seeds {args.seeds}"
    )

    points = {name: HANDBOOK_BEST for name in frames}
    if args.search_handbook_grid:
        for name, frame in frames.items():
            searched = select_handbook_model(frame, columns[name], base)
            points[name] = searched.winner
            print(f"handbook grid on {name} features: {searched.validation}")
    record = {
        "code": fingerprint,
        "seeds": args.seeds,
        "test_weeks": [f"{w.test_start}..{w.test_end}" for w in weeks["handbook"]],
        "ceilings": limits,
        "outcomes": [],
    }
    outcomes: list[Outcome] = []
    for seed in args.seeds:  # seed by seed, so a cut-short run still has every pair
        params_seed = base.model_copy(update={"seed": seed})
        for name, frame in frames.items():
            t0 = time.perf_counter()
            found = run_handbook(points[name], columns[name], params_seed, weeks[name])
            report(outcomes, Outcome(name, "handbook", seed, *found), t0)
            t0 = time.perf_counter()
            found = run_ours(frame, columns[name], params_seed, weeks[name])
            report(outcomes, Outcome(name, "ours", seed, *found), t0)
            record["outcomes"] = [o.__dict__ for o in outcomes]
            save(args.out, record | {"wall_s": time.perf_counter() - started})
    print_tables(record)
    print(f"\nwall time: {time.perf_counter() - started:.0f} s")


def save(path: Path, record: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1))


def print_tables(record: dict[str, Any]) -> None:
    """The two markdown tables of docs/model-quality.md, from a run's record."""
    outcomes = [Outcome(**outcome) for outcome in record["outcomes"]]
    print()
    print("\n".join(summary(outcomes, test_week=0)))
    print()
    print("\n".join(per_week_table(record["test_weeks"], record["ceilings"], outcomes)))


if __name__ == "__main__":
    main()
