"""A drop-in for the AnkiCollab plugin's ``media_manager.MediaManager``: the same class name,
constructor, methods (async where the plugin awaits them), return shapes and exception names, over
``MediaClient``. The switch is an import (``client/README.md``).

What changes underneath:

- SHA-256 instead of MD5; no local WebP conversion or renaming (the server converts and keeps the
  filename), so ``optimize_media_for_upload`` only hashes and its filename mapping is empty;
- uploads go straight to storage in parallel through pre-signed URLs, every filename counts under
  its own name (equal bytes are sent once), and the ``(note_guid, filename, sha256)`` of every
  uploaded or existing file is reported to the backend (``POST {api_base_url}/media/references``),
  which records the suggestion's references, as ``/media/check/bulk`` did;
- downloads are verified against the stored bytes' hash and put in place atomically;
- nothing but regular files directly inside the media folder is ever read or written: a note naming
  ``../x.png``, ``/etc/passwd``, ``C:\\x.png`` or a symlink out of the folder is skipped and logged.

Tokens: the media server takes its own short-lived token, which the AnkiCollab backend mints for the
signed-in user: ``POST {api_base_url}/media/token`` with the user's AnkiCollab bearer token answers
``{"token", "api_url", "expires_at"}``. The user's token is read afresh for every such request, so
a user who logs in after Anki started, or whose token rotated, just works. It comes from
``user_token`` (a string or a callable), else from the plugin's own ``auth_manager`` (found when
this package is vendored inside the plugin), else from ``session``'s ``Authorization`` header. A
401 that a refresh of the user's token cannot cure becomes ``auth_expired: True`` (downloads) or
``status: "auth_failed"`` (uploads), and the plugin's ``handle_auth_failure()`` is called, as the
plugin itself does.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import datetime as dt
import logging
import os
import random
import secrets
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple, TypeVar, Union

import requests

from . import filenames, mediafolder
from .client import MediaClient
from .downloads import MAX_STORED_BYTES
from .errors import AuthError, NetworkError
from .errors import MediaError as _ClientError
from .hashcache import HashCache, sha256_file
from .mediafolder import StrPath
from .reports import DownloadReport, UploadReport
from .transport import USER_AGENT, MediaToken, TokenSource

log = logging.getLogger("ankicollab_media")
T = TypeVar("T")

# -- the plugin's module-level names -----------------------------------------------------------------

#: What the plugin accepts (the server decides by the bytes; these are the names it may get).
ALLOWED_EXTENSIONS = {
    "image": {".jpg", ".jpeg", ".jfif", ".png", ".gif", ".webp", ".svg", ".bmp", ".tif", ".tiff"},
    "audio": {".mp3", ".ogg", ".oga", ".opus", ".wav", ".m4a", ".flac", ".aif", ".aiff", ".aifc"},
}
ALL_ALLOWED_EXTENSIONS = set().union(*ALLOWED_EXTENSIONS.values())
#: The most a stored file weighs; originals may be larger (the server converts them).
MAX_FILE_SIZE = MAX_STORED_BYTES
REQUEST_TIMEOUT = 30
CONTENT_TYPE_MAP = {
    ".webp": "image/webp",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".jfif": "image/jpeg",
    ".png": "image/png",
    ".gif": "image/gif",
    ".svg": "image/svg+xml",
    ".bmp": "image/bmp",
    ".tif": "image/tiff",
    ".tiff": "image/tiff",
    ".mp3": "audio/mpeg",
    ".ogg": "audio/ogg",
    ".oga": "audio/ogg",
    ".opus": "audio/ogg",
    ".wav": "audio/wav",
    ".m4a": "audio/mp4",
    ".flac": "audio/flac",
    ".aif": "audio/aiff",
    ".aiff": "audio/aiff",
    ".aifc": "audio/aiff",
}


class MediaError(_ClientError):
    """The plugin's base exception; also this package's ``MediaError``."""


class MediaServerError(MediaError):
    pass


class MediaRateLimitError(MediaError):
    pass


class MediaTypeError(MediaError):
    pass


class MediaHashError(MediaError):
    pass


class MediaUploadError(MediaError):
    pass


class MediaDownloadError(MediaError):
    pass


FloatProgress = Callable[[float], None]
UserTokenSource = Union[str, Callable[[], Optional[str]]]

# -- the user's AnkiCollab session ----------------------------------------------------------------------


def _plugin_auth_manager() -> Any:
    """The plugin's ``auth_manager`` singleton when this package is vendored inside the plugin
    (``<plugin>.vendor.ankicollab_media``) and the plugin has loaded it; None otherwise. Only
    modules already imported are looked at: nothing of the plugin's is imported from here."""
    parts = __name__.split(".")
    for end in range(len(parts) - 2, 0, -1):
        module = sys.modules.get(".".join(parts[:end]) + ".auth_manager")
        manager = getattr(module, "auth_manager", None)
        if manager is not None and callable(getattr(manager, "get_token", None)):
            return manager
    return None


