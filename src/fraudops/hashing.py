"""Salted stable hashing of entity ids: one definition for A/B assignment and log pseudonyms.

Python's ``hash()`` changes between processes (``PYTHONHASHSEED``), so it can neither keep a
customer in one A/B arm across restarts and replicas nor give the same pseudonym in two log
rows. Keyed BLAKE2b is stable, fast (under 1 µs per id here) and, with a secret key, cannot
be reversed by hashing every possible customer id, which a bare unsalted hash of a small
integer id could.
"""

from __future__ import annotations

import hashlib

#: BLAKE2b accepts keys of at most 64 bytes; longer salts are first hashed down to that size.
_MAX_KEY_BYTES = 64
_DIGEST_BYTES = 16
_UNIT_BITS = 53  # a double holds 53 bits exactly, so k / 2**53 lies in [0, 1) without rounding


class SaltedHasher:
    """Hashes ids under one salt; the keyed state is built once and copied per id."""

    __slots__ = ("_keyed",)

    def __init__(self, salt: str | bytes) -> None:
        key = salt.encode() if isinstance(salt, str) else salt
        if not key:
            raise ValueError("the hash salt must not be empty")
        if len(key) > _MAX_KEY_BYTES:
            key = hashlib.blake2b(key, digest_size=_MAX_KEY_BYTES).digest()
        self._keyed = hashlib.blake2b(key=key, digest_size=_DIGEST_BYTES)

    def digest(self, value: int | str) -> bytes:
        """16 bytes for ``value``; ``42`` and ``"42"`` agree, as ids arrive as either in JSON."""
        hasher = self._keyed.copy()
        hasher.update(str(value).encode())
        return hasher.digest()

    def pseudonym(self, value: int | str) -> str:
        """A 32-character hex name that stands in for a raw id in stored rows."""
        return self.digest(value).hex()

    def unit_draws(self, value: int | str) -> tuple[float, float]:
        """Two independent uniform numbers in [0, 1) from one hash of ``value``.

        The two halves of the digest are independent bits, so one hash serves two
        decisions (e.g. the A/B arm and the shadow sample) without correlating them.
        """
        digest = self.digest(value)
        return _to_unit(digest[:8]), _to_unit(digest[8:])


def _to_unit(eight_bytes: bytes) -> float:
    return (int.from_bytes(eight_bytes, "big") >> (64 - _UNIT_BITS)) / (1 << _UNIT_BITS)
