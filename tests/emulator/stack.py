"""What the tests of this folder that need the running stack share: its environment, tokens, and
a second gateway of their own with some settings changed. Importing it skips the importing module
when the stack is not up (unless ANKICOLLAB_REQUIRE_STACK is set)."""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import pathlib
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
STACK_ENV = ROOT / ".local" / "stack.env"
TARGET = pathlib.Path(os.environ.get("CARGO_TARGET_DIR", pathlib.Path.home() / ".cache/ankicollab-media/target"))
GATEWAY = TARGET / "debug" / "local-gateway"

if not (STACK_ENV.exists() and GATEWAY.exists()):
    if os.environ.get("ANKICOLLAB_REQUIRE_STACK"):
        raise RuntimeError("the local stack is not up (scripts/up) or the gateway is not built")
    pytest.skip("the local stack is not up", allow_module_level=True)

ENV = dict(line.split("=", 1) for line in STACK_ENV.read_text().splitlines() if "=" in line and not line.startswith("#"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def token(scope: str = "upload download", sub: str = "health", decks: list[str] | None = None) -> str:
    enc = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()  # noqa: E731
    head = enc(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    now = int(time.time())
    claims: dict[str, object] = {"sub": sub, "scope": scope, "iat": now, "exp": now + 600, "iss": "ankicollab", "aud": "ankicollab-media"}
    if decks is not None:
        claims["decks"] = decks
    body = enc(json.dumps(claims).encode())
    sig = hmac.new(ENV["JWT_SECRET"].encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{enc(sig)}"


def request(method: str, url: str, body: object | None = None, headers: dict[str, str] | None = None) -> tuple[int, dict]:
    data = None if body is None else json.dumps(body).encode()
    hdrs = {**({"Content-Type": "application/json"} if data is not None else {}), **(headers or {})}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=data, method=method, headers=hdrs), timeout=30) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict]:
    return request("GET", url, headers=headers)


def wait_until_listening(url: str) -> None:
    for _ in range(100):
        try:
            urllib.request.urlopen(url, timeout=5)
            return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.1)


def gateway(**overrides: str) -> Iterator[str]:
    port = free_port()
    # Its own address, and a queue that does not exist: this gateway must not take the stack's
    # upload events.
    env = {**os.environ, **ENV, "GATEWAY_ADDR": f"127.0.0.1:{port}",
           "UPLOAD_QUEUE_URL": ENV["UPLOAD_QUEUE_URL"] + "-absent-for-a-second-gateway", **overrides}
    proc = subprocess.Popen([str(GATEWAY), "serve"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_listening(url + "/local/health")
        yield url
    finally:
        proc.terminate()
        proc.wait(10)
