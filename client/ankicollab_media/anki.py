"""Anki integration: the only module of this package that imports ``anki`` or ``aqt``.

- ``deck_media(col, deck)``: the media files a deck's notes reference, their note types'
  templates included; ``missing_media(col, deck)``: those the media folder lacks. Both read the
  collection, so call them on the main thread; they cost one query and a few backend calls per
  note type, not one per note, so they stay quick on big decks.
- ``upload_deck_media(...)`` / ``download_deck_media(...)``: the transfers in the background
  (``QueryOp(...).without_collection()``, or ``mw.taskman`` on Anki versions without it), with
  Anki's progress window and its cancel. Nothing off the main thread touches ``mw.col``: the
  collection is read before the transfer starts, and the transfer sees only paths.
"""

from __future__ import annotations

import html
import logging
import os
import re
import threading
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, Callable, Iterable, Optional, TypeVar, Union

import anki.collection  # noqa: F401  (anki's modules import each other in a circle: enter by this one)
from anki.decks import DeckId
from anki.models import NotetypeId
from anki.utils import ids2str

from . import mediafolder
from .client import CancelCallback, MediaClient
from .filenames import problem as filename_problem
from .reports import DownloadReport, ProgressCallback, UploadReport

if TYPE_CHECKING:
    from anki.collection import Collection
    from anki.notes import Note

T = TypeVar("T")
DeckRef = Union[int, str]
log = logging.getLogger("ankicollab_media")

#: Fonts and images that a note type's styling loads: ``url(_font.woff)``, ``@import "_x.css"``.
_CSS_REF = re.compile(r"""(?:url\(\s*|@import\s+)["']?([^"')\s]+)["']?""", re.IGNORECASE)


def _deck_id(col: Collection, deck: DeckRef) -> int:
    if isinstance(deck, int):
        return deck
    did = col.decks.id_for_name(deck)
    if did is None:
        raise KeyError(f"no deck named {deck!r}")
    return int(did)


def _is_local_file(name: str) -> bool:
    return bool(name) and "{{" not in name and "://" not in name and not name.startswith(("data:", "/"))


def _keep_safe(names: Iterable[str], skipped: Optional[dict[str, str]]) -> list[str]:
    """The names a media folder may hold; the others (``../x.png``, ``/etc/passwd``, ``C:\\x``,
    a name with a NUL or a trailing dot, ``CON.png``) are logged and put in ``skipped``."""
    kept = []
    for name in names:
        problem = filename_problem(name)
        if problem is None:
            kept.append(name)
            continue
        log.warning("a note references %r, which is not a media filename (%s): skipped", name, problem)
        if skipped is not None:
            skipped[name] = mediafolder.BAD_FILENAME
    return kept


def deck_media(
    col: Collection,
    deck: DeckRef,
    *,
    include_children: bool = True,
    skipped: Optional[dict[str, str]] = None,
) -> list[str]:
    """Media filenames the deck's notes reference (fields, LaTeX images and their note types'
    templates and styling), sorted. References that are not media filenames (a path, a name
    Anki forbids) are left out and, if ``skipped`` is given, put there with their reason.
    Main thread only."""
    did = _deck_id(col, deck)
    dids = [did]
    if include_children:
        dids += [int(child_id) for _, child_id in col.decks.children(DeckId(did))]
    db = col.db
    assert db is not None, "the collection is closed"
    nids = db.list(f"select distinct nid from cards where did in {ids2str(dids)} or odid in {ids2str(dids)}")
    fields_by_type: dict[int, list[str]] = {}
    for start in range(0, len(nids), 10_000):
        chunk = nids[start : start + 10_000]
        for mid, flds in db.all(f"select mid, flds from notes where id in {ids2str(chunk)}"):
            fields_by_type.setdefault(int(mid), []).append(flds)
    refs: set[str] = set()
    for mid, fields in fields_by_type.items():
        # One backend call per note type over all its notes' fields (\x1f separates fields anyway).
        refs.update(col.media.files_in_str(mid, "\x1f".join(fields)))
        notetype = col.models.get(NotetypeId(mid))
        if not notetype:
            continue
        templates = "".join(t.get("qfmt", "") + t.get("afmt", "") for t in notetype.get("tmpls", []))
        refs.update(n for n in col.media.files_in_str(mid, templates) if _is_local_file(n))
        refs.update(n for n in _CSS_REF.findall(notetype.get("css", "")) if _is_local_file(n))
    # References are as written in HTML (`a &amp; b.png`); the file is `a & b.png`, as Anki's
    # media check reads them.
    return sorted(_keep_safe({html.unescape(n) for n in refs}, skipped))


def note_media(col: Collection, note: Note, *, skipped: Optional[dict[str, str]] = None) -> list[str]:
    """The media files one note's fields reference, as filenames (what the AnkiCollab backend
    reports to the media server, with their hashes, for that note). References that are not
    media filenames are left out, as in ``deck_media``."""
    refs = {html.unescape(n) for n in col.media.files_in_str(note.mid, "\x1f".join(note.fields))}
    return sorted(_keep_safe(refs, skipped))


def missing_media(
    col: Collection,
    deck: DeckRef,
    *,
    include_children: bool = True,
    skipped: Optional[dict[str, str]] = None,
) -> list[str]:
    """Of ``deck_media``, the files the collection's media folder lacks. Main thread only."""
    folder = col.media.dir()
    names = deck_media(col, deck, include_children=include_children, skipped=skipped)
    # Every name is a bare filename here, so these look only inside the folder.
    return [n for n in names if not os.path.lexists(os.path.join(folder, n))]


