"""Anki's media filename rules, checked again on our side before a name from the server becomes a
path: a download must never write outside the media folder, whatever the answer says."""

from __future__ import annotations

import re
import unicodedata
from typing import Optional

MAX_FILENAME_BYTES = 120
_FORBIDDEN = re.compile(r'[\[\]<>:"/?*^\\|\x00-\x1f\x7f-\x9f\xa0]')
_DEVICE = re.compile(r"^(con|prn|aux|nul|com[1-9]|lpt[1-9])(\..*)?$", re.IGNORECASE)

#: Temporary files of ours carry ``[``, which Anki forbids in media names: they can never clash with
#: a deck's file, and Anki's media scanner ignores them.
TEMP_PREFIX = ".ankicollab-media["
TEMP_SUFFIX = "].part"


def problem(name: str) -> Optional[str]:
    """Why ``name`` is not a media filename Anki would keep as it is, or None if it is one."""
    if not name:
        return "empty filename"
    if unicodedata.normalize("NFC", name) != name:
        return "filename is not in NFC form"
    if len(name.encode("utf-8")) > MAX_FILENAME_BYTES:
        return "filename is longer than 120 bytes"
    if _FORBIDDEN.search(name):
        return "filename contains a character Anki forbids"
    if not name.strip() or name.endswith((".", " ")) or _DEVICE.match(name):
        return "filename is reserved"
    return None


def is_temp(name: str) -> bool:
    return name.startswith(TEMP_PREFIX) and name.endswith(TEMP_SUFFIX)
