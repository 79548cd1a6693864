"""The Dask cluster batch work runs on: the configured scheduler, or none at all.

Every caller connects through `dask_client`, so "no address set" means the same everywhere:
the work runs in this process and Dask is not even imported.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from fraudops.config import Settings

if TYPE_CHECKING:
    from distributed import Client

#: The setting that names the scheduler, as a user sets it.
ADDRESS_SETTING = "FRAUDOPS_DASK_ADDRESS"


class ClusterUnreachable(RuntimeError):
    """The configured Dask scheduler did not answer, or has no worker to run on."""


@contextmanager
def dask_client(settings: Settings) -> Iterator[Client | None]:
    """A client of the scheduler at ``settings.dask_address``, closed on exit; None if unset.

    A cluster without workers would accept work and never run it, so one worker must join
    within the connect timeout as well.
    """
    address = settings.dask_address
    if address is None:
        yield None
        return
    from distributed import Client
    from distributed.comm.addressing import resolve_address

    timeout = settings.dask_connect_timeout_s
    try:
        # A malformed address is refused here: a Client that fails to parse it would
        # otherwise spend its close timeout, then print a traceback, when collected.
        resolve_address(address)
        client = Client(address, timeout=timeout, set_as_default=False)  # type: ignore[no-untyped-call]
    except (OSError, TimeoutError, ValueError) as error:
        raise ClusterUnreachable(
            f"cannot reach the Dask scheduler at {address} ({ADDRESS_SETTING}): {error}"
        ) from None
    with client:
        try:
            client.wait_for_workers(1, timeout=timeout)
        except TimeoutError:
            raise ClusterUnreachable(
                f"the Dask scheduler at {address} ({ADDRESS_SETTING}) has no worker "
                f"after {timeout:g} s"
            ) from None
        yield client


def worker_count(client: Client) -> int:
    """How many workers CLIENT's scheduler has now (at least one: work waits for one)."""
    return max(1, len(client.scheduler_info()["workers"]))


def row_slices(height: int, parts: int) -> list[tuple[int, int]]:
    """(offset, length) of at most PARTS consecutive, nearly equal slices of HEIGHT rows."""
    size = max(1, -(-height // parts))
    return [(start, size) for start in range(0, height, size)]
