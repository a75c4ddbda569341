"""End to end, against the local stack (LocalStack S3 with signature checks, moto, the gateway
running the real handlers), with the real ``anki`` package and Anki's background machinery.
Skipped when the stack is not up; ``make test`` brings it up and requires it."""

from __future__ import annotations

import http.server
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
import uuid
from pathlib import Path
from typing import Any

import pytest
import requests

from ankicollab_media import MediaClient, errors
from ankicollab_media.anki import download_deck_media, note_media, upload_deck_media
from ankicollab_media.filenames import TEMP_PREFIX
from ankicollab_media.reports import DownloadReport, UploadReport

from .anki_collections import add_note, new_collection
from .fakes import sha
from .qt_main import MainWindow
from .stack import Stack, require_stack, tiny_png

pytestmark = pytest.mark.stack

CORPUS_FILES = [
    "phone-exif-rotated-1.jpg",
    "grace_hopper.jpg",
    "camera.png",
    "logo.png",
    "text.png",
    "no_time_for_that_tiny.gif",
    "wood-d.webp",
    "screenshot-1.bmp",
    "multipage_rgb.tif",
    "tts-1-0.mp3",
    "bell.oga",
]


@pytest.fixture(scope="module")
def stack() -> Stack:
    return require_stack()


def new_deck() -> str:
    return f"ct-{uuid.uuid4().hex[:12]}"


def client(stack: Stack, tmp_path: Path, **kw: Any) -> MediaClient:
    kw.setdefault("cache_path", tmp_path / "hashes.sqlite3")
    return MediaClient(stack.api, kw.pop("token", None) or stack.token("upload download"), **kw)


def listing(stack: Stack, deck: str) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    cursor = None
    while True:
        page = stack.call("POST", "/v1/downloads", "download", {"deck": deck, "cursor": cursor})
        out.update({f["filename"]: f for f in page["files"]})
        cursor = page["next_cursor"]
        if not cursor:
            return out


def seed_deck(stack: Stack, tmp_path: Path, deck: str, files: dict[str, bytes]) -> dict[str, str]:
    """Upload files and reference each from its own note, as a maintainer's first upload and the
    backend's references would; wait until processed. Returns filename → hash."""
    src = tmp_path / f"seed-{deck}"
    src.mkdir()
    for name, data in files.items():
        (src / name).write_bytes(data)
    with client(stack, tmp_path) as c:
        report = c.upload(deck, sorted(src.iterdir()))
    assert report.failed == {} and report.rejected == {}, report
    stack.post_references(deck, {f"n{i}": {n: h} for i, (n, h) in enumerate(sorted(report.hashes.items()))})
    stack.wait_ready(report.hashes.values())
    return report.hashes


