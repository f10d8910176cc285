"""HTTP to an OpenAI-compatible server: JSON calls, server-sent event streams,
retries while it is busy, and every failure turned into one BackendError.

The API key is read from the environment variable the settings name, at
each request, and sent only to the configured server: redirects are not
followed, so it cannot be carried to another host.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

import httpx

from rlchat.learner.errors import (
    BACKEND_AUTH,
    BACKEND_BUSY,
    BACKEND_ERROR,
    BACKEND_UNREACHABLE,
    BackendError,
    ErrorCode,
    GenerationCancelled,
)

BUSY = (429, 503)
CONNECT_SECONDS = 5.0  # a server that does not accept within this is down


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


def _error_text(response: httpx.Response) -> str:
    """The server's own words for a refusal, short."""
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:300] or response.reason_phrase
    error = body.get("error", body) if isinstance(body, dict) else body
    if isinstance(error, dict):
        error = error.get("message") or error.get("detail") or error
    return str(error)[:300]


class ServerClient:
    """One server: its base URL (the /v1 paths), its root (the server's own
    paths such as /tokenize and /props), the key's variable and a timeout."""

    def __init__(self, base_url: str, *, api_key_env: str = "", timeout: float = 60.0) -> None:
        self.base_url = normalize_base_url(base_url)
        parts = urlsplit(self.base_url)
        path = parts.path[:-3] if parts.path.endswith("/v1") else parts.path
        self.root = f"{parts.scheme}://{parts.netloc}{path}"
        self.host = parts.netloc
        self.api_key_env = api_key_env
        self.timeout = timeout
        self._http = httpx.Client(
            timeout=httpx.Timeout(timeout, connect=min(timeout, CONNECT_SECONDS)),
            follow_redirects=False,
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=32),
        )

    def close(self) -> None:
        self._http.close()

    def _headers(self) -> dict[str, str]:
        if not self.api_key_env:
            return {}
        key = os.environ.get(self.api_key_env, "").strip()
        if not key:
            raise BackendError(BACKEND_AUTH, f"The environment variable {self.api_key_env} "
                               "(--api-key-env) holds no API key; set it and try again.")
        return {"Authorization": f"Bearer {key}"}

    def _url(self, path: str, root: bool) -> str:
        return (self.root if root else self.base_url) + path

    def unreachable(self, exc: Exception, during: str = "") -> BackendError:
        why = type(exc).__name__ if not str(exc) else str(exc).splitlines()[0][:120]
        where = f" {during}" if during else ""
        return BackendError(BACKEND_UNREACHABLE, f"The model server at {self.base_url} cannot "
                            f"be reached{where} ({why}); start it or check --base-url, then "
                            "send again.")

    def busy(self, status: int) -> BackendError:
        return BackendError(BACKEND_BUSY, f"The server at {self.host} stayed busy ({status}) "
                            f"for {self.timeout:g} s; try again later, or raise "
                            "--request-timeout.")

    @contextmanager
    def _open(self, method: str, path: str, body: Any, *, root: bool, stream: bool):
        """A response with a success status, retried with backoff while the
        server says it is busy, within the timeout; Refused for an error."""
        deadline = time.monotonic() + self.timeout
        delay = 0.25
        while True:
            headers = self._headers()
            request = self._http.build_request(method, self._url(path, root), json=body,
                                               headers=headers)
            try:
                response = self._http.send(request, stream=stream)
            except httpx.TransportError as exc:
                raise self.unreachable(exc) from exc
            try:
                if response.status_code < 400:
                    yield response
                    return
                if stream:
                    response.read()
                left = deadline - time.monotonic()
                if response.status_code in BUSY and left > 0:
                    wait = min(delay, left, _retry_after(response))
                    delay = min(delay * 2, 4.0)
                    time.sleep(wait)
                    continue
                if response.status_code in BUSY:
                    raise self.busy(response.status_code)
                raise Refused(response.status_code, _error_text(response))
            finally:
                response.close()

    def call(self, method: str, path: str, body: Any = None, *, root: bool = False) -> Any:
        """The JSON answer to one request."""
        with self._open(method, path, body, root=root, stream=False) as response:
            try:
                return response.json()
            except ValueError as exc:
                raise BackendError(BACKEND_ERROR, f"The server at {self.host} answered {path} "
                                   "with something that is not JSON.") from exc

    def stream(self, path: str, body: dict[str, Any],
               cancel: threading.Event | None = None) -> Iterator[dict[str, Any]]:
        """The JSON events of a server-sent event stream, until [DONE].

        `cancel` closes the connection at once (the server stops generating)
        and raises GenerationCancelled; a connection that breaks off raises
        BackendError (backend_unreachable)."""
        with self._open("POST", path, body, root=False, stream=True) as response:
            done = threading.Event()
            if cancel is not None:
                watcher = threading.Thread(target=_close_on, args=(cancel, done, response),
                                           daemon=True)
                watcher.start()
            try:
                for line in response.iter_lines():
                    if cancel is not None and cancel.is_set():
                        raise GenerationCancelled(ErrorCode.CANCELLED, "Cancelled.")
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        return
                    yield _event(data, self.host)
            except (httpx.TransportError, httpx.StreamError) as exc:
                if cancel is not None and cancel.is_set():
                    raise GenerationCancelled(ErrorCode.CANCELLED, "Cancelled.") from exc
                raise self.unreachable(exc, "mid-reply") from exc
            finally:
                done.set()
            if cancel is not None and cancel.is_set():
                raise GenerationCancelled(ErrorCode.CANCELLED, "Cancelled.")


def _event(data: str, host: str) -> dict[str, Any]:
    try:
        event = json.loads(data)
    except ValueError as exc:
        raise BackendError(BACKEND_ERROR, f"The server at {host} streamed something that is "
                           "not JSON.") from exc
    if not isinstance(event, dict):
        raise BackendError(BACKEND_ERROR, f"The server at {host} streamed an event that is "
                           "not an object.")
    if "error" in event:  # some servers report a failure inside the stream
        error = event["error"]
        message = error.get("message", error) if isinstance(error, dict) else error
        raise Refused(int(error.get("code", 500)) if isinstance(error, dict)
                      and isinstance(error.get("code"), int) else 500, str(message)[:300])
    return event


def _retry_after(response: httpx.Response) -> float:
    try:
        return max(0.0, float(response.headers.get("retry-after", "inf")))
    except ValueError:
        return float("inf")


def _close_on(cancel: threading.Event, done: threading.Event, response: httpx.Response) -> None:
    """Close the stream as soon as `cancel` is set, even while it waits for data."""
    while not done.wait(0.05):
        if cancel.is_set():
            response.close()
            return
