"""The local stack as the browser tests see it: its address, tokens minted with its secret, and
seeding a deck the way the plugin and the AnkiCollab backend would (upload, process, reference)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]


def _b64(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def read_env() -> dict[str, str]:
    path = Path(os.environ.get("ANKICOLLAB_STACK_ENV", REPO / ".local" / "stack.env"))
    env: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            k, v = line.split("=", 1)
            env[k] = v
    return env


@dataclass
class Stack:
    env: dict[str, str]

    @property
    def api(self) -> str:
        return self.env["API_URL"]

    @property
    def corpus(self) -> Path:
        return Path(self.env["CORPUS"])

    def token(
        self, scope: str, decks: Iterable[str] = (), *, sub: str = "browser-tests", exp: int | None = None
    ) -> str:
        head = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
        now = int(time.time())
        claims = {
            "sub": sub,
            "scope": scope,
            # Issued a minute before it expires when the test asks for a token expired already.
            "iat": min(now, (exp or now + 3600) - 60),
            "exp": exp or now + 3600,
            "iss": "ankicollab",
            "aud": "ankicollab-media",
            "decks": list(decks),
        }
        body = _b64(json.dumps(claims).encode())
        sig = hmac.new(self.env["JWT_SECRET"].encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
        return f"{head}.{body}.{_b64(sig)}"

    def raw(self, method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None):
        req = urllib.request.Request(url, method=method, data=body, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                return r.status, dict(r.headers), r.read()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read()

    def call(self, method: str, path: str, token: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        headers = {"authorization": f"Bearer {token}", "content-type": "application/json"}
        status, _, out = self.raw(method, self.api + path, data, headers)
        if status != 200:
            raise AssertionError(f"{method} {path}: {status} {out[:300]!r}")
        return json.loads(out)

    def page_url(self, deck: str, token: str | None = None) -> str:
        url = f"{self.api}/admin?deck={urllib.parse.quote(deck)}"
        return url + (f"#token={token}" if token else "")

    def seed(self, deck: str, notes: dict[str, dict[str, bytes | None]]) -> dict[str, str]:
        """Upload every file (None: referenced but never uploaded), wait until processed, then post
        the notes' references. Returns filename → hash."""
        upload = self.token("upload download")
        names: dict[str, str] = {}
        blobs: dict[str, bytes] = {}
        first: dict[str, str] = {}
        for media in notes.values():
            for name, data in media.items():
                if data is None:
                    names[name] = hashlib.sha256(name.encode()).hexdigest()
                else:
                    h = hashlib.sha256(data).hexdigest()
                    names[name] = h
                    blobs[h] = data
                    # The extension tells the server what type to expect.
                    first.setdefault(h, name)
        files = [{"hash": h, "size": len(b), "filename": first[h]} for h, b in blobs.items()]
        for start in range(0, len(files), 100):
            answer = self.call("POST", "/v1/uploads", upload, {"deck": deck, "files": files[start : start + 100]})
            for f, item in zip(files[start : start + 100], answer["files"], strict=False):
                if item["status"] == "upload":
                    status, _, out = self.raw("PUT", item["url"], blobs[f["hash"]], item["headers"])
                    assert status == 200, (status, out[:300])
                else:
                    assert item["status"] == "exists", item
        deadline = time.monotonic() + 180
        todo = set(blobs)
        while todo:
            for h in list(todo):
                info = self.call("GET", f"/v1/media/{h}", upload)
                if info["status"] == "ready":
                    todo.discard(h)
                assert info["status"] != "rejected", info
            assert time.monotonic() < deadline, f"{len(todo)} uploads not processed"
            if todo:
                time.sleep(0.3)
        body = {
            "deck": deck,
            "notes": [
                {"note_id": nid, "media": [{"filename": f, "hash": names[f]} for f in media]}
                for nid, media in notes.items()
            ],
        }
        self.call("POST", "/v1/references", self.token("references"), body)
        return names

    def listing(self, deck: str, q: str | None = None) -> list[dict[str, Any]]:
        """Every file the maintainer API lists (following cursors), optionally searched."""
        token = self.token("maintain", [deck])
        out: list[dict[str, Any]] = []
        cursor = None
        while True:
            params = {k: v for k, v in (("q", q), ("cursor", cursor)) if v is not None}
            qs = f"?{urllib.parse.urlencode(params)}" if params else ""
            page = self.call("GET", f"/v1/decks/{deck}/media{qs}", token)
            out += page["files"]
            cursor = page["next_cursor"]
            if cursor is None:
                return out

    def downloadable(self, deck: str) -> set[str]:
        """The filenames a subscriber's whole-deck download offers."""
        token = self.token("download")
        names: set[str] = set()
        cursor = None
        while True:
            page = self.call("POST", "/v1/downloads", token, {"deck": deck, "cursor": cursor})
            names |= {f["filename"] for f in page["files"]}
            cursor = page["next_cursor"]
            if cursor is None:
                return names
