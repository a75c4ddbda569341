"""Upload: hash, ask ``/v1/uploads`` which files the server lacks, PUT those to storage.

Files go in chunks of at most 500 (the API's batch). A thread of its own hashes the next chunk
and asks for it while the previous one uploads, so that the workers never wait for the API; it
is taken only when few uploads are still queued, so that no URL waits long before it is used. A PUT that storage refuses (an expired URL, or a body
that no longer matches because the file changed) is renewed once at the end: the file is hashed
again and a fresh URL asked for.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from dataclasses import dataclass
from typing import Any, BinaryIO, Iterator, Optional, Sequence

from . import mediafolder
from .errors import Cancelled, MediaError
from .hashcache import HashCache
from .mediafolder import StrPath
from .pool import Pool, ahead, conclude
from .reports import Progress, UploadReport
from .transport import Stopper, Transport

log = logging.getLogger("ankicollab_media")

BATCH = 500


@dataclass
class _File:
    path: str
    name: str
    sha256: str = ""
    size: int = 0


@dataclass
class _Put:
    """One hash's upload; several names may share it."""

    file: _File
    names: list[str]
    last_try: bool
    #: (bucket, detail) once reported; names that arrive later share it.
    outcome: Optional[tuple[str, Optional[str]]] = None


class _StoppableReader:
    """A file body that ends the request as soon as the call is stopped."""

    def __init__(self, f: BinaryIO, stopper: Stopper) -> None:
        self._f = f
        self._stopper = stopper

    def read(self, n: int = -1) -> bytes:
        if self._stopper.stopped():
            raise Cancelled("cancelled")
        return self._f.read(n)

    def close(self) -> None:
        self._f.close()

    def __len__(self) -> int:
        return os.fstat(self._f.fileno()).st_size


def _storage_error(resp: Any) -> str:
    """A storage refusal in words: S3's error code and message from its XML body."""
    text = resp.text[:2000] if resp.content else ""
    code = re.search(r"<Code>([^<]+)</Code>", text)
    message = re.search(r"<Message>([^<]+)</Message>", text)
    detail = ": ".join(m.group(1) for m in (code, message) if m)
    return f"storage refused the upload (HTTP {resp.status_code}{', ' + detail if detail else ''})"


