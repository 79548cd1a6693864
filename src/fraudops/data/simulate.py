"""Synthetic card transactions, modelled on the Fraud Detection Handbook's simulator.

The handbook builds its data with a Python loop per customer and per day (minutes at
its default scale); here every step is a numpy array operation over all transactions
(loops run only per day where fraud is injected, and per block of customers in the
terminal search), so the default 1.75 M transactions take about two seconds. The
distributions follow the handbook; the exact draws do not.

Randomness comes from two generators, so batches of different days stay consistent:

* the *population* generator (customers, terminals, the terminal set of the
  ``new_fraud_pattern`` scenario) is seeded with the seed only, so every batch made
  with one seed shares the same customers and terminals, whatever its dates;
* the *activity* generator (transactions and fraud) is seeded with the seed and the
  start date, so a later batch of new days is new activity, not a copy of the first.

The scenario never changes what either generator draws before the scenario's own
extras: for one seed, ``amount_shift`` is ``none`` with scaled amounts,
``new_fraud_pattern`` is ``none`` plus labelled and injected night-time card-testing
transactions, ``card_testing`` is ``none`` plus bursts of small payments, and
``regional_fraud`` is ``none`` plus frauds, at ordinary amounts, on more cards of one region.

About 475 lines, past the project's 400: the scenarios' extras work on the same arrays
and generators as the base simulation, and in a module of their own they would import
the simulator while the simulator imports them.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, fields

import numpy as np
import polars as pl

from fraudops.config import SimulateParams
from fraudops.data.schema import (
    CUSTOMER_ID,
    RAW_SCHEMA,
    SCENARIO_COMPROMISED_CUSTOMER,
    SCENARIO_COMPROMISED_TERMINAL,
    SCENARIO_GENUINE,
    SCENARIO_HIGH_AMOUNT,
    SCENARIO_NIGHT_SMALL_AMOUNT,
    TERMINAL_ID,
    TRANSACTION_ID,
    TX_AMOUNT,
    TX_DATETIME,
    TX_FRAUD,
    TX_FRAUD_SCENARIO,
    days_since_epoch,
)

SECONDS_PER_DAY = 86_400

#: Transaction ids are ``days_since_1970 * MAX_TX_PER_DAY + rank within the day``.
MAX_TX_PER_DAY = 1_000_000

# Population (handbook values).
AREA_SIZE = 100.0
TERMINAL_RADIUS = 5.0
MEAN_AMOUNT_RANGE = (5.0, 100.0)
MEAN_TX_PER_DAY_RANGE = (0.0, 4.0)
TIME_OF_DAY_MEAN_S = 43_200.0
TIME_OF_DAY_STD_S = 20_000.0

# Fraud (handbook values). The compromise counts are per day at the handbook's scale and
# scale with the population, so small test populations keep a realistic fraud rate.
HIGH_AMOUNT_THRESHOLD = 220.0
COMPROMISED_TERMINALS_PER_DAY = 2
COMPROMISED_TERMINAL_DAYS = 28
COMPROMISED_CUSTOMERS_PER_DAY = 3
COMPROMISED_CUSTOMER_DAYS = 14
COMPROMISED_CUSTOMER_SHARE = 3  # one in three of their transactions is fraudulent
COMPROMISED_AMOUNT_FACTOR = 5.0
REFERENCE_TERMINALS = 10_000
REFERENCE_CUSTOMERS = 5_000

#: ``amount_shift``: every customer's mean (and so standard deviation) of spending.
AMOUNT_SHIFT_FACTOR = 1.5

# ``new_fraud_pattern``: card testing at a fixed set of terminals.
NIGHT_PATTERN_TERMINAL_SHARE = 0.10
NIGHT_PATTERN_END_S = 6 * 3600  # 00:00:00-05:59:59
NIGHT_PATTERN_AMOUNT_CEILING = 10.0  # strictly below
NIGHT_PATTERN_INJECTED_PER_CUSTOMER_DAY = 0.01

# ``card_testing``: bursts of small payments at several terminals within minutes.
#: Code of a card-testing payment in TX_FRAUD_SCENARIO (the others are in data.schema).
SCENARIO_CARD_TESTING = 5
CARD_TESTING_CARDS_PER_DAY = 5  # per 5,000 customers, like the compromised cards
CARD_TESTING_BURST_SIZE = (3, 6)  # payments per burst, inclusive; one terminal each
CARD_TESTING_GAP_S = (10, 120)  # seconds between payments of a burst, inclusive
CARD_TESTING_AMOUNT_CENTS = (50, 299)  # 0.50-2.99, inclusive

# ``regional_fraud``: cards of one region compromised by a fraud that spends like their owner.
#: Code of a regional fraud in TX_FRAUD_SCENARIO.
SCENARIO_REGIONAL_FRAUD = 6
#: The region: customers living at x and y below these bounds (the south-west quarter, the
#: region ``x0y0`` of ``fairness.region_grid: 2``).
REGIONAL_FRAUD_AREA = (AREA_SIZE / 2, AREA_SIZE / 2)
REGIONAL_FRAUD_CUSTOMERS_PER_DAY = 15  # per 5,000 customers, all drawn in the region

_DISTANCE_BLOCK_CELLS = 4_000_000  # customers x terminals per block of the distance search


@dataclass(frozen=True)
class Population:
    """Customer spending profiles and which terminals each customer can use.

    ``terminal_offsets``/``terminal_ids`` are a CSR adjacency: customer ``c`` uses
    ``terminal_ids[terminal_offsets[c]:terminal_offsets[c + 1]]``.
    """

    mean_amount: np.ndarray
    mean_tx_per_day: np.ndarray
    terminal_offsets: np.ndarray
    terminal_ids: np.ndarray
    n_terminals: int
    night_pattern_terminals: np.ndarray
    customer_xy: np.ndarray

    @property
    def n_customers(self) -> int:
        return len(self.mean_amount)

    @property
    def terminal_counts(self) -> np.ndarray:
        return np.diff(self.terminal_offsets)


@dataclass
class Transactions:
    """Column arrays of transactions in generation order; ``day`` is 0-based."""

    customer: np.ndarray
    day: np.ndarray
    second: np.ndarray
    terminal: np.ndarray
    amount: np.ndarray
    scenario: np.ndarray

    def append(self, other: Transactions) -> Transactions:
        return Transactions(
            *(
                np.concatenate([getattr(self, column.name), getattr(other, column.name)])
                for column in fields(self)
            )
        )


def simulate(params: SimulateParams) -> pl.DataFrame:
    """Simulate ``params.days`` days of transactions, columns of ``RAW_SCHEMA``, time-sorted.

    Deterministic: the same params give an identical frame. Rules, in order (a later
    rule overwrites the scenario code of an earlier one):

    1. an amount above 220 (x1.5 under ``amount_shift``) is fraud;
    2. each day, 2 terminals per 10,000 are compromised: all their transactions in the
       next 28 days (that day included) are fraud;
    3. each day, 3 customers per 5,000 are compromised: of their transactions in the
       next 14 days, a third (rounded down), drawn at random, get 5x the amount and
       are fraud;
    4. ``new_fraud_pattern`` only: see :func:`add_night_pattern`;
       ``card_testing`` only: see :func:`add_card_testing`;
       ``regional_fraud`` only: see :func:`add_regional_fraud`.
    """
    population = draw_population(params)
    rng = np.random.default_rng([params.seed, days_since_epoch(params.start)])
    amount_factor = AMOUNT_SHIFT_FACTOR if params.scenario == "amount_shift" else 1.0
    tx = draw_transactions(population, params.days, amount_factor, rng)
    tx.scenario[tx.amount > HIGH_AMOUNT_THRESHOLD * amount_factor] = SCENARIO_HIGH_AMOUNT
    compromise_terminals(tx, population.n_terminals, params.days, rng)
    compromise_customers(tx, population.n_customers, params.days, rng)
    extra = _SCENARIO_EXTRAS.get(params.scenario)
    if extra is not None:
        tx = extra(tx, population, params.days, rng)
    return to_frame(tx, params.start)


def draw_population(params: SimulateParams) -> Population:
    """Customers and terminals at uniform positions; a customer uses terminals within 5."""
    rng = np.random.default_rng(params.seed)
    customer_xy = rng.uniform(0.0, AREA_SIZE, size=(params.customers, 2))
    mean_amount = rng.uniform(*MEAN_AMOUNT_RANGE, size=params.customers)
    mean_tx_per_day = rng.uniform(*MEAN_TX_PER_DAY_RANGE, size=params.customers)
    terminal_xy = rng.uniform(0.0, AREA_SIZE, size=(params.terminals, 2))
    n_pattern = max(1, round(params.terminals * NIGHT_PATTERN_TERMINAL_SHARE))
    night_pattern_terminals = np.sort(rng.choice(params.terminals, n_pattern, replace=False))
    offsets, ids = terminals_within_radius(customer_xy, terminal_xy, TERMINAL_RADIUS)
    return Population(
        mean_amount,
        mean_tx_per_day,
        offsets,
        ids,
        params.terminals,
        night_pattern_terminals,
        customer_xy,
    )


def terminals_within_radius(
    customer_xy: np.ndarray, terminal_xy: np.ndarray, radius: float
) -> tuple[np.ndarray, np.ndarray]:
    """CSR adjacency of terminals closer than ``radius``, found block by block.

    Blocks keep memory bounded (a full 5,000 x 10,000 distance matrix is 400 MB).
    """
    block = max(1, _DISTANCE_BLOCK_CELLS // max(1, len(terminal_xy)))
    customers, terminals = [], []
    for first in range(0, len(customer_xy), block):
        part = customer_xy[first : first + block]
        dx = part[:, 0, None] - terminal_xy[None, :, 0]
        dy = part[:, 1, None] - terminal_xy[None, :, 1]
        rows, cols = np.nonzero(dx * dx + dy * dy < radius * radius)
        customers.append(rows + first)
        terminals.append(cols)
    counts = np.bincount(np.concatenate(customers), minlength=len(customer_xy))
    offsets = np.concatenate([[0], np.cumsum(counts)])
    return offsets, np.concatenate(terminals)


def draw_transactions(
    population: Population, days: int, amount_factor: float, rng: np.random.Generator
) -> Transactions:
    """Genuine transactions in (customer, day) order, all labelled genuine.

    Per customer and day: Poisson(mean tx/day) transactions; time of day
    int(N(43200 s, 20000 s)), dropped (not redrawn) outside (0, 86400); amount
    N(mean, mean/2) with a negative draw replaced by U(0, 2 mean), to the cent;
    terminal uniform among the customer's. A customer with no terminal buys nothing.
    """
    counts = rng.poisson(population.mean_tx_per_day[:, None], size=(population.n_customers, days))
    counts[population.terminal_counts == 0] = 0
    per_cell = counts.ravel()
    customer = np.repeat(np.repeat(np.arange(population.n_customers), days), per_cell)
    day = np.repeat(np.tile(np.arange(days), population.n_customers), per_cell)
    second = np.trunc(rng.normal(TIME_OF_DAY_MEAN_S, TIME_OF_DAY_STD_S, len(customer)))
    kept = (second > 0) & (second < SECONDS_PER_DAY)
    customer, day, second = customer[kept], day[kept], second[kept].astype(np.int64)

    mean = population.mean_amount[customer] * amount_factor
    amount: np.ndarray = mean + (mean / 2) * rng.standard_normal(len(customer))
    replacement = rng.uniform(0.0, 2 * mean)
    amount = np.round(np.where(amount < 0, replacement, amount), 2)

    pick = rng.integers(0, population.terminal_counts[customer])
    terminal = population.terminal_ids[population.terminal_offsets[customer] + pick]
    scenario = np.full(len(customer), SCENARIO_GENUINE, dtype=np.int8)
    return Transactions(customer, day, second, terminal, amount, scenario)


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


def add_night_pattern(
    tx: Transactions, population: Population, days: int, rng: np.random.Generator
) -> Transactions:
    """Concept drift: card testing with small night-time payments at a fixed terminal set.

    The set is 10 % of terminals, fixed per seed. Rule 4: every transaction at one of
    them before 06:00 with an amount below 10.00 is fraud (code 4). To make the rule
    matter, each day Poisson(0.01 x customers) such payments are added: a random
    customer who has terminals, a random terminal of the set, a uniform time in
    (0 s, 6 h), an amount of 1.00-9.99. Volume and mean amount move by about 0.5 % and
    the share of payments before 06:00 by about half a point, so a model trained
    without this pattern sees ordinary small purchases, while the fraud rate rises from
    about 0.8 % to about 1.5 %.
    """
    per_day = rng.poisson(NIGHT_PATTERN_INJECTED_PER_CUSTOMER_DAY * population.n_customers, days)
    n = int(per_day.sum())
    active = np.flatnonzero(population.terminal_counts > 0)
    injected = Transactions(
        customer=rng.choice(active, n),
        day=np.repeat(np.arange(days), per_day),
        second=rng.integers(1, NIGHT_PATTERN_END_S, n),
        terminal=rng.choice(population.night_pattern_terminals, n),
        amount=rng.integers(100, round(NIGHT_PATTERN_AMOUNT_CEILING * 100), n) / 100,
        scenario=np.full(n, SCENARIO_GENUINE, dtype=np.int8),
    )
    tx = tx.append(injected)
    matches = (
        np.isin(tx.terminal, population.night_pattern_terminals)
        & (tx.second < NIGHT_PATTERN_END_S)
        & (tx.amount < NIGHT_PATTERN_AMOUNT_CEILING)
    )
    tx.scenario[matches] = SCENARIO_NIGHT_SMALL_AMOUNT
    return tx


def add_card_testing(
    tx: Transactions, population: Population, days: int, rng: np.random.Generator
) -> Transactions:
    """Card testing: a fraudster checks stolen cards with bursts of tiny payments.

    Each day, 5 cards per 5,000 customers (as many a day as :func:`compromised_per_day`
    gives, drawn among customers with terminals, distinct within the day) get one burst:
    3-6 payments, each at a different terminal drawn from all terminals (the fraudster is
    not where the card holder shops), 10-120 s apart, so a burst lasts at most 10 minutes
    and stays within its day; amounts 0.50-2.99. Every burst payment is fraud (code 5).
    Only velocity tells them apart: each one alone is a small, ordinary-looking payment.
    """
    per_day = compromised_per_day(
        CARD_TESTING_CARDS_PER_DAY, population.n_customers, REFERENCE_CUSTOMERS, days
    )
    active = np.flatnonzero(population.terminal_counts > 0)
    low, high = CARD_TESTING_BURST_SIZE
    latest_start = SECONDS_PER_DAY - (high - 1) * CARD_TESTING_GAP_S[1]
    columns: dict[str, list[np.ndarray]] = {column.name: [] for column in fields(Transactions)}
    for day, count in enumerate(per_day):
        for card in rng.choice(active, min(count, len(active)), replace=False):
            size = int(rng.integers(low, high, endpoint=True))
            gaps = rng.integers(*CARD_TESTING_GAP_S, size - 1, endpoint=True)
            columns["customer"].append(np.full(size, card))
            columns["day"].append(np.full(size, day))
            columns["second"].append(rng.integers(1, latest_start) + np.r_[0, np.cumsum(gaps)])
            columns["terminal"].append(rng.choice(population.n_terminals, size, replace=False))
            columns["amount"].append(
                rng.integers(*CARD_TESTING_AMOUNT_CENTS, size, endpoint=True) / 100
            )
            columns["scenario"].append(np.full(size, SCENARIO_CARD_TESTING, dtype=np.int8))
    if not columns["customer"]:
        return tx
    return tx.append(Transactions(**{k: np.concatenate(v) for k, v in columns.items()}))


def add_regional_fraud(
    tx: Transactions, population: Population, days: int, rng: np.random.Generator
) -> Transactions:
    """A segment-specific degradation: a fraud ring works the cards of one region.

    Each day, 15 cards per 5,000 customers (as :func:`compromised_per_day` spreads them),
    drawn among the customers with terminals who live in ``REGIONAL_FRAUD_AREA``, are
    compromised as in rule 3, but the fraudster spends like the card holder: a third of
    the card's next 14 days of transactions are fraud (code 6) at their ordinary amount,
    terminal and time. Nothing in a payment tells it apart, so a model trained without
    the ring misses these frauds: its recall drops in that region only, the gap that
    `fraudops.fairness` measures between regions. Drawn after every other rule, so the
    rest of the data is the ``none`` scenario's.
    """
    x_limit, y_limit = REGIONAL_FRAUD_AREA
    xy = population.customer_xy
    in_region = (xy[:, 0] < x_limit) & (xy[:, 1] < y_limit) & (population.terminal_counts > 0)
    pool = np.flatnonzero(in_region)
    per_day = compromised_per_day(
        REGIONAL_FRAUD_CUSTOMERS_PER_DAY, population.n_customers, REFERENCE_CUSTOMERS, days
    )
    compromise_cards(
        tx,
        pool,
        np.minimum(per_day, len(pool)),
        days,
        rng,
        amount_factor=1.0,
        code=SCENARIO_REGIONAL_FRAUD,
    )
    return tx


_SCENARIO_EXTRAS: dict[
    str, Callable[[Transactions, Population, int, np.random.Generator], Transactions]
] = {
    "new_fraud_pattern": add_night_pattern,
    "card_testing": add_card_testing,
    "regional_fraud": add_regional_fraud,
}


def to_frame(tx: Transactions, start: dt.date) -> pl.DataFrame:
    """Sort by time and number each day's transactions into day-unique ids.

    Ties in time are broken by customer id, then by generation order, so the ids are
    deterministic.
    """
    order = np.lexsort((tx.customer, tx.second, tx.day))
    day = tx.day[order]
    per_day = np.bincount(day)
    if per_day.max(initial=0) > MAX_TX_PER_DAY:
        busiest = int(per_day.argmax())
        raise ValueError(
            f"day {start + dt.timedelta(days=busiest)} has {per_day[busiest]:,} transactions; "
            f"ids allow at most {MAX_TX_PER_DAY:,} a day"
        )
    epoch_day = day + days_since_epoch(start)
    rank = np.arange(len(day)) - np.searchsorted(day, day)
    seconds = epoch_day * SECONDS_PER_DAY + tx.second[order]
    scenario = tx.scenario[order]
    columns = {
        TRANSACTION_ID: epoch_day * MAX_TX_PER_DAY + rank,
        TX_DATETIME: seconds * 1_000_000,
        CUSTOMER_ID: tx.customer[order],
        TERMINAL_ID: tx.terminal[order],
        TX_AMOUNT: tx.amount[order],
        TX_FRAUD: (scenario != SCENARIO_GENUINE).astype(np.int8),
        TX_FRAUD_SCENARIO: scenario,
    }
    return pl.DataFrame(
        [pl.Series(name, values).cast(RAW_SCHEMA[name]) for name, values in columns.items()]
    )
