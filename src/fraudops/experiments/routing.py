"""Which model answers a request, and which one scores it in the shadow.

The policy follows Seldon Core 2's experiments: A/B weights are relative (weight / sum),
a shadow (mirror) model may see a sampled share of traffic and its answer is never returned.
Assignment is a salted stable hash of the customer id, so one customer stays in one arm
across requests, restarts and replicas, which keeps per-customer behaviour (and the A/B
comparison) consistent; changing the salt re-draws every assignment for a fresh experiment.

``RoutingConfig`` is the validated document: the default one in the tracked ``routing.yaml``,
the live one that ``PUT /admin/routing`` saves under ``FRAUDOPS_HOME`` (runtime state, kept
out of the checkout). ``Router`` is its compiled form whose ``route`` runs on the request
path in about 1 µs.
"""

from __future__ import annotations

import bisect
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Final, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from fraudops.hashing import SaltedHasher

CHAMPION: Final = "champion"
DEFAULT_SALT = "fraudops-ab-1"

RoutingMode = Literal["champion", "ab"]

#: Registry aliases are letters, digits, ``_`` and ``-``; anything else is a typo to reject early.
_ALIAS_PATTERN = re.compile(r"^[A-Za-z0-9_-]+$")


class RoutingConfigError(ValueError):
    """A routing document that cannot be used, with every problem named by its field."""


def _check_alias(alias: str) -> str:
    if not _ALIAS_PATTERN.fullmatch(alias):
        raise ValueError(
            f"alias {alias!r} must be non-empty and use only letters, digits, '_' and '-'"
        )
    return alias


Alias = Annotated[str, AfterValidator(_check_alias)]
Weight = Annotated[float, Field(ge=0, allow_inf_nan=False)]


class ShadowPolicy(BaseModel):
    """A model that scores sampled requests off the response path; its answer is only logged."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    alias: Alias
    sample_percent: float = Field(
        100.0, ge=0, le=100, description="Share of customers whose requests are shadowed."
    )


class RoutingConfig(BaseModel):
    """The routing policy: champion only or an A/B split, each optionally with a shadow."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: RoutingMode = CHAMPION
    weights: dict[Alias, Weight] = Field(
        default_factory=dict,
        description="Mode 'ab' only: relative weight per registry alias.",
    )
    shadow: ShadowPolicy | None = None
    salt: str = Field(DEFAULT_SALT, min_length=1, description="Change it to re-draw the arms.")

    @model_validator(mode="after")
    def _consistent(self) -> RoutingConfig:
        if self.mode == CHAMPION:
            if self.weights:
                raise ValueError("weights apply only in mode 'ab': remove them or set mode: ab")
        else:
            if len(self.weights) < 2:
                raise ValueError("mode 'ab' needs weights for at least two aliases")
            if sum(self.weights.values()) <= 0:
                raise ValueError("mode 'ab' needs at least one alias with a weight above 0")
        arms = self.arms
        if self.shadow is not None and arms == (self.shadow.alias,):
            raise ValueError(
                f"shadow alias {self.shadow.alias!r} already answers every request: "
                "shadow a different alias"
            )
        return self

    @property
    def arms(self) -> tuple[str, ...]:
        """Aliases that can answer, in sorted order so that YAML key order cannot move anyone."""
        if self.mode == CHAMPION:
            return (CHAMPION,)
        return tuple(sorted(alias for alias, weight in self.weights.items() if weight > 0))

    @property
    def required_aliases(self) -> tuple[str, ...]:
        """Every alias that must be loaded before this policy may route (arms and shadow)."""
        shadow = () if self.shadow is None else (self.shadow.alias,)
        return tuple(dict.fromkeys((*self.arms, *shadow)))


@dataclass(frozen=True, slots=True)
class RoutingDecision:
    """Where one request goes; ``shadow_alias`` is None when nothing scores it in the shadow."""

    arm_alias: str
    shadow_alias: str | None = None


class Router:
    """A ``RoutingConfig`` compiled for the request path: cumulative bounds and a keyed hasher."""

    __slots__ = ("_arms", "_bounds", "_hasher", "_shadow_alias", "_shadow_share", "config")

    def __init__(self, config: RoutingConfig) -> None:
        self.config = config
        self._arms = config.arms
        self._bounds = _cumulative_shares([config.weights.get(a, 1.0) for a in self._arms])
        self._hasher = SaltedHasher(config.salt)
        shadow = config.shadow
        self._shadow_alias = None if shadow is None else shadow.alias
        self._shadow_share = 0.0 if shadow is None else shadow.sample_percent / 100

    def route(self, customer_id: int | str) -> RoutingDecision:
        """The arm for this customer (always the same one) and its shadow, if sampled."""
        arm_draw, shadow_draw = self._hasher.unit_draws(customer_id)
        arm = self._arms[bisect.bisect_right(self._bounds, arm_draw)]
        shadow = self._shadow_alias
        if shadow == arm or shadow_draw >= self._shadow_share:
            shadow = None
        return RoutingDecision(arm, shadow)


def _cumulative_shares(weights: list[float]) -> tuple[float, ...]:
    """Upper bounds of each arm's slice of [0, 1); the last is exactly 1 despite rounding."""
    total = sum(weights)
    bounds: list[float] = []
    running = 0.0
    for weight in weights:
        running += weight
        bounds.append(running / total)
    bounds[-1] = 1.0
    return tuple(bounds)


def load_routing(path: Path) -> RoutingConfig:
    """Read a routing file; a missing or empty file means champion only, the safe default."""
    if not path.exists():
        return RoutingConfig()
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise RoutingConfigError(f"{path}: not valid YAML: {error}") from error
    try:
        return RoutingConfig.model_validate(raw)
    except ValidationError as error:
        raise RoutingConfigError(f"{path}: {describe_errors(error)}") from error


def describe_errors(error: ValidationError) -> str:
    """One line per problem, each naming its field (e.g. ``weights.challenger``)."""
    lines = []
    for problem in error.errors():
        parts = [repr(p) if p == "" else str(p) for p in problem["loc"] if p != "[key]"]
        where = ".".join(parts) or "routing"
        message = problem["msg"].removeprefix("Value error, ")
        lines.append(f"{where}: {message}")
    return "; ".join(lines)


#: Heads a saved policy, so whoever opens the file knows where it came from and how to undo it.
_LIVE_HEADER = (
    "# The live routing policy, saved by PUT /admin/routing; while this file exists it wins\n"
    "# over the default (routing.yaml, FRAUDOPS_ROUTING_PATH). Delete it to go back.\n"
)


def save_routing(config: RoutingConfig, path: Path) -> None:
    """Write atomically, so a server reading the file never sees half of it."""
    document = config.model_dump(mode="json", exclude_none=True)
    text = _LIVE_HEADER + yaml.safe_dump(document, sort_keys=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "w") as stream:
            stream.write(text)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