def test_a_maintainers_collection_uploads_and_an_empty_profile_downloads_the_whole_deck(
    stack: Stack, tmp_path: Path
) -> None:
    deck = new_deck()
    maintainer = new_collection(tmp_path / "maintainer")
    media_a = Path(maintainer.media.dir())
    notes: list[tuple[str, str]] = []
    for name in CORPUS_FILES:
        shutil.copy(stack.corpus / "real" / name, media_a / name)
        tag = f"[sound:{name}]" if name.endswith((".mp3", ".oga")) else f'<img src="{name}">'
        notes.append((tag, ""))
    # Names Anki allows that are awkward elsewhere, and files no one uploaded before.
    (media_a / "café photo #1.png").write_bytes(tiny_png(int(time.time() * 1000) % 10_000_000))
    (media_a / "a & b's=onerror.png").write_bytes(tiny_png(int(time.time() * 1000) % 10_000_000 + 1))
    notes.append(('<img src="café photo #1.png">', '<img src="a &amp; b\'s=onerror.png">'))
    nids = [add_note(maintainer, "Biology", f, b).id for f, b in notes]
    expected = sorted(p.name for p in media_a.iterdir())

    mw = MainWindow(maintainer)
    progress_seen = mw.record_progress()
    results: list[Any] = []
    failures: list[Exception] = []
    with client(stack, tmp_path) as c:
        upload_deck_media(mw, c, deck, "Biology", on_done=results.append, on_failure=failures.append)
        mw.run_until(lambda: bool(results or failures), timeout=300)
    assert not failures, failures
    up: UploadReport = results[0]
    assert up.failed == {} and up.rejected == {}, up
    assert sorted(up.uploaded + up.existing) == expected
    assert {"café photo #1.png", "a & b's=onerror.png"} <= set(up.uploaded), "new files were uploaded"
    assert progress_seen and progress_seen[-1][:2] == (len(expected), len(expected))
    assert mw.off_main_col_reads == []

    # The backend reports which note uses which file (it learns the hashes from the plugin).
    refs: dict[str, dict[str, str]] = {}
    for nid in nids:
        names = note_media(maintainer, maintainer.get_note(nid))
        refs[str(nid)] = {n: up.hashes[n] for n in names}
    stack.post_references(deck, refs)
    infos = stack.wait_ready(up.hashes.values())
    assert all(i["status"] == "ready" for i in infos.values()), infos

    # A subscriber: the same notes, none of the files.
    subscriber = new_collection(tmp_path / "subscriber")
    for f, b in notes:
        add_note(subscriber, "Biology", f, b)
    assert len(subscriber.media.check().missing) == len(expected)
    mw2 = MainWindow(subscriber)
    with client(stack, tmp_path / "sub") as c:
        download_deck_media(mw2, c, deck, on_done=results.append, on_failure=failures.append)
        mw2.run_until(lambda: len(results) == 2 or bool(failures), timeout=300)
        assert not failures, failures
        down: DownloadReport = results[1]
        assert down.failed == {} and down.conflicts == [] and down.unavailable == {}, down
        assert sorted(down.downloaded) == expected
        check = subscriber.media.check()
        assert check.missing == [] and check.unused == []
        served = listing(stack, deck)
        media_b = Path(subscriber.media.dir())
        assert sorted(p.name for p in media_b.iterdir()) == expected, "nothing else, no temporary files"
        for name in expected:
            body = (media_b / name).read_bytes()
            assert sha(body) == served[name]["stored_hash"], name
            assert len(body) == served[name]["size"]
        # Converted images keep their names; audio is byte-identical.
        assert (media_b / "tts-1-0.mp3").read_bytes() == (media_a / "tts-1-0.mp3").read_bytes()
        assert (media_b / "phone-exif-rotated-1.jpg").read_bytes()[8:12] == b"WEBP"

        # A second download fetches nothing.
        again = c.download(deck, media_b)
        assert again.downloaded == [] and sorted(again.skipped) == expected
        # The maintainer's own folder, with the originals, has everything already.
        mine = c.download(deck, media_a)
        assert mine.downloaded == [] and mine.conflicts == [] and sorted(mine.skipped) == expected
    maintainer.close()
    subscriber.close()


def test_a_download_killed_halfway_leaves_only_whole_files_and_the_next_run_fetches_the_rest(
    stack: Stack, tmp_path: Path
) -> None:
    deck = new_deck()
    base = int(uuid.uuid4().int % 10_000_000)
    hashes = seed_deck(stack, tmp_path, deck, {f"k{i:04}.png": tiny_png(base + i, 24) for i in range(400)})
    served = listing(stack, deck)
    media = tmp_path / "media"
    env = dict(
        os.environ,
        ANKICOLLAB_MEDIA_API=stack.api,
        ANKICOLLAB_MEDIA_TOKEN=stack.token("download"),
        XDG_CACHE_HOME=str(tmp_path / "xdg"),
        PYTHONPATH=str(Path(__file__).resolve().parents[1]),
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "ankicollab_media", "--workers", "2", "download", deck, str(media)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if (
                media.is_dir()
                and len([p for p in media.iterdir() if not p.name.startswith(TEMP_PREFIX)]) >= 60
            ):
                break
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(30)
    present = {p.name for p in media.iterdir() if not p.name.startswith(TEMP_PREFIX)}
    assert 60 <= len(present) < 400, len(present)
    for name in present:
        assert sha((media / name).read_bytes()) == served[name]["stored_hash"], f"{name} is partial or wrong"

    with client(stack, tmp_path, token=stack.token("download")) as c:
        rest = c.download(deck, media)
    assert sorted(rest.downloaded) == sorted(set(hashes) - present)
    assert sorted(rest.skipped) == sorted(present)
    assert sorted(p.name for p in media.iterdir()) == sorted(hashes), (
        "the killed run's temporary files are gone"
    )


class ExpireFirst(requests.Session):
    """Sends the first request for each stored object with a URL that expired a second ago
    (signed for the same object, so storage itself refuses it as expired)."""

    def __init__(self, s3: Any, bucket: str, seen: set[str], refusals: list[str]) -> None:
        super().__init__()
        self.s3, self.bucket, self.seen, self.refusals = s3, bucket, seen, refusals

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kw: Any) -> requests.Response:  # type: ignore[override,unused-ignore]
        assert isinstance(url, str) and isinstance(method, str)
        parsed = urllib.parse.urlsplit(url)
        key = parsed.path.split(f"/{self.bucket}/", 1)[-1] if f"/{self.bucket}/" in parsed.path else None
        if key and key not in self.seen:
            self.seen.add(key)
            op = "get_object" if method == "GET" else "put_object"
            expired = self.s3.generate_presigned_url(
                op, Params={"Bucket": self.bucket, "Key": key}, ExpiresIn=1
            )
            time.sleep(1.5)
            resp = super().request(method, expired, *args, **kw)
            self.refusals.append(f"{resp.status_code} {resp.text[:300]}")
            return resp
        return super().request(method, url, *args, **kw)


