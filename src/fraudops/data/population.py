"""Who buys where: customers, terminals, and their genuine transactions.

The first half of the simulation (``fraudops.data.simulate`` runs it, then the fraud rules
of ``fraudops.data.fraud_rules`` and a scenario's extras of ``fraudops.data.drift_scenarios``).
Every step is a numpy array operation over all customers or transactions; the
distributions follow the Fraud Detection Handbook's simulator, the exact draws do not.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from fraudops.config import SimulateParams
from fraudops.data.schema import SCENARIO_GENUINE

# Population (handbook values).
AREA_SIZE = 100.0
TERMINAL_RADIUS = 5.0
MEAN_AMOUNT_RANGE = (5.0, 100.0)
MEAN_TX_PER_DAY_RANGE = (0.0, 4.0)
TIME_OF_DAY_MEAN_S = 43_200.0
TIME_OF_DAY_STD_S = 20_000.0
SECONDS_PER_DAY = 86_400

#: The terminals of the ``new_fraud_pattern`` scenario: drawn with the population, for
#: every scenario, so that the scenario changes nothing the other draws see.
NIGHT_PATTERN_TERMINAL_SHARE = 0.10

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
