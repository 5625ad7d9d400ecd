"""uvicorn pieces of the HTTP service: a read deadline for requests, drain state, the socket.

uvicorn times out idle keep-alive connections but not a request that arrives slowly or stalls
half-way (its h11 protocol waits forever, holding the connection); ``TimedH11Protocol`` closes a
connection whose request (line, headers, body) has not fully arrived ``read_timeout_s`` after
its first byte or after the connection opened.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from .metrics import Metrics


class TimedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol plus a read deadline: a request (request line, headers, body)
    must arrive within ``read_timeout_s`` of its first byte or of the connection opening;
    otherwise the connection is closed. uvicorn itself only times out idle keep-alives."""

    read_timeout_s = 10.0
    metrics: Metrics | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._read_deadline: asyncio.TimerHandle | None = None
        self._arm()

    def _arm(self) -> None:
        if self._read_deadline is None:
            self._read_deadline = self.loop.call_later(self.read_timeout_s, self._timed_out)

    def _disarm(self) -> None:
        if self._read_deadline is not None:
            self._read_deadline.cancel()
            self._read_deadline = None

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state in (h11.IDLE, h11.SEND_BODY) and not self.transport.is_closing():
            self._arm()  # a request is arriving: it has read_timeout_s from its first byte
        else:
            self._disarm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._disarm()  # an idle keep-alive connection is uvicorn's keep-alive timeout's job

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _timed_out(self) -> None:
        self._read_deadline = None
        if self.conn.their_state in (h11.IDLE, h11.SEND_BODY) and not self.transport.is_closing():
            if self.metrics is not None:
                self.metrics.reject("read_timeout")
            self.transport.close()


class DrainingServer(uvicorn.Server):
    """uvicorn.Server that marks the app as draining (``/ready`` 503) when a signal stops it."""

    def __init__(self, config: uvicorn.Config, app: Any) -> None:
        super().__init__(config)
        self.app = app

    def handle_exit(self, sig: int, frame: Any) -> None:
        self.app.state.draining = True  # /ready answers 503 from now on
        super().handle_exit(sig, frame)


def bind_socket(host: str, port: int, backlog: int = 2048) -> socket.socket:
    """A bound, listening TCP socket (the port is known, and connections queue, before serving)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise OSError(
            f"cannot listen on {host}:{port} ({exc.strerror}); pick another --port"
        ) from None
    sock.listen(backlog)
    return sock
