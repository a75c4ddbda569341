"""The Anki module with the real ``anki`` package and Anki's real task manager, QueryOp and
progress window (offscreen), against the fake API and storage."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Iterator

import pytest
from anki.collection import Collection

from ankicollab_media import MediaClient
from ankicollab_media.anki import deck_media, download_deck_media, missing_media, upload_deck_media
from ankicollab_media.reports import DownloadReport, UploadReport

from .anki_collections import add_note, new_collection
from .fakes import API, FakeServer, sha
from .qt_main import MainWindow


@pytest.fixture
def col(tmp_path: Path) -> Iterator[Collection]:
    c = new_collection(tmp_path / "profile")
    yield c
    c.close()


def test_deck_media_reads_fields_templates_styling_and_subdecks(col: Collection) -> None:
    basic = col.models.by_name("Basic")
    assert basic is not None
    basic["css"] += (
        '\n@font-face { font-family: f; src: url("_font.woff2"); } .x { background: url(https://cdn/x.png) }'
    )
    basic["tmpls"][0]["qfmt"] += '<img src="_logo.png"><img src="{{Front}}">'
    col.models.save(basic)
    add_note(col, "Bio", '<img src="cell.png"> <img src="cell.png">', "[sound:heart beat.mp3]")
    add_note(col, "Bio::Cells", '<img src="mito.jpg">')
    add_note(col, "Chem", '<img src="benzene.png">')
    add_note(col, "Bio", '<img src="a &amp; b.png">')
    assert deck_media(col, "Bio") == [
        "_font.woff2",
        "_logo.png",
        "a & b.png",
        "cell.png",
        "heart beat.mp3",
        "mito.jpg",
    ]
    assert deck_media(col, "Bio", include_children=False) == [
        "_font.woff2",
        "_logo.png",
        "a & b.png",
        "cell.png",
        "heart beat.mp3",
    ]
    Path(col.media.dir(), "cell.png").write_bytes(b"x")
    assert missing_media(col, "Bio") == [
        "_font.woff2",
        "_logo.png",
        "a & b.png",
        "heart beat.mp3",
        "mito.jpg",
    ]


def test_deck_media_scales_to_many_notes(col: Collection) -> None:
    for i in range(3000):
        add_note(col, "Big", f'<img src="img{i}.png">', f"[sound:a{i % 50}.mp3]")
    started = time.monotonic()
    names = deck_media(col, "Big")
    took = time.monotonic() - started
    assert len(names) == 3050
    # Not a speed target (those are benchmarks): a guard against one backend call per note.
    assert took < 5, took


def test_upload_and_download_run_in_the_background_with_anki_progress(
    col: Collection, server: FakeServer, tmp_path: Path
) -> None:
    for i in range(30):
        add_note(col, "Bio", f'<img src="f{i}.png">')
        Path(col.media.dir(), f"f{i}.png").write_bytes(b"image %d" % i)
    mw = MainWindow(col)
    updates = mw.record_progress()
    results: list[UploadReport | DownloadReport] = []
    client = MediaClient(API, "t", cache_path=tmp_path / "hashes.sqlite3")
    upload_deck_media(mw, client, "bio", "Bio", on_done=results.append)
    mw.run_until(lambda: bool(results))
    report = results[0]
    assert isinstance(report, UploadReport)
    assert sorted(report.uploaded) == sorted(f"f{i}.png" for i in range(30))
    assert updates and updates[-1][:2] == (30, 30) and "Uploading media" in str(updates[-1][2])
    assert mw.off_main_col_reads == [], mw.off_main_col_reads[0]
    assert mw.background_ops == 0

    # A second profile, with the same notes and none of the files, downloads what it lacks.
    other = new_collection(tmp_path / "profile2")
    try:
        for i in range(30):
            add_note(other, "Bio", f'<img src="f{i}.png">')
        server.files = {f"f{i}.png": b"image %d" % i for i in range(30)}
        mw2 = MainWindow(other)
        download_deck_media(mw2, client, "bio", local_deck="Bio", on_done=results.append)
        mw2.run_until(lambda: len(results) == 2)
        got = results[1]
        assert isinstance(got, DownloadReport) and len(got.downloaded) == 30
        assert other.media.check().missing == []
        assert mw2.off_main_col_reads == []
    finally:
        other.close()
    client.close()


def test_anki_progress_window_cancel_stops_the_transfer(
    col: Collection, server: FakeServer, tmp_path: Path
) -> None:
    server.files = {f"c{i}.png": os.urandom(100) for i in range(300)}
    server.page_size = 50

    def slow(name: str) -> None:
        time.sleep(0.01)

    server.on_get = slow
    mw = MainWindow(col)
    results: list[DownloadReport] = []
    client = MediaClient(API, "t", workers=2, cache_path=tmp_path / "hashes.sqlite3")
    download_deck_media(mw, client, "bio", on_done=results.append)

    def press_escape_once_busy() -> bool:
        win = mw.progress._win
        if win is not None and len(server.gets) > 30:
            win.wantCancel = True  # what Escape or closing the window does
        return bool(results)

    mw.run_until(press_escape_once_busy)
    report = results[0]
    assert report.cancelled and 0 < len(report.downloaded) < 300
    media = Path(col.media.dir())
    assert {p.name for p in media.iterdir()} == set(report.downloaded)
    for name in report.downloaded:
        assert sha((media / name).read_bytes()) == sha(server.files[name])
    client.close()
