"""The fault-injection run's workload and its checks (started by `scripts/chaos`, which puts the
fault proxies between a gateway of its own and the emulators).

For MINUTES: concurrent uploads (duplicates among them), reference writers (every request sent
twice, notes replaced and removed), whole-deck downloads with byte checks, and grace-0 sweeps,
all while the proxies inject faults at RATE. Then faults stop, everything is given time to
settle, and the invariants are checked on the fault-free path:

- every 5xx a client saw was a retryable 503 with Retry-After (no 500, no panic in the log);
- every upload settled (no pending record whose bytes were PUT, the upload queue empty);
- reference counts equal their reference items (reconcile finds no drift);
- nothing referenced was deleted: every ready record has its object, and every file a deck
  lists as ready downloads with the bytes its hash names;
- Postgres equals DynamoDB (the mirror's reconcile finds no difference).

Exit status 0 when every check holds; the last line is a JSON summary.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import os
import random
import struct
import subprocess
import sys
import threading
import time
import zlib
from collections import Counter
from pathlib import Path
from typing import Any, Optional

import boto3
import requests

REPO = Path(__file__).resolve().parents[1]


def b64(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def token(secret: str, sub: str, scope: str, decks: list[str] | None = None) -> str:
    now = int(time.time())
    claims = {"sub": sub, "scope": scope, "iat": now, "exp": now + 3600, "iss": "ankicollab", "aud": "ankicollab-media"}
    if decks:
        claims["decks"] = decks
    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64(json.dumps(claims).encode())
    sig = hmac.new(secret.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64(sig)}"


def png(seed: int) -> bytes:
    rows = b"".join(
        b"\0" + bytes(((seed * 2654435761 + y * 97 + x * 31 + c) & 0xFF) for x in range(8) for c in range(3))
        for y in range(8)
    )

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 8, 8, 8, 2, 0, 0, 0)) + chunk(
        b"IDAT", zlib.compress(rows)
    ) + chunk(b"IEND", b"")


class Run:
    def __init__(self, a: argparse.Namespace) -> None:
        self.a = a
        self.api = a.api
        self.secret = os.environ["JWT_SECRET"]
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.statuses: Counter[str] = Counter()
        self.violations: list[str] = []
        self.uploaded: dict[str, bytes] = {}  # hash → bytes PUT
        self.seed = a.seed
        self.rng = random.Random(a.seed)
        self.decks = [f"chaos-{a.seed}-{i}" for i in range(3)]
        self.session = threading.local()

    def http(self) -> requests.Session:
        s: Optional[requests.Session] = getattr(self.session, "s", None)
        if s is None:
            s = requests.Session()
            self.session.s = s
        return s

    def call(
        self, method: str, path: str, scope: str, body: Any = None, tries: int = 8, absent_ok: bool = False
    ) -> Optional[Any]:
        """An API call as a client makes it: 503 and 429 retried after Retry-After. With
        `absent_ok`, a 404 is an answer (None), not a violation."""
        for _ in range(tries):
            try:
                r = self.http().request(
                    method,
                    self.api + path,
                    json=body,
                    headers={"Authorization": f"Bearer {token(self.secret, 'chaos', scope, self.decks)}"},
                    timeout=60,
                )
            except requests.RequestException as e:
                self.note("transport", f"{path}: {e}")
                time.sleep(0.5)
                continue
            with self.lock:
                self.statuses[f"{method} {path.split('?')[0].rsplit('/', 1)[0] if path.startswith('/v1/media') else path} {r.status_code}"] += 1
            if r.status_code >= 500:
                if r.status_code != 503 or "retry-after" not in {k.lower() for k in r.headers}:
                    self.violation(f"{method} {path}: {r.status_code} {r.text[:200]}")
                time.sleep(float(r.headers.get("Retry-After", "1")))
                continue
            if r.status_code == 429:
                time.sleep(float(r.headers.get("Retry-After", "1")))
                continue
            if r.status_code == 404 and absent_ok:
                return None
            if r.status_code >= 400:
                self.violation(f"{method} {path}: {r.status_code} {r.text[:200]}")
                return None
            return r.json()
        # A client that kept retrying as told and was still refused: a user blocked.
        self.violation(f"{method} {path}: still refused after {tries} tries")
        return None

    def note(self, what: str, detail: str) -> None:
        with self.lock:
            self.statuses[what] += 1

    def violation(self, what: str) -> None:
        with self.lock:
            self.violations.append(what)

    # -- the workload --------------------------------------------------------------------------

    def uploader(self, n: int) -> None:
        rng = random.Random(self.seed * 1000 + n)
        while not self.stop.is_set():
            # A small pool of contents, so that duplicates (the same bytes twice) happen.
            data = png(self.seed * 100_000 + rng.randrange(400))
            h = hashlib.sha256(data).hexdigest()
            deck = rng.choice(self.decks)
            answer = self.call("POST", "/v1/uploads", "upload", {"deck": deck, "files": [{"hash": h, "size": len(data), "filename": f"f-{h[:8]}.png"}]})
            if not answer:
                continue
            item = answer["files"][0]
            if item["status"] == "upload":
                r = requests.put(item["url"], data=data, headers=item["headers"], timeout=60)
                if r.status_code == 200:
                    with self.lock:
                        self.uploaded[h] = data
                else:
                    self.note("put_refused", str(r.status_code))
            elif item["status"] == "exists":
                with self.lock:
                    self.uploaded.setdefault(h, data)

    def referencer(self, n: int) -> None:
        rng = random.Random(self.seed * 2000 + n)
        while not self.stop.is_set():
            with self.lock:
                pool = list(self.uploaded)
            if not pool:
                time.sleep(0.2)
                continue
            deck = rng.choice(self.decks)
            notes = []
            for _ in range(rng.randrange(1, 6)):
                picks = rng.sample(pool, min(len(pool), rng.randrange(0, 4)))
                notes.append({"note_id": f"n{rng.randrange(40)}", "media": [{"filename": f"f-{h[:8]}.png", "hash": h} for h in picks]})
            body = {"deck": deck, "notes": notes}
            # Every request twice: a replay changes nothing.
            self.call("POST", "/v1/references", "references", body)
            self.call("POST", "/v1/references", "references", body)

    def downloader(self) -> None:
        rng = random.Random(self.seed * 3000)
        while not self.stop.is_set():
            page = self.call("POST", "/v1/downloads", "download", {"deck": rng.choice(self.decks)})
            if page:
                for f in page["files"][:3]:
                    r = requests.get(f["url"], timeout=60)
                    if r.status_code == 200 and hashlib.sha256(r.content).hexdigest() != f["stored_hash"]:
                        self.violation(f"download of {f['filename']}: bytes do not match stored_hash")
            time.sleep(0.5)

    def sweeper(self) -> None:
        while not self.stop.wait(self.a.sweep_every):
            out = subprocess.run(
                [os.environ["GATEWAY_BIN"], "invoke", "sweep-orphans", str(REPO / ".local" / "chaos-sweep.json")],
                capture_output=True,
                text=True,
                timeout=600,
            )
            self.note("sweeps" if out.returncode == 0 else "sweeps_failed", out.stderr[-300:])
            if "panicked" in out.stderr:
                self.violation(f"the sweep panicked: {out.stderr[-500:]}")

    def faults(self, rate: float) -> dict[str, Any]:
        out = {}
        for name, url in (("dynamodb", self.a.ddb_proxy), ("localstack", self.a.ls_proxy)):
            out[name] = requests.post(f"{url}/_faults", json={"rate": rate}, timeout=10).json()
        return out

    # -- the checks ----------------------------------------------------------------------------

    def settle(self) -> None:
        sqs = boto3.client("sqs", endpoint_url=os.environ["AWS_ENDPOINT_URL_SQS"], region_name="us-east-1")
        deadline = time.monotonic() + 240
        quiet = 0
        while quiet < 3:
            attrs = sqs.get_queue_attributes(
                QueueUrl=os.environ["UPLOAD_QUEUE_URL"],
                AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
            )["Attributes"]
            busy = int(attrs["ApproximateNumberOfMessages"]) + int(attrs["ApproximateNumberOfMessagesNotVisible"])
            quiet = quiet + 1 if busy == 0 else 0
            if time.monotonic() > deadline:
                self.violation(f"the upload queue did not drain ({busy} messages)")
                return
            time.sleep(2)

    def invoke(self, fn: str, event: dict[str, Any]) -> dict[str, Any]:
        path = REPO / ".local" / f"chaos-{fn}.json"
        path.write_text(json.dumps(event))
        out = subprocess.run([os.environ["GATEWAY_BIN"], "invoke", fn, str(path)], capture_output=True, text=True, timeout=600)
        if out.returncode != 0:
            self.violation(f"{fn} {event}: {out.stderr[-500:]}")
            return {}
        return json.loads(out.stdout)

    def check(self) -> None:
        self.settle()
        # Uploads settled: every hash whose bytes were PUT is ready, rejected or gone (swept).
        for h in list(self.uploaded):
            info = self.call("GET", f"/v1/media/{h}", "download", tries=3, absent_ok=True)
            if info and info.get("status") == "pending":
                self.violation(f"{h[:12]} is still pending after its upload")
        counts = self.invoke("sweep-orphans", {"mode": "reconcile", "fix": False})
        if counts.get("drift"):
            self.violation(f"reference counts drifted: {counts['drift'][:5]}")
        if counts.get("records_without_object"):
            self.violation(f"ready records without their object: {counts['records_without_object'][:5]}")
        # Every file a deck lists as ready downloads with its bytes.
        for deck in self.decks:
            cursor = None
            while True:
                page = self.call("POST", "/v1/downloads", "download", {"deck": deck, "cursor": cursor} if cursor else {"deck": deck})
                if not page:
                    break
                for f in page["files"]:
                    r = requests.get(f["url"], timeout=60)
                    if r.status_code != 200 or hashlib.sha256(r.content).hexdigest() != f["stored_hash"]:
                        self.violation(f"{deck}/{f['filename']}: referenced and listed, but its bytes are gone ({r.status_code})")
                cursor = page.get("next_cursor")
                if not cursor:
                    break
        # Postgres converges to DynamoDB.
        deadline = time.monotonic() + 120
        while True:
            mirror = self.invoke("sync-postgres", {"mode": "reconcile", "fix": False})
            diff = mirror.get("missing", 0) + mirror.get("extra", 0) + mirror.get("differing", 0)
            if diff == 0 or time.monotonic() > deadline:
                break
            time.sleep(3)
        if diff:
            self.violation(f"Postgres differs from DynamoDB: {mirror.get('examples', [])[:5]}")
        log = Path(self.a.gateway_log).read_text(errors="replace")
        if "panicked" in log:
            self.violation("the gateway panicked: " + log[log.index("panicked") - 200 :][:600])

    def main(self) -> int:
        (REPO / ".local" / "chaos-sweep.json").write_text(json.dumps({"mode": "sweep", "grace_seconds": 0}))
        self.faults(self.a.rate)
        threads = [threading.Thread(target=self.uploader, args=(i,)) for i in range(3)]
        threads += [threading.Thread(target=self.referencer, args=(i,)) for i in range(3)]
        threads += [threading.Thread(target=self.downloader), threading.Thread(target=self.sweeper)]
        for t in threads:
            t.start()
        time.sleep(self.a.minutes * 60)
        self.stop.set()
        for t in threads:
            t.join()
        injected = self.faults(0)
        self.check()
        summary = {
            "minutes": self.a.minutes,
            "rate": self.a.rate,
            "seed": self.a.seed,
            "uploaded": len(self.uploaded),
            "statuses": dict(sorted(self.statuses.items())),
            "injected": {k: v["injected"] for k, v in injected.items()},
            "requests_through_proxies": {k: v["requests"] for k, v in injected.items()},
            "violations": self.violations,
            "ok": not self.violations,
        }
        print(json.dumps(summary))
        return 0 if not self.violations else 1


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--api", required=True)
    p.add_argument("--ddb-proxy", required=True)
    p.add_argument("--ls-proxy", required=True)
    p.add_argument("--gateway-log", required=True)
    p.add_argument("--minutes", type=float, default=1.0)
    p.add_argument("--rate", type=float, default=0.25)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--sweep-every", type=float, default=15.0)
    sys.exit(Run(p.parse_args()).main())
