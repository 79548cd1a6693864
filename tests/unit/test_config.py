"""Settings and parameters: one source each, and bad values refused."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from fraudops.config import Params, get_settings, load_params

PROJECT = Path(__file__).resolve().parents[2]


def test_params_yaml_matches_the_code_defaults():
    # Tests build parameter objects from the defaults; this keeps them equal to what DVC tracks.
    assert load_params(PROJECT / "params.yaml") == Params()


def test_an_unknown_key_in_params_is_an_error(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("features:\n  label_delay_dayz: 3\n")
    with pytest.raises(ValidationError, match="label_delay_dayz"):
        load_params(path)


def test_a_zero_label_delay_is_refused(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("features:\n  label_delay_days: 0\n")
    with pytest.raises(ValidationError, match="label_delay_days"):
        load_params(path)


def test_settings_come_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("FRAUDOPS_MODEL_NAME", "other-model")
    monkeypatch.setenv("FRAUDOPS_HOME", str(tmp_path))
    get_settings.cache_clear()
    settings = get_settings()
    assert settings.model_name == "other-model"
    assert settings.tracking_uri == f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}"


@pytest.mark.parametrize("value", ["", "  "])
def test_an_empty_dask_address_means_no_cluster(monkeypatch, value):
    """Compose passes FRAUDOPS_DASK_ADDRESS through empty when .env does not set it."""
    monkeypatch.setenv("FRAUDOPS_DASK_ADDRESS", value)
    get_settings.cache_clear()
    assert get_settings().dask_address is None
    monkeypatch.setenv("FRAUDOPS_DASK_ADDRESS", "tcp://dask-scheduler:8786")
    get_settings.cache_clear()
    assert get_settings().dask_address == "tcp://dask-scheduler:8786"