def test_expired_urls_are_renewed_for_uploads_and_downloads(stack: Stack, tmp_path: Path) -> None:
    deck = new_deck()
    s3 = stack.s3()
    seen: set[str] = set()
    refusals: list[str] = []
    src = tmp_path / "src"
    src.mkdir()
    base = int(uuid.uuid4().int % 10_000_000)
    for i in range(3):
        (src / f"e{i}.png").write_bytes(tiny_png(base + i))
    factory = lambda: ExpireFirst(s3, stack.env["BUCKET"], seen, refusals)  # noqa: E731
    with client(stack, tmp_path, session_factory=factory) as c:
        up = c.upload(deck, sorted(src.iterdir()))
    assert sorted(up.uploaded) == ["e0.png", "e1.png", "e2.png"] and up.failed == {}, up
    assert len(refusals) == 3 and all(r.startswith("403") and "expired" in r.lower() for r in refusals), (
        refusals
    )
    stack.post_references(deck, {"n1": dict(up.hashes)})
    stack.wait_ready(up.hashes.values())
    refusals.clear()
    with client(stack, tmp_path, session_factory=factory) as c:
        down = c.download(deck, tmp_path / "media")
    assert sorted(down.downloaded) == ["e0.png", "e1.png", "e2.png"] and down.failed == {}, down
    assert len(refusals) == 3 and all(r.startswith("403") and "expired" in r.lower() for r in refusals), (
        refusals
    )


