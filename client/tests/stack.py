"""The local stack (``make up``), as the client's end-to-end tests and the benchmark see it: its
address, tokens minted with its secret, and what the AnkiCollab backend would do (post
references)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import struct
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Optional

import pytest
import requests

REPO = Path(__file__).resolve().parents[2]


def stack_env() -> Optional[dict[str, str]]:
    path = Path(os.environ.get("ANKICOLLAB_STACK_ENV", REPO / ".local" / "stack.env"))
    if not path.is_file():
        return None
    env = {}
    for line in path.read_text().splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            k, v = line.split("=", 1)
            env[k] = v
    return env


def _b64(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


@dataclass
class Stack:
    env: dict[str, str]

    @property
    def api(self) -> str:
        return self.env["API_URL"]

    @property
    def corpus(self) -> Path:
        return Path(self.env.get("CORPUS") or REPO.parent / "shared" / "corpus")

    def token(
        self, scope: str, *, sub: str = "client-tests", decks: Iterable[str] = (), ttl: int = 3600
    ) -> str:
        head = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
        now = int(time.time())
        claims = {
            "sub": sub,
            "scope": scope,
            "iat": now,
            "exp": now + ttl,
            "iss": "ankicollab",
            "aud": "ankicollab-media",
            "decks": list(decks),
        }
        body = _b64(json.dumps(claims).encode())
        sig = hmac.new(self.env["JWT_SECRET"].encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
        return f"{head}.{body}.{_b64(sig)}"

    def call(self, method: str, path: str, scope: str, body: Any = None) -> Any:
        r = requests.request(
            method,
            self.api + path,
            json=body,
            headers={"Authorization": f"Bearer {self.token(scope)}"},
            timeout=120,
        )
        r.raise_for_status()
        return r.json()

    def post_references(self, deck: str, notes: dict[str, dict[str, str]]) -> None:
        """What the AnkiCollab backend does when a suggestion is accepted: note → {filename: hash}."""
        items = list(notes.items())
        for start in range(0, len(items), 100):
            chunk = [
                {"note_id": nid, "media": [{"filename": f, "hash": h} for f, h in media.items()]}
                for nid, media in items[start : start + 100]
            ]
            self.call("POST", "/v1/references", "references", {"deck": deck, "notes": chunk})

    def wait_ready(self, hashes: Iterable[str], timeout: float = 300) -> dict[str, dict[str, Any]]:
        """Wait until processing has settled every hash (ready or rejected)."""
        out: dict[str, dict[str, Any]] = {}
        todo = set(hashes)
        deadline = time.monotonic() + timeout
        while todo:
            for h in list(todo):
                info = self.call("GET", f"/v1/media/{h}", "upload")
                if info["status"] in ("ready", "rejected"):
                    out[h] = info
                    todo.discard(h)
            if todo:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{len(todo)} uploads still not processed")
                time.sleep(0.3)
        return out

    def s3(self) -> Any:
        """boto3's S3 client at LocalStack, for what a test does behind the API's back."""
        import boto3  # noqa: PLC0415 (only the tests that tamper with storage need it)

        try:
            # aqt injects truststore into ssl, which sends botocore's context setup into a loop.
            import truststore  # noqa: PLC0415

            truststore.extract_from_ssl()
        except ImportError:
            pass
        return boto3.client(
            "s3",
            endpoint_url=self.env["AWS_ENDPOINT_URL_S3"],
            region_name="us-east-1",
            aws_access_key_id="test",
            aws_secret_access_key="test",
        )


def require_stack() -> Stack:
    env = stack_env()
    if env is None or not _healthy(env):
        if os.environ.get("ANKICOLLAB_REQUIRE_STACK") == "1":
            pytest.fail("the local stack is not up (make up), and this run requires it")
        pytest.skip("the local stack is not up (make up)")
    return Stack(env)


def _healthy(env: dict[str, str]) -> bool:
    try:
        return requests.get(env["API_URL"] + "/local/health", timeout=5).ok
    except requests.RequestException:
        return False


def tiny_png(seed: int, size: int = 8) -> bytes:
    """A small, valid, distinct PNG: what many deck images are, without the corpus' size."""
    rows = b""
    for y in range(size):
        row = bytes([0])
        for x in range(size):
            v = (seed * 2654435761 + y * 97 + x * 31) & 0xFFFFFF
            row += bytes([v & 0xFF, (v >> 8) & 0xFF, (v >> 16) & 0xFF])
        rows += row

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    ihdr = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )
