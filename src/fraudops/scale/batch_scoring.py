"""Batch scoring: every transaction of a data set through the registered champion.

Features come from `build_features` (or its Dask twin) and scores from
`fraudops.modeling.steps.score_frame`, as in training and evaluation; the decision is the
card's threshold rule serving applies (alert when the score reaches it). With a Dask client
the features and the scores are computed on its workers, in row slices; without one, here.
Either way the output is the same, value for value. (``distributed`` has no type hints:
its calls carry ``type: ignore[no-untyped-call]``.)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from fraudops.config import FeatureParams, Settings
from fraudops.data.schema import TRANSACTION_ID
from fraudops.features.definitions import build_features
from fraudops.modeling.steps import SCORE, ModelCard, NativeModel, score_frame
from fraudops.scale.cluster import row_slices, worker_count
from fraudops.tracking.logged_models import load_registered_model
from fraudops.tracking.registry import CHAMPION, configure_mlflow, version_by_alias

if TYPE_CHECKING:
    from distributed import Client

DECISION = "decision"
MODEL_NAME = "model_name"
MODEL_VERSION = "model_version"


@dataclass(frozen=True)
class Champion:
    """The registered version the alias ``champion`` pointed to when it was loaded."""

    name: str
    version: str
    model: NativeModel
    card: ModelCard


def load_champion(settings: Settings) -> Champion:
    """The champion of ``settings.model_name``, downloaded under the model cache."""
    client = configure_mlflow(settings)
    version = version_by_alias(client, settings.model_name, CHAMPION)
    if version is None:
        raise LookupError(f"model {settings.model_name!r} has no {CHAMPION} version")
    number = str(version.version)
    folder = settings.model_cache / "batch" / settings.model_name / number
    model, card = load_registered_model(f"models:/{settings.model_name}/{number}", folder)
    return Champion(settings.model_name, number, model, card)


def score_batch(
    raw: pl.DataFrame, champion: Champion, params: FeatureParams, client: Client | None = None
) -> pl.DataFrame:
    """transaction_id, score, decision and the model of every row of RAW, by transaction_id."""
    if client is None:
        features = build_features(raw, params)
        _check_inputs(features, champion.card)
        scores = score_frame(champion.model, champion.card, features)
    else:
        from fraudops.scale.dask_features import build_features_on_dask

        features = build_features_on_dask(client, raw, params)
        _check_inputs(features, champion.card)
        scores = _score_on_dask(client, champion, features)
    return pl.DataFrame(
        {
            TRANSACTION_ID: features[TRANSACTION_ID],
            SCORE: pl.Series(scores, dtype=pl.Float64),
            DECISION: scores >= champion.card.threshold,
            MODEL_NAME: champion.name,
            MODEL_VERSION: champion.version,
        }
    )


def write_scores(scores: pl.DataFrame, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    scores.write_parquet(out)


def _check_inputs(features: pl.DataFrame, card: ModelCard) -> None:
    """A champion trained on other feature windows than params.yaml's is refused, by name."""
    missing = [name for name in card.features if name not in features.columns]
    if missing:
        raise ValueError(
            f"the champion reads features params.yaml does not define: {', '.join(missing)}"
        )


def _score_on_dask(client: Client, champion: Champion, features: pl.DataFrame) -> np.ndarray:
    """Scores of FEATURES in one row slice per worker; the model is sent to each once."""
    inputs = features.select(champion.card.features)
    slices = row_slices(inputs.height, worker_count(client))
    pieces = [inputs.slice(start, length) for start, length in slices]
    slices = client.scatter(pieces)  # type: ignore[no-untyped-call]
    model = client.scatter(champion.model, broadcast=True)  # type: ignore[no-untyped-call]
    done = [client.submit(score_frame, model, champion.card, piece) for piece in slices]
    scores: list[np.ndarray] = client.gather(done)  # type: ignore[no-untyped-call]
    return np.concatenate(scores)
