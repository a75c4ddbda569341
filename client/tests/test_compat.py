"""`compat.MediaManager`: the plugin's calls and result keys, over the fake API and storage."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import requests
import responses

from ankicollab_media.compat import MediaManager

from .fakes import API, FakeServer, sha


@pytest.fixture
def media(tmp_path: Path) -> Path:
    d = tmp_path / "collection.media"
    d.mkdir()
    return d


def manager(media: Path, tmp_path: Path, **kw: Any) -> MediaManager:
    kw.setdefault("token", "t")
    kw.setdefault("media_api_url", API)
    return MediaManager("https://backend.test", str(media), cache_path=tmp_path / "h.sqlite3", **kw)


def test_the_plugins_upload_flow_keeps_its_result_keys(
    server: FakeServer, media: Path, tmp_path: Path
) -> None:
    for name in ("a.png", "b.png", "c.mp3"):
        (media / name).write_bytes(name.encode() * 10)
    (media / "notes.txt").write_text("x")
    server.existing = {sha(b"b.png" * 10)}
    server.rejected = {"c.mp3": "too_large"}
    mm = manager(media, tmp_path)
    ratios: list[float] = []
    mapping, files_info, file_paths = asyncio.run(
        mm.optimize_media_for_upload(
            [("a.png", "g1"), ("b.png", "g2"), ("c.mp3", "g3"), ("notes.txt", "g4"), ("gone.png", "g5")],
            ratios.append,
        )
    )
    assert mapping == {}, "nothing is renamed any more"
    assert [f["filename"] for f in files_info] == ["a.png", "b.png", "c.mp3"]
    assert files_info[0] == {
        "hash": sha(b"a.png" * 10),
        "filename": "a.png",
        "note_guid": "g1",
        "file_size": 50,
    }
    assert file_paths[sha(b"a.png" * 10)] == str(media / "a.png")
    result = asyncio.run(mm.upload_media_bulk(files_info, file_paths, "deck1", "", ratios.append))
    assert {
        k: result[k] for k in ("success", "status", "uploaded", "existing", "failed", "failed_filenames")
    } == {
        "success": False,
        "status": "uploaded_confirmed",
        "uploaded": 1,
        "existing": 1,
        "failed": 1,
        "failed_filenames": ["c.mp3"],
    }
    assert result["rejected"] == {"c.mp3": "too_large"}
    assert result["hashes"]["a.png"] == sha(b"a.png" * 10)
    assert result["message"] == "Uploaded 1 files (1 existing, 1 failed)."
    assert ratios and ratios[-1] == 1.0 and all(0 <= r <= 1 for r in ratios)
    assert asyncio.run(mm.upload_media_bulk([], {}, "deck1", "")) == {
        "success": True,
        "status": "no_files",
        "message": "No files provided for upload.",
        "uploaded": 0,
        "existing": 0,
        "failed": 0,
        "failed_filenames": [],
    }
    asyncio.run(mm.close())


def test_the_plugins_download_flow_keeps_its_result_keys(
    server: FakeServer, media: Path, tmp_path: Path
) -> None:
    server.files = {"a.png": b"aaa", "b.png": b"bbb"}
    (media / "b.png").write_bytes(b"bbb")
    mm = manager(media, tmp_path)
    result = asyncio.run(mm.get_media_manifest_and_download("deck1", ["a.png", "b.png", "nope.png", "a.png"]))
    assert {k: result[k] for k in ("success", "downloaded", "skipped", "failed", "unavailable")} == {
        "success": True,
        "downloaded": 1,
        "skipped": 1,
        "failed": 0,
        "unavailable": 1,
    }
    assert result["message"] == "Downloaded 1, Skipped 1, Failed 0"
    assert (media / "a.png").read_bytes() == b"aaa"
    assert asyncio.run(mm.get_media_manifest_and_download("deck1", []))["success"] is True


def test_a_401_is_reported_as_the_plugin_expects(server: FakeServer, media: Path, tmp_path: Path) -> None:
    server.rsps.replace(
        responses.POST,
        f"{API}/v1/downloads",
        status=401,
        json={"error": {"code": "unauthorized", "message": "x"}},
    )
    result = asyncio.run(manager(media, tmp_path).get_media_manifest_and_download("deck1", ["a.png"]))
    assert (
        result["success"] is False
        and result["auth_expired"] is True
        and result["message"] == "Session expired"
    )
    (media / "a.png").write_bytes(b"a")
    server.rsps.replace(
        responses.POST,
        f"{API}/v1/uploads",
        status=401,
        json={"error": {"code": "unauthorized", "message": "x"}},
    )
    mm = manager(media, tmp_path)
    _, info, paths = asyncio.run(mm.optimize_media_for_upload([("a.png", "g")]))
    up = asyncio.run(mm.upload_media_bulk(info, paths, "deck1", ""))
    assert (up["success"], up["status"], up["failed_filenames"]) == (False, "auth_failed", ["a.png"])


def test_tokens_and_the_media_api_can_come_from_the_backend(
    server: FakeServer, media: Path, tmp_path: Path
) -> None:
    server.files = {"a.png": b"aaa"}
    server.rsps.add(
        responses.POST, "https://backend.test/media/token", json={"token": "minted", "api_url": API}
    )
    session = requests.Session()
    session.headers["Authorization"] = "Bearer plugin-session"
    mm = MediaManager("https://backend.test", str(media), session=session, cache_path=tmp_path / "h.sqlite3")
    result = asyncio.run(mm.get_media_manifest_and_download("deck1", ["a.png"]))
    assert result["downloaded"] == 1
    asks = [c for c in server.rsps.calls if c.request.url == "https://backend.test/media/token"]
    assert asks and asks[0].request.headers["Authorization"] == "Bearer plugin-session"
    downloads = [c for c in server.rsps.calls if c.request.url == f"{API}/v1/downloads"]
    assert downloads[0].request.headers["Authorization"] == "Bearer minted"


def test_a_missing_media_folder_is_refused_as_before(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="Media folder not found"):
        MediaManager("https://backend.test", str(tmp_path / "nope"), token="t")
