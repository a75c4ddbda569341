#!/usr/bin/env python3
"""A working day on the local stack, compressed: a mixed workload for an hour (by default), with
each emulator's memory and each route's latency printed every minute, and the end state checked.

    scripts/soak [--minutes 60] [--out .local/soak.json]
    python3 scripts/soak.py --table .local/soak.json     # a finished run's table, as BENCHMARKS.md has it

The workload, all at once, as the plugin, the AnkiCollab backend and maintainers would send it:
- uploads: an even stream of small distinct PNGs (10,000 over the hour, by default into deck
  `bench-client-10000`, so that the soak leaves the client benchmark's deck ready), and every
  10 s a new image and a WAV referenced by a new note of deck `soak`; each is referenced first,
  asked for, PUT to LocalStack and processed by the gateway;
- references: 4 writers over 40 notes and 12 shared hashes in deck `soak-refs`, each sending a
  note's new list every 1.5 s, twice (a retried request must change nothing), notes emptied and
  filled again;
- downloads: every 10 s the whole of deck `soak-read` (100 files, made at the start and never
  changed) and 50 names of the seeded deck, 10 files fetched and their bytes checked;
- maintainers: every 15 s the first listing page of deck `soak-read` and a search in it, five
  times each; every 2 minutes a file of deck `soak` removed;
The rates are fixed (not as fast as the stack answers) and each read is of the same size all
along, so that a slower last ten minutes means a slower stack, not more work; the reads come
several at a time so that each ten minutes holds a few hundred of each, and their p99 is not
just the slowest one;
- sweeps with no grace period every 5 minutes, and the stream sync to Postgres all along.

Targets (issue 18): moto and LocalStack each under 1 GB; the p99 of each route over the last ten
minutes within 1.5x of the first ten's; Postgres equal to DynamoDB at the end; nothing lost: every
file a note of `soak` still references is ready and downloads with the bytes it should, and the
reference counts need no repair. Exits 1 when a target is missed. Standard library only.
"""
from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import os
import pathlib
import random
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import wave
import zlib
from collections import defaultdict
from io import BytesIO

from env_file import read_env_file

ROOT = pathlib.Path(__file__).resolve().parent.parent
LOCAL = ROOT / ".local"
GB = 1 << 30


def stack_env() -> dict[str, str]:
    return read_env_file(LOCAL / "stack.env")


ENV = stack_env()
API = ENV["API_URL"]
CORPUS = pathlib.Path(ENV["CORPUS"])
GATEWAY_BIN = pathlib.Path(os.environ.get("CARGO_TARGET_DIR", pathlib.Path.home() / ".cache/ankicollab-media/target")) / "debug/local-gateway"


