"""The results store: one JSON record per run, written atomically.

A record is written to a temporary file in the same folder, flushed to disk
and renamed over its final name, so a killed process leaves either the whole
record or none. Records are keyed by the run's configuration hash, so a rerun
finds finished runs and skips them.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import torch

logger = logging.getLogger(__name__)

RECORD_VERSION = 1

# A temporary file this old belongs to no live writer: writes take seconds.
_STALE_SECONDS = 24 * 3600

# Records and checkpoints are readable by every user of a shared results folder;
# mkstemp alone creates them owner-only.
_FILE_MODE = 0o644


class StoreError(RuntimeError):
    """A results folder or record that cannot be read or written."""


def config_hash(config: dict[str, Any]) -> str:
    """Return the run id of a stored configuration: 16 hex digits of its canonical JSON's SHA-256.

    Equal to ``RunConfig.run_id`` for the configuration it was dumped from.
    """
    payload = {key: value for key, value in config.items() if key != "suite"}
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


class ResultsStore:
    """Run records under ``root/runs``, checkpoints under ``root/checkpoints``, locks under ``root/.locks``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.runs_dir = self.root / "runs"
        self.checkpoints_dir = self.root / "checkpoints"
        self.locks_dir = self.root / ".locks"

    def ensure(self) -> None:
        """Create the folders and check they are writable; raise ``StoreError`` otherwise.

        Temporary files older than a day, left by a process killed while
        writing, are removed.
        """
        try:
            for folder in (self.runs_dir, self.checkpoints_dir, self.locks_dir):
                folder.mkdir(parents=True, exist_ok=True)
                if not os.access(folder, os.R_OK | os.W_OK | os.X_OK):
                    raise PermissionError(errno.EACCES, "permission denied", str(folder))
        except OSError as error:
            raise StoreError(
                f"results folder {self.root} is not usable: {error.strerror or error}; choose a writable --results-dir"
            ) from error
        for folder in (self.runs_dir, self.checkpoints_dir):
            for leftover in folder.glob(".*.tmp"):
                try:
                    if time.time() - leftover.stat().st_mtime > _STALE_SECONDS:
                        leftover.unlink()
                except OSError:
                    pass  # another process removed or renamed it meanwhile

    @contextlib.contextmanager
    def claim(self, run_id: str):
        """Yield True while this process has claimed run ``run_id``, False when another process has.

        The claim is an advisory ``flock`` on a lock file, so the operating
        system releases it when its holder dies, even by SIGKILL.
        """
        with _locked(self.locks_dir / f"{run_id}.lock", blocking=False) as acquired:
            yield acquired

    @contextlib.contextmanager
    def exclusive(self, name: str):
        """Hold a blocking lock named ``name`` (for building a shared cached network once)."""
        with _locked(self.locks_dir / f"{name}.lock", blocking=True):
            yield

    def record_path(self, run_id: str) -> Path:
        return self.runs_dir / f"{run_id}.json"

    def has(self, run_id: str) -> bool:
        """Return True when ``run_id`` has a final record: successful, or a target it cannot reach.

        Failed runs are not final, so a rerun tries them again.
        """
        record = self.read(run_id)
        return record is not None and record.get("status") in ("ok", "unreachable")

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
            logger.warning("ignoring record %s: it contains run %r, not the one its file name gives", path, record.get("run_id"))
            return None
        if not isinstance(record.get("config"), dict) or config_hash(record["config"]) != run_id:
            logger.warning("ignoring record %s: its configuration does not match its hash %s; it will be rerun", path, run_id)
            return None
        return record

    def write(self, record: dict[str, Any]) -> Path:
        """Write ``record`` atomically under its ``run_id``; return its path."""
        path = self.record_path(record["run_id"])
        text = json.dumps(record, indent=1, sort_keys=True, allow_nan=False)
        try:
            atomic_write_text(path, text)
        except OSError as error:
            raise StoreError(f"cannot write record {path}: {error.strerror or error}; no partial record was left, "
                             "free disk space or fix permissions and rerun to resume") from error
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
        """Save ``state`` atomically, stamped with ``key`` so a swapped file is detected."""
        path = self.checkpoint_path(kind, key)
        descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            # Through a Python file object a full disk raises OSError(ENOSPC);
            # torch's own file writer raises an opaque RuntimeError instead.
            with os.fdopen(descriptor, "wb") as handle:
                torch.save({**state, "key": key, "kind": kind}, handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(temporary, _FILE_MODE)
            os.replace(temporary, path)
        except OSError as error:
            Path(temporary).unlink(missing_ok=True)
            raise StoreError(f"cannot write checkpoint {path}: {error.strerror or error}; free disk space and rerun") from error
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise

    def load_checkpoint(self, kind: str, key: str) -> dict[str, Any] | None:
        """Return a saved state (loaded with ``weights_only=True``), or None when absent.

        A file that does not unpickle as plain tensors and containers, or
        whose stamped key differs from ``key``, is rejected with a warning
        and treated as absent, so the phase is trained again.
        """
        path = self.checkpoint_path(kind, key)
        if not path.exists():
            return None
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # torch raises several unrelated types for a bad file
            logger.warning("rejecting checkpoint %s: it does not load with weights_only=True (%s)", path, error)
            return None
        if not isinstance(state, dict) or state.get("key") != key or state.get("kind") != kind:
            logger.warning("rejecting checkpoint %s: it was not written for configuration %s", path, key)
            return None
        return state

    def delete_checkpoint(self, kind: str, key: str) -> None:
        """Remove a checkpoint if it exists."""
        self.checkpoint_path(kind, key).unlink(missing_ok=True)


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename; never leave a partial file."""
    path = Path(path)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, _FILE_MODE)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def _locked(path: Path, blocking: bool):
    handle = open(path, "a+")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
    finally:
        handle.close()