class Uploader:
    def __init__(
        self, transport: Transport, cache: HashCache, workers: int, stopper: Stopper, progress: Progress
    ) -> None:
        self.t = transport
        self.cache = cache
        self.stopper = stopper
        self.progress = progress
        self.report = UploadReport()
        self._lock = threading.Lock()
        self._hashing = Pool(min(4, os.cpu_count() or 2), stopper, progress, "acm-hash")
        self._puts = Pool(workers, stopper, progress, "acm-put")
        self._workers = workers
        self._started: dict[str, _Put] = {}
        self._refused: list[_Put] = []

    # -- results, from any thread ------------------------------------------------------------

    def _done(self, names: Sequence[str], bucket: str, value: Optional[str] = None) -> None:
        with self._lock:
            for name in names:
                if bucket == "uploaded":
                    self.report.uploaded.append(name)
                elif bucket == "existing":
                    self.report.existing.append(name)
                elif bucket == "rejected":
                    self.report.rejected[name] = value or "rejected"
                else:
                    self.report.failed[name] = value or "failed"
        self.progress.advance(len(names))

    def _settle(self, put: _Put, bucket: str, value: Optional[str] = None) -> None:
        with self._lock:
            put.outcome = (bucket, value)
            names = list(put.names)
        self._done(names, bucket, value)

    def _join(self, put: _Put, name: str) -> None:
        """Another name for bytes already being uploaded."""
        with self._lock:
            outcome = put.outcome
            if outcome is None:
                put.names.append(name)
                return
        self._done([name], *outcome)

    # -- steps -------------------------------------------------------------------------------

    def _hash(self, f: _File, fresh: bool = False) -> Optional[_File]:
        try:
            f.sha256, st = self.cache.sha256(f.path, fresh=fresh)
            f.size = st.st_size
        except OSError as e:
            self._done([f.name], "failed", f"cannot read the file: {e.strerror or e}")
            return None
        with self._lock:
            self.report.hashes[f.name] = f.sha256
        return f

    def _ask(self, deck: str, files: list[_File]) -> list[dict[str, Any]]:
        body = {
            "deck": deck,
            "files": [{"hash": f.sha256, "size": f.size, "filename": f.name} for f in files],
        }
        answer = self.t.api("POST", "/v1/uploads", stopper=self.stopper, json_body=body)
        items = answer.get("files") if isinstance(answer, dict) else None
        if not isinstance(items, list) or len(items) != len(files):
            raise MediaError("/v1/uploads answered with a different number of files", code="bad_answer")
        return items

    def _put(self, put: _Put, item: dict[str, Any]) -> None:
        url, headers = item.get("url"), item.get("headers")
        if not isinstance(url, str) or not isinstance(headers, dict):
            self._settle(put, "failed", "the server's upload answer has no URL")
            return
        method = str(item.get("method") or "PUT")
        path = put.file.path
        try:
            # Exactly the signed headers, and no Authorization: storage checks length and SHA-256.
            resp = self.t.send(
                method,
                url,
                stopper=self.stopper,
                headers={str(k): str(v) for k, v in headers.items()},
                # The transport closes the file after each try.
                body=lambda: _StoppableReader(mediafolder.open_regular(path), self.stopper),
                what=f"upload of {put.file.name}",
            )
        except Cancelled:
            return
        except MediaError as e:
            self._settle(put, "failed", str(e))
            return
        except OSError as e:
            self._settle(put, "failed", f"cannot read the file: {e.strerror or e}")
            return
        with resp:
            if 200 <= resp.status_code < 300:
                self._settle(put, "uploaded")
            elif resp.status_code in (400, 403) and not put.last_try:
                # Expired URL, or the file changed since it was hashed: renewed at the end.
                log.info("%s: %s; will ask for a fresh URL", put.file.name, _storage_error(resp))
                with self._lock:
                    self._refused.append(put)
            else:
                self._settle(put, "failed", _storage_error(resp))

    def _answer(self, files: list[_File], items: list[dict[str, Any]], last_try: bool) -> None:
        """Sort one batch's answers; start the PUTs."""
        for f, item in zip(files, items):
            status = item.get("status")
            if status == "exists":
                self._done([f.name], "existing")
            elif status == "rejected":
                self._done([f.name], "rejected", str(item.get("reason") or "rejected"))
            elif status == "upload":
                started = self._started.get(f.sha256)
                if started is not None:
                    self._join(started, f.name)
                    continue
                put = _Put(f, [f.name], last_try)
                self._started[f.sha256] = put
                self._puts.submit(self._put, put, item)
            else:
                self._done([f.name], "failed", f"unexpected answer {status!r}")

    # -- the call ----------------------------------------------------------------------------

    def run(self, deck: str, paths: Sequence[StrPath], media_dir: Optional[StrPath] = None) -> UploadReport:
        seen: set[str] = set()
        files: list[_File] = []
        refused: list[tuple[str, mediafolder.Refusal]] = []
        for p in paths:
            if media_dir is not None:
                name = os.fspath(p)
                if name in seen:
                    continue
                seen.add(name)
                found = mediafolder.resolve(media_dir, name)
                if isinstance(found, mediafolder.Refusal):
                    refused.append((name, found))
                else:
                    files.append(_File(found, name))
                continue
            full = os.path.abspath(os.fspath(p))
            if full not in seen:
                seen.add(full)
                # The name is the one given; the bytes are read from the link's target, if any.
                files.append(_File(os.path.realpath(full), os.path.basename(full)))
        self.progress.add_total(len(files) + len(refused))
        for name, refusal in refused:
            log.warning("not uploading %s", refusal)
            if refusal.code == mediafolder.NOT_FOUND:
                self._done([name], "failed", refusal.detail)
            else:
                self._done([name], "rejected", refusal.code)

        def work() -> None:
            for hashed, items in ahead(self._batches(deck, files), self.stopper, self.progress, "acm-ask"):
                self._answer(hashed, items, last_try=False)
                # The next batch is being hashed and asked for meanwhile; take it when these
                # uploads are nearly through, so that no URL waits long before it is used.
                if not self._puts.wait(at_most=self._workers * 2):
                    return
            self._puts.wait()
            self._renew(deck)

        return conclude(work, self._finish, self.report)

    def _batches(self, deck: str, files: list[_File]) -> Iterator[tuple[list[_File], list[dict[str, Any]]]]:
        """Batches of at most 500 files, hashed, with the server's answers."""
        for start in range(0, len(files), BATCH):
            hashed = [f for f in self._hashing.run(self._hash, files[start : start + BATCH]) if f]
            if self.stopper.stopped():
                return
            if hashed:
                yield hashed, self._ask(deck, hashed)

    def _renew(self, deck: str) -> None:
        """One more try for what storage refused: hash again (the file may have changed), ask
        for fresh URLs, PUT once more."""
        refused, self._refused = self._refused, []
        if not refused or self.stopper.stopped():
            return
        self._started.clear()
        lines: list[_File] = []
        for put in refused:
            with self._lock:
                names = list(put.names)
            f = self._hash(_File(put.file.path, names[0]), fresh=True)
            if f is None:
                self._done(names[1:], "failed", "cannot read the file")
                continue
            lines.extend(_File(f.path, name, f.sha256, f.size) for name in names)
        for start in range(0, len(lines), BATCH):
            chunk = lines[start : start + BATCH]
            self._answer(chunk, self._ask(deck, chunk), last_try=True)
        self._puts.wait()

    def _finish(self) -> None:
        self.report.cancelled = self.stopper.stopped()
        self._hashing.close()
        self._puts.close()
        self.cache.flush()
        self.progress.finish()
