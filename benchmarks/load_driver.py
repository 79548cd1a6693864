"""Driving a server and measuring it: the serving benchmark's load generator, the CPU a run
cost the server and its stores, and the summary of runs.

A module of its own so that ``bench_serving.py`` stays readable (it had grown past 450
lines): that script sets servers and their stores up, routes the scenarios and reports;
this one sends the load and measures. ``bench_serving.py`` imports it (benchmarks/ is on
``sys.path`` when a script of it runs) and runs it as a process of its own for each run, so
the client's work is neither charged to the server nor slowed by it: raw HTTP/1.1
keep-alive connections on uvloop, cheap enough to leave the cores to the server, the
client's CPU per request reported beside the server's. At a fixed rate each request has a
scheduled send time and latency is measured from it, so a stalled server shows up in the
percentiles (no coordinated omission). ``bench_serving.py drive`` runs the same driver
(with the same options) for other callers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import select
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

CONNECTIONS_FIXED = 16
CONNECTIONS_SATURATION = 32


# --- the load (in the driver's process) ----------------------------------------------------


class _Template:
    """Request bytes with a fresh transaction id per request (the store dedups ids)."""

    def __init__(self, path: str, kind: str, features: list[str], seed: int) -> None:
        self.path = path
        self.kind = kind
        self.features = features
        self.rng = random.Random(seed)
        self.next_id = seed * 10_000_000

    def request(self) -> bytes:
        if self.kind == "mlflow":
            row = [self.rng.uniform(1, 200)] + [self.rng.random() for _ in self.features[1:]]
            body = json.dumps({"dataframe_split": {"columns": self.features, "data": [row]}})
        else:
            self.next_id += 1
            seconds = self.next_id % 86_400
            body = (
                f'{{"transaction_id":{self.next_id},'
                f'"timestamp":"2018-06-01T{seconds // 3600:02d}:{seconds // 60 % 60:02d}:'
                f'{seconds % 60:02d}","customer_id":{self.rng.randrange(5000)},'
                f'"terminal_id":{self.rng.randrange(10000)},'
                f'"amount":{self.rng.uniform(1, 200):.2f}}}'
            )
        data = body.encode()
        return (
            f"POST {self.path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\n\r\n"
        ).encode() + data


async def _exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
) -> int:
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    await reader.readexactly(length)
    return status


async def _drive(host: str, port: int, args: argparse.Namespace) -> dict[str, Any]:
    features = json.loads(args.features) if args.features else []
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    clock = time.perf_counter  # uvloop's loop.time() ticks in whole milliseconds
    start = clock() + 0.2
    end = start + args.duration
    slot = 0

    async def connection(seed: int) -> None:
        nonlocal slot
        template = _Template(args.path, args.kind, features, seed)
        reader, writer = await asyncio.open_connection(host, port)
        try:
            while True:
                if args.rate:
                    due = start + slot / args.rate
                    slot += 1
                    if due >= end:
                        return
                    delay = due - clock()
                    if delay > 0:
                        await asyncio.sleep(delay)
                else:
                    due = clock()
                    if due >= end:
                        return
                status = await _exchange(reader, writer, template.request())
                latencies.append(clock() - due)
                statuses[status] = statuses.get(status, 0) + 1
        finally:
            writer.close()

    cpu_before = time.process_time()
    await asyncio.gather(*(connection(seed + 1) for seed in range(args.connections)))
    return {
        "latencies_ms": [round(latency * 1000, 3) for latency in latencies],
        "statuses": statuses,
        "seconds": max(clock(), end) - start,
        "client_cpu_s": time.process_time() - cpu_before,
    }


# --- a run and what it cost (in the benchmark's process) -----------------------------------


@dataclass(frozen=True)
class Target:
    """A running server to drive: its address, what to send it, whose CPU to read."""

    address: str  # host:port
    pid: int  # the root of the server's process tree
    kind: str = "fraudops"
    path: str = "/v1/score"
    features: str = ""  # the JSON column list mlflow's requests carry
    workers: int = 1
    stores: tuple[str, ...] = ()  # store processes whose CPU is charged beside the server's

    @property
    def url(self) -> str:
        return f"http://{self.address}"


class _Process(NamedTuple):
    ppid: int
    name: str
    cpu_s: float


def _processes() -> dict[int, _Process]:
    """Every process's parent, name and user + system CPU so far."""
    ticks = os.sysconf("SC_CLK_TCK")
    table = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue  # it ended while the table was read
        name, _, rest = text[text.index("(") + 1 :].rpartition(")")
        fields = rest.split()
        cpu_s = (int(fields[11]) + int(fields[12])) / ticks
        table[int(stat.parent.name)] = _Process(int(fields[1]), name, cpu_s)
    return table


