"""A fake media API and storage on top of ``responses``, for unit tests of the client's core."""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import requests
import responses

API = "https://media.test"
STORAGE = "https://storage.test"
BACKEND = "https://backend.test"


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


@dataclass
class FakeServer:
    """A deck of files (name → bytes served) and the uploads storage took."""

    files: dict[str, bytes] = field(default_factory=dict)
    #: name → the hash the deck references (the original's), when it differs from the served bytes'.
    originals: dict[str, str] = field(default_factory=dict)
    unavailable: dict[str, str] = field(default_factory=dict)
    page_size: int = 3
    stored: dict[str, bytes] = field(default_factory=dict)
    existing: set[str] = field(default_factory=set)
    rejected: dict[str, str] = field(default_factory=dict)
    #: Called with the name before each GET; may return (status, body) to answer instead.
    on_get: Optional[Callable[[str], Optional[tuple[int, bytes]]]] = None
    on_put: Optional[Callable[[str, requests.PreparedRequest], Optional[int]]] = None
    lock: threading.Lock = field(default_factory=threading.Lock)
    gets: list[str] = field(default_factory=list)
    puts: list[requests.PreparedRequest] = field(default_factory=list)
    api_calls: list[tuple[str, Any]] = field(default_factory=list)
    #: When set, the API answers 401 to any other bearer token (storage URLs need none).
    tokens: Optional[set[str]] = None

    def _refused(self, req: requests.PreparedRequest) -> Optional[tuple[int, dict[str, str], str]]:
        if self.tokens is None:
            return None
        bearer = str(req.headers.get("Authorization", "")).removeprefix("Bearer ")
        if bearer in self.tokens:
            return None
        return 401, {}, json.dumps({"error": {"code": "unauthorized", "message": "token expired"}})

    def install(self, rsps: responses.RequestsMock) -> None:
        self.rsps = rsps
        rsps.add_callback(responses.POST, f"{API}/v1/downloads", callback=self._downloads)
        rsps.add_callback(responses.POST, f"{API}/v1/uploads", callback=self._uploads)
        rsps.add_callback(responses.GET, re.compile(rf"{STORAGE}/media/.*"), callback=self._get)
        rsps.add_callback(responses.PUT, re.compile(rf"{STORAGE}/uploads/.*"), callback=self._put)

    def entry(self, name: str) -> dict[str, Any]:
        body = self.files[name]
        return {
            "filename": name,
            "hash": self.originals.get(name, sha(body)),
            "stored_hash": sha(body),
            "url": f"{STORAGE}/media/{name}?sig=1",
            "size": len(body),
            "content_type": "image/png",
            "expires_at": "2030-01-01T00:00:00Z",
        }

    def _downloads(self, req: requests.PreparedRequest) -> tuple[int, dict[str, str], str]:
        refused = self._refused(req)
        if refused:
            return refused
        body = json.loads(req.body or b"{}")
        with self.lock:
            self.api_calls.append(("downloads", body))
        if body.get("filenames") is not None:
            names = body["filenames"]
            files = [self.entry(n) for n in names if n in self.files]
            gone = [
                {"filename": n, "reason": self.unavailable.get(n, "unknown")}
                for n in names
                if n not in self.files
            ]
            return 200, {}, json.dumps({"files": files, "unavailable": gone, "next_cursor": None})
        everything = sorted([*self.files, *self.unavailable])
        start = int(body.get("cursor") or 0)
        page = everything[start : start + self.page_size]
        nxt = str(start + self.page_size) if start + self.page_size < len(everything) else None
        answer = {
            "files": [self.entry(n) for n in page if n in self.files],
            "unavailable": [
                {"filename": n, "reason": self.unavailable[n]} for n in page if n in self.unavailable
            ],
            "next_cursor": nxt,
        }
        return 200, {}, json.dumps(answer)

    def _get(self, req: requests.PreparedRequest) -> tuple[int, dict[str, str], bytes]:
        assert req.url is not None
        name = urllib.parse.unquote(req.url.split("/media/", 1)[1].split("?", 1)[0])
        with self.lock:
            self.gets.append(name)
        if self.on_get is not None:
            instead = self.on_get(name)
            if instead is not None:
                return instead[0], {}, instead[1]
        return 200, {"Content-Type": "image/png"}, self.files[name]

    def _uploads(self, req: requests.PreparedRequest) -> tuple[int, dict[str, str], str]:
        refused = self._refused(req)
        if refused:
            return refused
        body = json.loads(req.body or b"{}")
        with self.lock:
            self.api_calls.append(("uploads", body))
        out = []
        for f in body["files"]:
            h = f["hash"]
            if h in self.existing or h in self.stored:
                out.append({"hash": h, "status": "exists"})
            elif f["filename"] in self.rejected:
                out.append({"hash": h, "status": "rejected", "reason": self.rejected[f["filename"]]})
            else:
                out.append(
                    {
                        "hash": h,
                        "status": "upload",
                        "method": "PUT",
                        "url": f"{STORAGE}/uploads/{h}?X-Amz-Signature=abc",
                        "headers": {
                            "content-length": str(f["size"]),
                            "content-type": "application/octet-stream",
                            "x-amz-checksum-sha256": "b64",
                        },
                        "expires_at": "2030-01-01T00:00:00Z",
                    }
                )
        return 200, {}, json.dumps({"files": out})

    def _put(self, req: requests.PreparedRequest) -> tuple[int, dict[str, str], str]:
        assert req.url is not None
        h = req.url.split("/uploads/", 1)[1].split("?", 1)[0]
        body: object = req.body
        read = getattr(body, "read", None)
        data = read() if callable(read) else (body or b"")
        assert isinstance(data, bytes)
        with self.lock:
            self.puts.append(req)
        if self.on_put is not None:
            status = self.on_put(h, req)
            if status is not None:
                return (
                    status,
                    {},
                    "<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>",
                )
        if sha(data) != h:
            return 400, {}, "<Error><Code>BadDigest</Code><Message>digest mismatch</Message></Error>"
        with self.lock:
            self.stored[h] = data
        return 200, {}, ""


