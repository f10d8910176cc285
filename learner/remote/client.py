"""HTTP to an OpenAI-compatible server: JSON calls, server-sent event streams,
retries while it is busy, and every failure turned into one BackendError.

The API key is read from the environment variable the settings name, at
each request, and sent only to the configured server: redirects are not
followed, so it cannot be carried to another host.
"""

from __future__ import annotations

import email.utils
import json
import math
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

import httpx

from rlchat.learner.dialogue import one_line, valid_unicode
from rlchat.learner.errors import (
    BACKEND_AUTH,
    BACKEND_BUSY,
    BACKEND_ERROR,
    BACKEND_UNREACHABLE,
    BackendError,
    ErrorCode,
    GenerationCancelled,
)
from rlchat.learner.remote.deadline import DeadlinePassed, guarded, guarded_transport

BUSY = (429, 503)
CONNECT_SECONDS = 5.0  # a server that does not accept within this is down
# Busy servers: at most this many attempts in one deadline, the waits between
# them at least BACKOFF_FLOOR s, doubling, whatever Retry-After says.
MAX_ATTEMPTS = 4
BACKOFF_FLOOR = 0.5
MAX_BODY_BYTES = 16 << 20  # a JSON answer (a model list, a token count) is far smaller
ERROR_BODY_BYTES = 64 << 10  # enough of an error page to quote its words


class Refused(Exception):
    """The server answered with an HTTP error status (after busy retries)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


def normalize_base_url(url: str) -> str:
    """The base URL the OpenAI paths hang off: as given, without a trailing
    slash, with /v1 added when it names only a host."""
    url = url.strip().rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise BackendError(BACKEND_ERROR, f"The base URL {url!r} is not an http(s) URL; "
                           "pass one like --base-url http://127.0.0.1:8080/v1.")
    return url if parts.path not in ("", "/") else url + "/v1"


def _error_text(body: bytes, reason: str) -> str:
    """The server's own words for a refusal, short."""
    try:
        answer = json.loads(body)
    except (ValueError, RecursionError):
        return body.decode("utf-8", "replace").strip()[:300] or reason
    error = answer.get("error", answer) if isinstance(answer, dict) else answer
    if isinstance(error, dict):
        error = error.get("message") or error.get("detail") or error
    return str(error)[:300]


def _retry_after(response: httpx.Response) -> float | None:
    """Seconds the server asks to wait (a number or an HTTP date), None where
    it asks nothing that makes sense."""
    value = response.headers.get("retry-after", "").strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
            seconds = when.timestamp() - time.time()
        except (TypeError, ValueError, OverflowError, IndexError):
            return None
    return seconds if math.isfinite(seconds) and seconds > 0 else None


def _read(response: httpx.Response, limit: int) -> bytes:
    """The body, decoded as its Content-Encoding says, up to `limit` bytes
    (the rest is not read)."""
    parts, size = [], 0
    for chunk in response.iter_bytes():
        parts.append(chunk)
        size += len(chunk)
        if size > limit:
            break
    return b"".join(parts)


