"""Logged models back from MLflow: download by registry URI, load the native flavor.

Serving, promotion and the tests load models only through here, so the rest of the code
never meets MLflow's model format.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the model libraries load with a model, not with this module (serving
    # starts from a cached tree walk without them)
    from fraudops.modeling.steps import ModelCard, NativeModel


def load_registered_model(model_uri: str, cache_dir: Path) -> tuple[NativeModel, ModelCard]:
    """Download a logged model (``models:/NAME/VERSION`` or ``models:/NAME@ALIAS``) and load
    its native flavor, with the card its run stored as model metadata."""
    import mlflow

    folder = Path(
        mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=str(cache_dir))
    )
    return load_logged_model(folder)


def load_logged_model(folder: Path) -> tuple[NativeModel, ModelCard]:
    """The native model and card of a downloaded model folder; needs no tracking server,
    which is what lets serving start from its cache when the registry is away."""
    import mlflow
    from mlflow.models import Model as MlflowModel

    from fraudops.modeling.steps import ModelCard

    logged = MlflowModel.load(folder)
    card = ModelCard.from_dict(logged.metadata or {})
    if "xgboost" in logged.flavors:
        return mlflow.xgboost.load_model(str(folder)), card
    return mlflow.sklearn.load_model(str(folder)), card


def download_version(name: str, version: str, uri: str, target: Path) -> None:
    """Download version VERSION of registered model NAME from the store at URI into TARGET."""
    import mlflow

    # A progress bar per download is noise in a server's log.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    mlflow.artifacts.download_artifacts(
        artifact_uri=f"models:/{name}/{version}",
        dst_path=str(target),
        tracking_uri=uri,
        registry_uri=uri,
    )
