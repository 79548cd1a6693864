"""The handbook's three fraud rules, and the card compromise the scenarios reuse.

Rule 1 (an amount above 220) is applied by ``fraudops.data.simulate``; rules 2 and 3 are
here. The compromise counts are per day at the handbook's scale and scale with the
population, so small test populations keep a realistic fraud rate.
"""

from __future__ import annotations

import numpy as np

from fraudops.data.population import Transactions
from fraudops.data.schema import SCENARIO_COMPROMISED_CUSTOMER, SCENARIO_COMPROMISED_TERMINAL

HIGH_AMOUNT_THRESHOLD = 220.0
COMPROMISED_TERMINALS_PER_DAY = 2
COMPROMISED_TERMINAL_DAYS = 28
COMPROMISED_CUSTOMERS_PER_DAY = 3
COMPROMISED_CUSTOMER_DAYS = 14
COMPROMISED_CUSTOMER_SHARE = 3  # one in three of their transactions is fraudulent
COMPROMISED_AMOUNT_FACTOR = 5.0
REFERENCE_TERMINALS = 10_000
REFERENCE_CUSTOMERS = 5_000


def compromised_per_day(
    rate_per_reference: int, population: int, reference: int, days: int
) -> np.ndarray:
    """How many entities to compromise each day: ``rate * population / reference`` a day.

    Spread exactly over the days with integer arithmetic, so the handbook's scale gets
    exactly ``rate`` a day and a tenth of it gets ``rate`` every ten days.
    """
    cumulative = (rate_per_reference * population * np.arange(days + 1)) // reference
    return np.diff(cumulative)


def compromise_terminals(
    tx: Transactions, n_terminals: int, days: int, rng: np.random.Generator
) -> None:
    """Rule 2: every transaction at a terminal in its 28 compromised days is fraud."""
    compromised = np.zeros((n_terminals, days), dtype=bool)
    per_day = compromised_per_day(
        COMPROMISED_TERMINALS_PER_DAY, n_terminals, REFERENCE_TERMINALS, days
    )
    for first_day, count in enumerate(per_day):
        chosen = rng.choice(n_terminals, count, replace=False)
        compromised[chosen, first_day : first_day + COMPROMISED_TERMINAL_DAYS] = True
    tx.scenario[compromised[tx.terminal, tx.day]] = SCENARIO_COMPROMISED_TERMINAL


def compromise_customers(
    tx: Transactions, n_customers: int, days: int, rng: np.random.Generator
) -> None:
    """Rule 3: a third of a compromised customer's next 14 days of spending, at 5x."""
    per_day = compromised_per_day(
        COMPROMISED_CUSTOMERS_PER_DAY, n_customers, REFERENCE_CUSTOMERS, days
    )
    compromise_cards(
        tx,
        n_customers,
        per_day,
        days,
        rng,
        amount_factor=COMPROMISED_AMOUNT_FACTOR,
        code=SCENARIO_COMPROMISED_CUSTOMER,
    )


def compromise_cards(
    tx: Transactions,
    pool: int | np.ndarray,
    per_day: np.ndarray,
    days: int,
    rng: np.random.Generator,
    *,
    amount_factor: float,
    code: int,
) -> None:
    """Each day, ``per_day`` cards of POOL (a count, or customer ids) are compromised: a
    third of their next 14 days of transactions, drawn at random, get AMOUNT_FACTOR times
    the amount and the fraud CODE.

    Relies on ``tx`` being in (customer, day) order, so that one customer's window of
    days is a contiguous slice found by binary search. A transaction can be picked by
    two overlapping compromises and is then multiplied twice, as in the handbook.
    """
    key = tx.customer * days + tx.day
    for first_day, count in enumerate(per_day):
        chosen = rng.choice(pool, count, replace=False)
        last_day = min(first_day + COMPROMISED_CUSTOMER_DAYS, days)
        lows = np.searchsorted(key, chosen * days + first_day)
        highs = np.searchsorted(key, chosen * days + last_day)
        window = _concatenated_ranges(lows, highs)
        picked = rng.choice(window, len(window) // COMPROMISED_CUSTOMER_SHARE, replace=False)
        tx.amount[picked] = np.round(tx.amount[picked] * amount_factor, 2)
        tx.scenario[picked] = code


def _concatenated_ranges(lows: np.ndarray, highs: np.ndarray) -> np.ndarray:
    """``concatenate([arange(lo, hi) for lo, hi in zip(lows, highs)])`` without the loop."""
    lengths = highs - lows
    starts = np.cumsum(lengths) - lengths
    ranges: np.ndarray = np.arange(lengths.sum()) + np.repeat(lows - starts, lengths)
    return ranges
