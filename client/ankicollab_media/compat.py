"""A drop-in for the AnkiCollab plugin's ``media_manager.MediaManager``: the same constructor,
methods (async, as the plugin awaits them) and return keys, over ``MediaClient``.

What changes underneath: SHA-256 instead of MD5; no local WebP conversion or renaming (the server
converts, and keeps the filename), so ``optimize_media_for_upload`` only hashes and its filename
mapping is always empty; uploads go straight to storage in parallel through pre-signed URLs;
downloads are verified against the stored bytes' hash and put in place atomically. See
``client/README.md`` for the mapping.

Tokens: the media server takes its own short-lived token, which the AnkiCollab backend mints for
the signed-in user. Pass ``token`` (a string or a callable), or let the manager ask the backend:
``POST {api_base_url}/media/token`` with the plugin's authenticated ``session`` answers
``{"token": "...", "api_url": "https://media..."}``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, TypeVar

import requests

from .client import MediaClient
from .errors import AuthError, MediaError
from .hashcache import StrPath, sha256_file
from .reports import DownloadReport, UploadReport
from .transport import TokenSource

log = logging.getLogger("ankicollab_media")
T = TypeVar("T")

#: What the plugin accepts (and the server takes).
ALLOWED_EXTENSIONS = {
    ".jpg", ".jpeg", ".jfif", ".png", ".gif", ".webp", ".bmp", ".tif", ".tiff",
    ".mp3", ".ogg", ".oga", ".opus", ".wav", ".m4a", ".flac", ".aif", ".aiff", ".aifc",
}  # fmt: skip
FloatProgress = Callable[[float], None]


class BackendTokens:
    """Media tokens from the AnkiCollab backend: ``POST {api_base_url}/media/token`` through the
    plugin's authenticated session. Also learns where the media API is."""

    def __init__(self, api_base_url: str, session: Optional[requests.Session] = None) -> None:
        self.url = api_base_url.rstrip("/") + "/media/token"
        self.session = session or requests.Session()
        self.api_url: Optional[str] = None
        self._lock = threading.Lock()

    def __call__(self) -> str:
        with self._lock:
            resp = self.session.post(self.url, json={}, timeout=30)
            if resp.status_code == 401:
                raise AuthError("the AnkiCollab session has expired", status=401)
            resp.raise_for_status()
            body = resp.json()
            token = body.get("token")
            if not isinstance(token, str) or not token:
                raise AuthError("the backend answered without a media token")
            if isinstance(body.get("api_url"), str):
                self.api_url = body["api_url"]
            return token


