"""What a call did, file by file, and the progress it reports while it runs."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional

log = logging.getLogger("ankicollab_media")

#: ``progress(done, total)``: files finished so far and files known so far.
ProgressCallback = Callable[[int, int], None]


@dataclass
class UploadReport:
    #: Uploaded by this call (the server processes them in the background).
    uploaded: List[str] = field(default_factory=list)
    #: Already stored (these bytes, or the converted result of the same original).
    existing: List[str] = field(default_factory=list)
    #: filename → the server's reason code (``too_large``, ``unsupported_type``, ``quota_exceeded``, …).
    rejected: Dict[str, str] = field(default_factory=dict)
    #: filename → what went wrong on our side or the network's, in words.
    failed: Dict[str, str] = field(default_factory=dict)
    #: filename → SHA-256 of its bytes, for every file that was hashed: what the AnkiCollab backend
    #: needs to report the notes' references.
    hashes: Dict[str, str] = field(default_factory=dict)
    #: True when ``cancel()`` stopped the call before the end.
    cancelled: bool = False

    @property
    def ok(self) -> bool:
        return not self.failed and not self.rejected and not self.cancelled

    def summary(self) -> str:
        parts = [f"{len(self.uploaded)} uploaded", f"{len(self.existing)} already stored"]
        if self.rejected:
            parts.append(f"{len(self.rejected)} rejected")
        if self.failed:
            parts.append(f"{len(self.failed)} failed")
        return ", ".join(parts) + (" (cancelled)" if self.cancelled else "")


@dataclass
class DownloadReport:
    #: Fetched, verified and put in place by this call.
    downloaded: List[str] = field(default_factory=list)
    #: Already present with the original's or the stored bytes.
    skipped: List[str] = field(default_factory=list)
    #: Present with other bytes: left alone.
    conflicts: List[str] = field(default_factory=list)
    #: filename → the server's reason (``unknown``, ``missing``, ``pending``, ``rejected``).
    unavailable: Dict[str, str] = field(default_factory=dict)
    #: filename → what went wrong, in words.
    failed: Dict[str, str] = field(default_factory=dict)
    #: Bytes written by this call.
    bytes: int = 0
    cancelled: bool = False

    @property
    def ok(self) -> bool:
        return not self.failed and not self.cancelled

    def summary(self) -> str:
        parts = [f"{len(self.downloaded)} downloaded", f"{len(self.skipped)} already present"]
        if self.conflicts:
            parts.append(f"{len(self.conflicts)} differ locally (left alone)")
        if self.unavailable:
            parts.append(f"{len(self.unavailable)} unavailable")
        if self.failed:
            parts.append(f"{len(self.failed)} failed")
        return ", ".join(parts) + (" (cancelled)" if self.cancelled else "")


class Progress:
    """Calls ``progress(done, total)`` at least every 100 files or 0.5 s while work goes on, at
    most every 0.1 s otherwise, always in order, and once more at the end.

    Any thread may count; the call that reports runs on whichever thread noticed it was due, one
    at a time, so that numbers never go backwards.
    """

    EVERY_FILES = 100
    EVERY_SECONDS = 0.5
    AT_MOST_EVERY = 0.1

    def __init__(self, callback: Optional[ProgressCallback], total: int = 0) -> None:
        self._callback = callback
        self._lock = threading.Lock()
        self._emit_lock = threading.Lock()
        self.done = 0
        self.total = total
        self._sent = (-1, -1)
        self._sent_at = 0.0

    def add_total(self, n: int) -> None:
        with self._lock:
            self.total += n
        self._maybe_emit()

    def advance(self, n: int = 1) -> None:
        with self._lock:
            self.done += n
        self._maybe_emit()

    def tick(self) -> None:
        """A heartbeat from the waiting thread: reports when 0.5 s went by without a report."""
        self._maybe_emit(heartbeat=True)

    def finish(self) -> None:
        self._maybe_emit(force=True)

    def _maybe_emit(self, *, heartbeat: bool = False, force: bool = False) -> None:
        if self._callback is None:
            return
        now = time.monotonic()
        with self._lock:
            done, total = self.done, self.total
            since = now - self._sent_at
            changed = (done, total) != self._sent
            due = force or (
                since >= self.EVERY_SECONDS
                if heartbeat
                else changed
                and (done - max(self._sent[0], 0) >= self.EVERY_FILES or since >= self.AT_MOST_EVERY)
            )
            if not due:
                return
            self._sent_at = now
        with self._emit_lock:
            with self._lock:
                # Report the latest numbers, so that a late thread never reports older ones.
                done, total = self.done, self.total
                self._sent = (done, total)
            try:
                self._callback(done, total)
            except Exception:
                log.exception("the progress callback raised; going on")
