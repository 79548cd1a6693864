"""Serving's disk cache of model folders, so a server starts even when the registry is down.

Apart from ``models`` because it is plain file handling: folders per alias and version, a
``latest`` pointer, and writes that are complete or absent, safe for several workers.

Beside a version's model, the cache keeps its *checked walk*: the XGBoost trees as flat
arrays (written only after they agreed with the booster) and the three facts of the model
card serving needs. A restart that finds them scores with numpy alone, without importing
XGBoost, scikit-learn or MLflow's model loader first: that import is most of a cold start.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from fraudops.modeling.tree_ensemble import FlatTreeEnsemble

MANIFEST_FILE = "manifest.json"
LATEST_FILE = "latest"
MODEL_FOLDER = "model"
WALK_FILE = "flat_trees.npz"
WALK_CARD_FILE = "flat_trees_card.json"


@dataclass(frozen=True)
class WalkCard:
    """What serving reads from a model card: how to lay out a row and when to alert."""

    family: str
    threshold: float
    features: tuple[str, ...]


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

    @staticmethod
    def keep_walk(folder: Path, card: WalkCard, trees: FlatTreeEnsemble) -> None:
        """Keep the checked walk of the version in FOLDER (the card last: it marks it whole)."""
        partial = folder / f".{uuid.uuid4().hex[:8]}.npz"
        trees.save(partial)
        os.replace(partial, folder / WALK_FILE)
        _write_atomically(folder / WALK_CARD_FILE, json.dumps(asdict(card)))

    @staticmethod
    def kept_walk(folder: Path) -> tuple[WalkCard, FlatTreeEnsemble] | None:
        """The checked walk `keep_walk` left in FOLDER, or None."""
        card_file = folder / WALK_CARD_FILE
        if not card_file.exists():
            return None
        values = json.loads(card_file.read_text())
        card = WalkCard(values["family"], float(values["threshold"]), tuple(values["features"]))
        return card, FlatTreeEnsemble.load(folder / WALK_FILE)

    def _latest_version(self, alias: str) -> str | None:
        pointer = self.root / alias / LATEST_FILE
        return pointer.read_text().strip() if pointer.exists() else None


def _write_atomically(path: Path, text: str) -> None:
    partial = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}")
    partial.write_text(text)
    os.replace(partial, path)


def _now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