def present_media_paths(
    col: Collection, names: Iterable[str], *, skipped: Optional[dict[str, str]] = None
) -> list[str]:
    """Paths of those ``names`` that are regular files directly inside the media folder (what an
    upload may send). Names that are not media filenames, symlinks leading out of the folder and
    anything but a regular file are left out and, if ``skipped`` is given, put there with their
    reason; names with no file are simply left out. Nothing is opened."""
    folder = col.media.dir()
    paths = []
    for name in names:
        found = mediafolder.resolve(folder, name)
        if isinstance(found, str):
            paths.append(found)
        elif found.code != mediafolder.NOT_FOUND:
            log.warning("not uploading %s", found)
            if skipped is not None:
                skipped[name] = found.code
    return paths


# -- background transfers ----------------------------------------------------------------------


def run_in_background(
    mw: Any,
    work: Callable[[ProgressCallback, CancelCallback], T],
    *,
    label: str,
    parent: Any = None,
    on_done: Optional[Callable[[T], None]] = None,
    on_failure: Optional[Callable[[Exception], None]] = None,
) -> None:
    """Run ``work(progress, cancel)`` off the main thread with Anki's progress window.

    Progress reaches the window through ``mw.taskman.run_on_main``; the window's cancel (Escape
    or closing it) is read there too, on the main thread, and handed to ``work`` as an event.
    ``on_done`` / ``on_failure`` run on the main thread. Call from the main thread.
    """
    stop = threading.Event()

    def show(done: int, total: int) -> None:  # main thread
        if mw.progress.want_cancel():
            stop.set()
        if stop.is_set():
            mw.progress.update(label=f"{label} stopping…", value=done, max=total)
        else:
            mw.progress.update(label=f"{label} {done:,}/{total:,}", value=done, max=total)

    def progress(done: int, total: int) -> None:  # worker threads
        mw.taskman.run_on_main(lambda: show(done, total))

    def task() -> T:
        return work(progress, stop.is_set)

    try:
        from aqt.operations import QueryOp  # noqa: PLC0415 (only inside Anki's GUI)
    except ImportError:  # Anki before 2.1.45
        QueryOp = None

    if QueryOp is not None and hasattr(QueryOp, "without_collection"):
        op = QueryOp(parent=parent or mw, op=lambda _col: task(), success=on_done or (lambda _result: None))
        if on_failure is not None:
            op = op.failure(on_failure)
        op.without_collection().with_progress(label).run_in_background()
        return

    def finished(future: Future[T]) -> None:  # main thread
        try:
            result = future.result()
        except Exception as e:
            if on_failure is not None:
                on_failure(e)
                return
            raise
        if on_done is not None:
            on_done(result)

    mw.taskman.with_progress(task, finished, label=label, parent=parent or mw)


def upload_deck_media(
    mw: Any,
    client: MediaClient,
    remote_deck: str,
    local_deck: DeckRef,
    *,
    filenames: Optional[Iterable[str]] = None,
    parent: Any = None,
    on_done: Optional[Callable[[UploadReport], None]] = None,
    on_failure: Optional[Callable[[Exception], None]] = None,
    label: str = "Uploading media…",
) -> None:
    """Upload the media of ``local_deck`` (or just ``filenames``) that the server lacks, in the
    background. The collection is read here, on the main thread."""
    col = mw.col
    folder = col.media.dir()
    skipped: dict[str, str] = {}
    names = list(filenames) if filenames is not None else deck_media(col, local_deck, skipped=skipped)
    # Names with no file are the deck's, not this upload's business; every other name goes to
    # the uploader, which reads only regular files directly inside the folder and reports the rest.
    present = [
        n for n in names if filename_problem(n) is not None or os.path.lexists(os.path.join(folder, n))
    ]

    def work(progress: ProgressCallback, cancel: CancelCallback) -> UploadReport:
        report = client.upload(remote_deck, present, media_dir=folder, progress=progress, cancel=cancel)
        report.rejected.update(skipped)
        return report

    run_in_background(mw, work, label=label, parent=parent, on_done=on_done, on_failure=on_failure)


def download_deck_media(
    mw: Any,
    client: MediaClient,
    remote_deck: str,
    *,
    local_deck: Optional[DeckRef] = None,
    filenames: Optional[Iterable[str]] = None,
    parent: Any = None,
    on_done: Optional[Callable[[DownloadReport], None]] = None,
    on_failure: Optional[Callable[[Exception], None]] = None,
    label: str = "Downloading media…",
) -> None:
    """Download into the collection's media folder, in the background: ``filenames``, or what
    ``local_deck``'s notes reference and the folder lacks, or else the whole remote deck."""
    col = mw.col
    folder = col.media.dir()
    names: Optional[list[str]] = None
    if filenames is not None:
        names = list(filenames)
    elif local_deck is not None:
        names = missing_media(col, local_deck)

    def work(progress: ProgressCallback, cancel: CancelCallback) -> DownloadReport:
        if names == []:
            return DownloadReport()
        return client.download(remote_deck, folder, filenames=names, progress=progress, cancel=cancel)

    run_in_background(mw, work, label=label, parent=parent, on_done=on_done, on_failure=on_failure)
