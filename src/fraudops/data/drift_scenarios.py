"""The drift scenarios' extras: what each adds to, or changes in, the base simulation.

``simulate`` applies one after the base rules, with the same generator, so for one seed a
scenario is the ``none`` data plus its own rows or labels (``amount_shift`` only scales the
amounts it draws). The codes of the new fraud kinds extend those of ``data.schema``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields

import numpy as np

from fraudops.data.fraud_rules import REFERENCE_CUSTOMERS, compromise_cards, compromised_per_day
from fraudops.data.population import AREA_SIZE, SECONDS_PER_DAY, Population, Transactions
from fraudops.data.schema import SCENARIO_GENUINE, SCENARIO_NIGHT_SMALL_AMOUNT

#: ``amount_shift``: every customer's mean (and so standard deviation) of spending.
AMOUNT_SHIFT_FACTOR = 1.5

# ``new_fraud_pattern``: card testing at a fixed set of terminals.
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


#: The extras of each scenario that adds rows or labels (``amount_shift`` only scales).
SCENARIO_EXTRAS: dict[
    str, Callable[[Transactions, Population, int, np.random.Generator], Transactions]
] = {
    "new_fraud_pattern": add_night_pattern,
    "card_testing": add_card_testing,
    "regional_fraud": add_regional_fraud,
}
