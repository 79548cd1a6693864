"""Request and response bodies of the serving API, with the limits that keep bad input out.

Every request model forbids unknown fields and is strict about types (``"12"`` is not an
amount), so a client's typo or a producer's schema change is a 422 naming the field, not a
silently different score. Limits are declared in the schema wherever JSON Schema can say
them, so the OpenAPI document tells clients (and the schemathesis run) what is accepted.

Timestamps: an aware value is converted to UTC; a naive one is taken as UTC already, which
is the raw data's clock. Both end up naive UTC, the form the feature code and the logs use.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

from fraudops.experiments.routing import RoutingConfig
from fraudops.features.store_types import LabelOutcome
from fraudops.timestamps import naive_utc

#: Ids fit in 53 bits so that every JSON client (JavaScript included) reads them back exactly.
MAX_ID = 2**53 - 1
#: Above this an amount is a unit mistake (cents for euros) rather than a purchase.
MAX_AMOUNT = 1_000_000.0
#: Years a transaction time may have: wide for replays of old data, narrow for typos.
FIRST_YEAR, LAST_YEAR = 2000, 2099
#: Transactions per ``POST /v1/score/batch``; one request must stay a short request.
MAX_BATCH_SIZE = 100
#: Feature contributions returned by ``?explain=true``.
TOP_CONTRIBUTIONS = 5


def _in_range_as_naive_utc(moment: dt.datetime) -> dt.datetime:
    """The year is checked as written (what the schema's pattern can say), then UTC."""
    if not FIRST_YEAR <= moment.year <= LAST_YEAR:
        raise ValueError(f"timestamp must lie in the years {FIRST_YEAR}-{LAST_YEAR}")
    return naive_utc(moment)


def _whole_number(value: object) -> object:
    """JSON Schema counts 42.0 as an integer, so it is one; 42.5 and "42" still fail."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


EntityId = Annotated[int, Field(ge=0, le=MAX_ID), BeforeValidator(_whole_number)]
Timestamp = Annotated[
    dt.datetime,
    AfterValidator(_in_range_as_naive_utc),
    Field(
        description="ISO 8601; with an offset it is converted to UTC, without one it is UTC.",
        json_schema_extra={"pattern": f"^{FIRST_YEAR // 100}[0-9]{{2}}-"},
    ),
]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class Transaction(_Request):
    """A raw card transaction as the payment system sends it, before any feature exists."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "transaction_id": 1754155,
                    "timestamp": "2018-09-30T14:03:27Z",
                    "customer_id": 1234,
                    "terminal_id": 8512,
                    "amount": 57.16,
                }
            ]
        }
    )

    transaction_id: EntityId
    timestamp: Timestamp
    customer_id: EntityId
    terminal_id: EntityId
    amount: float = Field(ge=0, le=MAX_AMOUNT, allow_inf_nan=False)


class TransactionBatch(_Request):
    transactions: list[Transaction] = Field(min_length=1, max_length=MAX_BATCH_SIZE)


class Feedback(_Request):
    """A fraud label that became known after the transaction was scored."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"transaction_id": 1754155, "label": 1}]}
    )

    transaction_id: EntityId
    label: int = Field(ge=0, le=1, description="1 for fraud, 0 for genuine.")


class ModelRef(BaseModel):
    """Which registered model version produced a score."""

    name: str
    version: str
    alias: str


class Contribution(BaseModel):
    """A feature's share of the score in log-odds (SHAP-style): positive pushes to fraud."""

    feature: str
    value: float | None
    contribution: float


class Score(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "request_id": "9f1c2e0b7a8d4c3e9b1a2f3d4c5e6f70",
                    "transaction_id": 1754155,
                    "score": 0.031,
                    "fraud": False,
                    "threshold": 0.21,
                    "model": {"name": "fraud-detector", "version": "3", "alias": "champion"},
                    "arm": "champion",
                    "explanation": None,
                }
            ]
        }
    )

    request_id: str
    transaction_id: int
    score: float = Field(description="Fraud probability in [0, 1].")
    fraud: bool = Field(description="Whether the score reaches the model's alert threshold.")
    threshold: float
    model: ModelRef
    arm: str = Field(description="The A/B arm (registry alias) that answered.")
    explanation: list[Contribution] | None = Field(
        None, description=f"With ?explain=true: the {TOP_CONTRIBUTIONS} largest contributions."
    )


class ScoreBatch(BaseModel):
    results: list[Score]


class FeedbackReceipt(BaseModel):
    transaction_id: int
    label: int
    status: LabelOutcome = Field(description="'unchanged' when this label was already known.")


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class LoadedModelInfo(BaseModel):
    alias: str
    name: str
    version: str
    threshold: float
    source: str = Field(description="'registry', or 'cache' when the registry was unreachable.")


class RoutingState(BaseModel):
    configured: RoutingConfig
    active: RoutingConfig = Field(description="What routes now: champion only until all ready.")
    missing_aliases: list[str]


class RoutingPolicyView(RoutingConfig):
    """A routing policy as ``GET /v1/models`` shows it: the salt only to admins.

    The salt is all it takes to compute every customer's A/B arm (the hash is public), and
    so to choose an arm by choosing the customer id; who may change the policy may read it.
    """

    # The view widens the policy's salt to optional: that is its point, and pydantic allows it.
    salt: str | None = Field(  # type: ignore[assignment]
        None,
        description="Only with the admin key (X-API-Key); absent otherwise. Change it to "
        "re-draw the arms.",
    )


class ModelsRouting(BaseModel):
    configured: RoutingPolicyView
    active: RoutingPolicyView = Field(description="What routes now: champion only until ready.")
    missing_aliases: list[str]


class ModelsView(BaseModel):
    models: list[LoadedModelInfo]
    routing: ModelsRouting


class Readiness(BaseModel):
    ready: bool
    models_loaded: list[str]
    from_cache: bool = Field(description="True when a model came from the disk cache.")
    checks: dict[str, bool]
    detail: list[str] = Field(default_factory=list, description="Why a check failed.")


class Problem(BaseModel):
    """Body of every error that is not a validation error."""

    detail: str


class FieldProblem(BaseModel):
    loc: list[str | int] = Field(description="Where: 'body' or 'query', then the path.")
    field: str = Field(description="The dotted path of the field at fault, e.g. 'amount'.")
    msg: str
    type: str


class ValidationProblem(BaseModel):
    """Body of a 422: every problem found, each naming its field."""

    detail: list[FieldProblem]


class Reloaded(BaseModel):
    models: list[LoadedModelInfo]
    changed: list[str] = Field(description="Aliases whose version changed.")
