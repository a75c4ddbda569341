"""`compat.MediaManager` under the plugin's own call sites (`plugin_call_sites`), against the fake
API, storage and AnkiCollab backend (`fakes`): result shapes, tokens that follow the user, the
references it reports, and that nothing outside the media folder is ever opened."""

from __future__ import annotations

import asyncio
import importlib
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator, Optional

import pytest
import requests
import responses

from ankicollab_media import MediaClient, compat, transport
from ankicollab_media.compat import MediaManager
from ankicollab_media.downloads import MAX_STORED_BYTES
from ankicollab_media.errors import MediaError

from . import plugin_call_sites as plugin
from .conftest import Sleeps
from .fakes import API, BACKEND, STORAGE, FakeBackend, FakeServer, sha

CLIENT = Path(__file__).resolve().parents[1]


@pytest.fixture
def media(tmp_path: Path) -> Path:
    d = tmp_path / "collection.media"
    d.mkdir()
    return d


@pytest.fixture
def backend(server: FakeServer) -> FakeBackend:
    b = FakeBackend(server, users={"user-token-1": "u1"})
    b.install(server.rsps)
    return b


class Login:
    """The plugin's auth manager, reduced to what compat reads: the token (changes on login,
    rotation, logout), ``refresh_token()`` and ``handle_auth_failure()``."""

    def __init__(self, token: str = "") -> None:
        self.value = token
        self.refreshes = 0
        self.failures = 0
        self.refresh_to: Optional[str] = None

    def get_token(self) -> str:
        return self.value

    def refresh_token(self) -> bool:
        self.refreshes += 1
        if self.refresh_to is None:
            return False
        self.value = self.refresh_to
        return True

    def handle_auth_failure(self) -> None:
        self.failures += 1
        self.value = ""


def manager(media: Path, tmp_path: Path, **kw: Any) -> MediaManager:
    if "token" not in kw and "user_token" not in kw and "auth_manager" not in kw:
        kw["user_token"] = "user-token-1"
    return MediaManager(BACKEND, str(media), cache_path=tmp_path / "h.sqlite3", **kw)


