"""Model quality on the default simulated data, beside the Fraud Detection Handbook's results.

Run from the repository root (about 10 minutes on 2 cores):

    .venv/bin/python benchmarks/bench_model_quality.py

Protocol as in the handbook: features over all days, train 2018-07-25..07-31, skip the
label-delay week, test 2018-08-08..08-14 with known-compromised cards removed. The
handbook's Ch.3 baselines are refitted on our data; our candidates are chosen by
`fraudops.modeling.candidates.select_model` on the validation folds only (07-04..07-31), then
scored on the test week and, as in handbook Ch.5, on four prequential test weeks
(training from 08-15 back to 07-25, tests 08-08..09-04).
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable

import numpy as np
import polars as pl
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.tree import DecisionTreeClassifier
from xgboost import XGBClassifier

from fraudops.config import Params, load_params
from fraudops.data.schema import TX_FRAUD
from fraudops.data.simulate import simulate
from fraudops.data.split import HANDBOOK_TEST_START, TimeSplit, final_split, prequential_splits
from fraudops.features.definitions import build_features, feature_columns
from fraudops.modeling.candidates import fit, fraud_scores, inputs, select_model
from fraudops.modeling.evaluation import ranking_metrics

METRICS = ("roc_auc", "average_precision", "card_precision_at_100")

#: Handbook Ch.3, single test week, on its published data: AUC ROC, AP, CP@100.
HANDBOOK_BASELINES = {
    "Decision tree, depth 2": (0.763, 0.496, 0.241),
    "Decision tree, unlimited": (0.788, 0.309, 0.243),
    "Logistic regression": (0.871, 0.606, 0.291),
    "Random forest (defaults)": (0.867, 0.658, 0.287),
    "XGBoost (defaults)": (0.862, 0.639, 0.273),
}
#: Handbook Ch.5/6 best, prequential test weeks (XGBoost 50/.3/3; balanced bagging CP@100).
HANDBOOK_BEST_PREQUENTIAL = (0.872, 0.687, 0.305)
#: Handbook ceilings: CP@100 of a perfect ranking on its test week and prequential weeks.
HANDBOOK_CEILINGS = (0.397, 0.419)


def baselines(seed: int, n_jobs: int) -> dict[str, Callable[[], object]]:
    """The handbook's Ch.3 models, library defaults otherwise, scaled inputs as it does."""
    return {
        "Decision tree, depth 2": lambda: DecisionTreeClassifier(max_depth=2, random_state=seed),
        "Decision tree, unlimited": lambda: DecisionTreeClassifier(random_state=seed),
        "Logistic regression": lambda: LogisticRegression(random_state=seed),
        "Random forest (defaults)": lambda: RandomForestClassifier(
            random_state=seed, n_jobs=n_jobs
        ),
        "XGBoost (defaults)": lambda: XGBClassifier(random_state=seed, n_jobs=n_jobs),
    }


def score_baseline(make: Callable[[], object], split: TimeSplit, features: list[str]) -> dict:
    model = make_pipeline(StandardScaler(), make())
    model.fit(inputs(split.train, features), split.train[TX_FRAUD].to_numpy())
    return ranking_metrics(split.test, fraud_scores(model, split.test, features))


def ceiling(split: TimeSplit) -> float:
    """CP@100 of a perfect ranking: the most any model can reach on this test period."""
    perfect = split.test[TX_FRAUD].to_numpy().astype(np.float64)
    return ranking_metrics(split.test, perfect)["card_precision_at_100"]


def row(name: str, ours: tuple[str, ...], handbook: tuple[float, ...] | None) -> str:
    book = [f"{v:.3f}" for v in handbook] if handbook else ["", "", ""]
    return f"| {name} | {' | '.join(ours)} | {' | '.join(book)} |"


def fmt(metrics: dict[str, float]) -> tuple[str, ...]:
    return tuple(f"{metrics[m]:.3f}" for m in METRICS)


def fmt_folds(per_fold: list[dict[str, float]]) -> tuple[str, ...]:
    return tuple(
        f"{np.mean([f[m] for f in per_fold]):.3f} ± {np.std([f[m] for f in per_fold]):.3f}"
        for m in METRICS
    )


def main() -> None:
    params: Params = load_params()
    train_params = params.train.model_copy(update={"test_start": HANDBOOK_TEST_START})
    features = feature_columns(params.features)
    started = time.perf_counter()
    frame = build_features(simulate(params.simulate), params.features)
    split = final_split(frame, train_params)
    print(
        f"data: {frame.height:,} tx, {int(frame[TX_FRAUD].sum()):,} frauds; "
        f"train {split.train_start}..{split.train_end}: {split.train.height:,} tx / "
        f"{int(split.train[TX_FRAUD].sum())} frauds; test {split.test_start}..{split.test_end}"
        f" after removal: {split.test.height:,} tx / {int(split.test[TX_FRAUD].sum())} frauds"
        f" ({time.perf_counter() - started:.0f} s)"
    )

    lines = [
        "| model | AUC ROC | AP | CP@100 | handbook AUC ROC | handbook AP | handbook CP@100 |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, make in baselines(train_params.seed, train_params.n_jobs).items():
        lines.append(
            row(name, fmt(score_baseline(make, split, features)), HANDBOOK_BASELINES[name])
        )

    started = time.perf_counter()
    selection = select_model(frame, features, train_params)
    selection_seconds = time.perf_counter() - started
    winner = selection.candidate
    selected = ranking_metrics(split.test, fraud_scores(selection.model, split.test, features))
    lines.append(row(f"Selected: {winner.name}", fmt(selected), None))

    # Handbook Ch.5: the oldest test fold is the single week above, newer ones follow it.
    latest = split.train_start + dt.timedelta(
        days=(train_params.validation_folds - 1) * train_params.test_days
    )
    test_folds = prequential_splits(
        frame, latest, n_folds=train_params.validation_folds, params=train_params
    )
    per_fold = []
    for fold in test_folds:
        model = fit(
            winner, fold.train, features, seed=train_params.seed, n_jobs=train_params.n_jobs
        )
        per_fold.append(ranking_metrics(fold.test, fraud_scores(model, fold.test, features)))
    lines.append(
        row("Selected, prequential test (4 weeks)", fmt_folds(per_fold), HANDBOOK_BEST_PREQUENTIAL)
    )
    fold_ceilings = [ceiling(fold) for fold in test_folds]
    lines.append(
        f"| Perfect ranking (ceiling), test week | | | {ceiling(split):.3f} | | |"
        f" {HANDBOOK_CEILINGS[0]:.3f} |"
    )
    lines.append(
        f"| Perfect ranking (ceiling), prequential | | | {np.mean(fold_ceilings):.3f} | | |"
        f" {HANDBOOK_CEILINGS[1]:.3f} |"
    )
    print("\n".join(lines))
    print(f"\nselection: {selection_seconds:.0f} s over {selection.validation.height} candidates")
    print(f"prequential test weeks: {[str(f.test_start) for f in test_folds]}")
    print(f"threshold (least cost on validation): {selection.threshold:.4f}")
    with pl.Config(tbl_rows=-1, tbl_cols=-1, tbl_width_chars=200, fmt_str_lengths=120):
        print(selection.validation.select("candidate", *METRICS))


if __name__ == "__main__":
    main()
