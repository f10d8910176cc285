"""A total deadline and an instant cancel for every byte rlchat reads from a server.

httpx's timeouts are per socket operation: a server that sends one byte
every few seconds, in its headers or its stream, keeps a request alive for
ever.  So the connections are made by a network backend whose reads wait in
short slices and, between slices, look at the guard of the request being
served in this thread (a context variable: a turn's side-by-side requests
each carry theirs): past its deadline the read raises DeadlinePassed, once
its cancel is set it raises GenerationCancelled.  Nothing else is needed
from the socket, so TLS and pooled connections work as before.
"""

from __future__ import annotations

import contextvars
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import httpcore
import httpx

from rlchat.learner.errors import ErrorCode, GenerationCancelled

SLICE_SECONDS = 0.1  # how soon a cancel or the deadline is seen while a read waits


class DeadlinePassed(Exception):
    """The request's total deadline passed while it waited for the server."""


@dataclass(frozen=True)
class Guard:
    deadline: float  # time.monotonic()
    cancel: threading.Event | None = None

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def check(self) -> None:
        if self.cancel is not None and self.cancel.is_set():
            raise GenerationCancelled(ErrorCode.CANCELLED, "Cancelled.")
        if self.left() <= 0:
            raise DeadlinePassed()


_GUARD: contextvars.ContextVar[Guard | None] = contextvars.ContextVar("rlchat_guard",
                                                                     default=None)


@contextmanager
def guarded(seconds: float, cancel: threading.Event | None = None) -> Iterator[Guard]:
    """Reads in this context end by `seconds` from now, or by an enclosing
    guard's deadline if that comes first; `cancel` (else the enclosing one)
    stops them at once."""
    outer = _GUARD.get()
    deadline = time.monotonic() + seconds
    if outer is not None:
        deadline = min(deadline, outer.deadline)
        cancel = cancel or outer.cancel
    guard = Guard(deadline, cancel)
    token = _GUARD.set(guard)
    try:
        yield guard
    finally:
        _GUARD.reset(token)


def _bounded(timeout: float | None) -> float | None:
    guard = _GUARD.get()
    if guard is None:
        return timeout
    left = max(guard.left(), 0.001)
    return left if timeout is None else min(timeout, left)


class _GuardedStream(httpcore.NetworkStream):
    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        guard = _GUARD.get()
        if guard is None:
            return self._inner.read(max_bytes, timeout)
        waited = 0.0
        while True:
            guard.check()
            step = min(SLICE_SECONDS, max(guard.left(), 0.001))
            if timeout is not None:
                step = min(step, max(timeout - waited, 0.001))
            try:
                return self._inner.read(max_bytes, step)
            except httpcore.ReadTimeout:
                # A socket timeout leaves the socket as it was: read on.
                waited += step
                if timeout is not None and waited >= timeout:
                    raise

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, _bounded(timeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(self, ssl_context, server_hostname=None, timeout=None) -> httpcore.NetworkStream:
        return _GuardedStream(self._inner.start_tls(ssl_context, server_hostname,
                                                    _bounded(timeout)))

    def get_extra_info(self, info: str):
        return self._inner.get_extra_info(info)


class _GuardedBackend(httpcore.NetworkBackend):
    def __init__(self) -> None:
        self._inner = httpcore.SyncBackend()

    def connect_tcp(self, host, port, timeout=None, local_address=None,
                    socket_options=None) -> httpcore.NetworkStream:
        return _GuardedStream(self._inner.connect_tcp(host, port, _bounded(timeout),
                                                      local_address, socket_options))

    def connect_unix_socket(self, path, timeout=None,
                            socket_options=None) -> httpcore.NetworkStream:
        return _GuardedStream(self._inner.connect_unix_socket(path, _bounded(timeout),
                                                              socket_options))

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


def guarded_transport(limits: httpx.Limits) -> httpx.HTTPTransport:
    """httpx's own transport, its connections made by the guarded backend.

    httpx takes no network backend, so its pool is replaced by one built
    with the same public arguments (tests/test_misbehaving.py's trickle
    tests fail if this ever stops taking effect)."""
    transport = httpx.HTTPTransport(limits=limits)
    transport._pool = httpcore.ConnectionPool(  # noqa: SLF001 - see the docstring
        ssl_context=httpx.create_ssl_context(),
        max_connections=limits.max_connections,
        max_keepalive_connections=limits.max_keepalive_connections,
        keepalive_expiry=limits.keepalive_expiry,
        network_backend=_GuardedBackend(),
    )
    return transport