class FaultProxy:
    """A real HTTP proxy in front of the API that answers 503 to the first try of every call."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.seen: set[tuple[str, str, bytes]] = set()
        self.log: list[tuple[str, int]] = []
        self.accept_encodings: list[str] = []
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _do(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                proxy.accept_encodings.append(self.headers.get("Accept-Encoding", ""))
                key = (self.command, self.path, body)
                if key not in proxy.seen:
                    proxy.seen.add(key)
                    proxy.log.append((self.path, 503))
                    self.send_response(503)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                headers = {
                    k: v for k, v in self.headers.items() if k.lower() in ("authorization", "content-type")
                }
                r = requests.request(
                    self.command, proxy.upstream + self.path, data=body, headers=headers, timeout=120
                )
                proxy.log.append((self.path, r.status_code))
                self.send_response(r.status_code)
                self.send_header("Content-Type", r.headers.get("Content-Type", "application/json"))
                self.send_header("Content-Length", str(len(r.content)))
                self.end_headers()
                self.wfile.write(r.content)

            do_GET = do_POST = _do

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}"

    def close(self) -> None:
        self.server.shutdown()


def test_503_then_200_is_retried(stack: Stack, tmp_path: Path) -> None:
    deck = new_deck()
    base = int(uuid.uuid4().int % 10_000_000)
    seed_deck(stack, tmp_path, deck, {f"r{i}.png": tiny_png(base + i) for i in range(5)})
    proxy = FaultProxy(stack.api)
    try:
        with MediaClient(proxy.url, stack.token("download"), cache_path=tmp_path / "h.sqlite3") as c:
            report = c.download(deck, tmp_path / "media")
            info = c.status(next(iter((tmp_path / "media").iterdir())))
    finally:
        proxy.close()
    assert len(report.downloaded) == 5 and report.failed == {}
    assert info["status"] == "ready"
    statuses = [s for p, s in proxy.log if p == "/v1/downloads"]
    assert statuses == [503, 200], proxy.log
    # The client asks for gzipped answers, and the API sends a large one gzipped.
    assert proxy.accept_encodings and all(e == "gzip" for e in proxy.accept_encodings), proxy.accept_encodings
    names = [f"r{i}.png" for i in range(5)] + [f"absent-{i}.png" for i in range(40)]
    r = requests.post(
        stack.api + "/v1/downloads",
        json={"deck": deck, "filenames": names},
        timeout=60,
        headers={"Authorization": "Bearer " + stack.token("download"), "Accept-Encoding": "gzip"},
    )
    assert r.status_code == 200 and r.headers.get("Content-Encoding") == "gzip", r.headers
    assert len(r.json()["files"]) == 5


def test_a_401_refreshes_the_token_once(stack: Stack, tmp_path: Path) -> None:
    deck = new_deck()
    base = int(uuid.uuid4().int % 10_000_000)
    seed_deck(stack, tmp_path, deck, {"t.png": tiny_png(base)})
    issued: list[str] = []

    def token() -> str:
        # The first token has expired already (as a cached one would have); the next is fresh.
        issued.append(stack.token("download", ttl=-60 if not issued else 3600))
        return issued[-1]

    with MediaClient(stack.api, token, cache_path=tmp_path / "h.sqlite3") as c:
        report = c.download(deck, tmp_path / "media")
    assert report.downloaded == ["t.png"] and len(issued) == 2

    with (
        MediaClient(
            stack.api, lambda: stack.token("download", ttl=-60), cache_path=tmp_path / "h.sqlite3"
        ) as c,
        pytest.raises(errors.AuthError),
    ):
        c.download(deck, tmp_path / "media2")


def test_bytes_that_do_not_match_the_stored_hash_are_not_kept(stack: Stack, tmp_path: Path) -> None:
    deck = new_deck()
    base = int(uuid.uuid4().int % 10_000_000)
    hashes = seed_deck(
        stack, tmp_path, deck, {"good.png": tiny_png(base), "tampered.png": tiny_png(base + 1)}
    )
    served = listing(stack, deck)
    s3 = stack.s3()
    key = urllib.parse.urlsplit(served["tampered.png"]["url"]).path.split(f"/{stack.env['BUCKET']}/", 1)[1]
    real = s3.get_object(Bucket=stack.env["BUCKET"], Key=key)["Body"].read()
    evil = bytes(b ^ 0xFF for b in real)  # same size, other bytes
    s3.put_object(Bucket=stack.env["BUCKET"], Key=key, Body=evil)
    try:
        with client(stack, tmp_path) as c:
            report = c.download(deck, tmp_path / "media")
    finally:
        s3.put_object(Bucket=stack.env["BUCKET"], Key=key, Body=real, ContentType="image/webp")
    assert report.downloaded == ["good.png"]
    assert "do not match" in report.failed["tampered.png"]
    assert sorted(p.name for p in (tmp_path / "media").iterdir()) == ["good.png"]
    assert hashes["good.png"]


def test_the_command_line(stack: Stack, tmp_path: Path) -> None:
    deck = new_deck()
    src = tmp_path / "src"
    src.mkdir()
    base = int(uuid.uuid4().int % 10_000_000)
    for i in range(3):
        (src / f"cli{i}.png").write_bytes(tiny_png(base + i))
    (src / "notes.txt").write_text("not media")
    env = dict(
        os.environ,
        ANKICOLLAB_MEDIA_API=stack.api,
        ANKICOLLAB_MEDIA_TOKEN=stack.token("upload download"),
        XDG_CACHE_HOME=str(tmp_path / "xdg"),
        PYTHONPATH=str(Path(__file__).resolve().parents[1]),
    )

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "ankicollab_media", *args],
            check=False,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )

    up = run("upload", deck, str(src))
    assert up.returncode == 1, up  # notes.txt is refused by the server
    assert up.stdout.strip() == "3 uploaded, 0 already stored, 1 rejected"
    assert "rejected notes.txt: unsupported_type" in up.stderr
    hashes = {p.name: sha(p.read_bytes()) for p in src.glob("*.png")}
    stack.post_references(deck, {"n": hashes})
    stack.wait_ready(hashes.values())
    down = run("download", deck, str(tmp_path / "out"))
    assert down.returncode == 0, down
    assert down.stdout.strip() == "3 downloaded, 0 already present"
    assert "downloading: 3/3 files" in down.stderr, "plain progress lines when not on a terminal"
    st = run("status", str(src / "cli0.png"))
    assert st.returncode == 0 and '"status": "ready"' in st.stdout
    nothing = run("status", "0" * 64)
    assert nothing.returncode == 2 and "no such media" in nothing.stderr
    env.pop("ANKICOLLAB_MEDIA_TOKEN")
    assert run("download", deck, str(tmp_path / "out")).returncode == 2