@dataclass
class FakeBackend:
    """AnkiCollab's backend as compat sees it: ``/media/token`` mints a media token for a valid
    user bearer token (and tells the fake API to take it), ``/media/references`` records what it
    is told."""

    server: FakeServer
    #: user bearer token → user id
    users: dict[str, str] = field(default_factory=dict)
    ttl: float = 3600.0
    #: Forced answers (status) of the two routes, when set.
    token_status: Optional[int] = None
    references_status: list[int] = field(default_factory=list)
    minted: list[tuple[str, str]] = field(default_factory=list)
    references: list[dict[str, Any]] = field(default_factory=list)
    bearers: list[str] = field(default_factory=list)

    def install(self, rsps: responses.RequestsMock) -> None:
        if self.server.tokens is None:
            self.server.tokens = set()
        rsps.add_callback(responses.POST, f"{BACKEND}/media/token", callback=self._token)
        rsps.add_callback(responses.POST, f"{BACKEND}/media/references", callback=self._references)

    def _user(self, req: requests.PreparedRequest) -> Optional[str]:
        bearer = str(req.headers.get("Authorization", "")).removeprefix("Bearer ")
        self.bearers.append(bearer)
        return self.users.get(bearer)

    def _token(self, req: requests.PreparedRequest) -> tuple[int, dict[str, str], str]:
        if self.token_status is not None:
            return self.token_status, {}, json.dumps({"error": "forced"})
        user = self._user(req)
        if user is None:
            return 401, {}, json.dumps({"error": {"code": "unauthorized", "message": "invalid token"}})
        token = f"media-{user}-{len(self.minted)}"
        self.minted.append((user, token))
        assert self.server.tokens is not None
        self.server.tokens.add(token)
        expires = time.time() + self.ttl
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(expires))
        return 200, {}, json.dumps({"token": token, "api_url": API, "expires_at": stamp})

    def _references(self, req: requests.PreparedRequest) -> tuple[int, dict[str, str], str]:
        if self.references_status:
            return self.references_status.pop(0), {}, json.dumps({"error": "forced"})
        user = self._user(req)
        if user is None:
            return 401, {}, json.dumps({"error": {"code": "unauthorized", "message": "invalid token"}})
        body = json.loads(req.body or b"{}")
        self.references.append({"user": user, **body})
        return 200, {}, json.dumps({"recorded": len(body.get("files", []))})

    def expire_all(self) -> None:
        """Every media token minted so far stops working (as if they all expired)."""
        assert self.server.tokens is not None
        self.server.tokens.clear()
