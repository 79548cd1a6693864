"""A non-blocking exclusive file lock: one holder at a time across processes.

Retraining, the experiment flow and the online learner each let exactly one process do a
step while the others skip it rather than wait. The operating system drops an ``flock`` when
its holder dies, so a crash never leaves the step blocked.
"""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def exclusive(lock_file: Path) -> Iterator[bool]:
    """Hold an exclusive lock on LOCK_FILE while inside; yields False when another holds it."""
    with lock_file.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
