"""Retries, backoff, Retry-After, the token's one refresh, and the error hierarchy, against a fake
HTTP layer."""

from __future__ import annotations

import email.utils
import http.server
import json
import threading
import time

import pytest
import requests
import responses

from ankicollab_media import errors
from ankicollab_media.transport import RetryPolicy, Stopper, Transport, parse_retry_after

from .conftest import Sleeps

API = "https://media.test"


def err(code: str, message: str = "m") -> str:
    return json.dumps({"error": {"code": code, "message": message}})


def transport(token: object = "t0", attempts: int = 6) -> Transport:
    return Transport(API, token, retry=RetryPolicy(attempts=attempts))  # type: ignore[arg-type]


@responses.activate
def test_5xx_is_retried_with_growing_jittered_backoff(sleeps: Sleeps) -> None:
    for _ in range(3):
        responses.add(responses.GET, f"{API}/v1/media/x", status=503, body=err("unavailable"))
    responses.add(responses.GET, f"{API}/v1/media/x", json={"status": "ready"})
    assert transport().api("GET", "/v1/media/x", stopper=Stopper()) == {"status": "ready"}
    assert len(responses.calls) == 4
    policy = RetryPolicy()
    for i, slept in enumerate(sleeps.calls):
        ceiling = min(policy.cap, policy.base * 2**i)
        assert ceiling / 2 <= slept <= ceiling, (i, slept)


def test_backoff_is_jittered_and_capped() -> None:
    p = RetryPolicy(base=1, cap=8)
    values = {round(p.backoff(2), 6) for _ in range(50)}
    assert len(values) > 10, "jitter spreads retries"
    assert all(2 <= v <= 4 for v in values)
    assert all(4 <= p.backoff(10) <= 8 for _ in range(50)), "capped"


@responses.activate
def test_5xx_retries_are_bounded(sleeps: Sleeps) -> None:
    responses.add(responses.GET, f"{API}/v1/media/x", status=502, body="<html>bad gateway</html>")
    with pytest.raises(errors.ServerError) as e:
        transport(attempts=4).api("GET", "/v1/media/x", stopper=Stopper())
    assert len(responses.calls) == 4
    assert len(sleeps.calls) == 3
    assert e.value.status == 502
    assert "HTTP 502" in str(e.value)


@responses.activate
def test_connection_errors_and_timeouts_are_retried_then_reported(sleeps: Sleeps) -> None:
    responses.add(responses.GET, f"{API}/v1/media/x", body=requests.ConnectionError("refused"))
    responses.add(responses.GET, f"{API}/v1/media/x", body=requests.ReadTimeout("slow"))
    responses.add(responses.GET, f"{API}/v1/media/x", json={"ok": 1})
    assert transport().api("GET", "/v1/media/x", stopper=Stopper()) == {"ok": 1}
    responses.replace(responses.GET, f"{API}/v1/media/x", body=requests.ConnectionError("refused"))
    with pytest.raises(errors.NetworkError):
        transport(attempts=3).api("GET", "/v1/media/x", stopper=Stopper())


@responses.activate
def test_429_waits_as_long_as_retry_after_says(sleeps: Sleeps) -> None:
    responses.add(
        responses.POST,
        f"{API}/v1/uploads",
        status=429,
        body=err("rate_limited"),
        headers={"Retry-After": "7"},
    )
    responses.add(responses.POST, f"{API}/v1/uploads", json={"files": []})
    assert transport().api("POST", "/v1/uploads", stopper=Stopper(), json_body={}) == {"files": []}
    assert sleeps.calls == [7.0]


@responses.activate
def test_429_with_a_retry_after_too_long_to_wait_fails_with_it(sleeps: Sleeps) -> None:
    responses.add(
        responses.POST,
        f"{API}/v1/uploads",
        status=429,
        body=err("rate_limited"),
        headers={"Retry-After": "3600"},
    )
    with pytest.raises(errors.RateLimited) as e:
        transport().api("POST", "/v1/uploads", stopper=Stopper(), json_body={})
    assert e.value.retry_after == 3600
    assert sleeps.calls == []


@responses.activate
def test_quota_exceeded_is_not_retried(sleeps: Sleeps) -> None:
    responses.add(
        responses.POST,
        f"{API}/v1/uploads",
        status=429,
        body=err("quota_exceeded", "daily upload allowance used"),
        headers={"Retry-After": "30"},
    )
    with pytest.raises(errors.QuotaExceeded) as e:
        transport().api("POST", "/v1/uploads", stopper=Stopper(), json_body={})
    assert (len(responses.calls), sleeps.calls) == (1, [])
    assert e.value.code == "quota_exceeded" and e.value.message == "daily upload allowance used"
    assert e.value.retry_after == 30