class ServerClient:
    """One server: its base URL (the /v1 paths), its root (the server's own
    paths such as /tokenize and /props), the key's variable and a timeout,
    which is the total deadline of each request (a turn's or a probe's
    requests share one: see deadline.py)."""

    def __init__(self, base_url: str, *, api_key_env: str = "", timeout: float = 60.0) -> None:
        self.base_url = normalize_base_url(base_url)
        parts = urlsplit(self.base_url)
        path = parts.path[:-3] if parts.path.endswith("/v1") else parts.path
        self.root = f"{parts.scheme}://{parts.netloc}{path}"
        self.host = parts.netloc
        self.api_key_env = api_key_env
        self.timeout = timeout
        limits = httpx.Limits(max_connections=64, max_keepalive_connections=32)
        self._http = httpx.Client(
            timeout=httpx.Timeout(timeout, connect=min(timeout, CONNECT_SECONDS)),
            follow_redirects=False, transport=guarded_transport(limits),
        )

    def close(self) -> None:
        self._http.close()

    def key(self) -> str:
        """The API key's value now ("" without one): read at each use, never kept."""
        return os.environ.get(self.api_key_env, "").strip() if self.api_key_env else ""

    def mask(self, text: str) -> str:
        """Text from the server with the key's value hidden: a server may echo
        it, and nothing rlchat shows or keeps may hold it."""
        key = self.key()
        return text.replace(key, "***") if key and key in text else text

    def _headers(self) -> dict[str, str]:
        if not self.api_key_env:
            return {}
        key = self.key()
        if not key:
            raise BackendError(BACKEND_AUTH, f"The environment variable {self.api_key_env} "
                               "(--api-key-env) holds no API key; set it and try again.")
        return {"Authorization": f"Bearer {key}"}

    def _url(self, path: str, root: bool) -> str:
        return (self.root if root else self.base_url) + path

    def unreachable(self, exc: Exception, during: str = "") -> BackendError:
        why = type(exc).__name__ if not str(exc) else str(exc).splitlines()[0][:120]
        where = f" {during}" if during else ""
        return BackendError(BACKEND_UNREACHABLE, self.mask(
            f"The model server at {self.base_url} cannot be reached{where} ({why}); start it "
            "or check --base-url, then send again."))

    def too_slow(self) -> BackendError:
        return BackendError(BACKEND_UNREACHABLE, f"The model server at {self.base_url} did "
                            f"not finish answering within --request-timeout ({self.timeout:g} "
                            "s); it may be slow rather than down: raise --request-timeout, "
                            "or send again.")

    def busy(self, status: int, attempts: int, asked: float | None = None) -> BackendError:
        wait = f"; it asks to wait {asked:.0f} s more" if asked else ""
        return BackendError(BACKEND_BUSY, f"The server at {self.host} stayed busy ({status}) "
                            f"after {attempts} attempt(s){wait}; try again later, or raise "
                            "--request-timeout.")

    def _failure(self, exc: Exception, during: str = "") -> BackendError:
        """The one BackendError for whatever went wrong on the wire."""
        if isinstance(exc, DeadlinePassed | httpx.ReadTimeout | httpx.WriteTimeout
                      | httpx.PoolTimeout):
            return self.too_slow()
        if isinstance(exc, httpx.DecodingError):
            return BackendError(BACKEND_ERROR, f"The server at {self.host} sent a body that "
                                "does not decode as its Content-Encoding says.")
        if isinstance(exc, httpx.TransportError | httpx.StreamError):
            return self.unreachable(exc, during)
        return BackendError(BACKEND_ERROR, self.mask(
            f"The server at {self.host} answered in a way rlchat does not understand "
            f"({type(exc).__name__}: {str(exc)[:120]})."))

    def _redirect(self, response: httpx.Response, path: str) -> BackendError:
        where = self.mask(response.headers.get("location", "").strip()[:200]) or "nowhere"
        return BackendError(BACKEND_ERROR, f"The server at {self.host} redirects {path} to "
                            f"{where} ({response.status_code}); rlchat follows no redirect, so "
                            "that the key goes only to --base-url: pass the address it names "
                            "as --base-url if you trust it.")

    @contextmanager
    def _open(self, method: str, path: str, body: Any, *, root: bool,
              cancel: threading.Event | None = None) -> Iterator[httpx.Response]:
        """A streamed response with a success status, within the deadline;
        busy answers retried with backoff; Refused for an error status."""
        with guarded(self.timeout, cancel) as guard:
            attempt = 0
            while True:
                attempt += 1
                request = self._http.build_request(method, self._url(path, root), json=body,
                                                   headers=self._headers())
                try:
                    response = self._http.send(request, stream=True)
                except (httpx.HTTPError, DeadlinePassed) as exc:
                    raise self._failure(exc) from exc
                try:
                    status = response.status_code
                    if status < 300:
                        yield response
                        return
                    if status < 400:
                        raise self._redirect(response, path)
                    try:
                        text = _error_text(_read(response, ERROR_BODY_BYTES),
                                           response.reason_phrase)
                    except (httpx.HTTPError, DeadlinePassed) as exc:
                        raise self._failure(exc) from exc
                    if status not in BUSY:
                        raise Refused(status, self.mask(one_line(valid_unicode(text))))
                    asked = _retry_after(response)
                    wait = max(BACKOFF_FLOOR * 2 ** (attempt - 1), asked or 0.0)
                    if attempt >= MAX_ATTEMPTS or wait >= guard.left():
                        raise self.busy(status, attempt, asked if asked and
                                        asked >= guard.left() else None)
                finally:
                    response.close()
                if guard.cancel is not None:
                    if guard.cancel.wait(wait):
                        raise GenerationCancelled(ErrorCode.CANCELLED, "Cancelled.")
                else:
                    time.sleep(wait)

    def call(self, method: str, path: str, body: Any = None, *, root: bool = False) -> Any:
        """The JSON answer to one request."""
        raw = self._raw(method, path, body, root)
        try:
            return json.loads(raw)
        except (ValueError, RecursionError) as exc:
            raise BackendError(BACKEND_ERROR, f"The server at {self.host} answered {path} "
                               "with something that is not JSON.") from exc

    def call_text(self, method: str, path: str, body: Any = None) -> str:
        """The answer to one request as text (vLLM answers some in plain words)."""
        return self.mask(valid_unicode(self._raw(method, path, body, False).decode(
            "utf-8", "replace")))

    def _raw(self, method: str, path: str, body: Any, root: bool) -> bytes:
        with self._open(method, path, body, root=root) as response:
            try:
                raw = _read(response, MAX_BODY_BYTES)
            except (httpx.HTTPError, DeadlinePassed) as exc:
                raise self._failure(exc) from exc
        if len(raw) > MAX_BODY_BYTES:
            raise BackendError(BACKEND_ERROR, f"The server at {self.host} answered {path} with "
                               f"more than {MAX_BODY_BYTES >> 20} MB.")
        return raw

    @contextmanager
    def stream(self, path: str, body: dict[str, Any],
               cancel: threading.Event | None = None) -> Iterator[Iterator[bytes]]:
        """The bytes of a streamed answer, as they come.

        `cancel` ends the reading at once (GenerationCancelled), the
        connection closed so that the server stops generating; a connection
        that breaks off, or the deadline, raises BackendError
        (backend_unreachable)."""
        with self._open("POST", path, body, root=False, cancel=cancel) as response:

            def chunks() -> Iterator[bytes]:
                try:
                    yield from response.iter_bytes()
                except (httpx.HTTPError, DeadlinePassed) as exc:
                    raise self._failure(exc, "mid-reply") from exc

            yield chunks()
