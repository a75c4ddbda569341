"""The client's core against a fake API and storage: what lands in the folder, verification,
renewal of expired URLs, cancel, progress, and the upload's headers."""

from __future__ import annotations

import http.server
import json as jsonlib
import os
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest
import responses

from ankicollab_media import MediaClient, errors, hashcache, mediafolder
from ankicollab_media.filenames import TEMP_PREFIX

from .conftest import Sleeps
from .fakes import API, FakeServer, sha


@pytest.fixture
def client(cache_path: Path) -> Iterator[MediaClient]:
    c = MediaClient(API, "token", workers=4, cache_path=cache_path)
    yield c
    c.close()


def listing(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in d.iterdir()}


def no_temps(d: Path) -> bool:
    return not [p for p in d.iterdir() if p.name.startswith(TEMP_PREFIX)]


def test_whole_deck_lands_verified_and_a_second_run_fetches_nothing(
    server: FakeServer, client: MediaClient, tmp_path: Path
) -> None:
    server.files = {f"f{i}.png": f"bytes {i}".encode() * (i + 1) for i in range(10)}
    server.unavailable = {"never.png": "missing"}
    media = tmp_path / "media"
    first = client.download("d1", media)
    assert sorted(first.downloaded) == sorted(server.files)
    assert first.unavailable == {"never.png": "missing"}
    assert (first.failed, first.skipped, first.conflicts) == ({}, [], [])
    assert listing(media) == server.files
    gets = len(server.gets)
    second = client.download("d1", media)
    assert sorted(second.skipped) == sorted(server.files)
    assert second.downloaded == [] and len(server.gets) == gets


def test_present_files_with_the_original_or_stored_bytes_are_skipped_others_are_conflicts(
    server: FakeServer, client: MediaClient, tmp_path: Path
) -> None:
    original = b"the original png"
    server.files = {"a.png": b"converted webp", "b.png": b"bbb", "c.png": b"ccc"}
    server.originals = {"a.png": sha(original)}
    media = tmp_path / "media"
    media.mkdir()
    (media / "a.png").write_bytes(original)  # the uploader's own copy
    (media / "b.png").write_bytes(b"bbb")
    (media / "c.png").write_bytes(b"someone else's c")
    report = client.download("d1", media)
    assert sorted(report.skipped) == ["a.png", "b.png"]
    assert report.conflicts == ["c.png"]
    assert (media / "c.png").read_bytes() == b"someone else's c", "left alone"
    assert server.gets == []


def test_bytes_that_do_not_match_the_stored_hash_are_not_kept(
    server: FakeServer, client: MediaClient, tmp_path: Path
) -> None:
    server.files = {"good.png": b"good", "bad.png": b"the real bytes"}
    server.on_get = lambda name: (200, b"the evil bytes") if name == "bad.png" else None
    media = tmp_path / "m"
    report = client.download("d1", media)
    assert report.downloaded == ["good.png"]
    assert "do not match" in report.failed["bad.png"]
    assert server.gets.count("bad.png") == 2, "tried once more"
    assert listing(media) == {"good.png": b"good"}


def test_a_body_longer_than_the_stored_size_is_cut_off(
    server: FakeServer, client: MediaClient, tmp_path: Path
) -> None:
    server.files = {"a.png": b"1234"}
    server.on_get = lambda name: (200, b"1234" + b"x" * 1_000_000)
    media = tmp_path / "m"
    report = client.download("d1", media)
    assert "more than the 4 bytes" in report.failed["a.png"]
    assert listing(media) == {}


def test_an_expired_url_is_renewed_once(server: FakeServer, client: MediaClient, tmp_path: Path) -> None:
    server.files = {f"f{i}.png": b"x%d" % i for i in range(5)}
    expired = {"f1.png", "f3.png"}

    def on_get(name: str) -> tuple[int, bytes] | None:
        if name in expired:
            expired.discard(name)
            return 403, b"<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>"
        return None

    server.on_get = on_get
    report = client.download("d1", tmp_path / "m")
    assert sorted(report.downloaded) == sorted(server.files) and report.failed == {}
    renewals = [b for kind, b in server.api_calls if kind == "downloads" and b.get("filenames")]
    assert len(renewals) == 1 and sorted(renewals[0]["filenames"]) == ["f1.png", "f3.png"]


