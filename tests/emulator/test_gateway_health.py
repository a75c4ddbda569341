"""The local gateway's health answer names the backend that is unreachable; the API's own 503
names nothing internal. Needs the stack's environment (.local/stack.env, written by scripts/up)
and the built gateway; skipped without them unless ANKICOLLAB_REQUIRE_STACK is set."""
from __future__ import annotations

import hashlib
import json
import pathlib
from collections.abc import Iterator

import pytest
from stack import ENV, GATEWAY, free_port, gateway, get, token


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
