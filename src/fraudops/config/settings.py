"""Settings: where things run (paths, URIs, secrets, service knobs).

Read from the environment (prefix ``FRAUDOPS_``) or a ``.env`` file (see ``.env.example``),
never from ``params.yaml``: changing one re-runs nothing in the DVC pipeline.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Runtime settings; every field can be set as ``FRAUDOPS_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix="FRAUDOPS_", env_file=".env", extra="ignore")

    home: Path = Field(Path(".fraudops"), description="Local state: databases, caches, logs.")
    data_dir: Path = Path("data")
    params_path: Path = Path("params.yaml")
    mlflow_tracking_uri: str | None = Field(
        None, description="Defaults to a SQLite file under `home`."
    )
    experiment_name: str = "fraudops"
    model_name: str = "fraud-detector"
    prefect_api_url: str | None = None
    prefect_startup_timeout_s: int = Field(
        180,
        ge=1,
        description="Without `prefect_api_url`, how long a flow waits for Prefect's temporary "
        "server to start. Prefect's own 20 s is often too short on a busy 2-core machine.",
    )
    admin_api_key: SecretStr | None = None
    id_hash_salt: SecretStr = SecretStr("fraudops-dev-salt")
    require_services: bool = Field(
        False, description="Tests of PostgreSQL/Redis backends fail instead of skipping."
    )
    routing_path: Path = Field(
        Path("routing.yaml"),
        description="The default A/B and shadow policy (tracked): in force until a live one "
        "is saved, and never written by the server.",
    )
    routing_state_path: Path | None = Field(
        None,
        description="The live policy PUT /admin/routing saves and every worker follows: "
        "runtime state, so it lives under `home` unless set, not in the checkout.",
    )
    monitoring_workspace: Path = Field(
        Path("monitoring/workspace"), description="The Evidently workspace the UI serves."
    )
    monitoring_reports_dir: Path = Field(
        Path("monitoring/reports"), description="HTML and JSON of each monitoring run."
    )
    prediction_log_url: str | None = Field(
        None, description="SQLAlchemy URL of the prediction/label log; SQLite under `home`."
    )
    prediction_log_batch_size: int = Field(500, gt=0)
    prediction_log_flush_interval_s: float = Field(
        0.05,
        gt=0,
        description="Rows are written at least this often. Short, so each batch is small: "
        "the writer thread shares the server's interpreter lock, and a long batch delays "
        "the requests that wait for it.",
    )
    prediction_log_queue_size: int = Field(20_000, gt=0)
    prediction_log_enqueue_timeout_s: float = Field(
        1.0, ge=0, description="How long a served row waits for queue room before a 503."
    )
    online_store_url: str | None = Field(
        None, description="Online feature state: sqlite:///… or redis://…; SQLite under `home`."
    )
    online_store_namespace: str = Field("fraudops", description="Prefix of Redis keys.")
    model_cache_dir: Path | None = Field(
        None, description="Downloaded models, loaded when the registry is away; under `home`."
    )
    model_poll_interval_s: float = Field(
        30.0, gt=0, description="How often serving asks the registry for new alias versions."
    )
    serve_keepalive_s: float = Field(
        5.0, gt=0, description="`fraudops serve` closes a kept-alive connection idle this long."
    )
    serve_header_timeout_s: float = Field(
        5.0,
        gt=0,
        description="A request's headers must all arrive within this long of the connection "
        "opening (or of the request's first byte on a kept-alive one), or it is closed.",
    )
    serve_body_timeout_s: float = Field(
        10.0, gt=0, description="A request's body must all arrive this long after its headers."
    )
    serve_flat_trees: bool = Field(
        True,
        description="Serving walks an XGBoost model's trees in numpy: the booster's scores bit "
        "for bit at a tenth of its cost per call. False: the booster scores every request.",
    )
    serving_url: str | None = Field(
        None, description="The scoring API retraining switches to shadow; none: left alone."
    )
    retrain_cooldown_s: float = Field(
        6 * 3600.0,
        ge=0,
        description="After a retraining starts, later automatic triggers are skipped "
        "(a retraining asked for by hand is not).",
    )
    flows_metrics_port: int = Field(
        0,
        ge=0,
        le=65535,
        description="`fraudops serve-flows` serves the model-level Prometheus series "
        "(monitoring.exporter) on this port; 0: not served.",
    )
    dask_address: str | None = Field(
        None,
        description="Dask scheduler (tcp://host:8786) that batch features and scoring run "
        "on (fraudops.scale); none: in this process, without Dask.",
    )
    dask_connect_timeout_s: float = Field(
        10.0, gt=0, description="How long to wait for the Dask scheduler before giving up."
    )
    flows_metrics_host: str = Field(
        "127.0.0.1",
        description="Address the model series listen on; a container sets 0.0.0.0 so "
        "Prometheus on its network can scrape them.",
    )

    @field_validator("dask_address")
    @classmethod
    def _blank_address_is_none(cls, value: str | None) -> str | None:
        """Compose passes ``FRAUDOPS_DASK_ADDRESS`` through even when .env leaves it empty:
        empty means no cluster, as unset does."""
        return (value or "").strip() or None

    @property
    def raw_dir(self) -> Path:
        return self.data_dir / "raw"

    @property
    def tracking_uri(self) -> str:
        """The MLflow tracking URI, the embedded SQLite store unless one is set."""
        if self.mlflow_tracking_uri:
            return self.mlflow_tracking_uri
        return f"sqlite:///{(self.home / 'mlflow.db').resolve()}"

    @property
    def log_url(self) -> str:
        """The prediction/label log database, a SQLite file under `home` unless one is set."""
        if self.prediction_log_url:
            return self.prediction_log_url
        return f"sqlite:///{(self.home / 'predictions.db').resolve()}"

    @property
    def feature_store_url(self) -> str:
        """The online feature store, a SQLite file under `home` unless one is set."""
        if self.online_store_url:
            return self.online_store_url
        return f"sqlite:///{(self.home / 'online-features.db').resolve()}"

    @property
    def live_routing_path(self) -> Path:
        """Where the live routing policy is saved: `home`/routing.yaml unless set."""
        return self.routing_state_path or self.home / "routing.yaml"

    @property
    def model_cache(self) -> Path:
        """Where serving keeps downloaded models: `home`/model-cache unless set."""
        return self.model_cache_dir or self.home / "model-cache"


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings; call ``get_settings.cache_clear()`` after changing env."""
    return Settings()
