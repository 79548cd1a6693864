"""Features on a real Dask cluster (worker processes) equal the single-process ones row for row."""

from __future__ import annotations

import subprocess
import sys

import polars as pl
import pytest
from distributed import Client
from polars.testing import assert_frame_equal

from fraudops.config import FeatureParams, Settings, SimulateParams
from fraudops.data.schema import CUSTOMER_ID, TERMINAL_ID
from fraudops.data.simulate import simulate
from fraudops.features.definitions import build_features
from fraudops.local.servers import HOST, free_port
from fraudops.scale.cluster import ClusterUnreachable, dask_client
from fraudops.scale.dask_features import build_features_on_dask, split_by_entity

#: A Dask cluster of worker processes starts for this file: long for `make test-fast`.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def raw() -> pl.DataFrame:
    return simulate(SimulateParams(customers=300, terminals=600, days=45, seed=7))


@pytest.mark.parametrize("parts", [None, 3, 7])
def test_features_on_dask_equal_the_single_process_ones(
    cluster_client: Client, raw: pl.DataFrame, parts: int | None
) -> None:
    params = FeatureParams()
    assert_frame_equal(
        build_features_on_dask(cluster_client, raw, params, parts), build_features(raw, params)
    )


def test_other_windows_and_label_delay_are_equal_too(
    cluster_client: Client, raw: pl.DataFrame
) -> None:
    params = FeatureParams(
        customer_windows_days=(2, 14), terminal_windows_days=(3, 10), label_delay_days=3
    )
    assert_frame_equal(
        build_features_on_dask(cluster_client, raw, params), build_features(raw, params)
    )


def test_a_split_keeps_every_entity_whole_and_loses_no_row(raw: pl.DataFrame) -> None:
    for entity in (CUSTOMER_ID, TERMINAL_ID):
        parts = split_by_entity(raw, entity, 4)
        assert len(parts) == 4
        assert sum(part.height for part in parts) == raw.height
        owners = [set(part[entity]) for part in parts]
        assert sum(len(ids) for ids in owners) == raw[entity].n_unique()


def test_without_an_address_there_is_no_client_and_no_dask_import() -> None:
    code = (
        "import sys\n"
        "from fraudops.config import Settings\n"
        "from fraudops.scale import batch_scoring\n"
        "from fraudops.scale.cluster import dask_client\n"
        "with dask_client(Settings(dask_address=None)) as client:\n"
        "    assert client is None\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed')))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize("kind", ["unreachable", "malformed"])
def test_an_unreachable_or_malformed_address_is_named_with_its_setting(kind: str) -> None:
    # The port is found when the test runs: test ids must be the same in every xdist worker.
    address = f"tcp://{HOST}:{free_port()}" if kind == "unreachable" else "no-port-here:x"
    settings = Settings(dask_address=address, dask_connect_timeout_s=1)
    with pytest.raises(ClusterUnreachable) as caught, dask_client(settings):
        pass
    message = str(caught.value)
    assert address in message and "FRAUDOPS_DASK_ADDRESS" in message
    assert "\n" not in message
