"""`make ci-repro` for real: the pipeline reproduced on small generated data gives the
metrics committed in ci/model-quality, so main's baseline is what its code produces."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ci.support import ROOT, ci_script, run

repro_small = ci_script("repro_small")
quality_gate = ci_script("quality_gate")


@pytest.mark.slow
@pytest.mark.e2e
def test_make_ci_repro_reproduces_the_committed_metrics(tmp_path: Path) -> None:
    out = tmp_path / "out"
    done = run(["make", "ci-repro", f"CI_REPRO_OUT={out}"], timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
    assert sorted(path.name for path in out.iterdir()) == sorted(repro_small.OUTPUTS.values())
    reproduced = json.loads((out / "metrics.json").read_text())
    committed = json.loads((ROOT / quality_gate.METRICS).read_text())
    tolerance = {metric: 0.0 for metric in ("average_precision", "card_precision_at_100")}
    stale = quality_gate.stale(committed, reproduced, tolerance)
    assert stale == [], f"{stale}: run `make ci-repro` and commit ci/model-quality/"
    days = repro_small.small_params()["simulate"]["days"]
    assert json.loads((out / "data.json").read_text())["days"] == days


def test_the_small_params_only_resize_what_params_yaml_says() -> None:
    params = repro_small.small_params()
    overlay = {"simulate": {"customers": 1}, "train": {"test_days": 1}}
    merged = repro_small.overlaid(params, overlay)
    assert merged["simulate"]["customers"] == 1 and merged["train"]["test_days"] == 1
    assert merged["train"]["candidates"] == params["train"]["candidates"]
    with pytest.raises(repro_small.ReproFailed, match="no section 'simulat'"):
        repro_small.overlaid(params, {"simulat": {}})
