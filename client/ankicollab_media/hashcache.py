"""SHA-256 of files, streamed, remembered by (path, size, mtime_ns) across calls.

The cache is a small SQLite file outside the media folder (Anki's media check would report any
stray file inside it). It is only an optimisation: if it cannot be opened or written, hashing goes
on without it. An entry is trusted only while the file's size and modification time are unchanged;
a file hashed within two seconds of its last change is not remembered (its next change might
land within the same timestamp tick on a coarse file system, and would then go unnoticed).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import sqlite3
import sys
import threading
import time
from pathlib import Path
from typing import Optional

from .mediafolder import StrPath, open_regular

log = logging.getLogger("ankicollab_media")

CHUNK = 1024 * 1024
#: Files changed more recently than this are hashed but not remembered.
RACY_SECONDS = 2.0


def default_cache_path() -> Path:
    """The user's cache folder for this package (never inside a media folder)."""
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Caches"
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "ankicollab-media" / "hashes.sqlite3"


def sha256_file(path: StrPath) -> tuple[str, int]:
    """(hex SHA-256, bytes read) of a regular file (not a symlink, FIFO or device), streamed in
    1 MiB chunks."""
    h = hashlib.sha256()
    n = 0
    with open_regular(path) as f:
        buf = bytearray(CHUNK)
        view = memoryview(buf)
        while True:
            got = f.readinto(buf)
            if not got:
                break
            h.update(view[:got])
            n += got
    return h.hexdigest(), n


class HashCache:
    """Thread-safe: one SQLite connection behind a lock; writes are buffered and committed in
    batches (a commit per file would cost a disk sync per file)."""

    def __init__(self, path: Optional[StrPath] = None) -> None:
        self.path = Path(path) if path is not None else default_cache_path()
        self._lock = threading.Lock()
        self._db: Optional[sqlite3.Connection] = None
        self._pending: dict[str, tuple[int, int, str]] = {}
        self._last_flush = time.monotonic()
        self._open()

    def _open(self) -> None:
        for attempt in range(2):
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                db = sqlite3.connect(str(self.path), timeout=5, check_same_thread=False)
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=NORMAL")
                with db:
                    db.execute(
                        "CREATE TABLE IF NOT EXISTS hashes ("
                        " path TEXT PRIMARY KEY, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL,"
                        " sha256 TEXT NOT NULL)"
                    )
                self._db = db
                return
            except sqlite3.DatabaseError as e:
                # A corrupt cache is worth nothing: start it again, once.
                log.warning(
                    "hash cache %s unusable (%s)%s", self.path, e, "; recreating it" if attempt == 0 else ""
                )
                if attempt == 0:
                    for suffix in ("", "-wal", "-shm"):
                        with contextlib.suppress(OSError):
                            Path(str(self.path) + suffix).unlink()
            except OSError as e:
                log.warning("hash cache %s unusable (%s); hashing without it", self.path, e)
                return

    @staticmethod
    def key(path: StrPath) -> str:
        return os.path.abspath(os.fspath(path))

    def lookup(self, path: StrPath, st: os.stat_result) -> Optional[str]:
        key = self.key(path)
        with self._lock:
            row = self._pending.get(key)
            if row is None and self._db is not None:
                try:
                    row = self._db.execute(
                        "SELECT size, mtime_ns, sha256 FROM hashes WHERE path = ?", (key,)
                    ).fetchone()
                except sqlite3.Error as e:
                    log.warning("hash cache read failed: %s", e)
        if row and row[0] == st.st_size and row[1] == st.st_mtime_ns:
            return str(row[2])
        return None

    def remember(self, path: StrPath, st: os.stat_result, sha256: str) -> None:
        with self._lock:
            self._pending[self.key(path)] = (st.st_size, st.st_mtime_ns, sha256)
            if len(self._pending) >= 500 or time.monotonic() - self._last_flush > 1.0:
                self._flush_locked()

    def _flush_locked(self) -> None:
        rows, self._pending = self._pending, {}
        self._last_flush = time.monotonic()
        if self._db is None or not rows:
            return
        try:
            with self._db:
                self._db.executemany(
                    "INSERT OR REPLACE INTO hashes (path, size, mtime_ns, sha256) VALUES (?, ?, ?, ?)",
                    [(k, *v) for k, v in rows.items()],
                )
        except sqlite3.Error as e:
            log.warning("hash cache write failed: %s", e)

    def flush(self) -> None:
        with self._lock:
            self._flush_locked()

    def close(self) -> None:
        with self._lock:
            self._flush_locked()
            if self._db is not None:
                self._db.close()
                self._db = None

    def sha256(self, path: StrPath, *, fresh: bool = False) -> tuple[str, os.stat_result]:
        """The file's SHA-256 and the stat it belongs to; from the cache unless ``fresh``.
        Raises ``OSError`` for files that cannot be read."""
        st = os.stat(path)
        if not fresh:
            cached = self.lookup(path, st)
            if cached is not None:
                return cached, st
        digest, n = sha256_file(path)
        after = os.stat(path)
        if n != after.st_size or after.st_mtime_ns != st.st_mtime_ns:
            # Changed while we read it: hash what is there now, once more.
            digest, n = sha256_file(path)
            st = after = os.stat(path)
        if time.time() - after.st_mtime_ns / 1e9 > RACY_SECONDS:
            self.remember(path, after, digest)
        return digest, after
