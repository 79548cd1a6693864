"""The routing policy: sticky arms, shares that follow the weights, shadows, clear refusals."""

from __future__ import annotations

import math
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from fraudops.experiments.routing import (
    CHAMPION,
    Router,
    RoutingConfig,
    RoutingConfigError,
    RoutingDecision,
    load_routing,
    save_routing,
)
from fraudops.hashing import SaltedHasher

REPO_ROOT = Path(__file__).resolve().parents[2]
CUSTOMERS = range(100_000)


def ab(weights: dict[str, float], **extra: object) -> RoutingConfig:
    return RoutingConfig.model_validate({"mode": "ab", "weights": weights, **extra})


def within_binomial(count: int, n: int, p: float, sigmas: float = 4.5) -> bool:
    """True when COUNT successes of N draws fit probability P (4.5 sigma: about 1 in 150,000)."""
    return abs(count - n * p) <= sigmas * math.sqrt(n * p * (1 - p))


def test_default_policy_sends_everyone_to_the_champion_without_shadow() -> None:
    router = Router(RoutingConfig())
    assert {router.route(customer) for customer in range(1000)} == {RoutingDecision(CHAMPION)}


def test_shipped_routing_file_is_champion_only() -> None:
    config = load_routing(REPO_ROOT / "routing.yaml")
    assert config.mode == CHAMPION
    assert config.shadow is None
    assert config.required_aliases == (CHAMPION,)


def test_a_customer_always_gets_the_same_arm() -> None:
    config = ab({"champion": 50, "challenger": 50})
    first, second = Router(config), Router(config.model_copy())
    assignments = [first.route(customer).arm_alias for customer in range(5000)]
    assert assignments == [second.route(customer).arm_alias for customer in range(5000)]
    assert assignments == [first.route(str(customer)).arm_alias for customer in range(5000)]
    assert set(assignments) == {"champion", "challenger"}


def test_assignment_is_a_fixed_function_of_salt_and_id_not_of_the_process() -> None:
    # Python's hash() would change with PYTHONHASHSEED; these values must never change,
    # or every customer would switch arms after a deploy.
    assert SaltedHasher("fraudops-ab-1").unit_draws(42) == pytest.approx(
        (0.5337824510646747, 0.24645227434693417)
    )
    assert SaltedHasher("salt").pseudonym(7) == "a143f88834373ac23a6615f3d10aefe5"


@pytest.mark.parametrize(
    "weights",
    [
        {"champion": 50, "challenger": 50},
        {"champion": 90, "challenger": 10},
        {"champion": 0.99, "challenger": 0.01},
        {"a": 1, "b": 2, "c": 7},
        {"champion": 3, "retired": 0, "challenger": 1},
    ],
)
def test_observed_shares_follow_relative_weights(weights: dict[str, float]) -> None:
    router = Router(ab(weights))
    counts = Counter(router.route(customer).arm_alias for customer in CUSTOMERS)
    total = sum(weights.values())
    for alias, weight in weights.items():
        if weight == 0:
            assert counts[alias] == 0
        else:
            assert within_binomial(counts[alias], len(CUSTOMERS), weight / total), counts


def test_key_order_in_the_file_does_not_move_anyone() -> None:
    forward = Router(ab({"champion": 70, "challenger": 30}))
    backward = Router(ab({"challenger": 30, "champion": 70}))
    assert all(forward.route(c) == backward.route(c) for c in range(5000))


def test_a_new_salt_redraws_assignments_with_the_same_shares() -> None:
    old = Router(ab({"champion": 50, "challenger": 50}, salt="experiment-1"))
    new = Router(ab({"champion": 50, "challenger": 50}, salt="experiment-2"))
    moved = sum(old.route(c).arm_alias != new.route(c).arm_alias for c in CUSTOMERS)
    # Independent draws under each salt: a customer changes arm with probability 1/2.
    assert within_binomial(moved, len(CUSTOMERS), 0.5)
    champions = sum(new.route(c).arm_alias == CHAMPION for c in CUSTOMERS)
    assert within_binomial(champions, len(CUSTOMERS), 0.5)


def test_shadow_scores_every_request_while_the_champion_answers() -> None:
    router = Router(RoutingConfig(shadow={"alias": "challenger"}))
    decisions = {router.route(customer) for customer in range(2000)}
    assert decisions == {RoutingDecision(CHAMPION, "challenger")}
    assert RoutingConfig(shadow={"alias": "challenger"}).required_aliases == (
        CHAMPION,
        "challenger",
    )


@pytest.mark.parametrize("percent", [0, 10, 25, 100])
def test_shadow_sample_share_is_sticky_and_follows_the_percentage(percent: float) -> None:
    router = Router(RoutingConfig(shadow={"alias": "challenger", "sample_percent": percent}))
    shadowed = [router.route(c).shadow_alias is not None for c in CUSTOMERS]
    assert within_binomial(sum(shadowed), len(CUSTOMERS), percent / 100, sigmas=5)
    assert shadowed[:1000] == [router.route(c).shadow_alias is not None for c in range(1000)]