def test_a_url_refused_twice_fails_that_file_only(
    server: FakeServer, client: MediaClient, tmp_path: Path
) -> None:
    server.files = {"a.png": b"a", "b.png": b"b"}
    server.on_get = lambda name: (403, b"denied") if name == "b.png" else None
    report = client.download("d1", tmp_path / "m")
    assert report.downloaded == ["a.png"]
    assert "twice" in report.failed["b.png"]


def test_storage_5xx_is_retried(
    server: FakeServer, client: MediaClient, tmp_path: Path, sleeps: Sleeps
) -> None:
    server.files = {"a.png": b"a"}
    answers = [(503, b"SlowDown"), (500, b"oops")]
    server.on_get = lambda name: answers.pop(0) if answers else None
    report = client.download("d1", tmp_path / "m")
    assert report.downloaded == ["a.png"] and len(sleeps.calls) == 2


def test_named_files_are_asked_in_batches_of_1000(
    server: FakeServer, client: MediaClient, tmp_path: Path
) -> None:
    server.files = {f"n{i:04}.png": b"%d" % i for i in range(1500)}
    names = [*server.files, "unknown.png", "n0001.png"]
    report = client.download("d1", tmp_path / "m", filenames=names)
    assert len(report.downloaded) == 1500 and report.unavailable == {"unknown.png": "unknown"}
    batches = [b["filenames"] for kind, b in server.api_calls if kind == "downloads"]
    assert [len(b) for b in batches] == [1000, 501], "deduplicated, at most 1000 per request"


def test_unsafe_names_from_the_server_are_never_written(
    server: FakeServer, client: MediaClient, tmp_path: Path
) -> None:
    server.files = {"../escape.png": b"x", "sub/dir.png": b"y", "CON.png": b"z", "ok.png": b"ok"}
    media = tmp_path / "media"
    report = client.download("d1", media)
    assert report.downloaded == ["ok.png"]
    assert set(report.failed) == {"../escape.png", "sub/dir.png", "CON.png"}
    assert listing(media) == {"ok.png": b"ok"} and not (tmp_path / "escape.png").exists()


def test_progress_comes_at_least_every_100_files_and_ends_at_the_total(
    server: FakeServer, cache_path: Path, tmp_path: Path
) -> None:
    server.files = {f"p{i:04}.png": b"%d" % i for i in range(1000)}
    server.page_size = 250
    calls: list[tuple[int, int]] = []
    lock = threading.Lock()

    def progress(done: int, total: int) -> None:
        with lock:
            calls.append((done, total))

    with MediaClient(API, "t", workers=8, cache_path=cache_path) as c:
        report = c.download("d1", tmp_path / "m", progress=progress)
    assert len(report.downloaded) == 1000
    assert calls[-1] == (1000, 1000)
    dones = [d for d, _ in calls]
    assert dones == sorted(dones), "never backwards"
    assert all(b - a <= 100 for a, b in zip([0, *dones], dones)), "at least every 100 files"
    assert all(d <= t for d, t in calls)


def test_cancel_stops_within_a_second_keeps_what_finished_and_leaves_nothing_partial(
    server: FakeServer, cache_path: Path, tmp_path: Path
) -> None:
    server.files = {f"c{i:04}.png": os.urandom(2000) for i in range(400)}
    server.page_size = 100

    def slow(name: str) -> None:
        time.sleep(0.02)

    server.on_get = slow
    asked_at: list[float] = []

    def cancel() -> bool:
        if len(server.gets) >= 60:
            asked_at.append(time.monotonic())
            return True
        return False

    media = tmp_path / "media"
    with MediaClient(API, "t", workers=4, cache_path=cache_path) as c:
        report = c.download("d1", media, cancel=cancel)
        ended = time.monotonic()
        assert report.cancelled
        assert ended - asked_at[0] < 1.0
        assert 0 < len(report.downloaded) < 400
        assert no_temps(media)
        assert listing(media) == {n: server.files[n] for n in report.downloaded}, "only whole, verified files"
        # The next run fetches only the rest.
        before = len(server.gets)
        server.on_get = None
        rest = c.download("d1", media)
    assert sorted(rest.downloaded) == sorted(set(server.files) - set(report.downloaded))
    assert len(server.gets) - before == len(rest.downloaded)
    assert listing(media) == server.files


