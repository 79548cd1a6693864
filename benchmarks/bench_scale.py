"""The scaling curve: generate, featurise, train and batch-score at 1x, 3x and 10x the data.

    nice -n 5 .venv/bin/python benchmarks/bench_scale.py [--sizes 1 3 10] [--out PATH]
    .venv/bin/python benchmarks/bench_scale.py --report RUN.json [RUN.json ...]

A size multiplies params.yaml's customers and terminals (same days, so ~1.8 M -> ~18 M
transactions). For each size, in a scratch folder outside the checkout:

* ``generate``: `simulate` and `write_raw`, in a child process;
* ``single``: one child process runs `build_features`, the fit of the default run's winner
  on the final training window (XGBoost ``hist``, params.yaml's settings, ``n_jobs`` 2) and
  `score_batch` without a client;
* ``dask``: one child process starts a `LocalCluster` of 2 worker processes (1 thread each,
  memory limit `WORKER_MEMORY_LIMIT`) and runs `build_features_on_dask`,
  `fit_xgboost_on_dask` and `score_batch` with the client.

Only the winner's fit is timed, not the candidate search (20 fits: tens of minutes at 10x
on 2 cores). Both paths batch-score with the single process's model, so their scores must be
equal. Each step gives its wall time, its CPU time over every process (on a shared machine
the steadier figure) and the peak RSS of each process: a sampler thread every `SAMPLE_S` in
the driver and in each worker (a worker plugin), and each process's ``ru_maxrss``. The
script then checks features and scores equal value for value and the two models' test AP
within `AP_TOLERANCE`, prints the table and the growth ratios, and writes the JSON and the
plot; ``--report`` reprints and plots saved runs together (sizes measured one run at a time).

One file of about 500 lines, past the project's 400: a benchmark is run and read as one
script, and its three child roles share the sampler and the step records.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "out" / "scale.json"
PLOT = ROOT / "docs" / "img" / "scaling.png"
STEPS = ("featurise", "train", "score")
MODES = ("single", "dask")
GIB = 2**30
#: The issue's ceiling for any process at 10x, and the memory limit of each Dask worker.
TARGET_BYTES = 8 * GIB
WORKER_MEMORY_LIMIT = "8GiB"
SAMPLE_S = 0.01
#: The issue's tolerance between the two fits' test-period average precision.
AP_TOLERANCE = 0.005
#: Below this many test frauds AP moves in steps larger than the tolerance (docs/scaling.md).
MIN_TEST_FRAUDS = 100
#: The candidate the default training run selects (benchmarks/RESULTS.md, training flow).
WINNER_MAX_DEPTH = 3
#: Scores fill the decision column at this threshold: no search ran to set a cost-based one.
THRESHOLD = 0.5


class PeakSampler:
    """The highest RSS of this process between two `take` calls, sampled every SAMPLE_S."""

    def __init__(self) -> None:
        import psutil

        self._process = psutil.Process()
        self._peak = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(SAMPLE_S):
            rss = self._process.memory_info().rss
            with self._lock:
                self._peak = max(self._peak, rss)

    def take(self) -> int:
        """The peak since the last call (or the start); the next period starts from now."""
        rss = self._process.memory_info().rss
        with self._lock:
            peak, self._peak = max(self._peak, rss), rss
        return peak

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


#: The name of the worker plugin that holds each worker's `PeakSampler`.
WORKER_PLUGIN = "bench-peak-rss"


def _worker_peaks() -> Any:
    """A Dask worker plugin: a `PeakSampler` in each worker process (Dask imported here)."""
    from distributed import WorkerPlugin

    class WorkerPeaks(WorkerPlugin):  # type: ignore[misc]
        def setup(self, worker: Any) -> None:
            self.sampler = PeakSampler()

        def teardown(self, worker: Any) -> None:
            self.sampler.stop()

    return WorkerPeaks()


def _take_worker_peak(dask_worker: Any) -> int:
    peak: int = dask_worker.plugins[WORKER_PLUGIN].sampler.take()
    return peak


def cpu_seconds(dask_worker: Any = None) -> float:
    """User + system CPU of every thread of this process so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _cluster_cpu(client: Any) -> float:
    """CPU seconds of this process (client and, in a LocalCluster, scheduler) and the workers."""
    workers = sum(client.run(cpu_seconds).values()) if client is not None else 0.0
    return cpu_seconds() + float(workers)


