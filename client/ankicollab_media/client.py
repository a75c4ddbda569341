"""``MediaClient``: what the add-on, the command line and scripts call."""

from __future__ import annotations

import logging
import os
import re
from typing import Any, Callable, Iterable, Optional, Sequence

import requests

from .downloads import Downloader
from .errors import BadRequest, MediaError
from .hashcache import HashCache
from .mediafolder import StrPath
from .reports import DownloadReport, Progress, ProgressCallback, UploadReport
from .transport import RetryPolicy, Stopper, TokenSource, Transport
from .uploads import Uploader

log = logging.getLogger("ankicollab_media")

CancelCallback = Callable[[], bool]
_HASH = re.compile(r"^[0-9a-f]{64}$")


class MediaClient:
    """Upload a deck's media in the background and download what a media folder lacks.

    ``token`` is a string or a zero-argument callable returning the current token; after a 401 it
    is called once more and the request tried once more. ``workers`` transfers run at a time.
    The hash cache (``cache_path``, by default in the user's cache folder) remembers each file's
    SHA-256 by path, size and modification time; keep it outside the media folder.

    Calls are thread-safe and may run at the same time. ``progress(done, total)`` is called from
    worker threads; ``cancel()`` is polled from the calling thread and stops the call within a
    second, keeping what finished.
    """

    def __init__(
        self,
        api_url: str,
        token: TokenSource,
        *,
        workers: int = 8,
        cache_path: Optional[StrPath] = None,
        retry: Optional[RetryPolicy] = None,
        fsync: bool = True,
        session_factory: Optional[Callable[[], requests.Session]] = None,
    ) -> None:
        if workers < 1:
            raise ValueError("workers must be at least 1")
        self.workers = workers
        self.fsync = fsync
        self._transport = Transport(
            api_url, token, pool_size=workers, retry=retry, session_factory=session_factory
        )
        self._cache = HashCache(cache_path)

    @property
    def api_url(self) -> str:
        return self._transport.api_url

    def close(self) -> None:
        """Close connections and the hash cache (also done when the client is garbage-collected)."""
        self._transport.close()
        self._cache.close()

    def __enter__(self) -> MediaClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def upload(
        self,
        deck: str,
        paths: Iterable[StrPath],
        *,
        media_dir: Optional[StrPath] = None,
        progress: Optional[ProgressCallback] = None,
        cancel: Optional[CancelCallback] = None,
    ) -> UploadReport:
        """Upload whichever of ``paths`` the server lacks; the name sent for each is the file's own
        name.

        With ``media_dir``, ``paths`` are filenames in that folder, as a deck's notes name them,
        and only regular files directly inside it are read: a name that breaks Anki's filename
        rules (``../x.png``, ``/etc/passwd``, ``C:\\x.png``), a symlink leading out of the folder,
        or anything that is not a regular file is never opened, and is reported in
        ``report.rejected`` (``bad_filename``, ``outside_media_folder``, ``not_a_regular_file``);
        a name with no file is in ``report.failed``. Use it for every name that comes from a
        note."""
        stopper = Stopper(cancel)
        uploader = Uploader(self._transport, self._cache, self.workers, stopper, Progress(progress))
        return uploader.run(deck, list(paths), media_dir)

    def download(
        self,
        deck: str,
        media_dir: StrPath,
        *,
        filenames: Optional[Sequence[str]] = None,
        progress: Optional[ProgressCallback] = None,
        cancel: Optional[CancelCallback] = None,
    ) -> DownloadReport:
        """Fetch into ``media_dir`` what it lacks of ``filenames``, or of the whole deck."""
        stopper = Stopper(cancel)
        downloader = Downloader(
            self._transport, self._cache, self.workers, stopper, Progress(progress), fsync=self.fsync
        )
        return downloader.run(deck, media_dir, filenames)

    def status(self, what: StrPath) -> dict[str, Any]:
        """The server's record of a file (by path) or a hash: ``GET /v1/media/{hash}``."""
        text = os.fspath(what)
        if _HASH.match(text) and not os.path.exists(text):
            digest = text
        elif os.path.isfile(text):
            digest, _ = self._cache.sha256(text)
        else:
            raise BadRequest(f"{text!r} is neither a file nor a SHA-256 hash", code="not_found")
        answer: dict[str, Any] = self._transport.api("GET", f"/v1/media/{digest}", stopper=Stopper())
        return answer

    def ask_uploads(self, deck: str, files: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """``POST /v1/uploads`` for ``files`` (``{hash, size, filename}``, at most 500): the
        server's answer for each, in order (``exists``, ``upload`` with its URL and headers, or
        ``rejected``). For callers that upload by themselves; ``upload`` does all of it."""
        answer = self._transport.api(
            "POST", "/v1/uploads", stopper=Stopper(), json_body={"deck": deck, "files": list(files)}
        )
        items = answer.get("files") if isinstance(answer, dict) else None
        if not isinstance(items, list) or len(items) != len(files):
            raise MediaError("/v1/uploads answered with a different number of files", code="bad_answer")
        return [i if isinstance(i, dict) else {} for i in items]

    def manifest(self, deck: str, filenames: Sequence[str]) -> dict[str, Any]:
        """``POST /v1/downloads`` for ``filenames`` (at most 1000): the page as the server answers
        it (``files`` with their URLs, ``unavailable``)."""
        page = self._transport.api(
            "POST", "/v1/downloads", stopper=Stopper(), json_body={"deck": deck, "filenames": list(filenames)}
        )
        if not isinstance(page, dict):
            raise MediaError("/v1/downloads answered with something that is not a page", code="bad_answer")
        return page

    def hash_file(self, path: StrPath) -> str:
        """A file's SHA-256, through the cache."""
        return self._cache.sha256(path)[0]