def test_a_whole_call_failure_raises_with_what_finished(
    server: FakeServer, client: MediaClient, tmp_path: Path
) -> None:
    server.rsps.replace(
        responses.POST,
        f"{API}/v1/downloads",
        status=403,
        json={"error": {"code": "forbidden", "message": "deck d2 is not yours"}},
    )
    with pytest.raises(errors.ForbiddenError) as e:
        client.download("d2", tmp_path)
    assert e.value.report is not None and e.value.report.downloaded == []


# -- uploads ---------------------------------------------------------------------------------


def media_folder(tmp_path: Path, n: int) -> list[Path]:
    d = tmp_path / "collection.media"
    d.mkdir(exist_ok=True)
    paths = []
    for i in range(n):
        p = d / f"u{i}.png"
        p.write_bytes(b"upload %d" % i)
        paths.append(p)
    return paths


def test_upload_puts_what_is_missing_with_exactly_the_signed_headers(
    server: FakeServer, client: MediaClient, tmp_path: Path
) -> None:
    paths = media_folder(tmp_path, 4)
    server.existing = {sha(paths[0].read_bytes())}
    server.rejected = {"u1.png": "too_large"}
    report = client.upload("d1", paths)
    assert sorted(report.uploaded) == ["u2.png", "u3.png"]
    assert report.existing == ["u0.png"]
    assert report.rejected == {"u1.png": "too_large"}
    assert report.failed == {}
    assert report.hashes == {p.name: sha(p.read_bytes()) for p in paths}
    for put in server.puts:
        assert "Authorization" not in put.headers
        assert put.headers["content-type"] == "application/octet-stream"
        assert put.headers["x-amz-checksum-sha256"] == "b64"
        assert put.headers["content-length"] == str(len(b"upload 2"))


