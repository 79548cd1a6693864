"""Serving's disk cache of model folders, so a server starts even when the registry is down.

Apart from ``models`` because it is plain file handling: folders per alias and version, a
``latest`` pointer, and writes that are complete or absent, safe for several workers.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path

MANIFEST_FILE = "manifest.json"
LATEST_FILE = "latest"
MODEL_FOLDER = "model"


class ModelCache:
    """Downloaded model folders per alias and version, and which version loaded last.

    A version folder appears complete or not at all (downloaded beside it, then renamed), and
    ``latest`` moves only after the version loaded, so a crash mid-download never leaves a
    cache that points at a broken model.
    """

    def __init__(self, root: Path) -> None:
        self.root = root

    def folder(self, alias: str, version: str) -> Path:
        return self.root / alias / version

    def download(
        self, alias: str, version: str, run_id: str | None, fetch: Callable[[Path], None]
    ) -> Path:
        """The folder of VERSION, calling FETCH(model folder) first if it is not cached.

        Several server processes may share the cache: the first to finish renames its
        download into place, the others discard theirs.
        """
        target = self.folder(alias, version)
        if (target / MANIFEST_FILE).exists():
            return target
        partial = target.with_name(f".partial-{version}-{uuid.uuid4().hex[:8]}")
        try:
            fetch(partial / MODEL_FOLDER)
            manifest = {"version": version, "run_id": run_id, "downloaded_at": _now_iso()}
            (partial / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
            try:
                os.replace(partial, target)
            except OSError:
                if not (target / MANIFEST_FILE).exists():
                    raise
        finally:
            shutil.rmtree(partial, ignore_errors=True)
        return target

    def any_folder(self, version: str) -> Path | None:
        """A complete cached folder of VERSION under any alias."""
        return next(
            (path for path in self.root.glob(f"*/{version}") if (path / MANIFEST_FILE).exists()),
            None,
        )

    def mark_latest(self, alias: str, version: str) -> None:
        """Make VERSION the one ALIAS loads from cache; keep the version before it too."""
        previous = self._latest_version(alias)
        _write_atomically(self.root / alias / LATEST_FILE, version)
        keep = {version, previous}
        for path in (self.root / alias).iterdir():
            if path.is_dir() and not path.name.startswith(".") and path.name not in keep:
                shutil.rmtree(path, ignore_errors=True)

    def latest(self, alias: str) -> Path | None:
        """The folder of the last version of ALIAS that loaded, if it is still there."""
        version = self._latest_version(alias)
        if version is None:
            return None
        folder = self.folder(alias, version)
        return folder if (folder / MANIFEST_FILE).exists() else None

    def _latest_version(self, alias: str) -> str | None:
        pointer = self.root / alias / LATEST_FILE
        return pointer.read_text().strip() if pointer.exists() else None


def _write_atomically(path: Path, text: str) -> None:
    partial = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}")
    partial.write_text(text)
    os.replace(partial, path)


def _now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
