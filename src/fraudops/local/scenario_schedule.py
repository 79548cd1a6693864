"""Which drift scenario the traffic replay simulates on each day: a schedule of phases.

A long-running replay (the compose stack's ``traffic`` service) tells a story: normal
days, then a data-drift phase, then a concept-drift phase. The schedule says so in one
line, ``none:0,amount_shift:7,new_fraud_pattern:28``: each scenario from that replay day
on, day 0 being the first day ever replayed. The replay runs in chunks that restart where
the last one stopped, so the day number comes from the traffic journal (its first day),
never from a process's memory: a restarted chunk lands in the same phase.

One scenario for every day (``--scenario``) is the schedule of one phase from day 0.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import get_args

import polars as pl

from fraudops.config import Scenario, SimulateParams
from fraudops.data.simulate import simulate

SCENARIOS: tuple[Scenario, ...] = get_args(Scenario)


class ScheduleError(ValueError):
    """A schedule that cannot be read, with what is wrong in it."""


@dataclass(frozen=True)
class ScenarioSchedule:
    """Phases as (first replay day, scenario), sorted; days before the first are ``none``."""

    phases: tuple[tuple[int, Scenario], ...]

    @classmethod
    def constant(cls, scenario: Scenario) -> ScenarioSchedule:
        return cls(((0, scenario),))

    @classmethod
    def parse(cls, text: str) -> ScenarioSchedule:
        """Read ``SCENARIO:DAY,SCENARIO:DAY,...``; every problem raises ``ScheduleError``."""
        phases: dict[int, Scenario] = {}
        for part in filter(None, (piece.strip() for piece in text.split(","))):
            name, _, day_text = part.partition(":")
            if name not in SCENARIOS:
                raise ScheduleError(
                    f"{part!r}: unknown scenario {name!r}; one of {', '.join(SCENARIOS)}"
                )
            if not day_text.isdigit():
                raise ScheduleError(f"{part!r}: the day must be a whole number >= 0")
            day = int(day_text)
            if day in phases:
                raise ScheduleError(f"{part!r}: day {day} already starts {phases[day]}")
            phases[day] = name
        if not phases:
            raise ScheduleError(f"{text!r} holds no SCENARIO:DAY phase")
        return cls(tuple(sorted(phases.items())))

    def scenario_on(self, day: int) -> Scenario:
        """The scenario of replay day DAY (0-based)."""
        current: Scenario = "none"
        for first, scenario in self.phases:
            if first > day:
                break
            current = scenario
        return current

    def segments(self, first_day: int, days: int) -> list[tuple[int, int, Scenario]]:
        """DAYS days from replay day FIRST_DAY as runs of one scenario: (first, count, scenario)."""
        runs: list[tuple[int, int, Scenario]] = []
        for day in range(first_day, first_day + days):
            scenario = self.scenario_on(day)
            if runs and runs[-1][2] == scenario:
                start, count, _ = runs[-1]
                runs[-1] = (start, count + 1, scenario)
            else:
                runs.append((day, 1, scenario))
        return runs

    def __str__(self) -> str:
        return ",".join(f"{scenario}:{day}" for day, scenario in self.phases)


def scheduled_days(
    params: SimulateParams,
    start: dt.date,
    days: int,
    schedule: ScenarioSchedule,
    origin: dt.date,
) -> pl.DataFrame:
    """DAYS simulated days from START, each in the scenario SCHEDULE gives it.

    ORIGIN is replay day 0. Each run of one scenario is simulated on its own (the same
    population, new activity seeded by its first date), as chunks of a replay always are.
    """
    offset = (start - origin).days
    if offset < 0:
        raise ValueError(f"the replay starts on {start}, before its first day {origin}")
    frames = [
        simulate(
            params.model_copy(
                update={
                    "start": start + dt.timedelta(days=first - offset),
                    "days": count,
                    "scenario": scenario,
                }
            )
        )
        for first, count, scenario in schedule.segments(offset, days)
    ]
    return pl.concat(frames)