def test_upload_asks_in_batches_of_500_and_hashes_once_across_calls(
    server: FakeServer, cache_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = media_folder(tmp_path, 1200)
    old = time.time() - 60
    for p in paths:
        os.utime(p, (old, old))
    reads: list[str] = []
    real = hashcache.sha256_file

    def counting(path: mediafolder.StrPath) -> tuple[str, int]:
        reads.append(os.fspath(path))
        return real(path)

    monkeypatch.setattr(hashcache, "sha256_file", counting)
    with MediaClient(API, "t", cache_path=cache_path) as c:
        report = c.upload("d1", paths)
    assert len(report.uploaded) == 1200
    assert [len(b["files"]) for kind, b in server.api_calls if kind == "uploads"] == [500, 500, 200]
    assert len(reads) == 1200
    with MediaClient(API, "t", cache_path=cache_path) as c:
        c.upload("d1", paths[:10])
    assert len(reads) == 1200, "the on-disk cache answered"
    paths[0].write_bytes(b"changed")
    os.utime(paths[0], (old + 5, old + 5))
    with MediaClient(API, "t", cache_path=cache_path) as c:
        again = c.upload("d1", paths[:1])
    assert len(reads) == 1201 and again.hashes["u0.png"] == sha(b"changed")


def test_a_refused_put_gets_a_fresh_url_once(server: FakeServer, client: MediaClient, tmp_path: Path) -> None:
    paths = media_folder(tmp_path, 3)
    refused = {sha(paths[1].read_bytes())}

    def on_put(h: str, req: object) -> int | None:
        if h in refused:
            refused.discard(h)
            return 403
        return None

    server.on_put = on_put
    report = client.upload("d1", paths)
    assert sorted(report.uploaded) == ["u0.png", "u1.png", "u2.png"] and report.failed == {}
    asks = [b for kind, b in server.api_calls if kind == "uploads"]
    assert len(asks) == 2 and [f["filename"] for f in asks[1]["files"]] == ["u1.png"]


def test_a_file_changed_after_hashing_is_hashed_again_and_sent_as_it_is_now(
    server: FakeServer, client: MediaClient, tmp_path: Path
) -> None:
    paths = media_folder(tmp_path, 2)
    changed = paths[1]
    before = sha(changed.read_bytes())

    def on_put(h: str, req: object) -> int | None:
        if h == before:
            # Edited while it was being sent: storage sees a body that is not the signed hash.
            changed.write_bytes(b"edited meanwhile")
            return 400
        return None

    server.on_put = on_put
    report = client.upload("d1", paths)
    assert sorted(report.uploaded) == ["u0.png", "u1.png"], report
    assert report.hashes["u1.png"] == sha(b"edited meanwhile")
    assert server.stored[sha(b"edited meanwhile")] == b"edited meanwhile"


def test_a_put_refused_twice_is_failed_with_storage_words(
    server: FakeServer, client: MediaClient, tmp_path: Path
) -> None:
    paths = media_folder(tmp_path, 2)
    server.on_put = lambda h, req: 403
    report = client.upload("d1", paths)
    assert report.uploaded == []
    assert set(report.failed) == {"u0.png", "u1.png"}
    assert "AccessDenied" in report.failed["u0.png"] and "expired" in report.failed["u0.png"]


def test_missing_files_fail_alone_and_the_same_bytes_upload_once(
    server: FakeServer, client: MediaClient, tmp_path: Path
) -> None:
    d = tmp_path / "m"
    d.mkdir()
    (d / "a.png").write_bytes(b"same")
    (d / "b.png").write_bytes(b"same")
    report = client.upload("d1", [d / "a.png", d / "b.png", d / "gone.png", d / "a.png"])
    assert sorted(report.uploaded) == ["a.png", "b.png"]
    assert "cannot read" in report.failed["gone.png"]
    assert len(server.puts) == 1


def test_upload_quota_exceeded_on_the_whole_batch_raises_with_the_report(
    server: FakeServer, client: MediaClient, tmp_path: Path
) -> None:
    paths = media_folder(tmp_path, 2)
    server.rsps.replace(
        responses.POST,
        f"{API}/v1/uploads",
        status=429,
        json={"error": {"code": "quota_exceeded", "message": "daily allowance used"}},
        headers={"Retry-After": "3600"},
    )
    with pytest.raises(errors.QuotaExceeded) as e:
        client.upload("d1", paths)
    assert e.value.report.hashes.keys() == {"u0.png", "u1.png"}


def test_cancel_unblocks_a_transfer_stalled_on_the_network(cache_path: Path, tmp_path: Path) -> None:
    """A server that sends headers and a few bytes, then nothing: the worker is blocked in a
    read, and cancel must still end the call within a second with nothing left behind."""
    release = threading.Event()

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_POST(self) -> None:
            assert isinstance(self.server, http.server.HTTPServer)
            host = f"http://127.0.0.1:{self.server.server_port}"
            body = jsonlib.dumps(
                {
                    "files": [
                        {
                            "filename": "stalled.png",
                            "hash": "0" * 64,
                            "stored_hash": "0" * 64,
                            "url": f"{host}/media/stalled",
                            "size": 1_000_000,
                            "content_type": "image/png",
                            "expires_at": "2030-01-01T00:00:00Z",
                        }
                    ],
                    "unavailable": [],
                    "next_cursor": None,
                }
            ).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", "1000000")
            self.end_headers()
            self.wfile.write(b"x" * 10)
            self.wfile.flush()
            release.wait(30)

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    media = tmp_path / "media"
    try:
        deadline = time.monotonic() + 0.5
        with MediaClient(f"http://127.0.0.1:{srv.server_port}", "t", cache_path=cache_path) as c:
            started = time.monotonic()
            report = c.download("d1", media, cancel=lambda: time.monotonic() > deadline)
            took = time.monotonic() - started
        assert report.cancelled and report.downloaded == [] and report.failed == {}
        assert took < 1.5, took
        assert list(media.iterdir()) == [], "no temporary file outlives the call"
    finally:
        release.set()
        srv.shutdown()
