"""What the switch-over tests run against, beside the local stack: the stand-in AnkiCollab backend
(``backend-kit/examples/standin_backend.rs``, an axum server on the kit over AnkiCollab's tables in
the stack's Postgres) and a forwarding proxy in front of the media API that can answer with faults
(a 401 as from an expired token, a 503) and counts what went through."""

from __future__ import annotations

import http.server
import os
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional

import requests

from .stack import REPO, Stack

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding", "host"}


class FaultProxy:
    """Forwards every request to ``target``; ``fail(path, status, n)`` answers the next ``n``
    requests to ``path`` with ``status`` instead."""

    def __init__(self, target: str) -> None:
        self.target = target.rstrip("/")
        self.faults: dict[str, list[int]] = {}
        self.calls: dict[str, int] = {}
        self.lock = threading.Lock()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _any(self) -> None:
                path = self.path.split("?", 1)[0]
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with proxy.lock:
                    proxy.calls[path] = proxy.calls.get(path, 0) + 1
                    queued = proxy.faults.get(path) or []
                    fault = queued.pop(0) if queued else None
                if fault is not None:
                    data = b'{"error": {"code": "injected", "message": "fault injected by the test proxy"}}'
                    self.send_response(fault)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    if fault in (429, 503):
                        self.send_header("Retry-After", "0")
                    self.end_headers()
                    self.wfile.write(data)
                    return
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
                resp = requests.request(
                    self.command, proxy.target + self.path, headers=headers, data=body, timeout=120
                )
                self.send_response(resp.status_code)
                for k, v in resp.headers.items():
                    if k.lower() not in HOP_BY_HOP:
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(resp.content)))
                self.end_headers()
                self.wfile.write(resp.content)

            do_GET = do_POST = do_PUT = do_DELETE = _any

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def fail(self, path: str, status: int, n: int = 1) -> None:
        with self.lock:
            self.faults.setdefault(path, []).extend([status] * n)

    def clear(self) -> None:
        with self.lock:
            self.faults.clear()

    def count(self, path: str) -> int:
        with self.lock:
            return self.calls.get(path, 0)

    def close(self) -> None:
        self.server.shutdown()


def standin_binary() -> Path:
    target = os.environ.get("CARGO_TARGET_DIR") or str(Path.home() / ".cache" / "ankicollab-media" / "target")
    return Path(target) / "debug" / "examples" / "standin_backend"


@dataclass
class Backend:
    """The stand-in backend: AnkiCollab's login, the kit's two routes, SQL and events for the
    tests to play AnkiCollab's part."""

    url: str
    proxy: FaultProxy
    process: subprocess.Popen[str]
    users: dict[str, int] = field(default_factory=dict)

    def login(self, username: str) -> str:
        r = requests.post(f"{self.url}/login", json={"username": username}, timeout=30)
        r.raise_for_status()
        self.users[username] = int(r.json()["user_id"])
        return str(r.json()["token"])

    def sql(self, text: str) -> list[list[Optional[str]]]:
        r = requests.post(f"{self.url}/test/sql", json={"sql": text}, timeout=60)
        assert r.ok, r.text
        rows: list[list[Optional[str]]] = r.json()["rows"]
        return rows

    def one(self, text: str) -> Optional[str]:
        rows = self.sql(text)
        return rows[0][0] if rows else None

    def event(self, name: str, note_ids: Optional[list[int]] = None, deck_hash: str = "") -> dict[str, Any]:
        r = requests.post(
            f"{self.url}/test/event",
            json={"event": name, "note_ids": note_ids or [], "deck_hash": deck_hash},
            timeout=120,
        )
        assert r.ok, r.text
        answer: dict[str, Any] = r.json()
        return answer

    def calls(self, path: str) -> int:
        stats = requests.get(f"{self.url}/test/stats", timeout=10).json()["calls"]
        return int(stats.get(path, 0))


def start_backend(stack: Stack, *, user_token_ttl: int = 3600) -> Iterator[Backend]:
    binary = standin_binary()
    assert binary.exists(), f"{binary} is missing: build with `cargo build --workspace --examples`"
    proxy = FaultProxy(stack.api)
    env = dict(
        os.environ,
        DATABASE_URL=stack.env["DATABASE_URL"],
        MEDIA_API_URL=proxy.url,
        MEDIA_TOKEN_SECRET=stack.env["JWT_SECRET"],
        MEDIA_USER_TOKEN_TTL_SECS=str(user_token_ttl),
        REFERENCES_RETRY_BASE_MS="20",
    )
    process = subprocess.Popen(
        [str(binary)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line.startswith("listening on "):
        process.kill()
        raise RuntimeError(f"the stand-in backend did not start: {line}{process.stdout.read()}")
    # Keep reading its output so that it never blocks on a full pipe.
    threading.Thread(target=lambda: [None for _ in process.stdout or []], daemon=True).start()
    backend = Backend(line.split()[-1], proxy, process)
    try:
        yield backend
    finally:
        process.terminate()
        process.wait(10)
        proxy.close()


def unique(tag: str) -> str:
    return f"{tag}-{uuid.uuid4().hex[:10]}"


def wait_for(check: Any, what: str, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: still {value!r} after {timeout} s")
        time.sleep(0.3)
