"""How much card precision@100 any model could reach: the all-fraud and visible-fraud ceilings.

A perfect ranking of every fraud does not reach CP@100 = 1 (fewer than 100 new compromised
cards a day), and it is not reachable either: some frauds leave no trace a model could see.
Which ones, under the handbook's timing (a label is usable once it is ``label_delay_days``
old):

* rule 1 (amount above 220) is visible in the amount itself;
* rule 3 (a compromised card, a third of its payments at 5x) is visible in the amount
  against the card's own recent payments, which need no label;
* rule 2 (a compromised terminal, every payment for 28 days) is visible only through the
  terminal's past labels. A terminal fraud at time t is **invisible** when its amount is at
  most 220 and its terminal has no fraud at all in (t - d - W, t - d], W being the longest
  terminal window (30 days) and d the delay: no label of that terminal is old enough to
  use, so to any model it looks like every other payment there.

The visible ceiling ranks every visible fraud first and every invisible fraud last, and
its CP@100 is what a model that finds every visible fraud, and gets no luck on the rest,
would score. Both ceilings are measured after known-card removal, on the split's test rows.
"""

from __future__ import annotations

import numpy as np
import polars as pl
from handbook_baseline import SECONDS_PER_DAY, window_totals

from fraudops.config import FeatureParams
from fraudops.data.fraud_rules import HIGH_AMOUNT_THRESHOLD
from fraudops.data.schema import (
    SCENARIO_COMPROMISED_TERMINAL,
    TERMINAL_ID,
    TRANSACTION_ID,
    TX_AMOUNT,
    TX_DATETIME,
    TX_FRAUD,
    TX_FRAUD_SCENARIO,
)
from fraudops.data.split import TimeSplit
from fraudops.modeling.evaluation import ranking_metrics

VISIBLE = "visible_fraud"
INVISIBLE = "invisible_fraud"


def fraud_visibility(raw: pl.DataFrame, params: FeatureParams) -> pl.DataFrame:
    """transaction_id, and whether the row is a visible and an invisible fraud (both False
    for a genuine row), sorted by transaction_id."""
    tx = raw.sort(TRANSACTION_ID)
    longest_s = max(params.terminal_windows_days) * SECONDS_PER_DAY
    _, usable_frauds = window_totals(
        tx[TERMINAL_ID].to_numpy(),
        tx[TX_DATETIME].dt.epoch("s").to_numpy(),
        tx[TX_FRAUD].cast(pl.Int64).to_numpy(),
        lag_s=params.label_delay_days * SECONDS_PER_DAY,
        length_s=longest_s,
    )
    invisible = (
        (pl.col(TX_FRAUD_SCENARIO) == SCENARIO_COMPROMISED_TERMINAL)
        & (pl.col(TX_AMOUNT) <= HIGH_AMOUNT_THRESHOLD)
        & (pl.Series(usable_frauds) == 0)
    )
    return tx.select(
        TRANSACTION_ID,
        ((pl.col(TX_FRAUD) == 1) & ~invisible).alias(VISIBLE),
        invisible.alias(INVISIBLE),
    )


def ceilings(split: TimeSplit, visibility: pl.DataFrame) -> dict[str, float]:
    """CP@100 of a perfect ranking of all frauds and of the visible ones, on the test rows."""
    test = split.test
    ids = visibility[TRANSACTION_ID].to_numpy()
    rows = np.searchsorted(ids, test[TRANSACTION_ID].to_numpy()).clip(0, max(0, len(ids) - 1))
    if not np.array_equal(ids[rows], test[TRANSACTION_ID].to_numpy()):
        raise ValueError("visibility must cover every test transaction")
    visible = visibility[VISIBLE].to_numpy()[rows]
    invisible = visibility[INVISIBLE].to_numpy()[rows]
    perfect = test[TX_FRAUD].to_numpy().astype(np.float64)
    visible_first = visible.astype(np.float64) - invisible.astype(np.float64)
    metric = "card_precision_at_100"
    return {
        "all_frauds": ranking_metrics(test, perfect)[metric],
        "visible_frauds": ranking_metrics(test, visible_first)[metric],
        "invisible_share": float(invisible.sum() / max(1, int(test[TX_FRAUD].sum()))),
    }
