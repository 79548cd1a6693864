"""The online store in Redis: one Lua script per call, for deployments that already run Redis.

``redis://host:port/db``: one script per call (a single round trip) reads both entities'
buckets and increments the transaction's. One hash per entity with a field per bucket (a
customer's day, a terminal's label tick), one string per indexed transaction; keys carry a
namespace so several stores can share a database. The label script finds the terminal from
the index, so it needs a single Redis instance, not a cluster. The key layout, the scripts
and the encoding of their answers sit together here because each is read by the others;
the behaviour every backend shares is in `fraudops.features.online_store`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import polars as pl

from fraudops.config import FeatureParams
from fraudops.data.schema import CUSTOMER_ID, TERMINAL_ID
from fraudops.features.backfill import (
    CENTS,
    DAY,
    NB_FRAUD,
    NB_TX,
    USABLE_TICK,
    BackfillState,
)
from fraudops.features.definitions import Bucket, CustomerBucket, TerminalBucket
from fraudops.features.online_store import OnlineStore
from fraudops.features.store_types import (
    DEFAULT_NAMESPACE,
    BucketPlan,
    Fetched,
    IndexEntry,
    OnlineStoreUnavailable,
)

REDIS_TIMEOUT_S = 2.0

# An entity's hash has one field per bucket: the day number (customers) or the label tick
# (terminals), with the value "count value" (transactions and cents; transactions and frauds).
_UNKNOWN_LABEL = "-"

_SCORE_SCRIPT = """
local function add(key, day, amount)
  local count, value = 0, 0
  local old = redis.call('HGET', key, day)
  if old then
    local a, b = string.match(old, '^(%S+) (%S+)$')
    count, value = tonumber(a), tonumber(b)
  end
  redis.call('HSET', key, day, string.format('%d %d', count + 1, value + amount))
end
local function prune(key, keep_from, most)
  if redis.call('HLEN', key) <= most then return end
  for _, day in ipairs(redis.call('HKEYS', key)) do
    if tonumber(day) < keep_from then redis.call('HDEL', key, day) end
  end
end
local previous = redis.call('GET', KEYS[3])
local customer = table.concat(redis.call('HGETALL', KEYS[1]), ' ')
local terminal = table.concat(redis.call('HGETALL', KEYS[2]), ' ')
if previous then return {previous, customer, terminal} end
redis.call('SET', KEYS[3], ARGV[3], 'EX', ARGV[7])
add(KEYS[1], ARGV[1], tonumber(ARGV[2]))
add(KEYS[2], ARGV[10], 0)
redis.call('EXPIRE', KEYS[1], ARGV[6])
redis.call('EXPIRE', KEYS[2], ARGV[7])
prune(KEYS[1], tonumber(ARGV[4]), tonumber(ARGV[8]))
prune(KEYS[2], tonumber(ARGV[5]), tonumber(ARGV[9]))
return {false, customer, terminal}
"""
"""KEYS: customer hash, terminal hash, index entry. ARGV: day, cents, new index entry,
customer keep-from day, terminal keep-from tick, customer/terminal TTLs (s), customer/terminal
field counts above which to prune, label tick. Returns the old index entry (or nil) and both
hashes, as they were."""

_LABEL_SCRIPT = """
local entry = redis.call('GET', KEYS[1])
if not entry then return false end
local customer, terminal, day, tick, cents, label =
  string.match(entry, '^(%S+) (%S+) (%S+) (%S+) (%S+) (%S+)$')
if label == ARGV[1] then return entry end
local change = tonumber(ARGV[1]) - (tonumber(label) or 0)
local key = ARGV[2] .. terminal
local bucket = redis.call('HGET', key, tick)
if change ~= 0 and bucket then
  local count, frauds = string.match(bucket, '^(%S+) (%S+)$')
  redis.call('HSET', key, tick, string.format('%d %d', tonumber(count), tonumber(frauds) + change))
end
redis.call('SET', KEYS[1], table.concat({customer, terminal, day, tick, cents, ARGV[1]}, ' '),
  'KEEPTTL')
