"""``python -m ankicollab_media``: upload, download and look up media from a terminal or a script.

    export ANKICOLLAB_MEDIA_API=https://media.example ANKICOLLAB_MEDIA_TOKEN=...
    python -m ankicollab_media upload DECK FILE_OR_FOLDER...
    python -m ankicollab_media download DECK DIR
    python -m ankicollab_media status FILE|HASH

A progress bar on a terminal, plain lines otherwise; one summary line at the end; exit status 0
when everything went through, 1 when any file failed (or was rejected), 2 when the call could
not run (no token, a deck you may not use, the server unreachable), 130 when interrupted.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Optional, Sequence, TextIO

from . import __version__
from .client import MediaClient
from .errors import MediaError
from .reports import DownloadReport, UploadReport

EXIT_OK, EXIT_FAILED, EXIT_ERROR, EXIT_INTERRUPTED = 0, 1, 2, 130


class Bar:
    """Progress on stderr: a redrawn bar on a terminal, a line every few seconds otherwise."""

    def __init__(self, verb: str, stream: TextIO, *, enabled: bool = True) -> None:
        self.verb = verb
        self.stream = stream
        self.enabled = enabled
        self.tty = stream.isatty()
        self.started = time.monotonic()
        self._last = 0.0
        self._lock = threading.Lock()
        self._drawn = False

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled or total == 0:
            return
        now = time.monotonic()
        with self._lock:
            final = done >= total > 0
            if now - self._last < (0.1 if self.tty else 5.0) and not final:
                return
            self._last = now
            rate = done / max(now - self.started, 1e-6)
            if self.tty:
                width = 30
                filled = int(width * done / total) if total else 0
                line = f"\r{self.verb} [{'#' * filled}{'.' * (width - filled)}] {done}/{total} files, {rate:.0f}/s"
                self.stream.write(line)
                self._drawn = True
            else:
                self.stream.write(f"{self.verb}: {done}/{total} files ({rate:.0f}/s)\n")
            self.stream.flush()

    def end(self) -> None:
        with self._lock:
            if self._drawn:
                self.stream.write("\n")
                self.stream.flush()
                self._drawn = False


def _paths(args: Sequence[str]) -> list[Path]:
    """Files as given; a folder stands for the files directly inside it."""
    out: list[Path] = []
    for a in args:
        p = Path(a)
        if p.is_dir():
            out.extend(sorted(c for c in p.iterdir() if c.is_file() and not c.name.startswith(".")))
        else:
            out.append(p)
    return out


def _details(report: UploadReport | DownloadReport, stream: TextIO) -> None:
    if isinstance(report, UploadReport):
        for name, reason in sorted(report.rejected.items()):
            stream.write(f"rejected {name}: {reason}\n")
    else:
        for name in sorted(report.conflicts):
            stream.write(f"differs locally, left alone: {name}\n")
        for name, reason in sorted(report.unavailable.items()):
            stream.write(f"unavailable {name}: {reason}\n")
    for name, message in sorted(report.failed.items()):
        stream.write(f"failed {name}: {message}\n")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m ankicollab_media",
        description="Upload and download AnkiCollab deck media.",
        epilog="The API and token come from ANKICOLLAB_MEDIA_API and ANKICOLLAB_MEDIA_TOKEN.",
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    p.add_argument("--api", default=os.environ.get("ANKICOLLAB_MEDIA_API"), help="the media API's URL")
    p.add_argument("--workers", type=int, default=8, help="transfers at a time (default 8)")
    p.add_argument("--json", action="store_true", help="print the whole report as JSON on stdout")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress, only the summary")
    p.add_argument("-v", "--verbose", action="store_true", help="log retries and renewals")
    sub = p.add_subparsers(dest="command", required=True)
    up = sub.add_parser("upload", help="upload files (or the files of folders) the server lacks")
    up.add_argument("deck")
    up.add_argument("paths", nargs="+", metavar="PATH")
    down = sub.add_parser("download", help="download what DIR lacks of the deck")
    down.add_argument("deck")
    down.add_argument("dir")
    down.add_argument("--filename", action="append", dest="filenames", help="only this file (repeatable)")
    st = sub.add_parser("status", help="what the server knows of a file or a hash")
    st.add_argument("target", metavar="FILE|HASH")
    return p


def main(
    argv: Optional[Sequence[str]] = None, *, stdout: TextIO = sys.stdout, stderr: TextIO = sys.stderr
) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(message)s",
        stream=stderr,
    )
    token = os.environ.get("ANKICOLLAB_MEDIA_TOKEN")
    if not args.api or not token:
        stderr.write("set ANKICOLLAB_MEDIA_API and ANKICOLLAB_MEDIA_TOKEN (or pass --api)\n")
        return EXIT_ERROR

    interrupted = threading.Event()
    previous: Any = None
    if threading.current_thread() is threading.main_thread():

        def on_sigint(signum: int, frame: Any) -> None:
            if interrupted.is_set():
                raise KeyboardInterrupt
            interrupted.set()
            stderr.write("\nstopping (Ctrl-C again to quit at once)\n")

        previous = signal.signal(signal.SIGINT, on_sigint)

    report: UploadReport | DownloadReport
    try:
        with MediaClient(args.api, token, workers=args.workers) as client:
            if args.command == "status":
                info = client.status(args.target)
                stdout.write(json.dumps(info, indent=2) + "\n")
                return EXIT_OK
            bar = Bar(
                "uploading" if args.command == "upload" else "downloading", stderr, enabled=not args.quiet
            )
            try:
                if args.command == "upload":
                    report = client.upload(
                        args.deck, _paths(args.paths), progress=bar, cancel=interrupted.is_set
                    )
                else:
                    report = client.download(
                        args.deck, args.dir, filenames=args.filenames, progress=bar, cancel=interrupted.is_set
                    )
            finally:
                bar.end()
    except MediaError as e:
        stderr.write(f"error: {e}\n")
        return EXIT_ERROR
    except OSError as e:
        stderr.write(f"error: {e}\n")
        return EXIT_ERROR
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)

    _details(report, stderr)
    if args.json:
        stdout.write(json.dumps(asdict(report), indent=2, sort_keys=True) + "\n")
    else:
        stdout.write(report.summary() + "\n")
    if report.cancelled:
        return EXIT_INTERRUPTED
    failed = bool(report.failed) or (isinstance(report, UploadReport) and bool(report.rejected))
    return EXIT_FAILED if failed else EXIT_OK
