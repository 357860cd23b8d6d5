"""The results store: one JSON record per run, written atomically.

A record is written to a temporary file in the same folder, flushed to disk
and renamed over its final name, so a killed process leaves either the whole
record or none. Records are keyed by the run's configuration hash, so a rerun
finds finished runs and skips them.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

import torch

logger = logging.getLogger(__name__)

RECORD_VERSION = 1


class StoreError(RuntimeError):
    """A results folder or record that cannot be read or written."""


class ResultsStore:
    """Run records under ``root/runs`` and checkpoints under ``root/checkpoints``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.runs_dir = self.root / "runs"
        self.checkpoints_dir = self.root / "checkpoints"

    def ensure(self) -> None:
        """Create the folders; raise ``StoreError`` when that is not possible."""
        try:
            self.runs_dir.mkdir(parents=True, exist_ok=True)
            self.checkpoints_dir.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise StoreError(f"cannot create results folder {self.root}: {error.strerror}; choose a writable --results-dir") from error

    def record_path(self, run_id: str) -> Path:
        return self.runs_dir / f"{run_id}.json"

    def has(self, run_id: str) -> bool:
        """Return True when a complete, successful record of ``run_id`` exists."""
        record = self.read(run_id)
        return record is not None and record.get("status") == "ok"

    def read(self, run_id: str) -> dict[str, Any] | None:
        """Return the record of ``run_id``, or None when it is missing or unreadable."""
        path = self.record_path(run_id)
        if not path.exists():
            return None
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            logger.warning("ignoring unreadable record %s: %s", path, error)
            return None
        if record.get("run_id") != run_id:
            logger.warning("ignoring record %s: it holds run %r", path, record.get("run_id"))
            return None
        return record

    def write(self, record: dict[str, Any]) -> Path:
        """Write ``record`` atomically under its ``run_id``; return its path."""
        path = self.record_path(record["run_id"])
        text = json.dumps(record, indent=1, sort_keys=True, allow_nan=False)
        atomic_write_text(path, text)
        return path

    def records(self) -> Iterator[tuple[Path, dict[str, Any]]]:
        """Yield every readable record with its path; unreadable ones are logged and skipped."""
        for path in sorted(self.runs_dir.glob("*.json")):
            try:
                yield path, json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as error:
                logger.warning("skipping unreadable record %s: %s", path, error)

    def checkpoint_path(self, kind: str, key: str) -> Path:
        return self.checkpoints_dir / f"{kind}-{key}.pt"

    def save_checkpoint(self, kind: str, key: str, state: dict[str, Any]) -> None:
        """Save a state dict atomically."""
        path = self.checkpoint_path(kind, key)
        descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(descriptor)
        try:
            torch.save(state, temporary)
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise

    def load_checkpoint(self, kind: str, key: str) -> dict[str, Any] | None:
        """Return a saved state dict (loaded with ``weights_only=True``), or None."""
        path = self.checkpoint_path(kind, key)
        if not path.exists():
            return None
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # torch raises several unrelated types for a bad file
            logger.warning("ignoring unreadable checkpoint %s: %s", path, error)
            return None


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename; never leave a partial file."""
    path = Path(path)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