return entry
"""
"""KEYS: index entry. ARGV: label, terminal key prefix. Returns the old entry (or nil)."""

_BACKFILL_BATCH = 5_000


def _encode_entry(entry: IndexEntry) -> str:
    label = _UNKNOWN_LABEL if entry.label is None else str(entry.label)
    return " ".join(map(str, entry[:5])) + f" {label}"


def _decode_entry(raw: bytes) -> IndexEntry:
    *numbers, label = raw.decode().split(" ")
    if len(numbers) != 5:
        raise OnlineStoreUnavailable(
            "the online store holds index entries of an earlier layout (day buckets): "
            "flush its namespace and run `fraudops backfill`"
        )
    customer, terminal, day, tick, cents = map(int, numbers)
    return IndexEntry(
        customer, terminal, day, tick, cents, None if label == _UNKNOWN_LABEL else int(label)
    )


def _buckets(packed: bytes, make: type[Bucket]) -> dict[int, Bucket]:
    """Buckets from the script's "day count value day count value …" answer.

    The script sends a whole hash as one string: parsing a long reply array in Python costs
    more than the round trip. Days outside the windows come along; the feature functions
    read only their own days.
    """
    numbers = list(map(int, packed.split()))
    return {numbers[i]: make(numbers[i + 1], numbers[i + 2]) for i in range(0, len(numbers), 3)}


class RedisOnlineStore(OnlineStore):
    """The buckets in Redis: a hash per customer and per terminal, a string per transaction."""

    def __init__(self, url: str, params: FeatureParams, namespace: str = DEFAULT_NAMESPACE) -> None:
        import redis

        super().__init__(params)
        self.url = url
        self.namespace = namespace
        self._errors = (redis.exceptions.RedisError, OSError)
        self._client = redis.Redis.from_url(
            url, socket_timeout=REDIS_TIMEOUT_S, socket_connect_timeout=REDIS_TIMEOUT_S
        )
        self._score = self._client.register_script(_SCORE_SCRIPT)
        self._label = self._client.register_script(_LABEL_SCRIPT)
        #: Days from a terminal bucket's first write to its last read: delay plus window.
        self._terminal_days = self.terminal_retention_s // 86_400 - 1

    def key(self, kind: str, entity_id: int | str) -> str:
        """The Redis key of a customer (``c``), terminal (``t``) or transaction (``x``)."""
        return f"{self.namespace}:{kind}:{entity_id}"

    def ping(self) -> None:
        with self._reachable():
            self._client.ping()

    def close(self) -> None:
        self._client.close()

    @contextmanager
    def _reachable(self) -> Iterator[None]:
        try:
            yield
        except self._errors as error:
            raise OnlineStoreUnavailable(f"online store {self.url}: {error}") from error

    def _exchange(self, transaction_id: int, entry: IndexEntry, plan: BucketPlan) -> Fetched:
        keys = [
            self.key("c", entry.customer_id),
            self.key("t", entry.terminal_id),
            self.key("x", transaction_id),
        ]
        args: list[int | str] = [
            entry.day,
            entry.amount_cents,
            _encode_entry(entry),
            plan.customer_keep_from,
            plan.terminal_keep_from,
            self.customer_retention_s,
            self.terminal_retention_s,
            # Prune a hash once it holds twice the buckets of the days it needs: amortised
            # O(1) per call (a terminal busy every hour prunes each call, at the cost of the
            # read it does anyway).
            2 * len(plan.customer_days),
            2 * self._terminal_days,
            entry.usable_tick,
        ]
        with self._reachable():
            previous, customer, terminal = self._score(keys=keys, args=args)
        return Fetched(
            _buckets(customer, CustomerBucket),
            _buckets(terminal, TerminalBucket),
            None if previous is None else _decode_entry(previous),
        )

    def _store_label(self, transaction_id: int, label: int) -> IndexEntry | None:
        with self._reachable():
            previous = self._label(
                keys=[self.key("x", transaction_id)], args=[label, self.key("t", "")]
            )
        return None if previous is None else _decode_entry(previous)

    def _write_backfill(self, state: BackfillState) -> None:
        customer_ttl, terminal_ttl = self.customer_retention_s, self.terminal_retention_s
        index = (
            (
                "SET",
                self.key("x", row[0]),
                _encode_entry(IndexEntry(*row[1:])),
                "EX",
                terminal_ttl,
            )
            for row in state.index.iter_rows()
        )
        with self._reachable():
            self._send(
                self._hash_commands("c", state.customers, CUSTOMER_ID, DAY, CENTS, customer_ttl)
            )
            self._send(
                self._hash_commands(
                    "t", state.terminals, TERMINAL_ID, USABLE_TICK, NB_FRAUD, terminal_ttl
                )
            )
            self._send(index)

    def _hash_commands(
        self, kind: str, buckets: pl.DataFrame, entity: str, field: str, value: str, ttl: int
    ) -> Iterator[tuple[Any, ...]]:
        """Per entity, one HSET of all its bucket fields, then its expiry."""
        fields = (
            buckets.select(
                entity,
                pl.concat_list(
                    pl.col(field).cast(pl.String), pl.format("{} {}", NB_TX, value)
                ).alias("fields"),
            )
            .group_by(entity)
            .agg(pl.col("fields").list.explode(keep_nulls=False, empty_as_null=False))
        )
        for entity_id, values in fields.iter_rows():
            key = self.key(kind, entity_id)
            yield ("HSET", key, *values)
            yield ("EXPIRE", key, ttl)

    def _send(self, commands: Iterable[tuple[Any, ...]]) -> None:
        pipe = self._client.pipeline(transaction=False)
        for count, command in enumerate(commands, start=1):
            pipe.execute_command(*command)
            if count % _BACKFILL_BATCH == 0:
                pipe.execute()
        pipe.execute()
