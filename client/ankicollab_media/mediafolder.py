"""Files of a media folder, opened only when they are what a note may name: regular files directly
inside the folder.

A note's field or template is text anyone with a merged suggestion wrote. ``../../x.png``,
``/etc/passwd``, ``C:\\x.png`` or a symlink pointing out of the folder must never make us read a
file the user did not mean to share. So every name is checked against Anki's filename rules (which
already forbid separators, ``:``, control characters, trailing dots and device names), looked at
with ``lstat`` (a FIFO or device is never opened: opening a FIFO blocks), and a symlink is followed
only when its target is itself directly inside the folder. Files are then opened with
``O_NOFOLLOW`` and checked with ``fstat``, so a name swapped for a symlink or a FIFO between the
check and the open is refused too.
"""

from __future__ import annotations

import io
import os
import stat
from dataclasses import dataclass
from typing import Optional, Union

from . import filenames

StrPath = Union[str, "os.PathLike[str]"]

#: Why a name was not read (reason codes, as in upload reports).
BAD_FILENAME = "bad_filename"
OUTSIDE = "outside_media_folder"
NOT_REGULAR = "not_a_regular_file"
NOT_FOUND = "not_found"

_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_O_BINARY = getattr(os, "O_BINARY", 0)


@dataclass(frozen=True)
class Refusal:
    """A name that was not read, and why."""

    code: str
    detail: str

    def __str__(self) -> str:
        return f"{self.code}: {self.detail}"


def resolve(media_dir: StrPath, name: str) -> Union[str, Refusal]:
    """The path to read for media file ``name`` of ``media_dir``, or why it must not be read.
    Looks at the file system (``lstat``), never opens anything."""
    problem = filenames.problem(name)
    if problem is not None:
        return Refusal(BAD_FILENAME, f"{name!r}: {problem}")
    folder = os.path.realpath(os.fspath(media_dir))
    path = os.path.join(folder, name)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return Refusal(NOT_FOUND, f"{name!r} is not in the media folder")
    except OSError as e:
        return Refusal(NOT_FOUND, f"{name!r}: {e.strerror or e}")
    if stat.S_ISLNK(st.st_mode):
        target = os.path.realpath(path)
        if os.path.dirname(target) != folder or filenames.problem(os.path.basename(target)) is not None:
            return Refusal(OUTSIDE, f"{name!r} is a link to a file outside the media folder")
        try:
            st = os.lstat(target)
        except OSError:
            return Refusal(NOT_FOUND, f"{name!r} is a link to nothing")
        path = target
    if not stat.S_ISREG(st.st_mode):
        return Refusal(NOT_REGULAR, f"{name!r} is not a regular file")
    return path


def open_regular(path: StrPath) -> io.FileIO:
    """Open a file for reading only if it is a regular file and not a symlink (raises
    ``OSError`` otherwise). Never blocks on a FIFO."""
    fd = os.open(os.fspath(path), os.O_RDONLY | _O_NOFOLLOW | _O_NONBLOCK | _O_BINARY)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise IsADirectoryError(f"{os.fspath(path)!r} is not a regular file")
        if _O_NONBLOCK and hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        if not _O_NOFOLLOW and os.path.islink(os.fspath(path)):
            # Windows has no O_NOFOLLOW: look again after opening.
            raise OSError(f"{os.fspath(path)!r} is a link")
        return io.FileIO(fd, "rb", closefd=True)
    except BaseException:
        os.close(fd)
        raise


def contained_path(media_dir: StrPath, path: StrPath) -> Optional[str]:
    """``path``'s name if it names a file directly inside ``media_dir`` (relative paths are taken
    as names inside it), else None. Only strings are compared; nothing is looked at."""
    text = os.fspath(path)
    folder = os.path.realpath(os.fspath(media_dir))
    if not os.path.isabs(text):
        return text if os.path.dirname(text) == "" else None
    parent = os.path.realpath(os.path.dirname(text))
    return os.path.basename(text) if parent == folder else None
