"""Model selection on a Dask cluster: the candidate search on the workers, XGBoost refitted there.

The search is candidates by validation folds, each an independent fit. Each runs on a worker
as `fraudops.modeling.candidates.fold_scores` with ``n_jobs=1`` (one fit per worker thread),
and the ranking, winner and threshold come from the same `rank_candidates` as in one process.
The fits are seeded and give the same models whatever the thread count, so the `Selection`
is the same: winner and validation table equal, threshold equal or, for a random forest
winner, within a rounding step (its scores sum trees in the order threads finish them);
tests/integration/test_dask_training.py.

The fits are fanned out with ``client.submit`` inside the one "select model" step, not as
Prefect tasks on ``prefect_dask.DaskTaskRunner``: a task per fit would add Prefect's task
bookkeeping (a state round trip each) to some twenty fits of seconds, and the runner would
send every other step of the training flow (reads of local files, MLflow calls) to the
workers too.

The winner is refitted on the final training window: an XGBoost winner with
``xgboost.dask`` (data split across the workers, trees grown together), returned as an
``XGBClassifier`` around the trained booster so the rest of the code stores and serves it
as before; any other family with its usual fit on one worker. ``xgboost.dask`` merges
per-worker quantile sketches, so its split points, and its scores, differ slightly from one
process: docs/scaling.md states the measured difference. (``distributed`` has no type
hints: its calls carry ``type: ignore[no-untyped-call]``.)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl
from xgboost import XGBClassifier

from fraudops.config import Params, TrainParams
from fraudops.data.schema import TX_FRAUD
from fraudops.data.split import final_split, validation_splits
from fraudops.features.definitions import feature_columns
from fraudops.modeling import steps
from fraudops.modeling.candidates import (
    Candidate,
    Model,
    Selection,
    candidates,
    fit,
    fold_scores,
    inputs,
    make_model,
    rank_candidates,
)
from fraudops.scale.cluster import row_slices, worker_count

if TYPE_CHECKING:
    import dask.array as da
    from distributed import Client

#: Threads per fit on a worker: a worker runs as many fits at once as it has threads.
WORKER_N_JOBS = 1


def select(features: pl.DataFrame, params: Params, client: Client | None) -> Selection:
    """`fraudops.modeling.steps.select` on CLIENT's workers, or in this process without one."""
    if client is None:
        return steps.select(features, params)
    return select_model_on_dask(client, features, feature_columns(params.features), params.train)


def select_model_on_dask(
    client: Client, frame: pl.DataFrame, features: list[str], params: TrainParams
) -> Selection:
    """`fraudops.modeling.candidates.select_model` with every fit on CLIENT's workers."""
    folds = validation_splits(frame, params)
    found = candidates(params)
    sent = client.scatter(folds)  # type: ignore[no-untyped-call]
    pending = {
        candidate.name: [
            client.submit(
                fold_scores, candidate, fold, features, seed=params.seed, n_jobs=WORKER_N_JOBS
            )
            for fold in sent
        ]
        for candidate in found
    }
    scores: dict[str, list[np.ndarray]] = client.gather(pending)  # type: ignore[no-untyped-call]
    ranking = rank_candidates(folds, scores, found, params)
    split = final_split(frame, params)
    return Selection(
        model=refit_on_dask(client, ranking.winner, split.train, features, params),
        candidate=ranking.winner,
        split=split,
        validation=ranking.validation,
        threshold=ranking.threshold,
    )


def refit_on_dask(
    client: Client,
    candidate: Candidate,
    train: pl.DataFrame,
    features: list[str],
    params: TrainParams,
) -> Model:
    """CANDIDATE fitted on TRAIN: XGBoost across the workers, other families on one worker.

    The model comes back with ``params.n_jobs`` threads, as one process would have made it:
    the later steps score with it here.
    """
    if candidate.family == "xgboost":
        model: Model = fit_xgboost_on_dask(client, candidate, train, features, seed=params.seed)
    else:
        rows = client.scatter(train)  # type: ignore[no-untyped-call]
        done = client.submit(fit, candidate, rows, features, seed=params.seed, n_jobs=WORKER_N_JOBS)
        model = done.result()
    if "n_jobs" in model.get_params():
        model.set_params(n_jobs=params.n_jobs)
    return model


def fit_xgboost_on_dask(
    client: Client, candidate: Candidate, train: pl.DataFrame, features: list[str], *, seed: int
) -> XGBClassifier:
    """An XGBoost CANDIDATE trained by ``xgboost.dask``, one row slice per worker.

    The hyper-parameters, imbalance weight included, are those `make_model` gives the
    single-process fit.
    """
    from xgboost import dask as xgb_dask

    y = train[TX_FRAUD].to_numpy()
    settings: dict[str, Any] = make_model(
        candidate, y, seed=seed, n_jobs=WORKER_N_JOBS
    ).get_params()
    slices = row_slices(train.height, worker_count(client))
    x = _rows_on_workers(client, [inputs(train.slice(*part), features) for part in slices])
    labels = _rows_on_workers(client, [y[start : start + length] for start, length in slices])
    model = xgb_dask.DaskXGBClassifier(**settings)
    model.client = client
    # xgboost 2.1 looks up a current client even when one is given: a client made with
    # set_as_default=False (as `dask_client` makes it) must be made current for the fit.
    with client.as_current():
        model.fit(x, labels)
    trained = XGBClassifier(**settings)
    trained.load_model(bytearray(model.get_booster().save_raw("ubj")))
    return trained


def _rows_on_workers(client: Client, pieces: list[np.ndarray]) -> da.Array:
    """One dask array of PIECES stacked by row, each piece sent to a worker once.

    ``da.from_array`` would put the whole array in the task graph, through the scheduler.
    """
    import dask.array as da
    from dask.delayed import delayed

    sent = client.scatter(pieces)  # type: ignore[no-untyped-call]
    parts = [
        da.from_delayed(delayed(future), shape=piece.shape, dtype=piece.dtype)  # type: ignore[no-untyped-call]
        for future, piece in zip(sent, pieces, strict=True)
    ]
    stacked: da.Array = da.concatenate(parts)  # type: ignore[no-untyped-call]
    return stacked
