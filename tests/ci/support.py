"""What the CI tests share: the ci/ scripts as modules, and commands run as CI runs them."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def ci_script(name: str) -> ModuleType:
    """``ci/NAME.py`` imported as a module (ci/ is a folder of scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(f"ci_{name}", ROOT / "ci" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(
    args: list[str], cwd: Path = ROOT, env: dict[str, str] | None = None, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """ARGS in CWD with the .venv first on PATH and no GitHub summary unless ENV sets one."""
    base = {key: value for key, value in os.environ.items() if key != "GITHUB_STEP_SUMMARY"}
    base["PATH"] = f"{BIN}{os.pathsep}{base.get('PATH', '')}"
    base["DVC_NO_ANALYTICS"] = "1"
    return subprocess.run(
        args,
        cwd=cwd,
        env={**base, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