def test_retry_after_http_date() -> None:
    when = email.utils.formatdate(time.time() + 20, usegmt=True)
    got = parse_retry_after(when)
    assert got is not None and 18 <= got <= 21
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


@pytest.mark.parametrize(
    ("status", "code", "cls"),
    [
        (400, "bad_request", errors.BadRequest),
        (403, "forbidden", errors.ForbiddenError),
        (404, "not_found", errors.BadRequest),
        (413, "too_many_items", errors.BadRequest),
    ],
)
@responses.activate
def test_other_4xx_are_not_retried_and_map_to_errors(
    sleeps: Sleeps, status: int, code: str, cls: type[errors.MediaError]
) -> None:
    responses.add(responses.POST, f"{API}/v1/downloads", status=status, body=err(code, "files: at most 1000"))
    with pytest.raises(cls) as e:
        transport().api("POST", "/v1/downloads", stopper=Stopper(), json_body={})
    assert len(responses.calls) == 1 and sleeps.calls == []
    assert (e.value.status, e.value.code, e.value.message) == (status, code, "files: at most 1000")
    assert isinstance(e.value, errors.MediaError)


@responses.activate
def test_a_401_asks_the_token_source_once_more_and_retries_once() -> None:
    tokens = iter(["old", "new", "newer"])
    asked: list[str] = []

    def source() -> str:
        asked.append(t := next(tokens))
        return t

    responses.add(responses.GET, f"{API}/v1/media/x", status=401, body=err("unauthorized"))
    responses.add(responses.GET, f"{API}/v1/media/x", json={"ok": 1})
    t = transport(source)
    assert t.api("GET", "/v1/media/x", stopper=Stopper()) == {"ok": 1}
    assert asked == ["old", "new"]
    assert [c.request.headers["Authorization"] for c in responses.calls] == ["Bearer old", "Bearer new"]
    # The refreshed token is kept for later calls.
    responses.replace(responses.GET, f"{API}/v1/media/x", json={"ok": 2})
    assert t.api("GET", "/v1/media/x", stopper=Stopper()) == {"ok": 2}
    assert asked == ["old", "new"]


@responses.activate
def test_a_second_401_is_an_auth_error() -> None:
    calls = []

    def source() -> str:
        calls.append(1)
        return f"t{len(calls)}"

    responses.add(responses.GET, f"{API}/v1/media/x", status=401, body=err("unauthorized", "token expired"))
    with pytest.raises(errors.AuthError) as e:
        transport(source).api("GET", "/v1/media/x", stopper=Stopper())
    assert len(calls) == 2 and len(responses.calls) == 2
    assert e.value.message == "token expired"


@responses.activate
def test_a_fixed_token_cannot_be_refreshed() -> None:
    responses.add(responses.GET, f"{API}/v1/media/x", status=401, body=err("unauthorized"))
    with pytest.raises(errors.AuthError):
        transport("fixed").api("GET", "/v1/media/x", stopper=Stopper())
    assert len(responses.calls) == 1


def test_a_token_source_that_fails_is_an_auth_error() -> None:
    def source() -> str:
        raise RuntimeError("backend down")

    with pytest.raises(errors.AuthError, match="backend down"):
        transport(source).api("GET", "/v1/media/x", stopper=Stopper())


@responses.activate
def test_cancel_interrupts_a_backoff() -> None:
    responses.add(responses.GET, f"{API}/v1/media/x", status=503, headers={"Retry-After": "60"})
    started = time.monotonic()
    deadline = started + 0.3
    with pytest.raises(errors.Cancelled):
        transport().api("GET", "/v1/media/x", stopper=Stopper(lambda: time.monotonic() > deadline))
    assert time.monotonic() - started < 1.0


def test_proxies_from_the_environment_are_used(monkeypatch: pytest.MonkeyPatch, sleeps: Sleeps) -> None:
    """A real proxy on loopback: requests for the API go through it, unless NO_PROXY says not."""
    seen: list[str] = []

    class Proxy(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            seen.append(self.path)  # a proxy sees the absolute URL
            body = b'{"via": "proxy"}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Proxy)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{srv.server_port}")
        t = Transport("http://media.invalid", "t", retry=RetryPolicy(attempts=2))
        assert t.api("GET", "/v1/media/x", stopper=Stopper()) == {"via": "proxy"}
        assert seen == ["http://media.invalid/v1/media/x"]
        monkeypatch.setenv("NO_PROXY", "media.invalid")
        with pytest.raises(errors.NetworkError):
            Transport("http://media.invalid", "t", retry=RetryPolicy(attempts=2)).api(
                "GET", "/v1/media/x", stopper=Stopper()
            )
        assert len(seen) == 1
    finally:
        srv.shutdown()
