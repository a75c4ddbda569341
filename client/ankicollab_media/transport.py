"""HTTP for the client: one connection pool per worker thread, bounded retries with backoff and
jitter, ``Retry-After``, the token (refreshed once after a 401), and cancellation that also
interrupts a transfer blocked on the network.

Only this module knows ``requests``' exceptions; everything above it sees ``MediaError``s and
plain responses.
"""

from __future__ import annotations

import email.utils
import logging
import random
import socket
import threading
import time
import urllib.parse
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping, Optional, Union

import requests
from requests.adapters import HTTPAdapter

from . import __version__
from .errors import AuthError, Cancelled, MediaError, NetworkError, QuotaExceeded, error_for

log = logging.getLogger("ankicollab_media")

#: A token, or a zero-argument callable that returns the current one (a ``MediaToken`` if it
#: knows when it expires).
TokenSource = Union[str, Callable[[], str]]

USER_AGENT = f"ankicollab-media/{__version__} (+https://ankicollab.com)"
#: (connect, read) seconds. A read timeout applies to each wait for bytes, not to a whole body.
API_TIMEOUT = (10.0, 60.0)
STORAGE_TIMEOUT = (10.0, 30.0)


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to retry 5xx, 429, connection errors and timeouts."""

    #: Tries in all, the first included.
    attempts: int = 6
    #: The first backoff; each later one doubles, up to ``cap``.
    base: float = 0.5
    cap: float = 20.0
    #: A ``Retry-After`` longer than this is not waited for: the call fails with it instead.
    max_retry_after: float = 120.0

    def backoff(self, retry: int) -> float:
        """Seconds before retry number ``retry`` (0-based): exponential with "equal jitter", so
        that many clients that failed together do not come back together."""
        ceiling = min(self.cap, self.base * (2.0**retry))
        return ceiling / 2 + random.uniform(0, ceiling / 2)


def parse_retry_after(value: Optional[str]) -> Optional[float]:
    """Seconds from a ``Retry-After`` header: delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when.timestamp() - time.time())


class Stopper:
    """Cancellation shared by a call's threads.

    The caller's ``cancel()`` is polled only by the thread that started the call (it may be
    something like Anki's progress dialog, which is not ours to call from everywhere); workers
    look at an event. Responses that are streaming are registered, so that a stop also unblocks
    a worker waiting on a stalled connection.
    """

    def __init__(self, cancel: Optional[Callable[[], bool]] = None) -> None:
        self._cancel = cancel
        self._event = threading.Event()
        self._owner = threading.get_ident()
        self._lock = threading.Lock()
        self._streams: set[requests.Response] = set()

    def stopped(self) -> bool:
        if self._event.is_set():
            return True
        if self._cancel is not None and threading.get_ident() == self._owner:
            try:
                wanted = bool(self._cancel())
            except Exception:
                log.exception("cancel() raised; treating it as a request to stop")
                wanted = True
            if wanted:
                self.stop()
                return True
        return False

    def stop(self) -> None:
        self._event.set()
        with self._lock:
            streams = list(self._streams)
        for resp in streams:
            _abort(resp)

    def sleep(self, seconds: float) -> bool:
        """Sleep, waking at least every 0.1 s to look for a stop. False if stopped."""
        end = time.monotonic() + seconds
        while True:
            if self.stopped():
                return False
            left = end - time.monotonic()
            if left <= 0:
                return True
            self._event.wait(min(0.1, left))

    def track(self, resp: requests.Response) -> None:
        with self._lock:
            self._streams.add(resp)
        if self._event.is_set():
            _abort(resp)

    def untrack(self, resp: requests.Response) -> None:
        with self._lock:
            self._streams.discard(resp)


def _abort(resp: requests.Response) -> None:
    """Unblock a thread reading this response: shut its socket down (closing alone does not
    wake a blocked ``recv`` on every platform)."""
    raw = resp.raw
    shutdown = getattr(raw, "shutdown", None)  # urllib3 >= 2.3
    try:
        if callable(shutdown):
            shutdown()
            return
        conn = getattr(raw, "_connection", None) or getattr(raw, "connection", None)
        sock = getattr(conn, "sock", None)
        if sock is not None:
            sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    except Exception:
        log.debug("could not abort a response", exc_info=True)


class MediaToken(str):
    """A token that knows when it expires (seconds since the epoch): a source may return one, and
    it is then asked for a fresh token shortly before that, not only after a 401."""

    expires_at: Optional[float]

    def __new__(cls, value: str, expires_at: Optional[float] = None) -> MediaToken:
        token = super().__new__(cls, value)
        token.expires_at = expires_at
        return token


