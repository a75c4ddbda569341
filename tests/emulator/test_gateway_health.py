"""The local gateway's health answer names the backend that is unreachable; the API's own 503
names nothing internal. Needs the stack's environment (.local/stack.env, written by scripts/up)
and the built gateway; skipped without them unless ANKICOLLAB_REQUIRE_STACK is set."""
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


def token() -> str:
    enc = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()  # noqa: E731
    head = enc(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = enc(json.dumps({"sub": "health", "scope": "upload download", "exp": int(time.time()) + 600}).encode())
    sig = hmac.new(ENV["JWT_SECRET"].encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{enc(sig)}"


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=30) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def gateway(**overrides: str) -> Iterator[str]:
    port = free_port()
    # Its own address, and a queue that does not exist: this gateway must not take the stack's
    # upload events.
    env = {**os.environ, **ENV, "GATEWAY_ADDR": f"127.0.0.1:{port}",
           "UPLOAD_QUEUE_URL": ENV["UPLOAD_QUEUE_URL"] + "-absent-for-health-test", **overrides}
    proc = subprocess.Popen([str(GATEWAY), "serve"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(url + "/local/health", timeout=5)
                break
            except urllib.error.HTTPError:
                break
            except OSError:
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture
def healthy_gateway() -> Iterator[str]:
    yield from gateway()


@pytest.fixture
def gateway_without_dynamodb() -> Iterator[str]:
    yield from gateway(AWS_ENDPOINT_URL_DYNAMODB=f"http://127.0.0.1:{free_port()}",
                       AWS_ENDPOINT_URL_DYNAMODB_STREAMS=f"http://127.0.0.1:{free_port()}")


def test_a_healthy_gateway_says_so_and_who_it_is(healthy_gateway: str) -> None:
    status, body = get(healthy_gateway + "/local/health")
    assert status == 200, body
    assert body["status"] == "ok" and body["unreachable"] == []
    assert body["backends"] == {"s3": "ok", "dynamodb": "ok", "postgres": "ok"}
    assert body["secret"] == hashlib.sha256(ENV["JWT_SECRET"].encode()).hexdigest()[:16]
    assert pathlib.Path(body["binary"]).resolve() == GATEWAY.resolve()
    assert isinstance(body["pid"], int) and isinstance(body["binary_mtime"], int)


def test_an_unreachable_dynamodb_is_named_by_health_but_not_by_the_api(gateway_without_dynamodb: str) -> None:
    status, body = get(gateway_without_dynamodb + "/local/health")
    assert status == 503, body
    assert body["unreachable"] == ["dynamodb"]
    assert body["backends"]["s3"] == "ok" and body["backends"]["postgres"] == "ok"
    assert body["backends"]["dynamodb"] != "ok"
    # The API answers as it would on AWS: busy, retry; nothing about which store.
    status, body = get(gateway_without_dynamodb + "/v1/media/" + "ab" * 32, {"Authorization": "Bearer " + token()})
    assert status == 503, body
    assert body["error"]["code"] == "unavailable"
    assert "dynamo" not in json.dumps(body).lower()
