"""uvicorn pieces of the HTTP service: a read deadline for requests, drain state, the socket,
and ``Service``, which runs an app from ``deploy.service.create_app`` with them.

uvicorn times out idle keep-alive connections but not a request that arrives slowly or stalls
half-way (its h11 protocol waits forever, holding the connection); ``TimedH11Protocol`` closes a
connection whose request (line, headers, body) has not fully arrived ``read_timeout_s`` after
its first byte or after the connection opened.
"""

from __future__ import annotations

import asyncio
import math
import signal
import socket
import threading
import time
from typing import TYPE_CHECKING, Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from .metrics import Metrics

if TYPE_CHECKING:
    from fastapi import FastAPI

    from .service import ServeConfig


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


class Service:
    """An app bound to ``config.host:config.port`` and run by uvicorn with ``ServeConfig``'s limits."""

    def __init__(self, app: FastAPI, config: ServeConfig) -> None:
        self.app = app
        self.config = config
        self.socket = bind_socket(config.host, config.port, config.backlog)
        protocol = type(
            "TimedH11Protocol",
            (TimedH11Protocol,),
            {"read_timeout_s": config.read_timeout_s, "metrics": app.state.metrics},
        )
        self.server = DrainingServer(
            uvicorn.Config(
                app,
                http=protocol,
                lifespan="on",
                limit_concurrency=config.max_connections,
                backlog=config.backlog,
                timeout_keep_alive=max(1, math.ceil(config.keep_alive_s)),
                timeout_graceful_shutdown=max(1, math.ceil(config.drain_timeout_s)),
                h11_max_incomplete_event_size=config.max_header_bytes,
                log_level="warning",
                access_log=False,
            ),
            app,
        )
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        return self.socket.getsockname()[:2]

    @property
    def url(self) -> str:
        host, port = self.address
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    def serve_forever(self) -> None:
        """Serve in this (main) thread until SIGTERM/SIGINT, then drain and return."""
        in_main = threading.current_thread() is threading.main_thread()
        # uvicorn re-raises the signal that stopped it once it has drained; a no-op SIGTERM
        # handler makes that a normal return (exit 0) instead of death by signal.
        previous = signal.signal(signal.SIGTERM, lambda *_: None) if in_main else None
        try:
            self.server.run(sockets=[self.socket])
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
            self.socket.close()

    def start(self, timeout_s: float = 30.0) -> Service:
        """Serve on a background thread (tests, notebooks); ``close()`` drains and stops it."""
        self._thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.socket]}, name="http", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the server on {self.url} did not start")
            time.sleep(0.01)
        return self

    def close(self) -> None:
        self.app.state.draining = True
        self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=self.config.drain_timeout_s + 10)
        self.socket.close()