def b64url(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def token(sub: str, scope: str, decks: list[str] | None = None) -> str:
    head = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    # The longest a user token may live (TOKEN_MAX_LIFETIME_SECS); the soak renews none.
    now = int(time.time())
    claims = {"sub": sub, "scope": scope, "iat": now, "exp": now + 4 * 3600, "iss": "ankicollab", "aud": "ankicollab-media"}
    if decks:
        claims["decks"] = decks
    body = b64url(json.dumps(claims).encode())
    sig = hmac.new(ENV["JWT_SECRET"].encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64url(sig)}"


class Stats:
    """Latencies per minute and route, and errors, shared by every worker."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.start = time.monotonic()
        self.latency: dict[int, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
        self.errors: dict[str, int] = defaultdict(int)
        self.retried: dict[str, int] = defaultdict(int)
        self.problems: list[str] = []

    def minute(self) -> int:
        return int((time.monotonic() - self.start) // 60)

    def record(self, route: str, seconds: float) -> None:
        with self.lock:
            self.latency[self.minute()][route].append(seconds)

    def error(self, route: str, what: str) -> None:
        with self.lock:
            self.errors[route] += 1
            if len(self.problems) < 50:
                self.problems.append(f"{route}: {what}")


STATS = Stats()


class HttpError(Exception):
    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"HTTP {status}: {body[:200]}")
        self.status = status


def http(route: str, method: str, url: str, *, body: bytes | None = None, headers: dict[str, str] | None = None,
         attempts: int = 6) -> bytes:
    """One timed request; 503 and 429 are retried after a pause, as the client does."""
    for attempt in range(attempts):
        req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
        began = time.monotonic()
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                data = r.read()
            STATS.record(route, time.monotonic() - began)
            return data
        except urllib.error.HTTPError as e:
            STATS.record(route, time.monotonic() - began)
            text = e.read().decode(errors="replace")
            if e.code in (429, 503) and attempt + 1 < attempts:
                with STATS.lock:
                    STATS.retried[route] += 1
                time.sleep(min(8.0, 0.5 * 2**attempt))
                continue
            raise HttpError(e.code, text) from None
        except (urllib.error.URLError, OSError) as e:
            STATS.record(route, time.monotonic() - began)
            if attempt + 1 < attempts:
                with STATS.lock:
                    STATS.retried[route] += 1
                time.sleep(min(8.0, 0.5 * 2**attempt))
                continue
            raise HttpError(0, str(e)) from None
    raise AssertionError("unreachable")


def api(route: str, method: str, path: str, tok: str, payload: object | None = None) -> dict:
    body = json.dumps(payload).encode() if payload is not None else None
    headers = {"Authorization": "Bearer " + tok, "content-type": "application/json"}
    data = http(route, method, API + path, body=body, headers=headers)
    return json.loads(data) if data else {}


def upload(deck: str, files: dict[str, bytes], tok: str) -> list[tuple[dict, bytes]]:
    """Ask for upload URLs for `files` (filename -> bytes) and PUT those storage lacks; the answer's
    items with their bytes, for callers that check the other statuses."""
    answer = api("POST /v1/uploads", "POST", "/v1/uploads", tok,
                 {"deck": deck, "files": [{"hash": sha(b), "size": len(b), "filename": f} for f, b in files.items()]})
    items = list(zip(answer["files"], files.values()))
    for item, data in items:
        if item["status"] == "upload":
            http("PUT storage", "PUT", item["url"], body=data, headers=item["headers"])
    return items


def png(width: int, height: int, seed: int) -> bytes:
    """A valid, unique PNG: a gradient with noise, so that every upload is a new hash."""
    rnd = random.Random(seed)
    rows = bytearray()
    for y in range(height):
        rows.append(0)
        for x in range(width):
            rows += bytes(((x * 255 // width + rnd.randrange(8)) % 256, (y * 255 // height) % 256, rnd.randrange(256)))
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(bytes(rows), 6)) + chunk(b"IEND", b"")


def wav(seed: int) -> bytes:
    rnd = random.Random(seed)
    out = BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"".join(struct.pack("<h", rnd.randrange(-3000, 3000)) for _ in range(4000)))
    return out.getvalue()


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


class Model:
    """What deck `soak` should hold: note → {filename: hash}, and the bytes of every upload."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.notes: dict[str, dict[str, str]] = {}
        self.removed: set[str] = set()
        self.uploaded: dict[str, int] = {}  # hash → size
        self.refs_notes: dict[str, list[dict[str, str]]] = {}  # deck soak-refs: the last list per note
        self.seeded: dict[str, str] = {}  # the benchmark deck: filename → hash
        self.seed_deck = ""

    def live(self) -> dict[str, str]:
        with self.lock:
            out: dict[str, str] = {}
            for media in self.notes.values():
                out.update({f: h for f, h in media.items() if f not in self.removed})
            return out


def upload_batch(n: int, model: Model, tokens: dict[str, str]) -> None:
    files = {f"soak-{n:05d}.png": png(random.randrange(24, 96), random.randrange(24, 96), n), f"soak-{n:05d}.wav": wav(n)}
    media = [{"filename": f, "hash": sha(b)} for f, b in files.items()]
    note = f"soak-note-{n}"
    # The note first, as AnkiCollab's backend records a suggestion before its media arrive, so
    # that a grace-0 sweep never sees these files unreferenced.
    api("POST /v1/references", "POST", "/v1/references", tokens["references"],
        {"deck": "soak", "notes": [{"note_id": note, "media": media}]})
    with model.lock:
        model.notes[note] = {m["filename"]: m["hash"] for m in media}
    for item, data in upload("soak", files, tokens["upload"]):
        if item["status"] not in ("upload", "exists"):
            STATS.error("POST /v1/uploads", f"unexpected {item}")
        with model.lock:
            model.uploaded[item["hash"]] = len(data)


def uploader(stop: threading.Event, model: Model, tokens: dict[str, str]) -> None:
    n = 0
    while not stop.is_set():
        try:
            upload_batch(n, model, tokens)
        except HttpError as e:
            STATS.error("upload round", str(e))
        n += 1
        stop.wait(10)


def seeder(stop: threading.Event, deck: str, total: int, minutes: float, model: Model, tokens: dict[str, str]) -> None:
    """A deck of `total` small distinct images, uploaded at an even pace over the soak (so that
    the first and last ten minutes see the same load), named as benchmarks/compare-client.py
    names its deck: the soak leaves the stack ready for the client's benchmark."""
    batch = 20
    # Spread over the whole run, the last ten minutes included: a stream that stopped early (it
    # once stopped at minute 54 of 60) would leave the last window less work than the first. The
    # end check waits for what is still processing.
    pause = minutes * 60 / max(1, total / batch)
    n = 0
    while n < total and not stop.is_set():
        began = time.monotonic()
        files = {f"img{i:05}.png": png(16, 16, 7_000_000 + i) for i in range(n, min(total, n + batch))}
        media = {f: sha(b) for f, b in files.items()}
        try:
            api("POST /v1/references", "POST", "/v1/references", tokens["references"],
                {"deck": deck, "notes": [{"note_id": f"n{f[3:8]}", "media": [{"filename": f, "hash": h}]} for f, h in media.items()]})
            for item, _ in upload(deck, files, tokens["seed"]):
                if item["status"] not in ("upload", "exists"):
                    STATS.error("POST /v1/uploads", f"seeding: unexpected {item}")
            with model.lock:
                model.seeded.update(media)
            n += len(files)
        except HttpError as e:
            STATS.error("seed round", str(e))
        stop.wait(max(0.0, pause - (time.monotonic() - began)))


def reference_writer(stop: threading.Event, k: int, shared: list[str], model: Model, tokens: dict[str, str]) -> None:
    rnd = random.Random(k)
    mine = [f"refs-{i}" for i in range(k, 40, 4)]  # each writer owns its notes, so the model is exact
    while not stop.is_set():
        note = rnd.choice(mine)
        picked = rnd.sample(range(len(shared)), min(len(shared), rnd.choice([0, 1, 2, 3])))
        media = [{"filename": f"shared-{i}.bin", "hash": shared[i]} for i in sorted(picked)]
        payload = {"deck": "soak-refs", "notes": [{"note_id": note, "media": media}]}
        try:
            for _ in range(2):  # a retried request changes nothing
                api("POST /v1/references", "POST", "/v1/references", tokens["references"], payload)
            with model.lock:
                model.refs_notes[note] = media
        except HttpError as e:
            STATS.error("POST /v1/references", str(e))
        stop.wait(1.5)


READ_DECK, READ_FILES = "soak-read", 100


def prepare_read_deck(tokens: dict[str, str]) -> None:
    """The downloader's deck: 100 files that never change, so that its whole-deck read is the same
    work all along (deck `soak` grows, and its first page with it: a first run read a growing
    page and took that for a slower stack)."""
    files = {f"read-{i:03d}.png": png(20, 20, 9_000_000 + i) for i in range(READ_FILES)}
    media = {f: sha(b) for f, b in files.items()}
    api("POST /v1/references", "POST", "/v1/references", tokens["references"],
        {"deck": READ_DECK, "notes": [{"note_id": f"read-{f[5:8]}", "media": [{"filename": f, "hash": h}]}
                                      for f, h in media.items()]})
    upload(READ_DECK, files, tokens["upload"])
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        page = api("POST /v1/downloads", "POST", "/v1/downloads", tokens["download"], {"deck": READ_DECK})
        if len(page["files"]) == READ_FILES:
            return
        time.sleep(2)
    raise SystemExit(f"deck {READ_DECK}: its {READ_FILES} files were not ready within 5 minutes")


def downloader(stop: threading.Event, model: Model, tokens: dict[str, str]) -> None:
    """Work of the same size all along, so that latency compares: the whole of deck `soak-read`,
    and 50 names of the seeded deck, of which 10 are fetched and checked."""
    rnd = random.Random(7)
    while not stop.is_set():
        try:
            page = api("POST /v1/downloads", "POST", "/v1/downloads", tokens["download"], {"deck": READ_DECK})
            files: list[dict] = list(page["files"])
            if len(files) != READ_FILES or page.get("next_cursor"):
                STATS.error("POST /v1/downloads", f"deck {READ_DECK}: {len(files)} files, not {READ_FILES}")
            with model.lock:
                seeded = list(model.seeded)
            if seeded and model.seed_deck:
                names = rnd.sample(seeded, min(50, len(seeded)))
                files = api("POST /v1/downloads", "POST", "/v1/downloads", tokens["download"],
                            {"deck": model.seed_deck, "filenames": names})["files"] + files
            for f in rnd.sample(files, min(10, len(files))):
                data = http("GET storage", "GET", f["url"])
                if sha(data) != f["stored_hash"]:
                    STATS.error("GET storage", f"{f['filename']}: bytes differ from stored_hash")
        except HttpError as e:
            STATS.error("POST /v1/downloads", str(e))
        stop.wait(10)


def maintainer(stop: threading.Event, model: Model, tokens: dict[str, str]) -> None:
    rounds = 0
    while not stop.is_set():
        try:
            # The first page, as a maintainer opening the page sees it, and a search, of the deck
            # that never changes (a growing deck's search is more work each time).
            for i in range(5):
                api("GET /v1/decks/{deck}/media", "GET", f"/v1/decks/{READ_DECK}/media", tokens["maintain"])
                api("GET /v1/decks/{deck}/media?q=", "GET", f"/v1/decks/{READ_DECK}/media?q={(rounds * 5 + i) % 10}.png",
                    tokens["maintain"])
            rounds += 1
            with model.lock:
                live = sorted(f for note in model.notes.values() for f in note if f not in model.removed)
            if rounds % 8 == 0 and live:  # about every two minutes, a maintainer removes a file of `soak`
                victim = random.choice(live)
                path = f"/v1/decks/soak/media/{urllib.request.quote(victim)}"
                api("DELETE /v1/decks/{deck}/media/{f}", "DELETE", path, tokens["maintain"])
                with model.lock:
                    model.removed.add(victim)
        except HttpError as e:
            STATS.error("GET /v1/decks/{deck}/media", str(e))
        stop.wait(15)


def invoke(function: str, event: dict) -> dict:
    path = LOCAL / f"soak-{function}.json"
    path.write_text(json.dumps(event))
    env = {**os.environ, **ENV}
    out = subprocess.run([str(GATEWAY_BIN), "invoke", function, str(path)], env=env, capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        raise RuntimeError(f"{function} failed: {out.stderr[-500:]}")
    start = out.stdout.find("{")
    return json.loads(out.stdout[start:]) if start >= 0 else {}


def sweeper(stop: threading.Event, every: float) -> None:
    while not stop.wait(every):
        began = time.monotonic()
        try:
            invoke("sweep-orphans", {"mode": "sweep", "grace_seconds": 0})
            STATS.record("sweep (grace 0)", time.monotonic() - began)
        except (RuntimeError, subprocess.TimeoutExpired, ValueError) as e:
            STATS.error("sweep (grace 0)", str(e))


def rss_of_group(pid_file: pathlib.Path) -> int | None:
    """Resident bytes of the process in `pid_file` and of every process in its process group."""
    try:
        leader = int(pid_file.read_text())
    except (OSError, ValueError):
        return None
    total = 0
    for stat in pathlib.Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            pgid = int(fields[2])
            pid = int(stat.parent.name)
            if pid == leader or pgid == leader:
                for line in (stat.parent / "status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
        except (OSError, ValueError, IndexError):
            continue
    return total


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


ROUTES = ["POST /v1/uploads", "PUT storage", "POST /v1/references", "POST /v1/downloads", "GET storage",
          "GET /v1/decks/{deck}/media", "GET /v1/decks/{deck}/media?q=", "DELETE /v1/decks/{deck}/media/{f}", "sweep (grace 0)"]
SHORT = {"POST /v1/uploads": "uploads", "PUT storage": "PUT", "POST /v1/references": "refs",
         "POST /v1/downloads": "downloads", "GET storage": "GET", "GET /v1/decks/{deck}/media": "listing", "GET /v1/decks/{deck}/media?q=": "search",
         "DELETE /v1/decks/{deck}/media/{f}": "delete", "sweep (grace 0)": "sweep"}


def monitor(stop: threading.Event, minutes: list[dict]) -> None:
    header = "min  load  moto MB  LS MB  gw MB  " + "  ".join(f"{SHORT[r]:>15}" for r in ROUTES[:6])
    print(header + "   (p50/p99 ms)", flush=True)
    m = 0
    while not stop.wait(max(0.0, STATS.start + 60 * (m + 1) - time.monotonic())):
        rss = {name: rss_of_group(LOCAL / "pids" / f"{name}.pid") for name in ("moto", "localstack", "gateway")}
        with STATS.lock:
            window = {r: list(v) for r, v in STATS.latency.get(m, {}).items()}
        load = os.getloadavg()[0]
        row = {"minute": m + 1, "load": load, "rss": rss, "routes": {r: {"n": len(v), "p50": percentile(v, 0.5), "p99": percentile(v, 0.99)}
                                                        for r, v in window.items()}}
        minutes.append(row)
        cells = []
        for r in ROUTES[:6]:
            v = window.get(r, [])
            cells.append(f"{percentile(v, .5) * 1000:6.0f}/{percentile(v, .99) * 1000:<7.0f}" if v else f"{'-':>15}")
        mb = {k: (v or 0) / 1e6 for k, v in rss.items()}
        print(f"{m + 1:3d}  {load:4.1f}  {mb['moto']:7.0f}  {mb['localstack']:5.0f}  {mb['gateway']:5.0f}  " + "  ".join(cells), flush=True)
        m += 1


def wait_processed(model: Model, tokens: dict[str, str], deadline: float) -> list[str]:
    return wait_processed_hashes(list(model.live().values()), tokens, deadline)


def wait_processed_hashes(pending: list[str], tokens: dict[str, str], deadline: float) -> list[str]:
    """Hashes still pending when the deadline passes."""
    while pending and time.monotonic() < deadline:
        still = []
        for h in pending:
            info = api("GET /v1/media/{hash}", "GET", f"/v1/media/{h}", tokens["download"])
            if info["status"] == "pending":
                still.append(h)
        pending = still
        if pending:
            time.sleep(2)
    return pending


def check_end(model: Model, tokens: dict[str, str]) -> dict[str, object]:
    """Nothing lost, counts right, Postgres equal to DynamoDB."""
    live = model.live()
    pending = wait_processed(model, tokens, time.monotonic() + 300)
    lost: list[str] = []
    names = sorted(live)
    for i in range(0, len(names), 1000):
        answer = api("POST /v1/downloads", "POST", "/v1/downloads", tokens["download"], {"deck": "soak", "filenames": names[i:i + 1000]})
        got = {f["filename"]: f for f in answer["files"]}
        for u in answer["unavailable"]:
            lost.append(f"{u['filename']}: {u['reason']}")
        for name, f in got.items():
            if f["hash"] != live[name]:
                lost.append(f"{name}: resolves to {f['hash'][:12]}, expected {live[name][:12]}")
    seeded = dict(model.seeded)
    pending += wait_processed_hashes(list(seeded.values()), tokens, time.monotonic() + 600)
    seeded_names = sorted(seeded)
    for i in range(0, len(seeded_names), 1000):
        answer = api("POST /v1/downloads", "POST", "/v1/downloads", tokens["download"],
                     {"deck": model.seed_deck, "filenames": seeded_names[i:i + 1000]})
        lost += [f"{model.seed_deck}/{u['filename']}: {u['reason']}" for u in answer["unavailable"]]
        lost += [f"{model.seed_deck}/{f['filename']}: wrong hash" for f in answer["files"] if f["hash"] != seeded[f["filename"]]]
    # Every 20th file is fetched and its bytes checked (all of them would take a while).
    sample_names = names[::20]
    answer = api("POST /v1/downloads", "POST", "/v1/downloads", tokens["download"], {"deck": "soak", "filenames": sample_names[:1000]})
    for f in answer["files"]:
        if sha(http("GET storage", "GET", f["url"])) != f["stored_hash"]:
            lost.append(f"{f['filename']}: served bytes differ from stored_hash")
    # Removed files are gone from downloads.
    removed = sorted(model.removed)[:1000]
    if removed:
        answer = api("POST /v1/downloads", "POST", "/v1/downloads", tokens["download"], {"deck": "soak", "filenames": removed})
        back = [f["filename"] for f in answer["files"]]
        if back:
            lost.append(f"removed files still served: {back[:5]}")
    # Let the stream sync drain, then compare: reference counts, and Postgres with DynamoDB.
    time.sleep(10)
    refs = invoke("sweep-orphans", {"mode": "reconcile", "fix": False})
    mirror = {}
    for _ in range(6):
        mirror = invoke("sync-postgres", {"mode": "reconcile", "fix": False})
        if not (mirror.get("missing") or mirror.get("extra") or mirror.get("differing")):
            break
        time.sleep(10)
    return {"files_checked": len(names), "seeded_checked": len(seeded_names), "removed": len(model.removed), "pending": pending, "lost": lost,
            "reference_drift": refs.get("drift", []), "references_without_record": len(refs.get("references_without_record", [])),
            "mirror": {k: mirror.get(k) for k in ("files_in_dynamodb", "missing", "extra", "differing")}}


def markdown(run: dict) -> str:
    """The table BENCHMARKS.md records: every fifth minute (and the first), p50/p99 in ms per route
    and RSS per process group, then the first and last windows' p99 and the verdict."""
    routes = ROUTES[:7]
    out = ["| min | load | moto MB | LocalStack MB | gateway MB | " + " | ".join(SHORT[r] for r in routes) + " |",
           "| ---: " * (5 + len(routes)) + "|"]
    for row in run["minutes"]:
        if row["minute"] != 1 and row["minute"] % 5:
            continue
        mb = {k: (v or 0) / 1e6 for k, v in row["rss"].items()}
        cells = []
        for r in routes:
            v = row["routes"].get(r)
            cells.append(f"{v['p50'] * 1000:.0f}/{v['p99'] * 1000:.0f}" if v and v["n"] else "-")
        out.append(f"| {row['minute']} | {row['load']:.1f} | {mb['moto']:.0f} | {mb['localstack']:.0f} | {mb['gateway']:.0f} | "
                   + " | ".join(cells) + " |")
    out.append("")
    out.append("p99, first window → last: " + ", ".join(
        f"{SHORT[r]} {v['first_p99_ms']:.0f} → {v['last_p99_ms']:.0f} ms ({v['ratio']:.2f}×)" for r, v in run["ratios"].items()) + ".")
    out.append("")
    out.append("Verdict: " + "; ".join(f"{k}: {'PASS' if ok else 'FAIL'}" for k, ok in run["verdict"].items()) + ".")
    return "\n".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=60)
    parser.add_argument("--out", default=str(LOCAL / "soak.json"))
    parser.add_argument("--table", metavar="JSON", help="print the Markdown table of a finished run's JSON and exit")
    parser.add_argument("--seed-deck", default="bench-client-10000", help="deck the even upload stream fills ('' for none)")
    parser.add_argument("--seed-files", type=int, default=10_000)
    args = parser.parse_args()
    if args.table:
        print(markdown(json.loads(pathlib.Path(args.table).read_text())))
        return 0

    tokens = {"upload": token("soak-user", "upload download"), "download": token("soak-user", "upload download"),
              "references": token("ankicollab-backend", "references"), "maintain": token("soak-maintainer", "maintain", ["soak", READ_DECK]),
              # The seeded deck's 10,000 files are a day's upload quota by themselves: their own user.
              "seed": token("soak-seeder", "upload download")}
    model = Model()
    # The 12 shared files of the references workload: real corpus files, uploaded once.
    shared_files = sorted(p for p in (CORPUS / "real").iterdir() if p.is_file() and p.stat().st_size < 2_000_000)[:12]
    blobs = [p.read_bytes() for p in shared_files]
    shared = [sha(b) for b in blobs]
    upload("soak-refs", {f"shared-{i}.bin": b for i, b in enumerate(blobs)}, tokens["upload"])

    prepare_read_deck(tokens)

    stop = threading.Event()
    minutes: list[dict] = []
    workers = [threading.Thread(target=uploader, args=(stop, model, tokens)),
               threading.Thread(target=downloader, args=(stop, model, tokens)),
               threading.Thread(target=maintainer, args=(stop, model, tokens)),
               threading.Thread(target=sweeper, args=(stop, min(300.0, args.minutes * 15))),
               *[threading.Thread(target=reference_writer, args=(stop, k, shared, model, tokens)) for k in range(4)]]
    if args.seed_deck:
        model.seed_deck = args.seed_deck
        workers.append(threading.Thread(target=seeder, args=(stop, args.seed_deck, args.seed_files, args.minutes, model, tokens)))
    mon = threading.Thread(target=monitor, args=(stop, minutes))
    print(f"soak: {args.minutes:g} minutes against {API}", flush=True)
    for t in [*workers, mon]:
        t.daemon = True
        t.start()
    try:
        time.sleep(args.minutes * 60 + 1)
    except KeyboardInterrupt:
        print("interrupted: checking what was done so far", flush=True)
    stop.set()
    for t in workers:
        t.join(timeout=120)
    mon.join(timeout=5)

    end = check_end(model, tokens)
    total_minutes = len(minutes)
    span = max(1, min(10, total_minutes // 3))
    verdict: dict[str, object] = {}
    peak = {name: max((row["rss"][name] or 0) for row in minutes) if minutes else 0 for name in ("moto", "localstack", "gateway")}
    ratios = {}
    for r in ROUTES:
        first = [v for row in minutes[:span] for v in STATS.latency.get(row["minute"] - 1, {}).get(r, [])]
        last = [v for row in minutes[-span:] for v in STATS.latency.get(row["minute"] - 1, {}).get(r, [])]
        if len(first) >= 20 and len(last) >= 20:
            ratios[r] = {"first_p99_ms": percentile(first, .99) * 1000, "last_p99_ms": percentile(last, .99) * 1000,
                         "ratio": percentile(last, .99) / percentile(first, .99)}
    verdict["moto under 1 GB"] = peak["moto"] < GB
    verdict["LocalStack under 1 GB"] = peak["localstack"] < GB
    verdict[f"p99 of the last {span} min within 1.5x of the first {span}"] = all(v["ratio"] <= 1.5 for v in ratios.values())
    verdict["Postgres equals DynamoDB"] = not any(end["mirror"].get(k) for k in ("missing", "extra", "differing"))
    verdict["nothing lost"] = not end["lost"] and not end["pending"]
    verdict["reference counts need no repair"] = not end["reference_drift"] and not end["references_without_record"]

    print(f"\npeak RSS: moto {peak['moto'] / 1e6:.0f} MB, LocalStack {peak['localstack'] / 1e6:.0f} MB, gateway {peak['gateway'] / 1e6:.0f} MB")
    print(f"p99, first {span} min vs last {span} min:")
    for r, v in ratios.items():
        print(f"  {r:<36} {v['first_p99_ms']:7.0f} ms -> {v['last_p99_ms']:7.0f} ms  ({v['ratio']:.2f}x)")
    counts = {r: sum(len(STATS.latency[m].get(r, [])) for m in list(STATS.latency)) for r in ROUTES}
    print("requests: " + ", ".join(f"{SHORT[r]} {n}" for r, n in counts.items()))
    print(f"retried after 503/429/network: {dict(STATS.retried) or 'none'}; failed: {dict(STATS.errors) or 'none'}")
    for p in STATS.problems[:10]:
        print(f"  {p}")
    print(f"end: {end['files_checked']} live files of soak and {end['seeded_checked']} of {model.seed_deck or '-'} checked, {end['removed']} removed by maintainers, "
          f"mirror {end['mirror']}, lost {len(end['lost'])}, pending {len(end['pending'])}")
    for line in end["lost"][:10]:
        print(f"  lost: {line}")
    for k, ok in verdict.items():
        print(f"{'PASS' if ok else 'FAIL'}  {k}")
    pathlib.Path(args.out).write_text(json.dumps({"minutes": minutes, "ratios": ratios, "peak_rss": peak, "counts": counts,
                                                  "errors": STATS.errors, "retried": STATS.retried, "end": end,
                                                  "verdict": verdict}, indent=1, default=str))
    print(f"written: {args.out}\n")
    print(markdown({"minutes": minutes, "ratios": ratios, "verdict": verdict}))
    return 0 if all(verdict.values()) and not STATS.errors else 1


if __name__ == "__main__":
    sys.exit(main())