def write(media: Path, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        (media / name).write_bytes(data)


def test_the_plugins_upload_site_runs_unchanged(
    server: FakeServer, backend: FakeBackend, media: Path, tmp_path: Path, sleeps: Sleeps
) -> None:
    files = {f"img{i:03}.png": b"png %d" % i for i in range(230)}
    files["copy-a.png"] = files["copy-b.png"] = b"the same bytes under two names"
    files["strokes.svg"] = b"<svg xmlns='http://www.w3.org/2000/svg'/>"
    files["broken.png"] = b"storage will refuse this one"
    write(media, files)
    server.existing = {sha(files["img007.png"])}
    server.rejected = {"strokes.svg": "unsupported_type"}
    server.on_put = lambda h, _req: 403 if h == sha(files["broken.png"]) else None
    # Every file used by one note, the duplicate pair by two notes each, in separate batches.
    pairs = [(name, f"guid-{i}") for i, name in enumerate(sorted(files))]
    pairs.insert(3, ("copy-b.png", "guid-x"))
    pairs.append(("copy-a.png", "guid-y"))

    mm = manager(media, tmp_path)
    result = plugin.upload(mm, "deck-hash", pairs)

    assert not any("Unexpected error" in e for e in result["errors"]), result["errors"]
    assert result["failed_filenames"] == ["broken.png", "strokes.svg"]
    assert result["failed"] == 2
    # Every name counts under its own name, in each batch it is in (batches of 100 pairs); the
    # plugin totals only batches without failures.
    bad = {"broken.png", "strokes.svg"}
    per_batch = [len({n for n, _ in pairs[i : i + 100]} - bad) for i in range(0, len(pairs), 100)]
    assert [s["uploaded"] + s["existing"] for s in result["samples"]] == per_batch
    assert sum(s["existing"] for s in result["samples"]) == 2  # img007.png, and copy-a.png again
    clean = [s for s in result["samples"] if not s["failed"]]
    assert result["uploaded"] + result["existing"] == sum(s["uploaded"] + s["existing"] for s in clean)
    assert all(isinstance(s["errors_sample"], list) for s in result["samples"])
    svg_batch = next(s for s in result["samples"] if "strokes.svg" in s["failed_filenames_sample"])
    assert any(
        e.startswith("strokes.svg: refused by the server: unsupported_type")
        for e in svg_batch["errors_sample"]
    )
    # Equal bytes went up once.
    assert sum(1 for p in server.puts if p.url and sha(files["copy-a.png"]) in p.url) == 1
    # The backend learnt every (note, file) pair of what is stored, with the SHA-256.
    reported = {(f["note_guid"], f["filename"], f["sha256"]) for r in backend.references for f in r["files"]}
    expected = {(g, n, sha(files[n])) for n, g in pairs if n not in ("broken.png", "strokes.svg")}
    assert reported == expected
    assert {r["deck_hash"] for r in backend.references} == {"deck-hash"}
    assert all(r["user"] == "u1" for r in backend.references)


def test_a_batch_result_has_the_plugins_shape(
    server: FakeServer, backend: FakeBackend, media: Path, tmp_path: Path
) -> None:
    write(media, {"a.png": b"a", "b.png": b"b"})
    server.existing = {sha(b"b")}
    mm = manager(media, tmp_path)
    _, info, paths = asyncio.run(mm.optimize_media_for_upload([("a.png", "g1"), ("b.png", "g2")]))
    assert info == [
        {"hash": sha(b"a"), "filename": "a.png", "note_guid": "g1", "file_size": 1},
        {"hash": sha(b"b"), "filename": "b.png", "note_guid": "g2", "file_size": 1},
    ]
    assert paths == {sha(b"a"): str((media / "a.png").resolve()), sha(b"b"): str((media / "b.png").resolve())}
    ratios: list[float] = []
    result = asyncio.run(mm.upload_media_bulk(info, paths, "d", "", ratios.append))
    assert {k: result[k] for k in ("success", "status", "message", "uploaded", "existing", "failed")} == {
        "success": True,
        "status": "uploaded_confirmed",
        "message": "Uploaded 1 files (1 existing, 0 failed).",
        "uploaded": 1,
        "existing": 1,
        "failed": 0,
    }
    assert result["failed_filenames"] == [] and result["errors"] == [] and result["references"] == 2
    assert ratios[-1] == 1.0 and all(0 <= r <= 1 for r in ratios)
    assert asyncio.run(mm.upload_media_bulk([], {}, "d", "")) == {
        "success": True,
        "status": "no_files",
        "message": "No files provided for upload.",
        "uploaded": 0,
        "existing": 0,
        "failed": 0,
        "failed_filenames": [],
        "errors": [],
    }
    asyncio.run(mm.close())


def test_the_plugins_download_site_runs_unchanged(
    server: FakeServer, backend: FakeBackend, media: Path, tmp_path: Path
) -> None:
    server.files = {f"f{i}.png": b"x%d" % i for i in range(620)}
    (media / "f1.png").write_bytes(b"x1")
    names = [*sorted(server.files), "nope.png", "f2.png"]
    ratios: list[float] = []
    result = plugin.download(manager(media, tmp_path), "deck-hash", names, ratios.append)
    assert result == {"success": True, "message": "Downloaded 120, Skipped 1, Failed 0", "downloaded": 619}
    assert all((media / n).read_bytes() == server.files[n] for n in server.files)
    assert ratios and all(0 <= r <= 1 for r in ratios)
    direct = asyncio.run(
        manager(media, tmp_path).get_media_manifest_and_download("deck-hash", ["f1.png", "nope.png"])
    )
    assert {k: direct[k] for k in ("success", "downloaded", "skipped", "failed", "unavailable")} == {
        "success": True,
        "downloaded": 0,
        "skipped": 1,
        "failed": 0,
        "unavailable": 1,
    }


def test_a_user_who_logs_in_after_start_up_just_works(
    server: FakeServer, backend: FakeBackend, media: Path, tmp_path: Path
) -> None:
    write(media, {"a.png": b"a"})
    server.files = {"a.png": b"a"}
    login = Login("")  # Anki started, the user has not logged in yet
    mm = manager(media, tmp_path, auth_manager=login)
    up = plugin.upload(mm, "d", [("a.png", "g")])
    assert (up["uploaded"], up["failed"], up["failed_filenames"]) == (0, 1, ["a.png"])
    assert up["errors"] == ["Batch 1/1: Session expired"]
    down = plugin.download(mm, "d", ["a.png"])
    assert down["auth_expired"] is True and down["success"] is False
    # The user logs in; the same manager (built at start-up) now works.
    login.value = "user-token-1"
    assert plugin.upload(mm, "d", [("a.png", "g")])["uploaded"] == 1
    assert backend.minted and backend.bearers[-1] == "user-token-1"


def test_a_media_token_that_expires_mid_upload_is_renewed_with_the_users_current_token(
    server: FakeServer, backend: FakeBackend, media: Path, tmp_path: Path
) -> None:
    files = {f"n{i:03}.png": b"n%d" % i for i in range(150)}
    write(media, files)
    login = Login("user-token-1")
    mm = manager(media, tmp_path, auth_manager=login)
    pairs = [(n, "g") for n in sorted(files)]
    _, info, paths = plugin.prepare(mm, pairs)
    first = asyncio.run(
        mm.upload_media_bulk(files_info=info[:100], file_paths=paths, deck_hash="d", bulk_operation_id="")
    )
    assert first["success"] and first["uploaded"] == 100
    # Between two batches every media token expires and the user's AnkiCollab token rotates.
    backend.expire_all()
    backend.users = {"user-token-2": "u1"}
    login.value = "user-token-2"
    second = asyncio.run(
        mm.upload_media_bulk(files_info=info[100:], file_paths=paths, deck_hash="d", bulk_operation_id="")
    )
    assert second["success"] and second["uploaded"] == 50, second
    assert len(backend.minted) == 2
    assert backend.bearers[-1] == "user-token-2"


def test_a_media_token_is_renewed_before_it_expires() -> None:
    calls: list[int] = []

    def source() -> str:
        calls.append(1)
        return transport.MediaToken(f"t{len(calls)}", time.time() + (0.2 if len(calls) == 1 else 3600))

    token = transport.Token(source)
    assert token.get()[0] == "t1"
    time.sleep(0.25)
    assert token.get()[0] == "t2", "a token past its renewal time is renewed"
    assert token.get()[0] == "t2"


def test_a_401_from_the_backend_reaches_the_plugins_relogin_path(
    server: FakeServer, backend: FakeBackend, media: Path, tmp_path: Path
) -> None:
    write(media, {"a.png": b"a"})
    backend.users = {}  # the backend no longer knows the user's token
    login = Login("stale")
    mm = manager(media, tmp_path, auth_manager=login)
    down = plugin.download(mm, "d", ["a.png"])
    assert down == {"success": False, "message": "Session expired", "downloaded": 0, "auth_expired": True}
    assert login.refreshes == 1 and login.failures == 1
    # A refresh that cures it: no failure reported.
    login2 = Login("stale")
    login2.refresh_to = "user-token-2"
    backend.users = {"user-token-2": "u2"}
    up = plugin.upload(manager(media, tmp_path, auth_manager=login2), "d", [("a.png", "g")])
    assert up["uploaded"] == 1 and up["errors"] == []
    assert (login2.refreshes, login2.failures) == (1, 0)


def test_a_backend_that_is_down_gives_failure_dicts_not_exceptions(
    server: FakeServer, backend: FakeBackend, media: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("ankicollab_media.compat.time.sleep", lambda s: None)
    write(media, {"a.png": b"a"})
    backend.token_status = 503
    mm = manager(media, tmp_path)
    up = asyncio.run(
        mm.upload_media_bulk(
            [{"hash": sha(b"a"), "filename": "a.png", "note_guid": "g", "file_size": 1}], {}, "d", ""
        )
    )
    assert (up["success"], up["status"], up["failed_filenames"]) == (False, "check_failed", ["a.png"])
    assert isinstance(up["errors"], list) and up["errors"]
    down = asyncio.run(mm.get_media_manifest_and_download("d", ["a.png"]))
    assert down["success"] is False and down["failed"] == 1 and "auth_expired" not in down
    # No answer at all (connection refused).
    backend.token_status = None
    server.rsps.replace(
        responses.POST, f"{BACKEND}/media/token", body=requests.exceptions.ConnectionError("refused")
    )
    down = asyncio.run(manager(media, tmp_path).get_media_manifest_and_download("d", ["a.png"]))
    assert down["success"] is False and "cannot be reached" in down["message"]


def test_references_that_cannot_be_recorded_fail_the_batch(
    server: FakeServer, backend: FakeBackend, media: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("ankicollab_media.compat.time.sleep", lambda s: None)
    write(media, {"a.png": b"a", "b.png": b"b"})
    backend.references_status = [500] * 4
    mm = manager(media, tmp_path)
    result = plugin.upload(mm, "d", [("a.png", "g1"), ("b.png", "g2")])
    assert result["failed_filenames"] == ["a.png", "b.png"]
    assert result["errors"][0].startswith("Batch 1/1: Uploaded the files, but the server could not record")
    # Sent again, it works (the files are there now).
    backend.references_status = []
    again = plugin.upload(mm, "d", [("a.png", "g1"), ("b.png", "g2")])
    assert (again["existing"], again["failed"]) == (2, 0)


@pytest.fixture
def opened() -> Iterator[list[str]]:
    """Every path opened while the test runs (Python's audit hook sees open() and os.open())."""
    seen: list[str] = []
    active = [True]

    def hook(event: str, args: tuple[Any, ...]) -> None:
        if active[0] and event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
            seen.append(os.fsdecode(args[0]))

    sys.addaudithook(hook)
    yield seen
    active[0] = False


def test_nothing_outside_the_media_folder_is_opened(
    server: FakeServer, backend: FakeBackend, media: Path, tmp_path: Path, opened: list[str]
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "passport.png").write_bytes(b"private")
    write(media, {"ok.png": b"fine"})
    (media / "link.png").symlink_to(outside / "passport.png")
    (media / "inner-link.png").symlink_to(media / "ok.png")
    os.mkfifo(media / "fifo.png")
    names = [
        "../outside/passport.png",
        str(outside / "passport.png"),
        "C:\\x.png",
        "link.png",
        "fifo.png",
        "ok.png",
        "inner-link.png",
        "CON.png",
        "nul\x00.png",
        "dot.png.",
    ]
    mm = manager(media, tmp_path)
    opened.clear()  # what the test itself wrote
    result = plugin.upload(mm, "d", [(n, "g") for n in names])
    assert result["failed"] == 0 and result["uploaded"] == 2
    reported = {f["filename"] for r in backend.references for f in r["files"]}
    assert reported == {"ok.png", "inner-link.png"}
    # Direct calls with paths outside are refused too.
    with pytest.raises(compat.MediaHashError):
        asyncio.run(mm.compute_file_hash_and_size(outside / "passport.png"))
    with pytest.raises(compat.MediaHashError):
        asyncio.run(mm.compute_file_hash_and_size(media / "link.png"))
    with pytest.raises(compat.MediaTypeError):
        asyncio.run(mm.upload_file(f"{STORAGE}/uploads/x", outside / "passport.png"))
    assert not mm.validate_file_basic(outside / "passport.png")
    assert not mm.validate_file_basic(media / "link.png") and not mm.validate_file_basic(media / "fifo.png")
    assert mm.validate_file_basic(media / "ok.png")
    assert asyncio.run(mm.download_file(f"{STORAGE}/media/ok.png", media / ".." / "escaped.png")) is False
    assert asyncio.run(mm.download_file(f"{STORAGE}/media/ok.png", "/tmp/escaped.png")) is False
    assert not (tmp_path / "escaped.png").exists()
    leaked = [p for p in opened if "passport" in p or "fifo" in p or p.startswith(str(outside))]
    assert leaked == []


def test_the_plugins_lower_level_calls_still_work(
    server: FakeServer, backend: FakeBackend, media: Path, tmp_path: Path
) -> None:
    write(media, {"a.png": b"a", "b.png": b"b"})
    server.existing = {sha(b"b")}
    server.files = {"a.png": b"a"}
    mm = manager(media, tmp_path)
    h, size = asyncio.run(mm.compute_file_hash_and_size(media / "a.png"))
    assert (h, size) == (sha(b"a"), 1)
    files = [
        {"hash": sha(b"a"), "filename": "a.png", "note_guid": "g1", "file_size": 1},
        {"hash": sha(b"b"), "filename": "b.png", "note_guid": "g2", "file_size": 1},
    ]
    check = asyncio.run(mm.check_media_bulk("d", "op-1", files))
    assert check["batch_id"] == "op-1"
    assert check["existing_files"] == [{"hash": sha(b"b"), "filename": "b.png"}]
    (missing,) = check["missing_files"]
    assert missing["hash"] == sha(b"a") and missing["upload_url"].startswith(STORAGE)
    assert asyncio.run(mm.upload_file(missing["upload_url"], media / "a.png", sha(b"a"))) is True
    assert server.stored[sha(b"a")] == b"a"
    assert asyncio.run(mm.confirm_media_bulk_upload(check["batch_id"], "op-1", [sha(b"a")])) is None
    reported = {(f["note_guid"], f["filename"]) for r in backend.references for f in r["files"]}
    assert reported == {("g1", "a.png"), ("g2", "b.png")}
    manifest = asyncio.run(mm.get_media_manifest("d", ["a.png", "zzz.png"]))
    assert manifest["file_count"] == 1 and manifest["files"][0]["filename"] == "a.png"
    assert manifest["files"][0]["download_url"].startswith(STORAGE) and manifest["expires_at"]
    assert asyncio.run(mm.download_file(manifest["files"][0]["download_url"], media / "fresh.png")) is True
    assert (media / "fresh.png").read_bytes() == b"a"
    assert asyncio.run(mm.check_media_bulk("d", "", [])) == {
        "existing_files": [],
        "missing_files": [],
        "failed_files": [],
        "batch_id": None,
    }
    mm.clear_caches()
    mm.refresh_session()
    assert mm.is_manager_available()
    with pytest.raises(ValueError, match="Media folder not found"):
        mm.set_media_folder(str(tmp_path / "nope"))


def test_vendored_in_a_plugin_it_reads_the_plugins_own_login(
    server: FakeServer, backend: FakeBackend, media: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The switch is an import: vendored as ``<plugin>.vendor.ankicollab_media`` and built as the
    plugin builds it, compat finds the plugin's ``auth_manager`` and follows its login."""
    plugin_dir = tmp_path / "addons21" / "fake_collab"
    (plugin_dir / "vendor").mkdir(parents=True)
    (plugin_dir / "__init__.py").write_text("")
    (plugin_dir / "vendor" / "__init__.py").write_text("")
    (plugin_dir / "auth_manager.py").write_text(
        "class AuthManager:\n"
        "    token = ''\n"
        "    def get_token(self):\n        return self.token\n"
        "auth_manager = AuthManager()\n"
    )
    sys.path.insert(0, str(plugin_dir.parent))
    subprocess.run(
        [sys.executable, str(CLIENT / "vendor.py"), str(plugin_dir / "vendor")],
        check=True,
        capture_output=True,
    )
    try:
        auth = importlib.import_module("fake_collab.auth_manager")
        vendored = importlib.import_module("fake_collab.vendor.ankicollab_media.compat")
        monkeypatch.chdir(media)
        mm = vendored.MediaManager(api_base_url=BACKEND, media_folder="")
        mm.set_media_folder(str(media))
        write(media, {"a.png": b"a"})
        assert plugin.upload(mm, "d", [("a.png", "g")])["failed"] == 1  # not logged in yet
        auth.auth_manager.token = "user-token-1"
        assert plugin.upload(mm, "d", [("a.png", "g")])["uploaded"] == 1
        assert backend.bearers[-1] == "user-token-1"
    finally:
        sys.path.remove(str(plugin_dir.parent))
        for name in [m for m in sys.modules if m == "fake_collab" or m.startswith("fake_collab.")]:
            del sys.modules[name]


def test_downloads_stop_on_a_cursor_the_server_repeats(
    server: FakeServer, media: Path, tmp_path: Path
) -> None:
    server.rsps.replace(
        responses.POST, f"{API}/v1/downloads", json={"files": [], "unavailable": [], "next_cursor": "same"}
    )
    with (
        MediaClient(API, "t", cache_path=tmp_path / "c.sqlite3") as c,
        pytest.raises(MediaError, match="cursor"),
    ):
        c.download("d", media)


def test_downloads_never_write_more_than_announced_or_allowed(
    server: FakeServer, media: Path, tmp_path: Path
) -> None:
    server.files = {"big.png": b"x" * 10, "small.png": b"abc"}
    real_entry = server.entry

    def entry(name: str) -> dict[str, Any]:
        e = real_entry(name)
        if name == "big.png":
            e["size"] = MAX_STORED_BYTES + 1
        if name == "small.png":
            e["size"] = 2  # storage will send 3
        return e

    server.entry = entry  # type: ignore[method-assign]
    with MediaClient(API, "t", cache_path=tmp_path / "c.sqlite3") as c:
        report = c.download("d", media, filenames=["big.png", "small.png"])
    assert set(report.failed) == {"big.png", "small.png"}
    assert "big.png" not in server.gets
    assert not (media / "big.png").exists() and not (media / "small.png").exists()
    assert [p.name for p in media.iterdir()] == []
