"""How long the demo's A/B runs: until the plan's sample is in, read from real A/B results."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fraudops.experiments.ab_report import analyse_ab
from fraudops.local.demo import more_ab_days
from fraudops.local.demo_story import ab_facts
from unit.test_ab_report import FAST, log_frame


def facts(tmp_path: Path, customers: int, lift: float) -> dict:
    """The demo's view of a real A/B result, read back from its JSON as the demo reads it."""
    frame = log_frame(np.random.default_rng(3), customers, {"champion": 2.0, "challenger": 2.0})
    result = analyse_ab(frame, FAST.model_copy(update={"min_detectable_lift": lift}), top_k=100)
    path = tmp_path / "ab.json"
    path.write_text(result.model_dump_json())
    return ab_facts(path)


def test_traffic_goes_on_at_the_rate_seen_until_the_planned_sample_is_in(tmp_path: Path) -> None:
    short = facts(tmp_path, 4000, lift=0.05)  # a small lift: a large plan
    assert short["recommendation"] == "need_more_data" and short["planned"], short["reason"]
    have = min(short["labelled"].values())
    more = more_ab_days(short, days=3, max_days=1000)
    assert more > 0
    # At the rate seen (HAVE in 3 days), the extra days bring the smaller arm to the plan.
    assert have * (3 + more) / 3 >= short["required_per_arm"] > have * (3 + more - 1) / 3
    # A plan beyond the most days allowed is not run part of the way.
    assert more_ab_days(short, days=3, max_days=3 + more) == more
    assert more_ab_days(short, days=3, max_days=2 + more) == 0


def test_no_more_traffic_once_there_is_a_verdict_or_while_floors_are_unmet(
    tmp_path: Path,
) -> None:
    decided = facts(tmp_path, 4000, lift=0.7)
    assert decided["recommendation"] != "need_more_data", decided["reason"]
    assert more_ab_days(decided, days=3, max_days=14) == 0

    tiny = facts(tmp_path, 20, lift=0.5)  # below the floors of any verdict: no plan yet
    assert not tiny["planned"]
    assert more_ab_days(tiny, days=3, max_days=14) == 3
    assert more_ab_days(tiny, days=12, max_days=14) == 2
