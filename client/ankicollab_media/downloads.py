"""Download: what the deck uses and the folder lacks, verified, put in place atomically.

Pages of the answer are fetched by a thread of their own one page ahead of the transfers, so that
workers never wait for the API and memory stays bounded by a couple of pages whatever the deck's
size. Each file streams into a temporary file in the media folder (a name Anki forbids, so it can
never clash with a real one and Anki's scanner ignores it); its size and SHA-256 are checked
against what the server stored, it is flushed to disk, and only then linked under its real name,
which fails instead of overwriting a file that appeared meanwhile.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import secrets
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

from . import filenames
from .errors import Cancelled, MediaError
from .hashcache import HashCache
from .mediafolder import StrPath
from .pool import Pool, ahead, conclude
from .reports import DownloadReport, Progress
from .transport import Stopper, Transport, iter_body

log = logging.getLogger("ankicollab_media")

#: Filenames per request when the caller names them (the API's limit).
NAMES_PER_REQUEST = 1000
#: A temporary file of ours untouched for this long belongs to a run that died.
STALE_SECONDS = 600
#: The most any stored file may weigh (the server's largest limit: audio, 25 MiB). An answer that
#: announces more is refused, so a server gone wrong cannot fill the disk.
MAX_STORED_BYTES = 25 * 1024 * 1024


@dataclass
class _Entry:
    filename: str
    hash: str
    stored_hash: str
    size: int
    url: str
    renewed: bool = False

    @classmethod
    def parse(cls, f: Any) -> Optional[_Entry]:
        if not isinstance(f, dict):
            return None
        try:
            name, url = str(f["filename"]), str(f["url"])
            h = str(f["hash"])
            size = int(f["size"])
        except (KeyError, TypeError, ValueError):
            return None
        # A server without `stored_hash` serves the original's bytes.
        return cls(name, h, str(f.get("stored_hash") or h), size, url)


class _Renew(Exception):
    """Storage refused the URL (expired): ask for a fresh one."""


class _Mismatch(Exception):
    pass


def _pid_alive(pid: int) -> bool:
    if sys.platform == "win32":
        return True  # no cheap, safe check there; the age rule decides
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def sweep_stale_temps(media_dir: Path) -> int:
    """Remove temporary files that a killed run left behind. Another run's live ones stay: they
    belong to a live process and were written to recently."""
    removed = 0
    now = time.time()
    try:
        entries = list(os.scandir(media_dir))
    except OSError:
        return 0
    for e in entries:
        if not filenames.is_temp(e.name):
            continue
        try:
            pid = int(e.name[len(filenames.TEMP_PREFIX) :].split("-", 1)[0])
        except ValueError:
            pid = -1
        try:
            age = now - e.stat(follow_symlinks=False).st_mtime
            if pid != os.getpid() and (age > STALE_SECONDS or not _pid_alive(pid)):
                os.unlink(e.path)
                removed += 1
        except OSError:
            pass
    return removed


def _place(tmp: str, final: str) -> bool:
    """Give ``tmp`` the name ``final`` unless that name exists. False if it exists."""
    if os.name == "nt":
        try:
            os.rename(tmp, final)  # refuses an existing target on Windows
        except FileExistsError:
            return False
        return True
    try:
        os.link(tmp, final)  # atomic, and never overwrites
    except FileExistsError:
        return False
    except OSError:
        # File systems without hard links (FAT, some network shares).
        if os.path.lexists(final):
            return False
        os.rename(tmp, final)
        return True
    os.unlink(tmp)
    return True


class Downloader:
    def __init__(
        self,
        transport: Transport,
        cache: HashCache,
        workers: int,
        stopper: Stopper,
        progress: Progress,
        *,
        fsync: bool = True,
    ) -> None:
        self.t = transport
        self.cache = cache
        self.stopper = stopper
        self.progress = progress
        self.report = DownloadReport()
        self.fsync = fsync
        self._workers = workers
        self._pool = Pool(workers, stopper, progress, "acm-get")
        self._lock = threading.Lock()
        self._temps: set[str] = set()
        self._renew: list[_Entry] = []
        self._dir = Path()
        #: With named files the total is known from the start; a whole deck's grows page by page.
        self._total_known = False

    # -- results -----------------------------------------------------------------------------

    def _record(self, name: str, bucket: str, detail: Optional[str] = None, nbytes: int = 0) -> None:
        with self._lock:
            if bucket == "downloaded":
                self.report.downloaded.append(name)
                self.report.bytes += nbytes
            elif bucket == "skipped":
                self.report.skipped.append(name)
            elif bucket == "conflict":
                self.report.conflicts.append(name)
            elif bucket == "unavailable":
                self.report.unavailable[name] = detail or "unknown"
            else:
                self.report.failed[name] = detail or "failed"
        self.progress.advance()

    # -- one file ----------------------------------------------------------------------------

    def _present(self, e: _Entry, final: str) -> bool:
        """Settle a file that is already there: skipped or a conflict. False if it is not there."""
        try:
            if os.path.isdir(final):
                self._record(e.filename, "conflict")
                return True
            digest, _ = self.cache.sha256(final)
        except FileNotFoundError:
            return False
        except OSError as err:
            self._record(e.filename, "failed", f"cannot read the local file: {err.strerror or err}")
            return True
        self._record(e.filename, "skipped" if digest in (e.hash, e.stored_hash) else "conflict")
        return True

    def _fetch(self, e: _Entry) -> None:
        problem = filenames.problem(e.filename)
        if problem is not None:
            self._record(e.filename, "failed", f"refused to write {e.filename!r}: {problem}")
            return
        if not 0 <= e.size <= MAX_STORED_BYTES:
            self._record(
                e.filename, "failed", f"the server announced {e.size} bytes, more than any file may have"
            )
            return
        final = os.path.join(self._dir, e.filename)
        if self._present(e, final):
            return
        for attempt in range(2):
            try:
                nbytes = self._stream(e, final)
            except _Renew:
                if e.renewed:
                    self._record(e.filename, "failed", "storage refused the download URL twice")
                else:
                    with self._lock:
                        self._renew.append(e)
                return
            except _Mismatch as err:
                if attempt == 0:
                    log.warning("%s: %s; downloading it again", e.filename, err)
                    continue
                self._record(e.filename, "failed", str(err))
                return
            except Cancelled:
                return
            except MediaError as err:
                self._record(e.filename, "failed", str(err))
                return
            except OSError as err:
                self._record(e.filename, "failed", f"cannot write to the media folder: {err.strerror or err}")
                return
            if nbytes is None:
                # Someone else's file took the name meanwhile: judge it as any present file.
                if not self._present(e, final):
                    self._record(e.filename, "failed", "the file vanished")
            else:
                self._record(e.filename, "downloaded", nbytes=nbytes)
            return

    def _stream(self, e: _Entry, final: str) -> Optional[int]:
        """Download into a temporary file and put it in place. The bytes written, or None when
        a file appeared under that name meanwhile."""
        resp = self.t.send("GET", e.url, stopper=self.stopper, stream=True, what=f"download of {e.filename}")
        with resp:
            if resp.status_code in (400, 403):
                raise _Renew()
            if resp.status_code != 200:
                raise MediaError(f"storage answered HTTP {resp.status_code}", code="storage_error")
            tmp = os.path.join(
                self._dir,
                f"{filenames.TEMP_PREFIX}{os.getpid()}-{secrets.token_hex(6)}{filenames.TEMP_SUFFIX}",
            )
            with self._lock:
                self._temps.add(tmp)
            try:
                h = hashlib.sha256()
                n = 0
                with open(tmp, "xb") as out:
                    for chunk in iter_body(resp, self.stopper):
                        n += len(chunk)
                        if n > e.size:
                            raise _Mismatch(f"storage sent more than the {e.size} bytes it stored")
                        h.update(chunk)
                        out.write(chunk)
                    if n != e.size or h.hexdigest() != e.stored_hash:
                        raise _Mismatch("the downloaded bytes do not match the server's hash")
                    if self.fsync:
                        out.flush()
                        os.fsync(out.fileno())
                if self.stopper.stopped():
                    raise Cancelled("cancelled")
                if not _place(tmp, final):
                    return None
                with contextlib.suppress(OSError):
                    self.cache.remember(final, os.stat(final), e.stored_hash)
                return n
            finally:
                with self._lock:
                    self._temps.discard(tmp)
                try:
                    os.unlink(tmp)
                except FileNotFoundError:
                    pass
                except OSError as err:
                    log.warning("could not remove %s: %s", tmp, err)

    # -- pages -------------------------------------------------------------------------------

    def _pages(self, deck: str, names: Optional[Sequence[str]]) -> Iterator[dict[str, Any]]:
        if names is None:
            cursor: Optional[str] = None
            seen: set[str] = set()
            while True:
                body: dict[str, Any] = {"deck": deck}
                if cursor:
                    body["cursor"] = cursor
                page = self.t.api("POST", "/v1/downloads", stopper=self.stopper, json_body=body)
                yield page
                cursor = page.get("next_cursor") if isinstance(page, dict) else None
                if not cursor:
                    return
                # A cursor seen before would list the same pages for ever.
                if not isinstance(cursor, str) or cursor in seen:
                    raise MediaError("/v1/downloads answered a cursor it gave before", code="bad_answer")
                seen.add(cursor)
        else:
            for start in range(0, len(names), NAMES_PER_REQUEST):
                body = {"deck": deck, "filenames": list(names[start : start + NAMES_PER_REQUEST])}
                yield self.t.api("POST", "/v1/downloads", stopper=self.stopper, json_body=body)

    def _take(self, page: Any) -> None:
        """Start the transfers of one page."""
        if not isinstance(page, dict):
            raise MediaError("/v1/downloads answered with something that is not a page", code="bad_answer")
        files = page.get("files") or []
        missing = page.get("unavailable") or []
        entries = []
        for f in files:
            entry = _Entry.parse(f)
            if entry is None:
                raise MediaError("/v1/downloads answered with a malformed file entry", code="bad_answer")
            entries.append(entry)
        gone = [u for u in missing if isinstance(u, dict)]
        if not self._total_known:
            self.progress.add_total(len(entries) + len(gone))
        for u in gone:
            self._record(str(u.get("filename")), "unavailable", str(u.get("reason") or "unknown"))
        for e in entries:
            # A name twice (from a server gone wrong) is harmless: the second finds the first.
            self._pool.submit(self._fetch, e)

    # -- the call ----------------------------------------------------------------------------

    def run(self, deck: str, media_dir: StrPath, names: Optional[Sequence[str]]) -> DownloadReport:
        self._dir = Path(media_dir)
        self._dir.mkdir(parents=True, exist_ok=True)
        swept = sweep_stale_temps(self._dir)
        if swept:
            log.info("removed %d temporary files a stopped download left behind", swept)
        if names is not None:
            names = list(dict.fromkeys(names))
            self._total_known = True
            self.progress.add_total(len(names))

        def work() -> None:
            for page in ahead(self._pages(deck, names), self.stopper, self.progress, "acm-pages"):
                self._take(page)
                # One page ahead is enough to keep every worker busy; more would only hold memory.
                if not self._pool.wait(at_most=self._workers * 4):
                    return
            self._pool.wait()
            self._renew_urls(deck)

        return conclude(work, self._finish, self.report)

    def _renew_urls(self, deck: str) -> None:
        renew, self._renew = self._renew, []
        if not renew or self.stopper.stopped():
            return
        log.info("asking for fresh URLs for %d files", len(renew))
        by_name = {e.filename: e for e in renew}
        for start in range(0, len(renew), NAMES_PER_REQUEST):
            chunk = [e.filename for e in renew[start : start + NAMES_PER_REQUEST]]
            page = self.t.api(
                "POST", "/v1/downloads", stopper=self.stopper, json_body={"deck": deck, "filenames": chunk}
            )
            answered: set[str] = set()
            for f in page.get("files") or []:
                entry = _Entry.parse(f)
                if entry is None or entry.filename not in by_name:
                    continue
                entry.renewed = True
                answered.add(entry.filename)
                self._pool.submit(self._fetch, entry)
            for u in page.get("unavailable") or []:
                name = str(u.get("filename"))
                if name in by_name:
                    answered.add(name)
                    self._record(name, "unavailable", str(u.get("reason") or "unknown"))
            for name in chunk:
                if name not in answered:
                    self._record(name, "failed", "the server did not answer for it")
        self._pool.wait()

    def _finish(self) -> None:
        self.report.cancelled = self.stopper.stopped()
        self._pool.close()
        # A transfer that did not stop in time leaves its file to us: nothing partial stays.
        with self._lock:
            temps = list(self._temps)
        for tmp in temps:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        if self.report.downloaded and os.name != "nt":
            # Make the new names durable, not only the bytes.
            try:
                fd = os.open(self._dir, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
            except OSError:
                pass
        self.cache.flush()
        self.progress.finish()