class MediaManager:
    def __init__(
        self,
        api_base_url: str,
        media_folder: str,
        *,
        token: Optional[TokenSource] = None,
        media_api_url: Optional[str] = None,
        session: Optional[requests.Session] = None,
        workers: int = 8,
        cache_path: Optional[StrPath] = None,
    ) -> None:
        self.api_base_url = api_base_url.rstrip("/")
        self.media_folder = Path(media_folder)
        if not self.media_folder.exists():
            raise ValueError(f"Media folder not found at: {media_folder}")
        self._backend = BackendTokens(self.api_base_url, session) if token is None else None
        self._token: TokenSource = token if token is not None else self._backend  # type: ignore[assignment]
        self._media_api_url = media_api_url or os.environ.get("ANKICOLLAB_MEDIA_API")
        self._workers = workers
        self._cache_path = cache_path
        self._client: Optional[MediaClient] = None
        self._lock = threading.Lock()

    # -- the plugin's synchronous helpers ---------------------------------------------------------

    def set_media_folder(self, media_folder: str) -> None:
        self.media_folder = Path(media_folder)

    def is_manager_available(self) -> bool:
        return self.media_folder.is_dir()

    def clear_caches(self) -> None:
        """Kept for the plugin; the hash cache is on disk and checks each file's size and time."""

    def refresh_session(self) -> None:
        """Forget the client, so that the next call asks for a fresh token."""
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    @staticmethod
    def validate_file_basic(filepath: Path) -> bool:
        try:
            return (
                filepath.is_file()
                and filepath.stat().st_size > 0
                and filepath.suffix.lower() in ALLOWED_EXTENSIONS
            )
        except OSError:
            return False

    # -- plumbing ----------------------------------------------------------------------------------

    def client(self) -> MediaClient:
        with self._lock:
            if self._client is None:
                api_url = self._media_api_url
                if api_url is None and self._backend is not None:
                    self._backend()  # learns api_url; the client asks again when it needs the token
                    api_url = self._backend.api_url
                if not api_url:
                    raise MediaError("the media API's URL is unknown (pass media_api_url)", code="no_api_url")
                self._client = MediaClient(
                    api_url, self._token, workers=self._workers, cache_path=self._cache_path
                )
            return self._client

    @staticmethod
    async def _in_thread(fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(None, fn)

    @staticmethod
    def _ratio(callback: Optional[FloatProgress]) -> Optional[Callable[[int, int], None]]:
        if callback is None:
            return None

        def progress(done: int, total: int) -> None:
            callback(done / total if total else 0.0)

        return progress

    async def close(self) -> None:
        self.refresh_session()

    # -- hashing (the plugin's "optimisation" step) -------------------------------------------------

    async def compute_file_hash_and_size(
        self, filepath: StrPath, *, bypass_cache: bool = False
    ) -> Tuple[str, int]:
        """SHA-256 (not MD5 any more) and size."""

        def work() -> Tuple[str, int]:
            if bypass_cache:
                return sha256_file(filepath)
            digest = self.client().hash_file(filepath)
            return digest, os.path.getsize(filepath)

        return await self._in_thread(work)

    async def optimize_media_for_upload(
        self, file_note_pairs: Sequence[Tuple[str, str]], progress_callback: Optional[FloatProgress] = None
    ) -> Tuple[Dict[str, str], List[Dict[str, Any]], Dict[str, str]]:
        """``(filename_mapping, files_info, file_paths)`` as before. Nothing is converted or
        renamed any more (the server does that, keeping the name), so the mapping is empty."""

        def work() -> Tuple[Dict[str, str], List[Dict[str, Any]], Dict[str, str]]:
            client = self.client()
            files_info: List[Dict[str, Any]] = []
            file_paths: Dict[str, str] = {}
            total = len(file_note_pairs)
            for i, (filename, note_guid) in enumerate(file_note_pairs, 1):
                path = self.media_folder / filename
                if not self.validate_file_basic(path):
                    continue
                try:
                    digest = client.hash_file(path)
                    size = path.stat().st_size
                except OSError as e:
                    log.warning("cannot hash %s: %s", filename, e)
                    continue
                files_info.append(
                    {"hash": digest, "filename": filename, "note_guid": note_guid, "file_size": size}
                )
                file_paths[digest] = str(path)
                if progress_callback is not None and (i % 100 == 0 or i == total):
                    progress_callback(i / total)
            return {}, files_info, file_paths

        return await self._in_thread(work)

    # -- upload ------------------------------------------------------------------------------------

    async def upload_media_bulk(
        self,
        files_info: List[Dict[str, Any]],
        file_paths: Dict[str, str],
        deck_hash: str,
        bulk_operation_id: str = "",
        progress_callback: Optional[FloatProgress] = None,
        *,
        user_token: Optional[str] = None,
    ) -> Dict[str, Any]:
        """Upload what the server lacks; the plugin's result keys (``success, status, message,
        uploaded, existing, failed, failed_filenames``), plus ``rejected`` (filename → reason),
        ``errors`` (filename → message) and ``hashes`` (filename → SHA-256, for the backend's
        references). ``bulk_operation_id`` and ``user_token`` are accepted and unused."""
        del bulk_operation_id, user_token
        names = [str(f.get("filename")) for f in files_info]
        if not files_info:
            return _upload_result(True, "no_files", "No files provided for upload.", failed_filenames=[])
        paths = [file_paths[f["hash"]] for f in files_info if f.get("hash") in file_paths]
        try:
            report: UploadReport = await self._in_thread(
                lambda: self.client().upload(deck_hash, paths, progress=self._ratio(progress_callback))
            )
        except AuthError:
            return _upload_result(
                False, "auth_failed", "Session expired", failed=len(names), failed_filenames=names
            )
        except MediaError as e:
            return _upload_result(
                False,
                "check_failed",
                f"Upload failed: {e}",
                failed=len(names),
                failed_filenames=names,
                error=str(e),
            )
        failed_names = sorted(set(report.failed) | set(report.rejected))
        unsent = sorted(set(names) - set(report.uploaded) - set(report.existing) - set(failed_names))
        failed_names += unsent
        n_failed = len(failed_names)
        status = "uploaded_confirmed" if report.uploaded or not n_failed else "upload_failed_all"
        result = _upload_result(
            n_failed == 0,
            status,
            f"Uploaded {len(report.uploaded)} files ({len(report.existing)} existing, {n_failed} failed).",
            uploaded=len(report.uploaded),
            existing=len(report.existing),
            failed=n_failed,
            failed_filenames=failed_names,
        )
        result["rejected"] = dict(report.rejected)
        result["errors"] = dict(report.failed)
        result["hashes"] = dict(report.hashes)
        return result

    # -- download ----------------------------------------------------------------------------------

    async def get_media_manifest_and_download(
        self,
        deck_hash: str,
        filenames: Sequence[str],
        progress_callback: Optional[FloatProgress] = None,
        *,
        user_token: Optional[str] = None,
    ) -> Dict[str, Any]:
        """Download what the media folder lacks of ``filenames``; the plugin's keys (``success,
        message, downloaded, skipped, failed``, ``auth_expired`` after a 401), plus
        ``conflicts``, ``unavailable`` and ``failed_filenames``."""
        del user_token
        names = list(dict.fromkeys(filenames))
        if not names:
            return _download_result(True, "No files to download")
        try:
            report: DownloadReport = await self._in_thread(
                lambda: self.client().download(
                    deck_hash, self.media_folder, filenames=names, progress=self._ratio(progress_callback)
                )
            )
        except AuthError:
            result = _download_result(False, "Session expired")
            result["auth_expired"] = True
            return result
        except MediaError as e:
            return _download_result(False, f"Failed to get manifest: {e}", failed=len(names))
        failed = len(report.failed)
        result = _download_result(
            failed == 0,
            f"Downloaded {len(report.downloaded)}, Skipped {len(report.skipped)}, Failed {failed}",
            downloaded=len(report.downloaded),
            skipped=len(report.skipped),
            failed=failed,
        )
        result["conflicts"] = len(report.conflicts)
        result["unavailable"] = len(report.unavailable)
        result["failed_filenames"] = sorted(report.failed)
        return result


def _upload_result(
    success: bool,
    status: str,
    message: str,
    *,
    uploaded: int = 0,
    existing: int = 0,
    failed: int = 0,
    failed_filenames: List[str],
    error: Optional[str] = None,
) -> Dict[str, Any]:
    result: Dict[str, Any] = {
        "success": success,
        "status": status,
        "message": message,
        "uploaded": uploaded,
        "existing": existing,
        "failed": failed,
        "failed_filenames": failed_filenames,
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