def max_rss(dask_worker: Any = None) -> int:
    """This process's peak RSS in bytes (``client.run`` passes the worker; unused)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


# --- the child processes ---------------------------------------------------------------------


def generate(scratch: Path, factor: float) -> dict[str, Any]:
    from fraudops.config import load_params
    from fraudops.data.datasets import write_raw
    from fraudops.data.simulate import simulate

    base = load_params(scratch / "params.yaml").simulate
    params = base.model_copy(
        update={
            "customers": round(base.customers * factor),
            "terminals": round(base.terminals * factor),
        }
    )
    started = time.perf_counter()
    raw = simulate(params)
    simulated = time.perf_counter()
    write_raw(raw, scratch / "raw")
    return {
        "customers": params.customers,
        "terminals": params.terminals,
        "days": params.days,
        "rows": raw.height,
        "simulate_s": simulated - started,
        "write_s": time.perf_counter() - simulated,
        "peak_bytes": max_rss(),
    }


def run_mode(mode: str, scratch: Path) -> dict[str, Any]:
    """Read the raw data, then time each step of MODE; write its outputs under SCRATCH."""
    from fraudops.data.datasets import read_raw

    sampler = PeakSampler()
    started = time.perf_counter()
    raw = read_raw(scratch / "raw")
    result: dict[str, Any] = {"read_s": time.perf_counter() - started, "steps": {}}
    with _client(mode, result) as client:
        sampler.take()
        steps = _Steps(raw, scratch / mode, scratch / "single" / "model", client)
        for step in STEPS:
            began, cpu = time.perf_counter(), _cluster_cpu(client)
            getattr(steps, step)()
            timing: dict[str, Any] = {"wall_s": time.perf_counter() - began}
            timing["cpu_s"] = _cluster_cpu(client) - cpu
            timing["driver_peak_bytes"] = sampler.take()
            if client is not None:
                timing["worker_peak_bytes"] = list(client.run(_take_worker_peak).values())
            result["steps"][step] = timing
            steps.after(step)
        result["test_ap"], result["test_frauds"] = steps.test_ap, steps.test_frauds
        if client is not None:
            result["worker_max_rss_bytes"] = list(client.run(max_rss).values())
    result["driver_max_rss_bytes"] = max_rss()
    sampler.stop()
    return result


@contextmanager
def _client(mode: str, result: dict[str, Any]) -> Iterator[Any]:
    """No client for ``single``; a fresh LocalCluster, its workers sampled, for ``dask``."""
    if mode == "single":
        yield None
        return
    from distributed import Client, LocalCluster

    started = time.perf_counter()
    with (
        LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            memory_limit=WORKER_MEMORY_LIMIT,
            dashboard_address=None,
        ) as cluster,
        Client(cluster, set_as_default=False) as client,
    ):
        client.register_plugin(_worker_peaks(), name=WORKER_PLUGIN)
        result["cluster_start_s"] = time.perf_counter() - started
        yield client


class _Steps:
    """The three timed steps of one mode, in order, and what each leaves to the next."""

    def __init__(self, raw: Any, out: Path, model_dir: Path, client: Any) -> None:
        from fraudops.config import load_params
        from fraudops.features.definitions import feature_columns
        from fraudops.modeling.candidates import candidates

        self.raw, self.out, self.model_dir, self.client = raw, out, model_dir, client
        self.params = load_params(out.parent / "params.yaml")
        self.columns = feature_columns(self.params.features)
        (self.winner,) = [
            found
            for found in candidates(self.params.train)
            if found.family == "xgboost" and found.hyperparams["max_depth"] == WINNER_MAX_DEPTH
        ]
        out.mkdir(parents=True, exist_ok=True)

    def featurise(self) -> None:
        from fraudops.features.definitions import build_features
        from fraudops.scale.dask_features import build_features_on_dask

        if self.client is None:
            self.features = build_features(self.raw, self.params.features)
        else:
            self.features = build_features_on_dask(self.client, self.raw, self.params.features)

    def train(self) -> None:
        """The final split, as `select_model` makes it, and the winner's fit on its window."""
        from fraudops.data.split import final_split
        from fraudops.modeling.candidates import fit
        from fraudops.scale.dask_training import fit_xgboost_on_dask

        self.split = final_split(self.features, self.params.train)
        seed = self.params.train.seed
        if self.client is None:
            n_jobs = self.params.train.n_jobs
            self.model = fit(self.winner, self.split.train, self.columns, seed=seed, n_jobs=n_jobs)
        else:
            self.model = fit_xgboost_on_dask(
                self.client, self.winner, self.split.train, self.columns, seed=seed
            )

    def score(self) -> None:
        """`score_batch` of every raw row with the single process's model, in both modes."""
        from fraudops.modeling.steps import load_model_dir
        from fraudops.scale.batch_scoring import Champion, score_batch

        model, card = load_model_dir(self.model_dir)
        champion = Champion("bench", "1", model, card)
        self.scores = score_batch(self.raw, champion, self.params.features, self.client)

    def after(self, step: str) -> None:
        """Untimed: write what the checks compare, and free what the next step does not use."""
        from fraudops.data.schema import TX_FRAUD
        from fraudops.modeling.candidates import fraud_scores
        from fraudops.modeling.evaluation import ranking_metrics

        if step == "featurise":
            self.features.write_parquet(self.out / "features.parquet")
        elif step == "train":
            test = self.split.test
            scored = fraud_scores(self.model, test, self.columns)
            self.test_ap = ranking_metrics(test, scored)["average_precision"]
            self.test_frauds = int(test[TX_FRAUD].sum())
            if self.client is None:
                self._save_model()
            del self.features, self.split
        else:
            self.scores.write_parquet(self.out / "scores.parquet")

    def _save_model(self) -> None:
        from fraudops.modeling.steps import ModelCard, save_model_dir

        card = ModelCard(
            family=self.winner.family,
            candidate=self.winner.name,
            hyperparams=dict(self.winner.hyperparams),
            features=self.columns,
            threshold=THRESHOLD,
            data_version="bench",
            **self.split.dates(),
        )
        save_model_dir(self.model, card, self.model_dir)


