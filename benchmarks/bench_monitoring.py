"""Time one monitoring run (drift + classification + CBPE) by window size; print plain lines.

A quick model is trained on simulated drift-free days (3,000 customers) and its reference
sample kept as the training flow keeps it (50,000 rows). Windows of 10 k, 100 k and 1 M
logged predictions, every label present, are drawn with replacement from a week of its
traffic, so every step runs, realised quality included. Each run happens in its own child
process, so its peak memory (max RSS) is its own; the time of ``analyse_window`` excludes
imports and reading the files, which are reported apart. One extra run at 100 k turns
sampling off to show what it saves. Usage: ``python benchmarks/bench_monitoring.py``.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SIZES = (10_000, 100_000, 1_000_000)
TARGET_ROWS = 100_000
TARGET_WALL_S = 30.0
TARGET_PEAK_MIB = 2048.0
SEED = 0


def prepare(folder: Path) -> None:
    """The reference, the windows and the model's threshold, as files a child reads."""
    from monitoring.scenarios import simulate_world

    world = simulate_world(SEED, customers=3000)
    world.reference.to_parquet(folder / "reference.parquet")
    week = world.windows["none"]
    for rows in SIZES:
        week.sample(n=rows, replace=True, random_state=SEED).sort_values("tx_datetime").to_parquet(
            folder / f"window-{rows}.parquet"
        )
    model = {"threshold": world.threshold, "training_metrics": world.training_metrics}
    (folder / "model.json").write_text(json.dumps(model))


def measure(folder: Path, rows: int, sample_size: int | None) -> dict[str, float | str]:
    """In a child: import, read, then time one ``analyse_window``; peak RSS at the end."""
    started = time.perf_counter()
    import pandas as pd

    from fraudops.config import Params
    from monitoring.analysis import analyse_window

    imported = time.perf_counter()
    imported_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    reference = pd.read_parquet(folder / "reference.parquet")
    window = pd.read_parquet(folder / f"window-{rows}.parquet")
    model = json.loads((folder / "model.json").read_text())
    params = Params()
    if sample_size is not None:
        monitor = params.monitor.model_copy(update={"sample_size": sample_size})
        params = params.model_copy(update={"monitor": monitor})
    loaded = time.perf_counter()
    cpu = time.process_time()
    result = analyse_window(
        reference,
        window,
        threshold=model["threshold"],
        params=params,
        window_id=f"bench-{rows}",
        training_metrics=model["training_metrics"],
    )
    done = time.perf_counter()
    return {
        "import_s": imported - started,
        "load_s": loaded - imported,
        "analysis_s": done - loaded,
        "analysis_cpu_s": time.process_time() - cpu,
        "imported_mib": imported_mib,
        "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "sampled_rows": result.decision.counts.sampled_rows,
        "signal": result.decision.signal,
    }


def run_child(folder: Path, rows: int, sample_size: int | None) -> dict[str, float | str]:
    command = [sys.executable, __file__, "--child", str(folder), str(rows), str(sample_size or 0)]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        prepare(folder)
        print(f"reference: 50,000 rows; cores: {os.cpu_count()}; every window fully labelled")
        runs = [(rows, None) for rows in SIZES] + [(TARGET_ROWS, TARGET_ROWS)]
        results = {run: run_child(folder, *run) for run in runs}
    for (rows, sample_size), r in results.items():
        sampling = "no sampling" if sample_size else f"sampled to {r['sampled_rows']:,}"
        print(
            f"{rows:>9,} rows ({sampling}): analysis {r['analysis_s']:.1f} s wall, "
            f"{r['analysis_cpu_s']:.1f} s CPU; peak RSS {r['peak_mib']:.0f} MiB "
            f"({r['imported_mib']:.0f} MiB after imports); "
            f"imports {r['import_s']:.1f} s, reading {r['load_s']:.1f} s; decision {r['signal']}"
        )
    target = results[TARGET_ROWS, None]
    within = target["analysis_s"] < TARGET_WALL_S and target["peak_mib"] < TARGET_PEAK_MIB
    print(
        f"target at {TARGET_ROWS:,} rows (< {TARGET_WALL_S:.0f} s, < {TARGET_PEAK_MIB:.0f} MiB): "
        f"{'met' if within else 'MISSED'}"
    )


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        folder, rows, sample_size = Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
        print(json.dumps(measure(folder, rows, sample_size or None)))
    else:
        main()
