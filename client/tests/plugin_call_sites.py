"""The AnkiCollab plugin's two media call sites, written from their described behaviour
(``../shared/ANKICOLLAB-TODAY.md``; the plugin's ``export_manager.handle_media_upload`` and
``crowd_anki/representation/deck.py`` as of 2026-06), not copied from them. They are what
``compat.MediaManager`` must satisfy unchanged: the tests drive them with compat swapped in.

What they rely on: ``upload_media_bulk`` returns a dict whose ``errors`` is sliced as a list and
whose ``failed_filenames`` is a list; a result with ``success`` False counts the batch's
``failed_filenames`` (or, without them, the whole batch) as failed and keeps its ``message``; an
exception anywhere ends the whole upload ("Unexpected error: ..."). The download site reads
``success``, ``message``, ``downloaded`` and stops at ``auth_expired``.
"""

from __future__ import annotations

import asyncio
from typing import Any, Callable, Optional

#: Whatever the plugin's ``main.media_manager`` is: its own class, or compat's.
Manager = Any

UPLOAD_BATCH = 100
DOWNLOAD_BATCH = 500


def prepare(manager: Manager, file_note_pairs: list[tuple[str, str]]) -> tuple[Any, Any, Any]:
    """``_sync_optimize_media_and_update_refs``: the optimisation step, run to completion in a
    background thread with its own event loop; an exception fails the operation."""
    try:
        mapping, files_info, file_paths = asyncio.run(
            manager.optimize_media_for_upload(file_note_pairs, None)
        )
        return mapping, files_info, file_paths
    except Exception as e:
        raise RuntimeError(f"Media optimization failed: {e}") from e


async def handle_media_upload(
    manager: Manager,
    deck_hash: str,
    bulk_operation_id: str,
    all_files_info: list[dict[str, Any]],
    file_paths: dict[str, str],
    progress: Optional[Callable[[float], None]] = None,
    want_cancel: Callable[[], bool] = lambda: False,
) -> dict[str, Any]:
    """``export_manager.handle_media_upload``: batches of 100 files, totals, error samples."""
    if not all_files_info:
        return {"uploaded": 0, "existing": 0, "failed": 0, "errors": [], "cancelled": False}
    uploaded = existing = 0
    failed: set[str] = set()
    errors: list[str] = []
    samples: list[dict[str, Any]] = []
    cancelled = False
    starts = list(range(0, len(all_files_info), UPLOAD_BATCH))
    try:
        for index, start in enumerate(starts):
            batch = all_files_info[start : start + UPLOAD_BATCH]

            def scaled(p: float, index: int = index) -> None:
                if progress is not None:
                    progress((index + p) / len(starts))

            result = await manager.upload_media_bulk(
                files_info=batch,
                file_paths=file_paths,
                deck_hash=deck_hash,
                bulk_operation_id=bulk_operation_id,
                progress_callback=scaled,
            )
            batch_failed = result.get("failed_filenames") or []
            batch_errors = result.get("errors") or []
            samples.append(
                {
                    "uploaded": result.get("uploaded"),
                    "existing": result.get("existing"),
                    "failed": result.get("failed"),
                    "failed_filenames_sample": batch_failed[:25],
                    "errors_sample": batch_errors[:5],
                    "errors_total": len(batch_errors),
                }
            )
            if want_cancel():
                cancelled = True
                break
            if result.get("success", False):
                uploaded += result.get("uploaded", 0)
                existing += result.get("existing", 0)
                failed.update(result.get("failed_filenames") or [])
                if result.get("error"):
                    errors.append(str(result["error"]))
            else:
                errors.append(f"Batch {index + 1}/{len(starts)}: {result.get('message', 'Unknown error')}")
                failed.update(result.get("failed_filenames") or [f["filename"] for f in batch])
        if progress is not None and not cancelled:
            progress(1.0)
    except Exception as e:
        errors.append(f"Unexpected error: {e}")
    return {
        "uploaded": uploaded,
        "existing": existing,
        "failed": len(failed),
        "errors": errors,
        "cancelled": cancelled,
        "failed_filenames": sorted(failed),
        "samples": samples,
    }


def upload(
    manager: Manager, deck_hash: str, file_note_pairs: list[tuple[str, str]], bulk_operation_id: str = ""
) -> dict[str, Any]:
    """Both upload steps as the plugin runs them: each in a background thread's own event loop."""
    _mapping, files_info, file_paths = prepare(manager, file_note_pairs)
    return asyncio.run(handle_media_upload(manager, deck_hash, bulk_operation_id, files_info, file_paths))


def download(
    manager: Manager,
    deck_hash: str,
    filenames: list[str],
    progress: Optional[Callable[[float], None]] = None,
) -> dict[str, Any]:
    """``deck.py``'s media download: batches of 500 names, stop at ``auth_expired``."""
    result: dict[str, Any] = {"success": False, "message": "", "downloaded": 0}
    try:
        total = 0
        last: dict[str, Any] = {}
        for start in range(0, len(filenames), DOWNLOAD_BATCH):
            batch = filenames[start : start + DOWNLOAD_BATCH]
            got = asyncio.run(
                manager.get_media_manifest_and_download(
                    deck_hash=deck_hash, filenames=batch, progress_callback=progress
                )
            )
            if got:
                last = got
                total += got.get("downloaded", 0)
                if got.get("auth_expired"):
                    break
        result.update(
            downloaded=total,
            success=last.get("success", False),
            message=last.get("message", "Media download completed"),
        )
        if last.get("auth_expired"):
            result["auth_expired"] = True
    except Exception as e:
        result.update(success=False, message=f"Media download failed: {e}")
    return result