# --- the parent: checks, report, plot --------------------------------------------------------


def run_child(*args: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, __file__, "--child", *args], capture_output=True, text=True
    )
    if done.returncode != 0:
        raise RuntimeError(f"child {args[0]} failed:\n{done.stderr[-4000:]}")
    found: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return found


def measure(factor: float, scratch_root: Path | None) -> dict[str, Any]:
    """One size: generate, both modes, the checks; its scratch folder removed after."""
    scratch = Path(tempfile.mkdtemp(prefix=f"bench-scale-{factor:g}x-", dir=scratch_root))
    load = os.getloadavg()[0]
    try:
        shutil.copy(ROOT / "params.yaml", scratch / "params.yaml")  # one version for all steps
        generated = run_child("generate", str(scratch), str(factor))
        found: dict[str, Any] = {"factor": factor, "generate": generated}
        for mode in MODES:
            print(f"{factor:g}x: {generated['rows']:,} rows generated; {mode}", flush=True)
            found[mode] = run_child(mode, str(scratch))
        found["checks"] = compare(scratch, found["single"], found["dask"])
        found["load_average"] = [load, os.getloadavg()[0]]
        return found
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def compare(scratch: Path, single: dict[str, Any], dask: dict[str, Any]) -> dict[str, Any]:
    """Features and scores of both modes equal (exactly, a column at a time), APs close."""
    return {
        "features_equal": _same_columns(scratch, "features.parquet"),
        "scores_equal": _same_columns(scratch, "scores.parquet"),
        "ap_difference": dask["test_ap"] - single["test_ap"],
        "test_frauds": single["test_frauds"],
    }


