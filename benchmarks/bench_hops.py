"""Where a scoring request's time goes, hop by hop, and what each stored row costs.

    .venv/bin/python benchmarks/bench_hops.py [--transactions 2000]
        [--redis redis://127.0.0.1:6379/0] [--postgres postgresql+psycopg2://postgres@127.0.0.1:5432/postgres]

``benchmarks/bench_serving.py`` measures whole requests over HTTP. This script times the
hops inside one, with the library calls ``serving.scoring.score_transaction`` makes, in its
order, on the same kind of model (a params.yaml-sized XGBoost champion, 300 trees, scored by
the numpy tree walk):

1. parse: the raw JSON body validated into ``serving.schemas.Transaction`` (strict);
2. route: the A/B arm and shadow sample of the customer (salted hash,
   ``fraudops.experiments.routing``);
3. features: one atomic exchange with the online store (read the customer's and the
   terminal's day buckets, record the transaction), then the 15 features;
4. model: the features as a numpy row, the score and the decision;
5. log hand-off: the prediction row put on the log writer's queue (its thread stores rows
   in batches off the request path, as in serving);
6. answer: the response body serialised with orjson.

The online store is backfilled with every day but the last; the last transactions are then
scored one at a time in time order, as serving sees them. Left out: the HTTP layer
(uvicorn's socket reads and writes, the ASGI call), so compare the sum with the end-to-end
figures of benchmarks/RESULTS.md. Each backend pair runs in turn: SQLite store and SQLite
log (the default), then Redis and PostgreSQL when their URLs are given (a namespace and a
database of its own, removed afterwards).

It also reports storage: bytes per prediction-log row (SQLite file size / rows; PostgreSQL
``pg_total_relation_size``, indexes included) and, with Redis, ``MEMORY USAGE`` per key of
each kind (customer hash, terminal hash, transaction index entry). Prints tables; writes
``benchmarks/out/hops.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import orjson

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "out" / "hops.json"
#: The champion of bench_serving.py: the params.yaml family and size.
CHAMPION = {"n_estimators": 300, "learning_rate": 0.05, "max_depth": 4, "max_bin": 4096}
HOPS = ("parse", "route", "features", "model", "log hand-off", "answer")


def _train(root: Path) -> tuple[Any, Any, Any]:
    """The raw data, the feature params and the champion as serving holds it."""
    from fraudops.config import CandidateGrid, Params, SimulateParams, TrainParams
    from fraudops.data.datasets import write_raw
    from fraudops.data.simulate import simulate
    from fraudops.features.definitions import feature_columns
    from fraudops.modeling.steps import (
        ModelCard,
        load_model_dir,
        save_model_dir,
        train_bare,
        workspace_data,
    )
    from serving.loaded_model import EstimatorSource, LoadedModel

    raw = simulate(SimulateParams(customers=500, terminals=1000, days=40))
    write_raw(raw, root / "raw")
    grid = {"xgboost": CandidateGrid(fixed=CHAMPION)}
    params = Params(train=TrainParams(validation_folds=1, candidates=grid))
    started = time.perf_counter()
    result = train_bare(workspace_data(root / "raw", root / "untracked.dvc"), params)
    print(f"trained the champion in {time.perf_counter() - started:.1f} s")
    card = ModelCard.of(result.selection, feature_columns(params.features), "bench")
    save_model_dir(result.selection.model, card, root / "model")
    estimator, card = load_model_dir(root / "model")
    model = LoadedModel(
        name="fraud-detector",
        version="1",
        alias="champion",
        run_id=None,
        family=card.family,
        threshold=card.threshold,
        feature_names=tuple(card.features),
        source=EstimatorSource.of(estimator),
    )
    assert model.flat_trees is not None, "the numpy tree walk did not take this model"
    return raw, params.features, model


def _time_hops(raw: Any, feature_params: Any, model: Any, store: Any, writer: Any, n: int):
    """Per-hop latencies in µs for the last N transactions, after a backfill of the rest."""
    import polars as pl

    from fraudops.data.schema import (
        CUSTOMER_ID,
        TERMINAL_ID,
        TRANSACTION_ID,
        TX_AMOUNT,
        TX_DATETIME,
    )
    from fraudops.experiments.routing import Router, RoutingConfig, ShadowPolicy
    from fraudops.features.store_types import Transaction as StoreTransaction
    from fraudops.logs.records import PredictionRecord
    from serving.schemas import Transaction

    day = pl.col(TX_DATETIME).dt.date()
    last_day = raw[TX_DATETIME].dt.date().max()
    store.backfill(raw.filter(day < last_day).with_columns(day.alias("day")))
    served = raw.sort(TRANSACTION_ID).tail(n)
    router = Router(
        RoutingConfig(
            mode="ab",
            weights={"champion": 90, "challenger": 10},
            shadow=ShadowPolicy(alias="challenger", sample_percent=100),
            salt="bench",
        )
    )
    bodies = [
        orjson.dumps(
            {
                "transaction_id": row[TRANSACTION_ID],
                "timestamp": row[TX_DATETIME].isoformat() + "Z",
                "customer_id": row[CUSTOMER_ID],
                "terminal_id": row[TERMINAL_ID],
                "amount": row[TX_AMOUNT],
            }
        )
        for row in served.iter_rows(named=True)
    ]
    timings = {hop: np.empty(len(bodies)) for hop in (*HOPS, "total")}
    clock = time.perf_counter_ns
    for i, body in enumerate(bodies):
        t0 = clock()
        tx = Transaction.model_validate_json(body)
        t1 = clock()
        decision = router.route(tx.customer_id)
        t2 = clock()
        features = store.score_features(
            StoreTransaction(
                tx.transaction_id, tx.timestamp, tx.customer_id, tx.terminal_id, tx.amount
            )
        )
        t3 = clock()
        row = model.row(features)
        score = model.score(row)
        fraud = model.decide(score)
        t4 = clock()
        request_id = uuid.uuid4().hex
        writer.log_prediction(
            PredictionRecord(
                request_id=request_id,
                transaction_id=tx.transaction_id,
                tx_datetime=tx.timestamp,
                customer_id=tx.customer_id,
                terminal_id=tx.terminal_id,
                features=features,
                model_name=model.name,
                model_version=model.version,
                model_alias=model.alias,
                arm=decision.arm_alias,
                score=score,
                decision=fraud,
                threshold=model.threshold,
                latency_ms=(t4 - t0) / 1e6,
            )
        )
        t5 = clock()
        orjson.dumps(
            {
                "request_id": request_id,
                "transaction_id": tx.transaction_id,
                "score": score,
                "fraud": fraud,
                "threshold": model.threshold,
                "model": {"name": model.name, "version": model.version, "alias": model.alias},
                "arm": decision.arm_alias,
                "explanation": None,
            }
        )
        t6 = clock()
        marks = (t0, t1, t2, t3, t4, t5, t6)
        for hop, start, end in zip(HOPS, marks, marks[1:], strict=False):
            timings[hop][i] = (end - start) / 1000
        timings["total"][i] = (t6 - t0) / 1000
    writer.flush(timeout=60)
    return {
        hop: {str(q): round(float(np.percentile(values, q)), 1) for q in (50, 90, 99)}
        for hop, values in timings.items()
    }


def _print_hops(title: str, hops: dict[str, dict[str, float]]) -> None:
    print(f"\n{title}")
    print(f"{'hop':<14}{'p50 µs':>9}{'p90 µs':>9}{'p99 µs':>9}")
    for hop, values in hops.items():
        print(f"{hop:<14}{values['50']:>9.1f}{values['90']:>9.1f}{values['99']:>9.1f}")


def _sqlite_bytes_per_row(path: Path, engine: Any) -> float:
    from sqlalchemy import text

    with engine.begin() as connection:
        connection.execute(text("PRAGMA wal_checkpoint(TRUNCATE)"))
        rows = connection.execute(text("SELECT count(*) FROM predictions")).scalar_one()
    return path.stat().st_size / rows


def _postgres_bytes_per_row(engine: Any) -> float:
    from sqlalchemy import text

    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(text("VACUUM ANALYZE predictions"))
        size = connection.execute(text("SELECT pg_total_relation_size('predictions')"))
        rows = connection.execute(text("SELECT count(*) FROM predictions")).scalar_one()
        return size.scalar_one() / rows


def _redis_key_bytes(store: Any) -> dict[str, float]:
    """Mean ``MEMORY USAGE`` of up to 500 keys of each kind in the store's namespace."""
    client = store._client
    sizes: dict[str, float] = {}
    for kind, name in (("c", "customer hash"), ("t", "terminal hash"), ("x", "index entry")):
        keys = []
        for key in client.scan_iter(f"{store.namespace}:{kind}:*", count=1000):
            keys.append(key)
            if len(keys) == 500:
                break
        sizes[name] = round(float(np.mean([client.memory_usage(k) for k in keys])), 1)
    return sizes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transactions", type=int, default=2000, help="Requests to time.")
    parser.add_argument("--redis", help="Also time a Redis online store at this URL.")
    parser.add_argument("--postgres", help="Also log to a fresh database on this server.")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")

    from fraudops.features.online_store import open_online_store
    from fraudops.logs.database import open_prediction_log
    from fraudops.logs.writer import PredictionLogWriter

    results: dict[str, Any] = {"transactions": args.transactions}
    with tempfile.TemporaryDirectory(prefix="fraudops-hops-") as tmp:
        root = Path(tmp)
        raw, feature_params, model = _train(root)

        log_path = root / "predictions.db"
        engine = open_prediction_log(f"sqlite:///{log_path}")
        store = open_online_store(f"sqlite:///{root / 'online.db'}", feature_params)
        with PredictionLogWriter(engine, id_salt="bench-salt") as writer:
            hops = _time_hops(raw, feature_params, model, store, writer, args.transactions)
        store.close()
        results["sqlite"] = {
            "hops_us": hops,
            "log_bytes_per_row": _sqlite_bytes_per_row(log_path, engine),
        }
        engine.dispose()
        _print_hops("SQLite online store, SQLite prediction log", hops)

        if args.redis and args.postgres:
            from fraudops.local.servers import create_postgres_database, drop_postgres_database

            namespace = f"bench-hops-{uuid.uuid4().hex[:8]}"
            database = create_postgres_database(args.postgres)
            store = open_online_store(args.redis, feature_params, namespace=namespace)
            engine = open_prediction_log(database)
            try:
                with PredictionLogWriter(engine, id_salt="bench-salt") as writer:
                    hops = _time_hops(raw, feature_params, model, store, writer, args.transactions)
                results["redis_postgres"] = {
                    "hops_us": hops,
                    "log_bytes_per_row": _postgres_bytes_per_row(engine),
                    "redis_bytes_per_key": _redis_key_bytes(store),
                }
                _print_hops("Redis online store, PostgreSQL prediction log", hops)
            finally:
                keys = list(store._client.scan_iter(f"{namespace}:*", count=1000))
                for start in range(0, len(keys), 1000):
                    store._client.delete(*keys[start : start + 1000])
                store.close()
                engine.dispose()
                drop_postgres_database(database)

    load = os.getloadavg()[0]
    print(f"\n{args.transactions:,} transactions timed; cores: {os.cpu_count()}; load {load:.1f}")
    for backend, values in results.items():
        if isinstance(values, dict):
            print(f"{backend}: prediction-log bytes per row {values['log_bytes_per_row']:.0f}")
            if "redis_bytes_per_key" in values:
                print(f"{backend}: Redis bytes per key {values['redis_bytes_per_key']}")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
