"""Real Anki collections for the tests (the `anki` package from PyPI)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from anki.collection import Collection


def new_collection(folder: Path) -> Collection:
    """An empty profile's collection, with its media folder beside it."""
    folder.mkdir(parents=True, exist_ok=True)
    return Collection(str(folder / "collection.anki2"))


def add_note(col: Collection, deck: str, front: str, back: str = "") -> Any:
    """A Basic note in `deck` (created if need be); returns the note."""
    basic = col.models.by_name("Basic")
    assert basic is not None
    note = col.new_note(basic)
    note["Front"], note["Back"] = front, back
    did = col.decks.id(deck)
    assert did is not None
    col.add_note(note, did)
    return note