def _same_columns(scratch: Path, name: str) -> bool:
    import polars as pl
    from polars.testing import assert_series_equal

    paths = [scratch / mode / name for mode in MODES]
    columns = [pl.read_parquet_schema(path) for path in paths]
    if columns[0] != columns[1]:
        return False
    for column in columns[0]:
        left, right = (pl.read_parquet(path, columns=[column]).to_series() for path in paths)
        try:
            assert_series_equal(left, right, check_exact=True)
        except AssertionError:
            return False
    return True


def report(sizes: list[dict[str, Any]]) -> list[str]:
    """Print the table, the checks and the growth ratios; return the failed checks."""
    failed = []
    print(f"cores: {os.cpu_count()}; one run per step, on a machine shared with other work")
    for size in sizes:
        gen, single, dask = size["generate"], size["single"], size["dask"]
        load = "/".join(f"{value:.1f}" for value in size["load_average"])
        print(
            f"\n{size['factor']:g}x: {gen['rows']:,} rows ({gen['customers']:,} customers, "
            f"{gen['terminals']:,} terminals, {gen['days']} days; load average {load} at start/end)"
        )
        print(
            f"  simulate {gen['simulate_s']:.1f} s + write {gen['write_s']:.1f} s, peak "
            f"{_gib(gen['peak_bytes'])}; read_raw {single['read_s']:.1f} s; cluster start "
            f"{dask['cluster_start_s']:.1f} s"
        )
        for step in STEPS:
            one, many = single["steps"][step], dask["steps"][step]
            print(
                f"  {step:9} single {one['wall_s']:6.1f} s (CPU {one['cpu_s']:6.1f} s), "
                f"{_gib(one['driver_peak_bytes'])} | dask {many['wall_s']:6.1f} s (CPU "
                f"{many['cpu_s']:6.1f} s), driver {_gib(many['driver_peak_bytes'])}, workers "
                + ", ".join(_gib(peak) for peak in many["worker_peak_bytes"])
            )
        peaks = [dask["driver_max_rss_bytes"], *dask["worker_max_rss_bytes"]]
        print(
            f"  max RSS over the run: single {_gib(single['driver_max_rss_bytes'])}; dask "
            f"driver {_gib(peaks[0])}, workers {', '.join(_gib(p) for p in peaks[1:])}; "
            f"every Dask process under {_gib(TARGET_BYTES)}: {max(peaks) <= TARGET_BYTES}"
        )
        failed += _checks(size)
    for size in sizes[1:]:
        _growth(size, sizes[0])
    return failed


def _checks(size: dict[str, Any]) -> list[str]:
    checks, label = size["checks"], f"{size['factor']:g}x"
    asserted = checks["test_frauds"] >= MIN_TEST_FRAUDS
    print(
        f"  features equal: {checks['features_equal']}; scores equal: {checks['scores_equal']}; "
        f"test AP single {size['single']['test_ap']:.4f}, dask {size['dask']['test_ap']:.4f} "
        f"(difference {checks['ap_difference']:+.4f}, {checks['test_frauds']} test frauds"
        + ("" if asserted else f", under {MIN_TEST_FRAUDS}: tolerance not asserted")
        + ")"
    )
    outcomes = {
        "features differ": checks["features_equal"],
        "scores differ": checks["scores_equal"],
        f"AP beyond {AP_TOLERANCE}": abs(checks["ap_difference"]) <= AP_TOLERANCE or not asserted,
    }
    return [f"{label}: {name}" for name, ok in outcomes.items() if not ok]


def _growth(size: dict[str, Any], base: dict[str, Any]) -> None:
    """Each step's wall and CPU time at SIZE over its time at BASE, beside the ratio of rows."""
    rows = size["generate"]["rows"] / base["generate"]["rows"]
    print(
        f"\ngrowth {size['factor']:g}x/{base['factor']:g}x, rows x{rows:.2f} (a time ratio at or "
        f"below it is linear or better), wall / CPU: generate "
        f"{seconds(size) / seconds(base):.2f}"
    )
    for mode in MODES:
        ratios = [
            f"{step} {seconds(size, mode, step) / seconds(base, mode, step):.2f} / "
            f"{seconds(size, mode, step, 'cpu_s') / seconds(base, mode, step, 'cpu_s'):.2f}"
            for step in STEPS
        ]
        print(f"  {mode}: " + ", ".join(ratios))