#: A token is renewed this long before it expires (or a tenth of its life, if that is shorter).
RENEW_BEFORE = 60.0


class Token:
    """The current bearer token. A callable source is asked at first use, once more after a 401,
    and shortly before the token expires when it says when (``MediaToken``); a plain string
    cannot be refreshed."""

    def __init__(self, source: TokenSource) -> None:
        if not (isinstance(source, str) or callable(source)):
            raise TypeError("token must be a string or a zero-argument callable returning one")
        self._source = source
        self._lock = threading.Lock()
        self._value: Optional[str] = source if isinstance(source, str) else None
        self._renew_at: Optional[float] = None
        self._generation = 0

    def get(self) -> tuple[str, int]:
        with self._lock:
            if self._value is None or (self._renew_at is not None and time.time() >= self._renew_at):
                self._value = self._fetch()
                self._generation += 1
            return self._value, self._generation

    def refresh(self, seen: int) -> bool:
        """Ask the source again, unless another thread already did since ``seen``. False when
        the source cannot give a new token."""
        if isinstance(self._source, str):
            return False
        with self._lock:
            if self._generation == seen:
                self._value = self._fetch()
                self._generation += 1
            return True

    def _fetch(self) -> str:
        assert not isinstance(self._source, str)
        try:
            value = self._source()
        except MediaError:
            raise
        except Exception as e:
            raise AuthError(f"the token source failed: {e}") from e
        if not isinstance(value, str) or not value:
            raise AuthError("the token source returned no token")
        expires_at = getattr(value, "expires_at", None)
        self._renew_at = None
        if isinstance(expires_at, (int, float)):
            life = expires_at - time.time()
            self._renew_at = expires_at - min(RENEW_BEFORE, max(life, 0) / 10)
        return value


