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
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl

from fraudops.config import SimulateParams
from fraudops.data.fraud_rules import (
    HIGH_AMOUNT_THRESHOLD,
    compromise_customers,
    compromise_terminals,
)
from fraudops.data.population import (
    SECONDS_PER_DAY,
    Transactions,
    draw_population,
    draw_transactions,
)
from fraudops.data.drift_scenarios import AMOUNT_SHIFT_FACTOR, SCENARIO_EXTRAS
from fraudops.data.schema import (
    CUSTOMER_ID,
    RAW_SCHEMA,
    SCENARIO_GENUINE,
    SCENARIO_HIGH_AMOUNT,
    TERMINAL_ID,
    TRANSACTION_ID,
    TX_AMOUNT,
    TX_DATETIME,
    TX_FRAUD,
    TX_FRAUD_SCENARIO,
    days_since_epoch,
)

#: Transaction ids are ``days_since_1970 * MAX_TX_PER_DAY + rank within the day``.
MAX_TX_PER_DAY = 1_000_000


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
    extra = SCENARIO_EXTRAS.get(params.scenario)
    if extra is not None:
        tx = extra(tx, population, params.days, rng)
    return to_frame(tx, params.start)


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