def seconds(
    size: dict[str, Any], mode: str = "generate", step: str = "", kind: str = "wall_s"
) -> float:
    """KIND (wall_s or cpu_s) of STEP in MODE, or the wall time of simulate + write."""
    if mode == "generate":
        return float(size[mode]["simulate_s"] + size[mode]["write_s"])
    return float(size[mode]["steps"][step][kind])


def _gib(value: float) -> str:
    return f"{value / GIB:.2f} GiB"


def plot(sizes: list[dict[str, Any]], path: Path) -> None:
    """Wall time and peak memory per process against rows, both modes; the 8 GiB line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [size["generate"]["rows"] / 1e6 for size in sizes]
    figure, (wall, cpu, memory) = plt.subplots(1, 3, figsize=(17, 5))
    wall.plot(rows, [seconds(size) for size in sizes], "k:", marker="o", label="generate")
    for axes, kind in ((wall, "wall_s"), (cpu, "cpu_s")):
        for step, colour in zip(STEPS, ("tab:blue", "tab:orange", "tab:green"), strict=True):
            for mode, style in zip(MODES, ("-", "--"), strict=True):
                values = [seconds(size, mode, step, kind) for size in sizes]
                axes.plot(rows, values, style, color=colour, marker="o", label=f"{step}, {mode}")
        axes.set(xscale="log", yscale="log", xlabel="transactions (millions)")
        axes.set_xticks(rows, labels=[f"{value:.1f}" for value in rows], minor=False)
        axes.xaxis.set_minor_formatter("")
        axes.legend(fontsize=8)
    wall.set(ylabel="seconds", title="wall time per step (log-log: slope 1 is linear)")
    cpu.set(ylabel="seconds", title="CPU time per step, all processes")
    lines = {
        "single process": [size["single"]["driver_max_rss_bytes"] for size in sizes],
        "Dask driver": [size["dask"]["driver_max_rss_bytes"] for size in sizes],
        "Dask worker (larger)": [max(size["dask"]["worker_max_rss_bytes"]) for size in sizes],
    }
    for label, values in lines.items():
        memory.plot(rows, [value / GIB for value in values], marker="o", label=label)
    memory.axhline(TARGET_BYTES / GIB, color="red", linestyle=":", label="8 GiB target")
    memory.set(xlabel="transactions (millions)", ylabel="peak RSS (GiB)", title="peak per process")
    memory.legend(fontsize=8)
    figure.suptitle("fraudops on 2 cores: one process vs a 2-worker Dask LocalCluster")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=float, nargs="+", default=[1.0, 3.0, 10.0])
    parser.add_argument("--out", type=Path, default=OUT, help="the JSON of every figure")
    parser.add_argument("--plot", type=Path, default=PLOT)
    parser.add_argument("--scratch", type=Path, help="where the data goes (default: the TMPDIR)")
    parser.add_argument("--report", type=Path, nargs="+", help="reprint and plot saved JSON runs")
    args = parser.parse_args()
    if args.report:
        sizes = [size for path in args.report for size in json.loads(path.read_text())["sizes"]]
        sizes.sort(key=lambda size: size["factor"])
    else:
        sizes = []
        for factor in args.sizes:
            sizes.append(measure(factor, args.scratch))
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps({"sizes": sizes}, indent=2) + "\n")
    failed = report(sizes)
    plot(sizes, args.plot)
    print(f"\nplot: {args.plot}" + ("" if args.report else f", JSON: {args.out}"))
    if failed:
        sys.exit("FAILED: " + "; ".join(failed))


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        kind, scratch = sys.argv[2], Path(sys.argv[3])
        if kind == "generate":
            print(json.dumps(generate(scratch, float(sys.argv[4]))))
        else:
            print(json.dumps(run_mode(kind, scratch)))
    else:
        main()
