"""The switch, end to end against the local stack: today's plugin call sites (``plugin_call_sites``)
run unchanged with ``compat.MediaManager`` swapped in, against the stand-in AnkiCollab backend (the
kit's routes over AnkiCollab's tables, ``switch_env``), from a suggestion to a subscriber's
download and a declined suggestion's sweep; and a real Anki collection whose notes name files
outside the media folder, with every file open watched."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator, Optional

import pytest
import requests

from ankicollab_media import MediaClient
from ankicollab_media.anki import (
    deck_media,
    missing_media,
    note_media,
    present_media_paths,
    upload_deck_media,
)
from ankicollab_media.compat import MediaManager

from . import plugin_call_sites as plugin
from .anki_collections import add_note, new_collection
from .fakes import sha
from .qt_main import MainWindow
from .stack import REPO, Stack, require_stack, tiny_png
from .switch_env import Backend, start_backend, unique, wait_for

pytestmark = pytest.mark.stack


@pytest.fixture(scope="module")
def stack() -> Stack:
    return require_stack()


@pytest.fixture(scope="module")
def backend(stack: Stack) -> Iterator[Backend]:
    yield from start_backend(stack)


class Login:
    """The plugin's ``auth_manager`` for one user, as compat reads it (the token may appear or
    change at any time)."""

    def __init__(self, backend: Backend, username: Optional[str] = None) -> None:
        self.backend = backend
        self.username = username
        self.value = backend.login(username) if username else ""

    def log_in(self, username: str) -> None:
        self.username = username
        self.value = self.backend.login(username)

    def get_token(self) -> str:
        return self.value

    def refresh_token(self) -> bool:
        return False

    def handle_auth_failure(self) -> None:
        self.value = ""


def manager(backend: Backend, media: Path, tmp_path: Path, login: Login) -> MediaManager:
    # As the plugin builds it (media_folder="" at start-up, the folder set on profile load).
    mm = MediaManager(backend.url, "", auth_manager=login, cache_path=tmp_path / f"h-{id(login)}.sqlite3")
    mm.set_media_folder(str(media))
    return mm


class Tree:
    """A deck tree in AnkiCollab's tables: root R (owned by ``owner``) with subdeck S, a base deck
    X whose note B is inherited by note N2 of R."""

    def __init__(self, backend: Backend, owner: str) -> None:
        self.b = backend
        uid = backend.users[owner]
        self.r_hash, self.s_hash, self.x_hash = unique("root"), unique("sub"), unique("base")
        self.r = int(
            self.one(
                f"INSERT INTO anki.decks (name, owner, human_hash) VALUES ('R', {uid}, '{self.r_hash}') RETURNING id"
            )
        )
        self.s = int(
            self.one(
                f"INSERT INTO anki.decks (name, owner, parent, human_hash) VALUES ('S', {uid}, {self.r}, '{self.s_hash}') RETURNING id"
            )
        )
        self.x = int(
            self.one(
                f"INSERT INTO anki.decks (name, owner, human_hash) VALUES ('X', {uid}, '{self.x_hash}') RETURNING id"
            )
        )

    def one(self, sql: str) -> str:
        value = self.b.one(sql)
        assert value is not None, sql
        return value

    def note(
        self, deck: int, fields: list[str], *, reviewed: bool = True, by: Optional[str] = None
    ) -> tuple[int, str]:
        """A note with these fields: reviewed, or a pending suggestion (a commit of ``by``)."""
        guid = unique("g")
        nid = int(
            self.one(
                f"INSERT INTO anki.notes (guid, deck, reviewed) VALUES ('{guid}', {deck}, {reviewed}) RETURNING id"
            )
        )
        commit = "NULL"
        if by is not None:
            commit = self.one(
                f"INSERT INTO anki.commits (rationale, deck, user_id) VALUES (1, {deck}, {self.b.users[by]}) RETURNING commit_id"
            )
        for pos, content in enumerate(fields):
            text = content.replace("'", "''")
            self.b.sql(
                f"INSERT INTO anki.fields (note, position, content, reviewed, commit) VALUES ({nid}, {pos}, '{text}', {reviewed}, {commit})"
            )
        return nid, guid

    def mirror(self, deck_id: int, filename: str) -> Optional[str]:
        """The seed's lookup, with AnkiCollab's numeric deck id."""
        return self.b.one(
            "SELECT s.hash FROM anki.stored_media_files s WHERE s.hash IN "
            f"(SELECT hash FROM anki.media WHERE deck = {deck_id} AND filename = '{filename}')"
        )


def write(media: Path, files: dict[str, bytes]) -> None:
    media.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (media / name).write_bytes(data)


def png(seed: int) -> bytes:
    return tiny_png(seed + os.getpid() * 1000 + int.from_bytes(os.urandom(3), "big"))


def sweep(stack: Stack, grace: int = 0) -> None:
    # A sweep never takes less grace than the download instances' memory of ready files
    # (READY_CACHE_SECS, 2 s on the local stack): wait that out, so that a grace-0 sweep deletes
    # what was just let go.
    time.sleep(float(stack.env.get("READY_CACHE_SECS") or 0) + 0.2)
    subprocess.run(
        ["make", "-s", "sweep", f"GRACE={grace}"], cwd=REPO, check=True, capture_output=True, timeout=300
    )


def test_suggest_approve_subscribe_decline_and_sweep(stack: Stack, backend: Backend, tmp_path: Path) -> None:
    bob = Login(backend, unique("bob"))  # owns the decks
    tree = Tree(backend, bob.username or "")
    # What is in AnkiCollab before the switch: N1 in subdeck S, B in base deck X, N2 in R inherits B.
    n1, g1 = tree.note(tree.s, ['<img src="s1.png">'])
    b, gb = tree.note(tree.x, ["[sound:b.mp3]", '<img src="b.png">'])
    n2, _ = tree.note(tree.r, ["subscriber copy"])
    backend.sql(f"INSERT INTO anki.note_inheritance (subscriber_note_id, base_note_id) VALUES ({n2}, {b})")
    bob_media = tmp_path / "bob.media"
    owned = {"s1.png": png(1), "b.png": png(2), "b.mp3": (stack.corpus / "real" / "tts-1-0.mp3").read_bytes()}
    write(bob_media, owned)
    mm_bob = manager(backend, bob_media, tmp_path, bob)
    assert plugin.upload(mm_bob, tree.r_hash, [("s1.png", g1)])["failed"] == 0
    assert plugin.upload(mm_bob, tree.x_hash, [("b.mp3", gb), ("b.png", gb)])["failed"] == 0

    # Alice starts Anki before logging in; the manager is built then.
    alice = Login(backend)
    alice_media = tmp_path / "alice.media"
    big = alice_media / "huge.png"
    same = png(3)
    mine = {
        "a1.png": png(4),
        "dup-x.png": same,
        "dup-y.png": same,
        # An SVG with a script in it: stored sanitised, not refused.
        "kanji.svg": (stack.corpus / "hostile" / "svg-with-script.svg").read_bytes(),
    }
    kanji = mine["kanji.svg"]
    write(alice_media, mine)
    with open(big, "wb") as f:  # over every size limit: refused before anything is sent
        f.truncate(60 * 1024 * 1024)
    mm_alice = manager(backend, alice_media, tmp_path, alice)
    assert mm_alice.is_manager_available()
    content = [
        '<img src="a1.png"><img src="dup-x.png">',
        '<img src="dup-y.png"><img src="kanji.svg"><img src="huge.png">',
    ]
    pairs = [(n, "G") for n in ("a1.png", "dup-x.png", "dup-y.png", "kanji.svg", "huge.png")]
    before = plugin.upload(mm_alice, tree.r_hash, pairs)
    assert before["uploaded"] == 0 and before["errors"] == ["Batch 1/1: Session expired"], before
    alice.log_in(unique("alice"))

    # A suggestion: a new, pending note N3 in subdeck S, by Alice.
    n3, g3 = tree.note(tree.s, content, reviewed=False, by=alice.username)
    result = plugin.upload(mm_alice, tree.r_hash, [(n, g3) for n, _ in pairs])
    assert not any("Unexpected" in e for e in result["errors"]), result
    assert result["failed_filenames"] == ["huge.png"], result
    sample = result["samples"][0]
    assert sample["uploaded"] + sample["existing"] == 4, "dup-x.png and dup-y.png count under their own names"
    assert any("huge.png: refused by the server: too_large" in e for e in sample["errors_sample"])
    # Pending, the suggestion's media are references already: the mirror answers by deck id.
    a1 = sha(mine["a1.png"])
    wait_for(lambda: tree.mirror(tree.r, "a1.png") == a1, "a1.png in the mirror under R's id")
    assert tree.mirror(tree.r, "dup-y.png") == sha(same)
    assert (
        backend.one(f"SELECT deck_key FROM anki.media WHERE deck = {tree.r} AND filename = 'a1.png'")
        == tree.r_hash
    )

    # Approved.
    backend.sql(
        f"UPDATE anki.fields SET reviewed = true WHERE note = {n3}; UPDATE anki.notes SET reviewed = true WHERE id = {n3}"
    )
    backend.event("approved", [n3])
    stack.wait_ready(
        [a1, sha(same), sha(kanji), sha(owned["s1.png"]), sha(owned["b.png"]), sha(owned["b.mp3"])]
    )

    # A subscriber downloads the root deck: the subdeck's, the inherited note's and N3's media.
    carol = Login(backend, unique("carol"))
    carol_media = tmp_path / "carol.media"
    carol_media.mkdir()
    mm_carol = manager(backend, carol_media, tmp_path, carol)
    wanted = ["s1.png", "b.png", "b.mp3", "a1.png", "dup-x.png", "dup-y.png", "kanji.svg"]
    down = plugin.download(mm_carol, tree.r_hash, wanted)
    assert down == {"success": True, "message": "Downloaded 7, Skipped 0, Failed 0", "downloaded": 7}, down
    # The SVG came back sanitised (its script gone, its rectangle kept).
    svg = (carol_media / "kanji.svg").read_bytes()
    assert b"<script" not in svg and b"<rect" in svg
    assert sorted(p.name for p in carol_media.iterdir()) == sorted(wanted)
    for name in ("s1.png", "b.png", "b.mp3"):
        assert tree.mirror(tree.r, name), f"{name} under R's id"
    assert tree.mirror(tree.x, "b.png") == sha(owned["b.png"])

    # Another suggestion, declined: its media go, and the sweep removes the file.
    gone = png(5)
    write(alice_media, {"declined.png": gone})
    n4, g4 = tree.note(tree.s, ['<img src="declined.png">'], reviewed=False, by=alice.username)
    assert plugin.upload(mm_alice, tree.r_hash, [("declined.png", g4)])["failed"] == 0
    wait_for(lambda: tree.mirror(tree.r, "declined.png") == sha(gone), "declined.png mirrored while pending")
    stack.wait_ready([sha(gone)])
    backend.sql(f"DELETE FROM anki.notes WHERE id = {n4}")  # AnkiCollab denies a new note by deleting it
    assert backend.event("declined", [n4])["removed"] == 1
    wait_for(lambda: tree.mirror(tree.r, "declined.png") is None, "declined.png out of the mirror")
    sweep(stack, 0)
    s3 = stack.s3()
    listed = s3.list_objects_v2(Bucket=stack.env["BUCKET"], Prefix=f"media/{sha(gone)}").get("KeyCount", 0)
    assert listed == 0, "the declined file's object is gone"
    r = requests.get(
        f"{stack.api}/v1/media/{sha(gone)}",
        headers={"Authorization": f"Bearer {stack.token('download')}"},
        timeout=30,
    )
    assert r.status_code == 404
    # What the approved suggestion uses is still there, and still answers by deck id.
    assert tree.mirror(tree.r, "a1.png") == a1
    assert plugin.download(mm_carol, tree.r_hash, ["a1.png"])["success"]

    # Note deleted, then the whole base deck deleted: their references go everywhere.
    backend.sql(f"UPDATE anki.notes SET deleted = true WHERE id = {n1}")
    backend.event("note_deleted", [n1])
    wait_for(lambda: tree.mirror(tree.r, "s1.png") is None, "s1.png gone with its note")
    backend.sql(f"DELETE FROM anki.decks WHERE id = {tree.x}")
    backend.event("deck_deleted", deck_hash=tree.x_hash)
    wait_for(lambda: tree.mirror(tree.r, "b.png") is None, "b.png gone with its deck")


def test_expired_tokens_a_401_from_the_backend_and_503s_from_the_references_api(
    stack: Stack, backend: Backend, tmp_path: Path
) -> None:
    dana = Login(backend, unique("dana"))
    tree = Tree(backend, dana.username or "")
    media = tmp_path / "dana.media"
    files = {f"f{i:03}.png": png(100 + i) for i in range(120)}
    write(media, files)
    _, guid = tree.note(tree.r, ["".join(f'<img src="{n}">' for n in files)])
    mm = manager(backend, media, tmp_path, dana)
    pairs = [(n, guid) for n in sorted(files)]
    _, info, paths = plugin.prepare(mm, pairs)

    # The media token expires mid-upload: the media API answers 401 to the next batch; compat gets
    # a fresh token from the backend and the batch goes through.
    first = asyncio.run(
        mm.upload_media_bulk(
            files_info=info[:60], file_paths=paths, deck_hash=tree.r_hash, bulk_operation_id=""
        )
    )
    assert first["success"], first
    minted = backend.calls("/media/token")
    backend.proxy.fail("/v1/uploads", 401)
    second = asyncio.run(
        mm.upload_media_bulk(
            files_info=info[60:], file_paths=paths, deck_hash=tree.r_hash, bulk_operation_id=""
        )
    )
    assert second["success"] and second["uploaded"] == 60, second
    assert backend.calls("/media/token") == minted + 1

    # The references API answers 503 twice: the kit retries and the user sees nothing.
    backend.proxy.fail("/v1/references", 503, 2)
    again = plugin.upload(mm, tree.r_hash, pairs)
    assert again["failed"] == 0 and again["uploaded"] + again["existing"] == 120, again
    # It stays down through every retry: the batch fails with a reason, nothing is lost, and
    # sending it again once it is back records the references.
    backend.proxy.fail("/v1/references", 503, 1000)
    down = plugin.upload(mm, tree.r_hash, pairs)
    assert down["failed"] == 120 and "could not record" in down["errors"][0], down
    backend.proxy.clear()
    assert plugin.upload(mm, tree.r_hash, pairs)["failed"] == 0
    wait_for(lambda: tree.mirror(tree.r, "f000.png") == sha(files["f000.png"]), "references recorded")

    # The backend no longer knows the user's token (a password change revoked it): a 401 from
    # the token route becomes the plugin's auth_expired, and its re-login path runs.
    backend.sql(f"DELETE FROM anki.auth_tokens WHERE user_id = {backend.users[dana.username or '']}")
    mm.refresh_session()
    result = plugin.download(mm, tree.r_hash, ["f000.png"])
    assert result == {"success": False, "message": "Session expired", "downloaded": 0, "auth_expired": True}
    assert dana.value == "", "handle_auth_failure() was called"
    r = requests.post(
        f"{backend.url}/media/token", headers={"Authorization": "Bearer not-a-token"}, timeout=30
    )
    assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"


@pytest.fixture
def opened() -> Iterator[list[str]]:
    seen: list[str] = []
    active = [True]

    def hook(event: str, args: tuple[Any, ...]) -> None:
        if active[0] and event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
            seen.append(os.fsdecode(args[0]))

    sys.addaudithook(hook)
    yield seen
    active[0] = False


def test_a_shared_deck_cannot_make_anyone_upload_a_private_file(
    stack: Stack, backend: Backend, tmp_path: Path, opened: list[str]
) -> None:
    """A real collection whose notes (fields and a template) name files outside the media folder:
    nothing outside is opened, by the client's Anki helpers, the uploader or compat."""
    outside = tmp_path / "outside"
    outside.mkdir()
    secret = outside / "passport.png"
    secret.write_bytes(tiny_png(424242))
    col = new_collection(tmp_path / "profile")
    media = Path(col.media.dir())
    (media / "fine.png").write_bytes(png(7))
    (media / "link.png").symlink_to(secret)
    hostile = [
        "../outside/passport.png",
        str(secret),
        "C:\\x.png",
        "link.png",
        "..\\..\\passport.png",
        "CON.png",
    ]
    fields = "".join(f'<img src="{n}">' for n in hostile) + '<img src="fine.png">'
    note = add_note(col, "Shared", fields, "[sound:../outside/passport.png]")
    basic = col.models.by_name("Basic")
    assert basic is not None
    basic["tmpls"][0]["qfmt"] += f'<img src="{secret}">'
    col.models.update_dict(basic)
    opened.clear()

    skipped: dict[str, str] = {}
    names = deck_media(col, "Shared", skipped=skipped)
    assert names == ["fine.png", "link.png"]
    assert set(skipped) >= {"../outside/passport.png", str(secret), "C:\\x.png"}
    assert missing_media(col, "Shared") == []
    link_skipped: dict[str, str] = {}
    assert present_media_paths(col, names, skipped=link_skipped) == [str((media / "fine.png").resolve())]
    assert link_skipped == {"link.png": "outside_media_folder"}
    assert note_media(col, note) == ["fine.png", "link.png"]

    # The client's upload of the deck (Anki's background operation), and compat's, over all names.
    deck = unique("shared")
    mw = MainWindow(col)
    results: list[Any] = []
    with MediaClient(stack.api, stack.token("upload download"), cache_path=tmp_path / "c.sqlite3") as c:
        upload_deck_media(mw, c, deck, "Shared", on_done=results.append, on_failure=results.append)
        mw.run_until(lambda: bool(results), timeout=120)
        report = results[0]
        assert report.uploaded == ["fine.png"] and report.failed == {}, report
        assert report.rejected["link.png"] == "outside_media_folder"
        direct = c.upload(deck, hostile, media_dir=media)
        assert direct.uploaded == [] and direct.existing == [] and set(direct.rejected) == set(hostile), (
            direct
        )
    owner = Login(backend, unique("erin"))
    tree = Tree(backend, owner.username or "")
    _, guid = tree.note(tree.r, [fields])
    mm = manager(backend, media, tmp_path, owner)
    result = plugin.upload(mm, tree.r_hash, [(n, guid) for n in [*hostile, "fine.png"]])
    assert result["failed"] == 0 and result["uploaded"] + result["existing"] == 1, result

    leaked = [p for p in opened if "passport" in p or p.startswith(str(outside)) or "C:" in p]
    assert leaked == [], leaked
    col.close()
