"""The experiment flow's rules: which phase a state is in, and when the gate should judge."""

from __future__ import annotations

import pytest

from fraudops.config import ExperimentParams
from fraudops.experiments.routing import RoutingConfig, ShadowPolicy
from pipelines.experiment_flow import ABProgress, ExperimentState, decision_due, phase_of

CHAMPION_ONLY = RoutingConfig()
SHADOWED = RoutingConfig(shadow=ShadowPolicy(alias="challenger"))
AB = RoutingConfig(
    mode="ab",
    weights={"champion": 50, "challenger": 50},
    shadow=ShadowPolicy(alias="challenger"),
)
BY_HAND = RoutingConfig(mode="ab", weights={"champion": 90, "candidate": 10})
EXPERIMENT = ExperimentParams(ab_min_days=3, ab_max_days=10)
DELAY = 7


def state(
    routing: RoutingConfig,
    champion: str | None = "1",
    challenger: str | None = "2",
    decided: bool = False,
) -> ExperimentState:
    return ExperimentState(champion, challenger, decided, None, routing)


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        (state(CHAMPION_ONLY, challenger=None), "idle"),
        (state(CHAMPION_ONLY, champion="1", challenger="1"), "idle"),  # the first version
        (state(SHADOWED, champion="2", challenger="2"), "conclude"),  # promoted, still routed
        (state(AB, decided=True), "conclude"),  # rejected, still in the A/B
        (state(CHAMPION_ONLY, decided=True), "idle"),
        (state(CHAMPION_ONLY), "unrouted"),
        (state(SHADOWED), "shadow"),
        (state(AB), "ab"),
        (state(BY_HAND), "hands_off"),
        (state(RoutingConfig(shadow=ShadowPolicy(alias="candidate"))), "hands_off"),
    ],
)
def test_each_state_has_its_phase(case: ExperimentState, expected: str) -> None:
    assert phase_of(case) == expected


def facts(recommendation: str, labelled: int, required: int | None, planned: bool = True) -> dict:
    """The A/B report's facts as ``demo_story.ab_facts`` reads them."""
    return {
        "recommendation": recommendation,
        "labelled": {"champion": labelled, "challenger": labelled},
        "required_per_arm": required,
        "planned": planned,
    }


def test_the_gate_waits_for_the_first_labelled_days() -> None:
    early = ABProgress(labelled_days=2.9, traffic_days=9.9)
    assert decision_due(early, facts("promote", 5000, 100), EXPERIMENT, DELAY) is None
    assert decision_due(early, None, EXPERIMENT, DELAY) is None


def test_a_verdict_or_a_plan_beyond_the_longest_ab_decides() -> None:
    ready = ABProgress(labelled_days=3.2, traffic_days=10.2)
    assert "verdict" in str(decision_due(ready, facts("keep", 5000, 4000), EXPERIMENT, DELAY))
    # 1,000 per arm in 3 days: 40,000 would take 120 days, far beyond ab_max_days.
    beyond = decision_due(ready, facts("need_more_data", 1000, 40_000), EXPERIMENT, DELAY)
    assert beyond is not None and "ab_max_days" in beyond
    # 9,000 per arm in 3 days: 12,000 takes 4 days in all, within ab_max_days: go on.
    assert decision_due(ready, facts("need_more_data", 9000, 12_000), EXPERIMENT, DELAY) is None
    # Below the floors of any verdict the A/B goes on too.
    floors = facts("need_more_data", 300, None, planned=False)
    assert decision_due(ready, floors, EXPERIMENT, DELAY) is None


def test_the_longest_ab_decides_with_what_there_is() -> None:
    floors = facts("need_more_data", 300, None, planned=False)
    labelled = ABProgress(labelled_days=10.0, traffic_days=17.0)
    assert "ab_max_days" in str(decision_due(labelled, floors, EXPERIMENT, DELAY))
    # Labels that stopped arriving: the traffic's own clock ends the wait.
    stalled = ABProgress(labelled_days=1.0, traffic_days=17.5)
    assert "labels for only 1.0" in str(decision_due(stalled, floors, EXPERIMENT, DELAY))