def _tree(root: int, table: dict[int, _Process]) -> set[int]:
    """ROOT and all its descendants."""
    tree, frontier = {root}, [root]
    while frontier:
        parent = frontier.pop()
        children = {pid for pid, process in table.items() if process.ppid == parent}
        tree |= children
        frontier += children
    return tree


def _cpu_snapshot(target: Target) -> dict[str, dict[int, float]]:
    """CPU so far, by pid, of the server's process tree and of each store's processes.

    The tree, not the server's pid alone: with workers, that pid is uvicorn's supervisor,
    and the requests are served by its children.
    """
    table = _processes()
    groups = {"server": _tree(target.pid, table)}
    groups |= {
        name: {pid for pid, proc in table.items() if proc.name == name} for name in target.stores
    }
    return {
        group: {pid: table[pid].cpu_s for pid in pids if pid in table}
        for group, pids in groups.items()
    }


def _cpu_spent(
    before: dict[str, dict[int, float]], after: dict[str, dict[int, float]]
) -> dict[str, float]:
    """CPU seconds each group spent in between, process by process: a process that started
    in between (a new PostgreSQL backend) counts from zero, rather than a total falling when
    the set of processes changes; one that ended in between is not counted (the server keeps
    its workers and its pooled connections for the whole run)."""
    return {
        group: sum(cpu - before[group].get(pid, 0.0) for pid, cpu in pids.items())
        for group, pids in after.items()
    }


def measure(target: Target, rate: int, seconds: float) -> dict[str, Any]:
    """One run of this driver against TARGET (RATE req/s, 0 for as fast as it answers), with
    the CPU the server and its stores spent meanwhile."""
    connections = CONNECTIONS_FIXED if rate else CONNECTIONS_SATURATION
    command = [sys.executable, __file__, target.address, "--path", target.path]
    command += ["--kind", target.kind, "--rate", str(rate), "--duration", str(seconds)]
    command += ["--connections", str(connections), "--features", target.features]
    before = _cpu_snapshot(target)
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    spent = _cpu_spent(before, _cpu_snapshot(target))
    result: dict[str, Any] = json.loads(done.stdout)
    result["server_cpu_s"] = spent.pop("server")
    result["store_cpu_s"] = spent
    return result


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Percentiles of all runs' latencies together; rates and CPU over all their time.

    Each run carries the client's CPU (from the driver), the server's and, where the server
    has stores in processes of their own, each store's (``store_cpu_s``, from the caller).
    """
    ms = np.concatenate([run["latencies_ms"] for run in runs])
    statuses: dict[str, int] = {}
    for run in runs:
        for code, count in run["statuses"].items():
            statuses[str(code)] = statuses.get(str(code), 0) + count
    seconds = sum(run["seconds"] for run in runs)

    def per_request(cpu_seconds: float) -> float:
        return round(cpu_seconds * 1000 / max(ms.size, 1), 3)

    stores = runs[0].get("store_cpu_s", {})
    return {
        "requests": int(ms.size),
        "rps": round(ms.size / seconds, 1),
        "p50_ms": round(float(np.percentile(ms, 50)), 2),
        "p95_ms": round(float(np.percentile(ms, 95)), 2),
        "p99_ms": round(float(np.percentile(ms, 99)), 2),
        "max_ms": round(float(ms.max()), 2),
        "statuses": dict(sorted(statuses.items())),
        "server_cpu_ms_per_request": per_request(sum(run["server_cpu_s"] for run in runs)),
        "store_cpu_ms_per_request": {
            store: per_request(sum(run["store_cpu_s"][store] for run in runs)) for store in stores
        },
        "client_cpu_ms_per_request": per_request(sum(run["client_cpu_s"] for run in runs)),
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The driver's options: its own command line and ``bench_serving.py drive``."""
    parser.add_argument("target", help="host:port")
    parser.add_argument("--path", default="/v1/score")
    parser.add_argument("--kind", choices=["fraudops", "mlflow"], default="fraudops")
    parser.add_argument("--rate", type=int, default=0, help="req/s; 0 means as fast as possible")
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--features", default="")


def drive_main(args: argparse.Namespace) -> None:
    """Send the load and print what it measured as one JSON object."""
    import uvloop

    host, port = args.target.split(":")
    _write_all(sys.stdout.fileno(), json.dumps(uvloop.run(_drive(host, int(port), args))) + "\n")


def _write_all(fd: int, text: str) -> None:
    """Write TEXT whole to FD, however short each write comes back.

    After ``uvloop.run``, a ``print`` of more than a pipe's buffer (64 KiB) to a reader
    that is not keeping up came out cut at 64 KiB with no error (seen here, uvloop 0.23;
    the compose test's JSON broke at 128 KiB), so each short write is continued here.
    """
    view = memoryview(text.encode())
    while view:
        try:
            view = view[os.write(fd, view) :]
        except BlockingIOError:
            select.select([], [fd], [])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Send load to a server; print a JSON summary.")
    add_arguments(parser)
    drive_main(parser.parse_args())