class Transport:
    """Sessions (one per thread: ``requests.Session`` is not meant to be shared), retries and
    the API's JSON calls."""

    def __init__(
        self,
        api_url: str,
        token: TokenSource,
        *,
        pool_size: int = 8,
        retry: Optional[RetryPolicy] = None,
        session_factory: Optional[Callable[[], requests.Session]] = None,
    ) -> None:
        self.api_url = api_url.rstrip("/")
        self.token = Token(token)
        self.retry = retry or RetryPolicy()
        self._pool_size = max(1, pool_size)
        self._session_factory = session_factory
        self._local = threading.local()
        self._sessions: list[requests.Session] = []
        self._sessions_lock = threading.Lock()
        self._env: dict[tuple[str, str], dict[str, Any]] = {}

    # -- sessions ---------------------------------------------------------------------------

    def session(self) -> requests.Session:
        s: Optional[requests.Session] = getattr(self._local, "session", None)
        if s is None:
            if self._session_factory is not None:
                s = self._session_factory()
            else:
                s = requests.Session()
                adapter = HTTPAdapter(pool_connections=4, pool_maxsize=self._pool_size, max_retries=0)
                s.mount("https://", adapter)
                s.mount("http://", adapter)
            # The environment's proxies and CA bundle are read once per host (_environment), not
            # on every request as trust_env does (it walks os.environ each time: a third of the
            # CPU of a small download). Nor may a ~/.netrc entry replace the API's token.
            s.trust_env = False
            s.headers["User-Agent"] = USER_AGENT
            # The API gzips large answers (a 10,000-file deck's download listing is ~6 MB of JSON
            # and under 1.5 MB gzipped); requests decodes them. Asked for explicitly, whatever
            # the session's defaults.
            s.headers["Accept-Encoding"] = "gzip"
            self._local.session = s
            with self._sessions_lock:
                self._sessions.append(s)
        return s

    def close(self) -> None:
        with self._sessions_lock:
            sessions, self._sessions = self._sessions, []
        for s in sessions:
            s.close()
        self._local = threading.local()

    def _environment(self, url: str) -> dict[str, Any]:
        """``proxies`` and ``verify`` for a URL from HTTP(S)_PROXY, NO_PROXY and
        REQUESTS_CA_BUNDLE, as Anki's own sync honours them; cached per scheme and host."""
        parts = urllib.parse.urlsplit(url)
        key = (parts.scheme, parts.netloc)
        found = self._env.get(key)
        if found is None:
            with requests.Session() as probe:
                settings = probe.merge_environment_settings(url, {}, None, None, None)
            found = {"proxies": settings.get("proxies") or {}, "verify": settings.get("verify", True)}
            self._env[key] = found
        return found

    # -- retries ----------------------------------------------------------------------------

    def send(
        self,
        method: str,
        url: str,
        *,
        stopper: Stopper,
        headers: Optional[Mapping[str, str]] = None,
        body: Optional[Callable[[], Any]] = None,
        json_body: Any = None,
        stream: bool = False,
        timeout: tuple[float, float] = STORAGE_TIMEOUT,
        what: str = "",
    ) -> requests.Response:
        """One request with bounded retries of connection errors, timeouts, 5xx and 429. Other
        answers (2xx, 3xx, 4xx) are returned as they are. ``body`` is a factory so that a retry
        sends the bytes again from the start (a file object is opened anew)."""
        what = what or f"{method} {url.split('?', 1)[0]}"
        last_error: Optional[MediaError] = None
        for attempt in range(self.retry.attempts):
            if stopper.stopped():
                raise Cancelled("cancelled")
            data = body() if body is not None else None
            try:
                resp = self.session().request(
                    method,
                    url,
                    headers=dict(headers or {}),
                    data=data,
                    json=json_body,
                    stream=stream,
                    timeout=timeout,
                    allow_redirects=False,
                    **self._environment(url),
                )
            except (requests.ConnectionError, requests.Timeout) as e:
                if stopper.stopped():
                    raise Cancelled("cancelled") from e
                last_error = NetworkError(f"{what}: {_describe(e)}")
                delay = self.retry.backoff(attempt)
            else:
                if resp.status_code < 500 and resp.status_code != 429:
                    return resp
                retry_after = parse_retry_after(resp.headers.get("Retry-After"))
                if resp.status_code == 429:
                    err = error_for(429, _json_or_none(resp), retry_after=retry_after)
                    if isinstance(err, QuotaExceeded):
                        return resp  # a daily allowance does not come back in seconds
                    if retry_after is not None and retry_after > self.retry.max_retry_after:
                        return resp
                    delay = retry_after if retry_after is not None else self.retry.backoff(attempt)
                else:
                    delay = retry_after if retry_after is not None else self.retry.backoff(attempt)
                    delay = min(delay, self.retry.max_retry_after)
                if attempt == self.retry.attempts - 1:
                    return resp
                resp.close()
                last_error = None
            finally:
                close = getattr(data, "close", None)
                if callable(close):
                    close()
            if attempt < self.retry.attempts - 1:
                log.info("%s: retrying in %.1f s (%s)", what, delay, last_error or "server busy")
                if not stopper.sleep(delay):
                    raise Cancelled("cancelled")
        assert last_error is not None
        raise last_error

    # -- the API ----------------------------------------------------------------------------

    def api(self, method: str, path: str, *, stopper: Stopper, json_body: Any = None) -> Any:
        """A call to the media API: JSON in and out, the bearer token, one refresh after a
        401. Raises the ``MediaError`` for any answer that is not 2xx."""
        url = self.api_url + path
        refreshed = False
        while True:
            token, generation = self.token.get()
            headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
            resp = self.send(
                method,
                url,
                stopper=stopper,
                headers=headers,
                json_body=json_body,
                timeout=API_TIMEOUT,
                what=path,
            )
            with resp:
                if resp.status_code == 401 and not refreshed and self.token.refresh(generation):
                    refreshed = True
                    log.info("%s: token refused; asking for a fresh one", path)
                    continue
                body = _json_or_none(resp)
                if 200 <= resp.status_code < 300:
                    if body is None:
                        raise MediaError(f"{path}: the answer is not JSON", code="bad_answer")
                    return body
                raise error_for(
                    resp.status_code, body, retry_after=parse_retry_after(resp.headers.get("Retry-After"))
                )


def _json_or_none(resp: requests.Response) -> Any:
    try:
        return resp.json()
    except ValueError:
        return None


def _describe(e: Exception) -> str:
    if isinstance(e, requests.Timeout):
        return "timed out"
    if isinstance(e, requests.exceptions.ProxyError):
        return "the proxy refused the connection"
    if isinstance(e, requests.exceptions.SSLError):
        return "TLS failed"
    return "connection failed"


def iter_body(resp: requests.Response, stopper: Stopper, chunk: int = 256 * 1024) -> Iterator[bytes]:
    """A response's body in chunks, interruptible by ``stopper``. Raises ``Cancelled`` when
    stopped and ``NetworkError`` when the connection breaks mid-body."""
    stopper.track(resp)
    try:
        for part in resp.iter_content(chunk_size=chunk):
            if stopper.stopped():
                raise Cancelled("cancelled")
            yield part
    except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as e:
        if stopper.stopped():
            raise Cancelled("cancelled") from e
        raise NetworkError(f"the download broke off: {_describe(e)}") from e
    except Exception as e:
        # urllib3 may raise its own errors once the socket is shut down under it.
        if stopper.stopped() and not isinstance(e, Cancelled):
            raise Cancelled("cancelled") from e
        raise
    finally:
        stopper.untrack(resp)
