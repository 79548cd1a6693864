"""Time the simulator and the raw writer at the handbook's scale; print plain lines.

The work runs in a child process so that its peak memory (max RSS) is measured alone,
without this script's own imports. Usage: ``python benchmarks/bench_generate.py``.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

#: The handbook simulator's own time at this scale on a 2-core machine, from the
#: handbook notes: a quoted figure, not measured by this script.
HANDBOOK_SIMULATOR_SECONDS = 227.0


def work(out_dir: Path) -> dict[str, float | int]:
    """Simulate the default params and write them; return timings and sizes."""
    from fraudops.config import SimulateParams
    from fraudops.data.datasets import read_raw, write_raw
    from fraudops.data.schema import TX_FRAUD
    from fraudops.data.simulate import simulate

    started = time.perf_counter()
    transactions = simulate(SimulateParams())
    simulated = time.perf_counter()
    files = write_raw(transactions, out_dir)
    written = time.perf_counter()
    read_raw(out_dir)
    read = time.perf_counter()
    return {
        "simulate_s": simulated - started,
        "write_s": written - simulated,
        "read_s": read - written,
        "rows": transactions.height,
        "fraud_rate": float(transactions[TX_FRAUD].mean()),
        "files": len(files),
        "bytes": sum(path.stat().st_size for path in files),
    }


def run_child() -> dict[str, float | int]:
    with tempfile.TemporaryDirectory() as scratch:
        done = subprocess.run(
            [sys.executable, __file__, "--child", str(Path(scratch) / "raw")],
            capture_output=True,
            text=True,
            check=True,
        )
    return json.loads(done.stdout)


def main() -> None:
    result = run_child()
    peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # KiB on Linux
    print(f"rows: {result['rows']:,} (fraud rate {result['fraud_rate']:.3%})")
    print(f"simulate: {result['simulate_s']:.2f} s")
    print(
        f"write_raw: {result['write_s']:.2f} s ({result['files']} files, "
        f"{result['bytes'] / 2**20:.1f} MiB)"
    )
    print(f"read_raw: {result['read_s']:.2f} s")
    print(f"peak memory (max RSS of the child process): {peak_mib:.0f} MiB")
    print(
        f"handbook simulator: {HANDBOOK_SIMULATOR_SECONDS:.0f} s "
        "(quoted from the handbook notes, not measured in this run)"
    )
    print(
        f"speed-up of simulate over the handbook simulator: "
        f"{HANDBOOK_SIMULATOR_SECONDS / result['simulate_s']:.0f}x"
    )
    total = result["simulate_s"] + result["write_s"]
    print(f"speed-up of simulate + write_raw: {HANDBOOK_SIMULATOR_SECONDS / total:.0f}x")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        print(json.dumps(work(Path(sys.argv[2]))))
    else:
        main()
