"""`fraudops serve` refuses a missing or broken params.yaml with one clear line, at once;
its app imports no model library."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

FRAUDOPS = str(Path(sys.executable).parent / "fraudops")


def serve_in(folder: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRAUDOPS_")}
    env["FRAUDOPS_HOME"] = str(folder / "home")
    return subprocess.run(
        [FRAUDOPS, "serve", "--port", "0"],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize(
    ("params", "expected"),
    [(None, "params.yaml not found"), ("features: {label_delay_dayz: 7}\n", "cannot be used")],
)
def test_serve_names_the_params_problem_without_a_traceback(
    tmp_path: Path, params: str | None, expected: str
):
    if params is not None:
        (tmp_path / "params.yaml").write_text(params)
    done = serve_in(tmp_path)
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    assert expected in output, output
    assert "Traceback" not in output, output


def test_the_serving_app_imports_no_model_library():
    """XGBoost and scikit-learn come with a model, not with the app: importing them is most
    of a cold start, and a restart from the kept walk scores without them."""
    probe = "import sys, serving.app; print(sorted({m.split('.')[0] for m in sys.modules}))"
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True
    )
    loaded = done.stdout
    assert "'fastapi'" in loaded  # the probe saw the app's imports
    for library in ("xgboost", "sklearn"):
        assert f"'{library}'" not in loaded, f"serving.app imports {library}"