class UserSession:
    """The user's AnkiCollab bearer token, read afresh every time it is needed."""

    def __init__(
        self,
        user_token: Optional[UserTokenSource] = None,
        session: Optional[requests.Session] = None,
        auth_manager: Any = None,
    ) -> None:
        self._explicit = user_token
        self._session = session
        self._auth_manager = auth_manager

    def auth_manager(self) -> Any:
        if self._explicit is not None:
            return None
        return self._auth_manager if self._auth_manager is not None else _plugin_auth_manager()

    def token(self) -> Optional[str]:
        try:
            if isinstance(self._explicit, str):
                return self._explicit or None
            if self._explicit is not None:
                return self._explicit() or None
            manager = self.auth_manager()
            if manager is not None:
                return str(manager.get_token() or "") or None
            if self._session is not None:
                header = str(self._session.headers.get("Authorization") or "")
                if header.lower().startswith("bearer "):
                    return header[7:].strip() or None
        except Exception as e:  # the plugin's keyring may fail; that is "not logged in"
            log.warning("could not read the AnkiCollab token: %s", e)
        return None

    def refresh(self) -> bool:
        """Ask the plugin to refresh the user's token (its refresh token); False if it cannot."""
        manager = self.auth_manager()
        refresh = getattr(manager, "refresh_token", None)
        if not callable(refresh):
            return False
        try:
            return bool(refresh())
        except Exception as e:
            log.warning("refreshing the AnkiCollab token failed: %s", e)
            return False

    def expired(self) -> None:
        """The backend refused the user's token for good: the plugin's own 401 path (it clears the
        login and updates its menu on the main thread)."""
        handle = getattr(self.auth_manager(), "handle_auth_failure", None)
        if callable(handle):
            try:
                handle()
            except Exception as e:
                log.warning("the plugin's handle_auth_failure() failed: %s", e)


class Backend:
    """The AnkiCollab backend's two media routes: ``/media/token`` and ``/media/references``."""

    ATTEMPTS = 4

    def __init__(
        self, api_base_url: str, user: UserSession, session_factory: Callable[[], requests.Session]
    ) -> None:
        self.base = api_base_url.rstrip("/")
        self.user = user
        self._session_factory = session_factory
        self._local = threading.local()
        self.api_url: Optional[str] = None
        self._lock = threading.Lock()
        self._prefetched: Optional[MediaToken] = None

    def _session(self) -> requests.Session:
        s: Optional[requests.Session] = getattr(self._local, "session", None)
        if s is None:
            s = self._session_factory()
            s.headers["User-Agent"] = USER_AGENT
            self._local.session = s
        return s

    def post(self, path: str, body: Any) -> Any:
        """POST JSON with the user's bearer token: retries 5xx, 429 and network errors; after a
        401, refreshes the user's token once. Raises ``AuthError`` when the user is not (or no
        longer) logged in, ``MediaServerError`` for other refusals, ``NetworkError``."""
        url = self.base + path
        refreshed = False
        attempt = 0
        while True:
            token = self.user.token()
            if not token:
                raise AuthError("not logged in to AnkiCollab", code="not_logged_in", status=401)
            try:
                resp = self._session().post(
                    url,
                    json=body,
                    headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
                    timeout=(10, 60),
                )
            except (requests.ConnectionError, requests.Timeout) as e:
                attempt += 1
                if attempt >= self.ATTEMPTS:
                    raise NetworkError(
                        f"{path}: the AnkiCollab server cannot be reached ({type(e).__name__})"
                    ) from e
                time.sleep(min(8.0, 0.5 * 2**attempt) * random.uniform(0.5, 1.0))
                continue
            except requests.RequestException as e:
                raise MediaServerError(f"{path}: {e}", code="request_failed") from e
            with resp:
                if resp.status_code == 401:
                    if not refreshed and self.user.refresh():
                        refreshed = True
                        continue
                    self.user.expired()
                    raise AuthError("the AnkiCollab session has expired", code="session_expired", status=401)
                if resp.status_code == 429 or resp.status_code >= 500:
                    attempt += 1
                    if attempt < self.ATTEMPTS:
                        wait = resp.headers.get("Retry-After", "")
                        delay = float(wait) if wait.isdigit() else min(8.0, 0.5 * 2**attempt)
                        time.sleep(min(delay, 30.0) * random.uniform(0.8, 1.0))
                        continue
                if not 200 <= resp.status_code < 300:
                    raise MediaServerError(
                        f"{path} answered HTTP {resp.status_code}: {_error_text(resp)}",
                        code="backend_error",
                        status=resp.status_code,
                    )
                try:
                    return resp.json()
                except ValueError as e:
                    raise MediaServerError(
                        f"{path} answered something that is not JSON", code="bad_answer"
                    ) from e

    # -- media tokens ------------------------------------------------------------------------------

    def fetch_token(self) -> MediaToken:
        body = self.post("/media/token", {})
        token = body.get("token") if isinstance(body, dict) else None
        if not isinstance(token, str) or not token:
            raise MediaServerError("/media/token answered without a token", code="bad_answer")
        api_url = body.get("api_url")
        if isinstance(api_url, str) and api_url:
            self.api_url = api_url.rstrip("/")
        return MediaToken(token, _epoch(body.get("expires_at")))

    def prefetch(self) -> None:
        """Learn the media API's address; the token fetched for it serves the first request."""
        token = self.fetch_token()
        with self._lock:
            self._prefetched = token

    def __call__(self) -> str:
        """A media token for the transport: the prefetched one once, then a fresh one each time
        (the transport asks again only after a 401 or shortly before expiry)."""
        with self._lock:
            token, self._prefetched = self._prefetched, None
        if token is not None and (token.expires_at is None or token.expires_at - time.time() > 60):
            return token
        return self.fetch_token()

    # -- references --------------------------------------------------------------------------------

    def report_references(self, deck_hash: str, files: List[Dict[str, str]]) -> int:
        """``[{note_guid, filename, sha256}]`` a suggestion uses; the backend records them as the
        notes' references. Returns how many were sent."""
        for start in range(0, len(files), 500):
            self.post("/media/references", {"deck_hash": deck_hash, "files": files[start : start + 500]})
        return len(files)


