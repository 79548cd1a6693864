"""Commands that make and check data: generate, validate, featurize, backfill."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Annotated, cast

import typer

from fraudops.cli.base import DATA_DVC_FILE, app, console, fail, progress_steps
from fraudops.config import Scenario, get_settings, load_params


@app.command()
def generate(
    customers: Annotated[int | None, typer.Option(help="Number of customers.")] = None,
    terminals: Annotated[int | None, typer.Option(help="Number of terminals.")] = None,
    days: Annotated[int | None, typer.Option(help="Number of days to simulate.")] = None,
    start: Annotated[dt.datetime | None, typer.Option(formats=["%Y-%m-%d"])] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed.")] = None,
    scenario: Annotated[Scenario | None, typer.Option(help="Drift scenario.")] = None,
    out: Annotated[Path | None, typer.Option(help="Output folder (default data/raw).")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace days already written.")] = False,
    version: Annotated[bool, typer.Option(help="Record a DVC data version of data/raw.")] = True,
) -> None:
    """Simulate transactions into day-partitioned Parquet; unset options come from params.yaml."""
    from fraudops.data.datasets import write_raw
    from fraudops.data.simulate import simulate
    from fraudops.data.versioning import record_data_version

    overrides = {
        "customers": customers,
        "terminals": terminals,
        "days": days,
        "start": start.date() if start else None,
        "seed": seed,
        "scenario": scenario,
    }
    params = load_params().simulate.model_copy(
        update={key: value for key, value in overrides.items() if value is not None}
    )
    out = out or get_settings().raw_dir
    versioned = version and out.resolve() == get_settings().raw_dir.resolve()
    with progress_steps(3 if versioned else 2) as step:
        step(f"simulating {params.days} days")
        transactions = simulate(params)
        step(f"writing {out}")
        try:
            write_raw(transactions, out, overwrite=overwrite)
        except FileExistsError as exc:
            raise fail(f"{exc} (pass --overwrite to replace)") from exc
        if versioned:
            step("recording the DVC data version")
            data_hash = record_data_version(DATA_DVC_FILE)
    # polars types a reduction as any Python value; the mean of a 0/1 column is a float.
    fraud_rate = cast(float, transactions["tx_fraud"].mean())
    console.print(f"{transactions.height:,} transactions, fraud rate {fraud_rate:.3%} → {out}")
    if versioned:
        console.print(f"data version {data_hash} recorded in {DATA_DVC_FILE}")


@app.command()
def validate(
    path: Annotated[Path, typer.Argument(help="A data/raw folder or one day=… partition.")],
    report: Annotated[Path | None, typer.Option(help="Write a JSON summary here.")] = None,
) -> None:
    """Check a raw batch against the schema and rules; exit 1 naming every failed rule."""
    from fraudops.data.datasets import read_raw
    from fraudops.data.schema import TX_FRAUD
    from fraudops.data.validation import BatchRejected, validate_raw

    try:
        batch = read_raw(path)
        validate_raw(batch, max_fraud_rate=load_params().validate_.max_fraud_rate)
    except (BatchRejected, FileNotFoundError, ValueError) as exc:
        raise fail(str(exc)) from exc
    summary = {
        "rows": batch.height,
        "days": batch["day"].n_unique(),
        "fraud_rate": round(cast(float, batch[TX_FRAUD].mean()), 6),
    }
    if report:
        report.parent.mkdir(parents=True, exist_ok=True)
        report.write_text(json.dumps(summary, indent=2) + "\n")
    console.print(f"[green]valid[/]: {summary['rows']:,} rows over {summary['days']} days")


@app.command()
def featurize(
    raw: Annotated[Path | None, typer.Option(help="Raw data folder (default data/raw).")] = None,
    out: Annotated[Path, typer.Option(help="Feature Parquet file.")] = Path(
        "data/features/features.parquet"
    ),
) -> None:
    """Compute the offline features of every transaction and validate them."""
    from fraudops.data.datasets import read_raw
    from fraudops.data.validation import BatchRejected, validate_features
    from fraudops.features.definitions import build_features

    params = load_params().features
    with progress_steps(3) as step:
        try:
            step("reading raw transactions")
            transactions = read_raw(raw or get_settings().raw_dir)
            step("computing features")
            features = build_features(transactions, params)
            step("validating features")
            validate_features(features, params)
        except (BatchRejected, FileNotFoundError, ValueError) as exc:
            raise fail(str(exc)) from exc
    out.parent.mkdir(parents=True, exist_ok=True)
    features.write_parquet(out)
    console.print(f"{features.height:,} feature rows → {out}")


@app.command()
def backfill(
    raw: Annotated[Path | None, typer.Option(help="Raw data folder (default data/raw).")] = None,
    until: Annotated[
        dt.datetime | None,
        typer.Option(formats=["%Y-%m-%d"], help="Last day to load (default: the last in RAW)."),
    ] = None,
) -> None:
    """Load the online feature store from raw data, so serving can start mid-stream."""
    from fraudops.data.datasets import read_raw
    from fraudops.data.validation import BatchRejected
    from fraudops.features.online_store import open_online_store
    from fraudops.features.store_types import OnlineStoreError

    settings = get_settings()
    params = load_params().features
    with progress_steps(2) as step:
        try:
            step("reading raw transactions")
            transactions = read_raw(raw or settings.raw_dir)
            step("writing the online store")
            store = open_online_store(
                settings.feature_store_url, params, namespace=settings.online_store_namespace
            )
            with store:
                summary = store.backfill(transactions, until.date() if until else None)
        except (BatchRejected, OnlineStoreError, FileNotFoundError, ValueError) as exc:
            raise fail(str(exc)) from exc
    console.print(
        f"state as of the end of {summary.until}: {summary.customer_buckets:,} customer and "
        f"{summary.terminal_buckets:,} terminal buckets, {summary.indexed_transactions:,} "
        f"transactions indexed ({summary.pending_labels:,} awaiting labels)"
    )
