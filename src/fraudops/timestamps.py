"""Naive UTC, the clock of the raw data, and the one way a datetime is brought onto it.

Raw transaction times carry no zone and are UTC. A caller may pass an aware value (an API
client's offset, ``now`` with a zone); compared or stored next to raw times it must first
be converted to UTC and lose its zone, or the comparison is off by the offset (or raises).
"""

from __future__ import annotations

import datetime as dt


def naive_utc(moment: dt.datetime) -> dt.datetime:
    """MOMENT on the raw data's clock: an aware value converted to UTC; a naive one as is."""
    if moment.tzinfo is None:
        return moment
    return moment.astimezone(dt.UTC).replace(tzinfo=None)


def naive_utc_now() -> dt.datetime:
    """Now, on the raw data's clock."""
    return naive_utc(dt.datetime.now(dt.UTC))