def test_ab_with_shadow_samples_each_arm_alike() -> None:
    config = ab(
        {"champion": 80, "challenger": 20},
        shadow={"alias": "candidate", "sample_percent": 25},
    )
    router = Router(config)
    arms: Counter[str] = Counter()
    shadowed: Counter[str] = Counter()
    for customer in CUSTOMERS:
        decision = router.route(customer)
        arms[decision.arm_alias] += 1
        shadowed[decision.arm_alias] += decision.shadow_alias == "candidate"
    # The shadow draw is independent of the arm draw: no arm is over- or under-sampled.
    for arm in ("champion", "challenger"):
        assert within_binomial(shadowed[arm], arms[arm], 0.25), (arms, shadowed)
    assert config.required_aliases == ("challenger", "champion", "candidate")


def test_a_shadow_that_is_also_an_arm_only_shadows_the_other_arms() -> None:
    router = Router(ab({"champion": 50, "challenger": 50}, shadow={"alias": "challenger"}))
    decisions = Counter(router.route(customer) for customer in range(10_000))
    assert set(decisions) == {
        RoutingDecision(CHAMPION, "challenger"),
        RoutingDecision("challenger", None),
    }


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"mode": "ab", "weights": {"champion": 1}}, "at least two aliases"),
        (
            {"mode": "ab", "weights": {"champion": -1, "b": 2}},
            "weights.champion: .*greater than or equal to 0",
        ),
        ({"mode": "ab", "weights": {"champion": 0, "b": 0}}, "weight above 0"),
        ({"mode": "ab", "weights": {"champion": 1, "b": math.inf}}, "weights.b: .*finite"),
        ({"mode": "ab", "weights": {"": 1, "b": 1}}, "alias '' must be non-empty"),
        ({"mode": "ab", "weights": {"champ ion": 1, "b": 1}}, "only letters, digits"),
        ({"weights": {"champion": 1}}, "weights apply only in mode 'ab'"),
        ({"shadow": {"alias": "champion"}}, "'champion' already answers every request"),
        (
            {"mode": "ab", "weights": {"a": 1, "b": 0}, "shadow": {"alias": "a"}},
            "'a' already answers every request",
        ),
        ({"shadow": {"alias": "c", "sample_percent": 101}}, "shadow.sample_percent"),
        ({"mode": "canary"}, "mode: Input should be 'champion' or 'ab'"),
        ({"salt": ""}, "salt: "),
        ({"wieghts": {"a": 1}}, "wieghts: Extra inputs are not permitted"),
    ],
)
def test_invalid_policies_are_refused_with_the_field_at_fault(
    tmp_path: Path, document: dict, message: str
) -> None:
    with pytest.raises(ValidationError):
        RoutingConfig.model_validate(document)
    path = tmp_path / "routing.yaml"
    path.write_text(yaml.safe_dump(document))
    with pytest.raises(RoutingConfigError, match=message) as caught:
        load_routing(path)
    assert str(path) in str(caught.value)


def test_invalid_yaml_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "routing.yaml"
    path.write_text("mode: [ab\n")
    with pytest.raises(RoutingConfigError, match="not valid YAML"):
        load_routing(path)


def test_a_missing_file_means_champion_only(tmp_path: Path) -> None:
    assert load_routing(tmp_path / "absent.yaml") == RoutingConfig()


@pytest.mark.parametrize(
    "config",
    [
        RoutingConfig(),
        RoutingConfig(shadow={"alias": "challenger", "sample_percent": 12.5}),
        ab({"champion": 9, "challenger": 1}, salt="s-2", shadow={"alias": "candidate"}),
    ],
)
def test_yaml_round_trip_keeps_the_policy_and_its_assignments(
    tmp_path: Path, config: RoutingConfig
) -> None:
    path = tmp_path / "nested" / "routing.yaml"
    save_routing(config, path)
    loaded = load_routing(path)
    assert loaded == config
    assert [Router(loaded).route(c) for c in range(500)] == [
        Router(config).route(c) for c in range(500)
    ]
    assert [p.name for p in path.parent.iterdir()] == ["routing.yaml"]  # no temporary left


def test_route_costs_microseconds() -> None:
    router = Router(ab({"champion": 50, "challenger": 50}, shadow={"alias": "candidate"}))
    runs = []
    for _ in range(5):
        start = time.perf_counter()
        for customer in range(10_000):
            router.route(customer)
        runs.append((time.perf_counter() - start) / 10_000)
    # About 3 µs here; the bound leaves room for a busy shared machine.
    assert min(runs) < 20e-6
