"""Shared fixtures. Tests marked ``stack`` talk to the local stack (``make up``) and are skipped
when it is not up, unless ANKICOLLAB_REQUIRE_STACK=1 (as ``make test`` sets) makes that a failure."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest
import responses

from ankicollab_media import transport

from .fakes import FakeServer

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _no_proxies(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)


class Sleeps:
    """Records what the client would have slept, without sleeping."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    def __call__(self, stopper: transport.Stopper, seconds: float) -> bool:
        self.calls.append(seconds)
        return not stopper.stopped()


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> Iterator[Sleeps]:
    s = Sleeps()
    monkeypatch.setattr(transport.Stopper, "sleep", lambda self, seconds: s(self, seconds))
    yield s


@pytest.fixture
def server() -> Iterator[FakeServer]:
    """The fake API and storage (`fakes.FakeServer`), answering every request of the test."""
    s = FakeServer()
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        s.install(rsps)
        yield s


@pytest.fixture
def cache_path(tmp_path: Path) -> Path:
    return tmp_path / "cache" / "hashes.sqlite3"