def _error_text(resp: requests.Response) -> str:
    try:
        body = resp.json()
        err = body.get("error") if isinstance(body, dict) else None
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])[:300]
        if isinstance(err, str):
            return err[:300]
    except ValueError:
        pass
    return (resp.text or "").strip()[:300] or "no details"


def _epoch(value: Any) -> Optional[float]:
    """Seconds since the epoch from an RFC 3339 string or a number; None if absent or odd."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str) and value:
        try:
            when = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.timezone.utc)
        return when.timestamp()
    return None


def _in_anki() -> Any:
    """``aqt.mw`` when running inside Anki (aqt imported by Anki itself), else None."""
    aqt = sys.modules.get("aqt")
    return getattr(aqt, "mw", None) if aqt is not None else None


def _anki_loaded() -> bool:
    return "aqt" in sys.modules and _in_anki() is not None


# -- the manager ---------------------------------------------------------------------------------------


class MediaManager:
    """The plugin's ``MediaManager``, on the new media server. Thread-safe; every blocking step runs
    off the event loop (and so off Anki's main thread)."""

    def __init__(
        self,
        api_base_url: str,
        media_folder: str,
        *,
        user_token: Optional[UserTokenSource] = None,
        token: Optional[TokenSource] = None,
        media_api_url: Optional[str] = None,
        session: Optional[requests.Session] = None,
        auth_manager: Any = None,
        report_references: bool = True,
        workers: int = 8,
        cache_path: Optional[StrPath] = None,
    ) -> None:
        self.api_base_url = api_base_url.rstrip("/")
        self.media_folder = Path(media_folder)
        if not self.media_folder.exists():
            raise ValueError(f"Media folder not found at: {media_folder}")
        self.user = UserSession(user_token, session, auth_manager)
        self.backend = Backend(self.api_base_url, self.user, requests.Session)
        # A media token given directly (tests, scripts) bypasses the backend's token route.
        self._token: Optional[TokenSource] = token
        self._media_api_url = media_api_url or os.environ.get("ANKICOLLAB_MEDIA_API")
        self._report_references = report_references
        self._workers = workers
        self._cache_path = cache_path
        self._client: Optional[MediaClient] = None
        self._lock = threading.Lock()
        # Hashing needs no server (nor a login): its own handle on the shared on-disk cache.
        self._hashes = HashCache(cache_path)
        #: check_media_bulk's batches: batch_id → (deck_hash, files), for confirm_media_bulk_upload.
        self._batches: Dict[str, Tuple[str, List[Dict[str, Any]]]] = {}
        #: Signed headers of the upload URLs check_media_bulk handed out, for upload_file.
        self._upload_headers: Dict[str, Dict[str, str]] = {}

    # -- the plugin's synchronous helpers -----------------------------------------------------------

    def set_media_folder(self, media_folder: str) -> None:
        folder = Path(media_folder)
        if not folder.exists():
            raise ValueError(f"Media folder not found at: {media_folder}")
        self.media_folder = folder

    def is_manager_available(self) -> bool:
        """Inside Anki: a collection is open. Elsewhere: the media folder exists."""
        if _anki_loaded():
            try:
                mw = _in_anki()
                return mw is not None and mw.col is not None
            except Exception:
                return False
        return self.media_folder.is_dir()

    def clear_caches(self) -> None:
        """Kept for the plugin. The hash cache is on disk and checks each file's size and time."""
        with self._lock:
            self._batches.clear()
            self._upload_headers.clear()

    def refresh_session(self) -> None:
        """Forget the media token and connections: the next call reads the user's token again."""
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    def validate_file_basic(self, filepath: Union[str, Path]) -> bool:
        """A regular, non-empty file directly inside the media folder, with a media extension."""
        name = mediafolder.contained_path(self.media_folder, filepath)
        if name is None:
            return False
        found = mediafolder.resolve(self.media_folder, name)
        if not isinstance(found, str):
            return False
        try:
            return os.stat(found).st_size > 0 and Path(name).suffix.lower() in ALL_ALLOWED_EXTENSIONS
        except OSError:
            return False

    async def close(self) -> None:
        self.refresh_session()
        self._hashes.flush()

    async def __aenter__(self) -> MediaManager:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- plumbing ------------------------------------------------------------------------------------

    def client(self) -> MediaClient:
        with self._lock:
            if self._client is None:
                token: TokenSource
                if self._token is not None:
                    token = self._token
                else:
                    if self._media_api_url is None and self.backend.api_url is None:
                        self.backend.prefetch()
                    token = self.backend
                api_url = self._media_api_url or self.backend.api_url
                if not api_url:
                    raise MediaServerError("the media API's address is unknown", code="no_api_url")
                self._client = MediaClient(api_url, token, workers=self._workers, cache_path=self._cache_path)
            return self._client

    @staticmethod
    async def _in_thread(fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(None, fn)

    @staticmethod
    def _ratio(callback: Optional[FloatProgress]) -> Optional[Callable[[int, int], None]]:
        if callback is None:
            return None

        def progress(done: int, total: int) -> None:
            with contextlib.suppress(Exception):  # a broken progress bar must not stop a transfer
                callback(done / total if total else 0.0)

        return progress

    def _path(self, filepath: Union[str, Path]) -> Tuple[str, str]:
        """(name, path to read) of a file directly inside the media folder; raises
        ``MediaTypeError`` for anything else."""
        name = mediafolder.contained_path(self.media_folder, filepath)
        if name is None:
            raise MediaTypeError(
                f"{os.fspath(filepath)!r} is not directly inside the media folder",
                code="outside_media_folder",
            )
        found = mediafolder.resolve(self.media_folder, name)
        if isinstance(found, mediafolder.Refusal):
            if found.code == mediafolder.NOT_FOUND:
                raise FileNotFoundError(f"File not found or not a file: {filepath}")
            raise MediaTypeError(str(found), code=found.code)
        return name, found

    async def async_request(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        """A request to the AnkiCollab backend with the user's bearer token (read now); the
        response, after ``raise_for_status()``. As the plugin's, it raises ``requests``' errors."""

        def do() -> requests.Response:
            headers = dict(kwargs.pop("headers", None) or {})
            token = self.user.token()
            if token:
                headers.setdefault("Authorization", f"Bearer {token}")
            kwargs.setdefault("timeout", REQUEST_TIMEOUT)
            with requests.Session() as s:
                resp = s.request(method, url, headers=headers, **kwargs)
            resp.raise_for_status()
            return resp

        return await self._in_thread(do)

    # -- hashing (the plugin's "optimisation" step) ---------------------------------------------------

    async def compute_file_hash_and_size(
        self, filepath: Union[str, Path], *, bypass_cache: bool = False
    ) -> Tuple[str, int]:
        """SHA-256 (not MD5 any more) and size of a file directly inside the media folder.
        ``FileNotFoundError`` if it is not there, ``MediaHashError`` for anything else."""

        def work() -> Tuple[str, int]:
            try:
                _, path = self._path(filepath)
            except FileNotFoundError:
                raise
            except MediaError as e:
                raise MediaHashError(str(e), code=e.code) from e
            try:
                if bypass_cache:
                    return sha256_file(path)
                digest, st = self._hashes.sha256(path)
                return digest, st.st_size
            except OSError as e:
                raise MediaHashError(f"cannot read {filepath}: {e.strerror or e}") from e

        return await self._in_thread(work)

    async def optimize_media_for_upload(
        self, file_note_pairs: Sequence[Tuple[str, str]], progress_callback: Optional[FloatProgress] = None
    ) -> Tuple[Dict[str, str], List[Dict[str, Any]], Dict[str, str]]:
        """``(filename_mapping, files_info, file_paths)`` as before. Nothing is converted or renamed
        any more (the server does that, keeping the name), so the mapping is empty; ``files_info``
        has one entry per (filename, note) pair, its ``hash`` the file's SHA-256. Names that are not
        regular files directly inside the media folder, or have no media extension, are skipped and
        logged, never opened."""

        def work() -> Tuple[Dict[str, str], List[Dict[str, Any]], Dict[str, str]]:
            files_info: List[Dict[str, Any]] = []
            file_paths: Dict[str, str] = {}
            hashed: Dict[str, Tuple[str, int, str]] = {}
            total = len(file_note_pairs)
            for i, (filename, note_guid) in enumerate(file_note_pairs, 1):
                if filename not in hashed:
                    entry = self._hash_for_upload(filename)
                    if entry is None:
                        continue
                    hashed[filename] = entry
                digest, size, path = hashed[filename]
                files_info.append(
                    {"hash": digest, "filename": filename, "note_guid": note_guid, "file_size": size}
                )
                file_paths.setdefault(digest, path)
                if progress_callback is not None and (i % 100 == 0 or i == total):
                    with contextlib.suppress(Exception):
                        progress_callback(i / total)
            self._hashes.flush()
            return {}, files_info, file_paths

        try:
            return await self._in_thread(work)
        except Exception as e:  # the plugin turns an exception here into a failed upload; say why
            log.error("preparing media for upload failed: %s", e)
            raise

    def _hash_for_upload(self, filename: str) -> Optional[Tuple[str, int, str]]:
        if not isinstance(filename, str) or not filename:
            return None
        found = mediafolder.resolve(self.media_folder, filename)
        if isinstance(found, mediafolder.Refusal):
            log.warning("not uploading %s", found)
            return None
        if Path(filename).suffix.lower() not in ALL_ALLOWED_EXTENSIONS:
            log.warning("not uploading %r: not a media file type", filename)
            return None
        try:
            digest, st = self._hashes.sha256(found)
        except OSError as e:
            log.warning("cannot hash %r: %s", filename, e)
            return None
        if st.st_size == 0:
            log.warning("not uploading %r: empty", filename)
            return None
        return digest, st.st_size, found

    # -- upload ------------------------------------------------------------------------------------------

    async def upload_media_bulk(
        self,
        files_info: List[Dict[str, Any]],
        file_paths: Dict[str, str],
        deck_hash: str,
        bulk_operation_id: str = "",
        progress_callback: Optional[FloatProgress] = None,
        **legacy: Any,
    ) -> Dict[str, Any]:
        """Upload what the server lacks and report the notes' references to the backend.

        The plugin's result: ``success``, ``status`` (``no_files``, ``uploaded_confirmed``,
        ``all_exist_or_failed_check``, ``upload_failed_all``, ``auth_failed``, ``check_failed``,
        ``check_failed_unexpected``, ``references_failed``), ``message``, ``uploaded``,
        ``existing``, ``failed`` (ints, counted by filename), ``failed_filenames`` (sorted list),
        ``errors`` (a list of ``"filename: reason"`` strings) and, when a step failed as a whole,
        ``error``; plus ``rejected`` (filename → the server's reason), ``hashes`` (filename →
        SHA-256) and ``references`` (how many ``(note, file)`` pairs the backend recorded).
        Never raises. ``file_paths`` and ``bulk_operation_id`` are accepted and not needed: each
        file is read from the media folder under its own name."""
        del file_paths, bulk_operation_id, legacy
        if not files_info:
            return _upload_result(True, "no_files", "No files provided for upload.")
        try:
            return await self._in_thread(lambda: self._upload(files_info, deck_hash, progress_callback))
        except Exception as e:  # a bug of ours must not end the plugin's whole upload
            log.exception("upload_media_bulk failed")
            names = _names(files_info)
            return _upload_result(
                False,
                "check_failed_unexpected",
                f"Unexpected error uploading media: {e}",
                failed_filenames=names,
                errors=[f"{type(e).__name__}: {e}"],
                error=str(e),
            )

    def _upload(
        self, files_info: List[Dict[str, Any]], deck_hash: str, progress_callback: Optional[FloatProgress]
    ) -> Dict[str, Any]:
        names = _names(files_info)
        try:
            report: UploadReport = self.client().upload(
                deck_hash, names, media_dir=self.media_folder, progress=self._ratio(progress_callback)
            )
        except AuthError as e:
            log.warning("media upload refused: %s", e)
            return _upload_result(
                False, "auth_failed", "Session expired", failed_filenames=names, errors=[str(e)], error=str(e)
            )
        except _ClientError as e:
            partial: Optional[UploadReport] = e.report if isinstance(e.report, UploadReport) else None
            done = set(partial.uploaded) | set(partial.existing) if partial else set()
            failed = [n for n in names if n not in done]
            return _upload_result(
                False,
                "check_failed",
                f"Server error uploading media: {e}",
                uploaded=len(partial.uploaded) if partial else 0,
                existing=len(partial.existing) if partial else 0,
                failed_filenames=failed,
                errors=[str(e)],
                error=str(e),
            )
        stored = set(report.uploaded) | set(report.existing)
        problems: Dict[str, str] = {n: f"refused by the server: {r}" for n, r in report.rejected.items()}
        problems.update(report.failed)
        for n in names:
            if n not in stored and n not in problems:
                problems[n] = "cancelled" if report.cancelled else "not sent"
        result = self._summarise(report, problems)
        if self._report_references and self._token is None:
            self._references(deck_hash, files_info, report, result)
        elif self._report_references:
            result["references"] = 0
        if progress_callback is not None:
            with contextlib.suppress(Exception):
                progress_callback(1.0)
        return result

    @staticmethod
    def _summarise(report: UploadReport, problems: Dict[str, str]) -> Dict[str, Any]:
        failed = sorted(problems)
        uploaded, existing = len(report.uploaded), len(report.existing)
        if uploaded:
            status = "uploaded_confirmed"
        elif not any(n for n in problems if n not in report.rejected):
            status = "all_exist_or_failed_check"
        else:
            status = "upload_failed_all"
        result = _upload_result(
            not failed,
            status,
            f"Uploaded {uploaded} files ({existing} existing, {len(failed)} failed).",
            uploaded=uploaded,
            existing=existing,
            failed_filenames=failed,
            errors=[f"{n}: {problems[n]}" for n in failed],
        )
        result["rejected"] = dict(report.rejected)
        result["hashes"] = dict(report.hashes)
        return result

    def _references(
        self, deck_hash: str, files_info: List[Dict[str, Any]], report: UploadReport, result: Dict[str, Any]
    ) -> None:
        """Tell the backend which note uses which stored file; a failure fails the batch (its files
        would otherwise be swept as unreferenced) so that the user can send it again."""
        stored = set(report.uploaded) | set(report.existing)
        pairs: Dict[Tuple[str, str], str] = {}
        for f in files_info:
            name, guid = f.get("filename"), f.get("note_guid")
            if (
                isinstance(name, str)
                and isinstance(guid, str)
                and guid
                and name in stored
                and name in report.hashes
            ):
                pairs[(guid, name)] = report.hashes[name]
        files = [{"note_guid": g, "filename": n, "sha256": h} for (g, n), h in pairs.items()]
        if not files:
            result["references"] = 0
            return
        try:
            result["references"] = self.backend.report_references(deck_hash, files)
        except Exception as e:
            log.warning("reporting references failed: %s", e)
            affected = sorted({n for _, n in pairs})
            result.update(
                success=False,
                status="auth_failed" if isinstance(e, AuthError) else "references_failed",
                message=f"Uploaded the files, but the server could not record which cards use them: {e}",
                error=str(e),
                references=0,
            )
            failed = sorted(set(result["failed_filenames"]) | set(affected))
            result["failed_filenames"] = failed
            result["failed"] = len(failed)
            result["errors"] = list(result["errors"]) + [
                f"{n}: references not recorded ({e})" for n in affected
            ]

    # -- download ----------------------------------------------------------------------------------------

    async def get_media_manifest_and_download(
        self,
        deck_hash: str,
        filenames: Sequence[str],
        progress_callback: Optional[FloatProgress] = None,
        **legacy: Any,
    ) -> Dict[str, Any]:
        """Download what the media folder lacks of ``filenames``: the plugin's keys (``success,
        message, downloaded, skipped, failed``, and ``auth_expired: True`` after a 401 that a fresh
        token could not cure), plus ``conflicts``, ``unavailable`` and ``failed_filenames``.
        Never raises."""
        del legacy
        if _anki_loaded() and not self.is_manager_available():
            return _download_result(False, "Anki collection is not available")
        names = list(dict.fromkeys(n for n in filenames if isinstance(n, str)))
        if not names:
            return _download_result(True, "No files to download")
        try:
            report: DownloadReport = await self._in_thread(
                lambda: self.client().download(
                    deck_hash, self.media_folder, filenames=names, progress=self._ratio(progress_callback)
                )
            )
        except AuthError as e:
            log.warning("media download refused: %s", e)
            result = _download_result(False, "Session expired")
            result["auth_expired"] = True
            return result
        except _ClientError as e:
            return _download_result(False, f"Failed to get manifest: {e}", failed=len(names))
        except Exception as e:
            log.exception("media download failed")
            return _download_result(False, f"Unexpected error getting manifest: {e}", failed=len(names))
        failed = len(report.failed)
        skipped = len(report.skipped) + len(report.conflicts)
        result = _download_result(
            failed == 0,
            f"Downloaded {len(report.downloaded)}, Skipped {skipped}, Failed {failed}",
            downloaded=len(report.downloaded),
            skipped=skipped,
            failed=failed,
        )
        result["conflicts"] = len(report.conflicts)
        result["unavailable"] = len(report.unavailable)
        result["failed_filenames"] = sorted(report.failed)
        return result

    # -- the plugin's lower-level calls, kept working ---------------------------------------------------

    async def get_media_manifest(self, deck_hash: str, filenames: List[str], **legacy: Any) -> Dict[str, Any]:
        """``{files: [{filename, download_url}], file_count, expires_at}`` for the ready files among
        ``filenames``. Raises ``MediaServerError`` (``MediaRateLimitError`` for 429) as before."""
        del legacy

        def work() -> Dict[str, Any]:
            files: List[Dict[str, Any]] = []
            expires: List[str] = []
            names = list(dict.fromkeys(filenames))
            client = self.client()
            for start in range(0, len(names), 1000):
                page = client.manifest(deck_hash, names[start : start + 1000])
                for f in page.get("files") or []:
                    if isinstance(f, dict) and isinstance(f.get("url"), str):
                        files.append({"filename": f.get("filename"), "download_url": f["url"]})
                        if isinstance(f.get("expires_at"), str):
                            expires.append(f["expires_at"])
            return {"files": files, "file_count": len(files), "expires_at": min(expires) if expires else None}

        return await self._call(work)

    async def check_media_bulk(
        self, deck_hash: str, bulk_operation_id: str, files: List[Dict[str, Any]], **legacy: Any
    ) -> Dict[str, Any]:
        """Which of ``files`` (``{hash, filename, note_guid, file_size}``, ``hash`` a SHA-256)
        the server has: ``{existing_files, missing_files, failed_files, batch_id}``, the missing ones
        with an ``upload_url`` (and the ``headers`` to send); their references are reported to the
        backend by ``confirm_media_bulk_upload``."""
        del legacy
        valid = [f for f in files if all(k in f for k in ("hash", "filename", "note_guid", "file_size"))]
        if not valid:
            return {"existing_files": [], "missing_files": [], "failed_files": [], "batch_id": None}

        def work() -> Dict[str, Any]:
            answers = self.client().ask_uploads(
                deck_hash,
                [{"hash": f["hash"], "size": f["file_size"], "filename": f["filename"]} for f in valid],
            )
            existing, missing, failed = [], [], []
            for f, a in zip(valid, answers):
                entry = {"hash": f["hash"], "filename": f["filename"]}
                if a.get("status") == "exists":
                    existing.append(entry)
                elif a.get("status") == "upload" and isinstance(a.get("url"), str):
                    headers = {str(k): str(v) for k, v in (a.get("headers") or {}).items()}
                    with self._lock:
                        self._upload_headers[a["url"]] = headers
                    missing.append(
                        {**entry, "upload_url": a["url"], "presigned_url": a["url"], "headers": headers}
                    )
                else:
                    failed.append({**entry, "reason": str(a.get("reason") or a.get("status") or "failed")})
            batch_id = bulk_operation_id or secrets.token_hex(8)
            with self._lock:
                self._batches[batch_id] = (deck_hash, [dict(f) for f in valid])
            return {
                "existing_files": existing,
                "missing_files": missing,
                "failed_files": failed,
                "batch_id": batch_id,
            }

        return await self._call(work)

    async def confirm_media_bulk_upload(
        self,
        batch_id: str,
        bulk_operation_id: str = "",
        confirmed_files: Optional[List[str]] = None,
        **legacy: Any,
    ) -> None:
        """Report the references of a ``check_media_bulk`` batch: the files that existed and the
        ``confirmed_files`` (hashes) that were uploaded. Raises ``MediaServerError`` on failure."""
        del bulk_operation_id, legacy
        with self._lock:
            batch = self._batches.get(batch_id)
        if batch is None or not self._report_references:
            return
        deck_hash, files = batch
        confirmed = set(confirmed_files or [])

        def work() -> None:
            answers = self.client().ask_uploads(
                deck_hash,
                [{"hash": f["hash"], "size": f["file_size"], "filename": f["filename"]} for f in files],
            )
            refs = {
                (str(f["note_guid"]), str(f["filename"])): str(f["hash"])
                for f, a in zip(files, answers)
                if a.get("status") == "exists" or f["hash"] in confirmed
            }
            self.backend.report_references(
                deck_hash, [{"note_guid": g, "filename": n, "sha256": h} for (g, n), h in refs.items()]
            )
            with self._lock:
                self._batches.pop(batch_id, None)

        await self._call(work)

    async def _call(self, work: Callable[[], T]) -> T:
        """Run ``work`` off the loop; this package's errors become the plugin's exception types."""
        try:
            return await self._in_thread(work)
        except MediaError:
            raise
        except _ClientError as e:
            cls = (
                MediaRateLimitError
                if e.status == 429 or e.code in ("rate_limited", "quota_exceeded")
                else MediaServerError
            )
            raise cls(str(e), code=e.code, status=e.status) from e

    async def upload_file(
        self, upload_url: str, filepath: Union[str, Path], file_hash: Optional[str] = None
    ) -> bool:
        """PUT a file directly inside the media folder to an upload URL from ``check_media_bulk``
        (with the headers it signed). True on success; raises as the plugin's did
        (``FileNotFoundError``, ``MediaTypeError``, ``MediaUploadError``)."""
        del file_hash

        def work() -> bool:
            name, path = self._path(filepath)
            with self._lock:
                headers = dict(self._upload_headers.get(upload_url) or {})
            if not headers:
                digest, size = sha256_file(path)
                headers = {
                    "content-length": str(size),
                    "x-amz-checksum-sha256": base64.b64encode(binascii.unhexlify(digest)).decode(),
                    "content-type": CONTENT_TYPE_MAP.get(
                        Path(name).suffix.lower(), "application/octet-stream"
                    ),
                }
            try:
                with mediafolder.open_regular(path) as body, requests.Session() as s:
                    resp = s.put(upload_url, data=body, headers=headers, timeout=(10, 120))
            except requests.RequestException as e:
                raise MediaUploadError(f"network error uploading {name}: {e}", code="network") from e
            except OSError as e:
                raise MediaUploadError(f"cannot read {name}: {e.strerror or e}", code="io") from e
            if resp.status_code == 413:
                raise MediaTypeError(f"File too large (413): {name}", code="too_large", status=413)
            if not 200 <= resp.status_code < 300:
                raise MediaUploadError(
                    f"storage refused {name} (HTTP {resp.status_code})",
                    code="storage_refused",
                    status=resp.status_code,
                )
            return True

        return await self._in_thread(work)

    async def download_file(self, url: str, destination: Union[str, Path]) -> bool:
        """GET ``url`` into ``destination``, a name directly inside the media folder, through a
        temporary file, never more than ``MAX_FILE_SIZE`` bytes. True when it is in place (or was
        already there); False when the destination is not allowed or the download failed. Raises
        ``MediaDownloadError`` for an HTTP error, as before."""
        name = mediafolder.contained_path(self.media_folder, destination)
        if name is None or filenames.problem(name) is not None:
            log.warning("refusing to download into %r", os.fspath(destination))
            return False

        def work() -> bool:
            final = os.path.join(os.path.realpath(self.media_folder), name)
            if os.path.lexists(final):
                return os.path.isfile(final) and not os.path.islink(final) and os.path.getsize(final) > 0
            tmp = os.path.join(
                os.path.dirname(final),
                f"{filenames.TEMP_PREFIX}{os.getpid()}-{secrets.token_hex(6)}{filenames.TEMP_SUFFIX}",
            )
            try:
                with requests.Session() as s, s.get(url, stream=True, timeout=(10, 60)) as resp:
                    if resp.status_code != 200:
                        raise MediaDownloadError(
                            f"download of {name} failed (HTTP {resp.status_code})", status=resp.status_code
                        )
                    n = 0
                    with open(tmp, "xb") as out:
                        for chunk in resp.iter_content(256 * 1024):
                            n += len(chunk)
                            if n > MAX_FILE_SIZE:
                                log.warning("%s: larger than %d bytes; refused", name, MAX_FILE_SIZE)
                                return False
                            out.write(chunk)
                try:
                    os.link(tmp, final)
                except FileExistsError:
                    return True
                except OSError:
                    if os.path.lexists(final):
                        return True
                    os.rename(tmp, final)
                return True
            except requests.RequestException as e:
                log.warning("download of %s failed: %s", name, e)
                return False
            except OSError as e:
                log.warning("cannot write %s: %s", name, e)
                return False
            finally:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)

        return await self._in_thread(work)


def _names(files_info: Iterable[Dict[str, Any]]) -> List[str]:
    """The filenames of a batch, each once, in order."""
    return list(dict.fromkeys(str(f.get("filename")) for f in files_info if f.get("filename")))


def _upload_result(
    success: bool,
    status: str,
    message: str,
    *,
    uploaded: int = 0,
    existing: int = 0,
    failed_filenames: Optional[List[str]] = None,
    errors: Optional[List[str]] = None,
    error: Optional[str] = None,
) -> Dict[str, Any]:
    failed = sorted(failed_filenames or [])
    result: Dict[str, Any] = {
        "success": success,
        "status": status,
        "message": message,
        "uploaded": uploaded,
        "existing": existing,
        "failed": len(failed),
        "failed_filenames": failed,
        "errors": list(errors or []),
    }
    if error is not None:
        result["error"] = error
    return result


def _download_result(
    success: bool, message: str, *, downloaded: int = 0, skipped: int = 0, failed: int = 0
) -> Dict[str, Any]:
    return {
        "success": success,
        "message": message,
        "downloaded": downloaded,
        "skipped": skipped,
        "failed": failed,
    }
