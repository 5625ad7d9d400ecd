"""The HTTP service every ganforge endpoint runs in: FastAPI on uvicorn, with a public server's limits.

``create_app(config, routers=[...])`` builds the FastAPI app; ``Service(app, config)`` binds it
and runs it on uvicorn (``serve_forever()`` in the foreground, ``start()``/``close()`` on a
background thread). What every app gets, whatever its endpoints:

- ``GET /health`` (alive), ``GET /ready`` (503 while starting or draining), ``GET /metrics``
  (Prometheus text: requests by route/method/status, latency histogram, in-flight and queued
  requests, rejections by reason, batch sizes, errors), OpenAPI at ``/docs`` and ``/openapi.json``.
- Errors as JSON ``{"error": "<what is wrong and what is valid>"}``: 400 for a body that is not
  JSON or does not fit the request model (one line naming the field), 404/405 for routes and
  methods, 411/413 for a missing or too large body, 415 for a non-JSON content type, 503 with
  ``Retry-After`` when the server is full, 500 only for a server fault.
- Bounded work: at most ``max_concurrency`` requests work at once and ``max_queue`` wait for a
  slot (each at most ``queue_timeout_s``); beyond that an immediate 503 + ``Retry-After``, never
  a hang. uvicorn itself answers 503 beyond ``max_connections`` open connections.
- Read limits: a request's headers and body must arrive within ``read_timeout_s`` of its first
  byte (or of the connection opening), else the connection is closed (slow/stalled clients cost
  a socket for that long, no thread); headers over ``max_header_bytes`` get a 400; idle
  keep-alive connections close after ``keep_alive_s``.
- Graceful drain on SIGTERM/SIGINT: stop accepting, let in-flight requests finish (at most
  ``drain_timeout_s``), run the app's shutdown hooks, exit 0.

Adding endpoints (other modules: ``/translate``, ``/inpaint``, ...): write an ``APIRouter``
with pydantic request models and ``dependencies=[Depends(require_json), Depends(admitted)]``,
run blocking work with ``await run_blocking(fn, ...)``, raise ``RequestError(msg, status)``
for a bad request, and pass the router to ``create_app``. ``deploy.serve`` is the example.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from .metrics import Metrics
from .uvicorn_server import Service as Service  # re-exported: runs create_app's apps

BODY_METHODS = ("POST", "PUT", "PATCH")


@dataclass(kw_only=True)
class ServeConfig:
    """Where the server listens and the limits it enforces (``ganforge serve`` flags)."""

    host: str = "127.0.0.1"
    """Bind address; 127.0.0.1 keeps it local (there is no authentication: proxy it to expose)."""
    port: int = 8080
    """TCP port (0: any free port)."""
    max_body_bytes: int = 64 * 1024
    """Largest request body; larger ones get 413 without being read."""
    max_header_bytes: int = 16 * 1024
    """Largest request line + headers; larger ones get 400."""
    max_concurrency: int = 8
    """Requests doing work at once (the rest wait in the queue)."""
    max_queue: int = 64
    """Requests waiting for a work slot; one more gets 503 + Retry-After (0: no waiting)."""
    queue_timeout_s: float = 30.0
    """Longest wait for a work slot before 503 + Retry-After."""
    read_timeout_s: float = 10.0
    """A request (headers and body) must arrive within this many seconds, else it is dropped."""
    keep_alive_s: float = 5.0
    """Idle keep-alive connections close after this many seconds."""
    max_connections: int = 1000
    """Open connections + running requests beyond which uvicorn answers 503."""
    drain_timeout_s: float = 30.0
    """On SIGTERM, how long in-flight requests may take to finish before they are cancelled."""
    backlog: int = 2048
    """Listen backlog: connections the kernel queues before the server accepts them."""
    retry_after_s: int = 1
    """The Retry-After (seconds) sent with a 503."""

    def __post_init__(self) -> None:
        for name in ("max_body_bytes", "max_header_bytes", "max_concurrency", "max_connections"):
            if getattr(self, name) < 1:
                raise ValueError(f"serve.{name}: must be >= 1, got {getattr(self, name)}")
        for name in ("max_queue", "backlog", "retry_after_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"serve.{name}: must be >= 0, got {getattr(self, name)}")
        for name in ("queue_timeout_s", "read_timeout_s", "keep_alive_s", "drain_timeout_s"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"serve.{name}: must be a positive number of seconds, got {value}")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"serve.port: must be in [0, 65535], got {self.port}")


class RequestError(ValueError):
    """A bad request: answered with ``status`` and ``{"error": message}``."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class Overloaded(RuntimeError):
    """The server is full: answered 503 with Retry-After."""


# -- bounded work ----------------------------------------------------------------------------
class Admission:
    """At most ``max_concurrency`` requests at work, ``max_queue`` waiting; else Overloaded."""

    def __init__(self, config: ServeConfig, metrics: Metrics) -> None:
        self.config = config
        self.metrics = metrics
        self._slots: asyncio.Semaphore | None = None  # made on the server's event loop
        self.waiting = 0

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.config.max_concurrency)
        if self._slots.locked() and self.waiting >= self.config.max_queue:
            self.metrics.reject("queue_full")
            raise Overloaded(
                f"server busy: {self.config.max_concurrency} requests at work and "
                f"{self.waiting} waiting; retry after {self.config.retry_after_s} s"
            )
        self.waiting += 1
        self.metrics.add("queued", 1)
        try:
            await asyncio.wait_for(self._slots.acquire(), self.config.queue_timeout_s)
        except asyncio.TimeoutError:
            self.metrics.reject("queue_timeout")
            raise Overloaded(
                f"server busy: no work slot within {self.config.queue_timeout_s} s"
            ) from None
        finally:
            self.waiting -= 1
            self.metrics.add("queued", -1)
        try:
            yield
        finally:
            self._slots.release()


async def admitted(request: Request) -> AsyncIterator[None]:
    """Dependency: hold a work slot for the request (503 + Retry-After when the server is full)."""
    async with request.app.state.admission.slot():
        yield


def require_json(request: Request) -> None:
    """Dependency: 415 unless the body is JSON (a missing Content-Type is taken as JSON)."""
    ctype = request.headers.get("content-type")
    if ctype is not None and ctype.split(";")[0].strip().lower() != "application/json":
        raise RequestError(f"Content-Type: {ctype[:80]!r}; send application/json", 415)


async def run_blocking(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run CPU-bound or blocking work off the event loop (so other clients keep being served)."""
    return await run_in_threadpool(fn, *args, **kwargs)


# -- the app ---------------------------------------------------------------------------------
def create_app(
    config: ServeConfig,
    routers: Sequence[APIRouter] = (),
    *,
    title: str = "ganforge",
    description: str = "",
    ready: Callable[[], bool] = lambda: True,
    on_shutdown: Sequence[Callable[[], None]] = (),
) -> FastAPI:
    """The FastAPI app: ``routers`` plus /health, /ready, /metrics, /docs, limits and JSON errors.

    ``ready``: whether the app can take work (``/ready``). ``on_shutdown``: run after the last
    in-flight request finished (e.g. stop a worker thread).
    """

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.started = True
        yield
        for hook in on_shutdown:
            await run_in_threadpool(hook)

    app = FastAPI(title=title, description=description, lifespan=lifespan)
    app.state.config = config
    app.state.metrics = Metrics()
    app.state.admission = Admission(config, app.state.metrics)
    app.state.started = False
    app.state.draining = False
    app.add_middleware(_Guard, config=config, metrics=app.state.metrics)
    _add_error_handlers(app, config)

    @app.get("/health", tags=["service"], summary="Liveness: the process answers")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/ready", tags=["service"], summary="Readiness: 503 while starting or draining")
    async def ready_route() -> JSONResponse:
        if app.state.draining:
            return _error(503, "draining: the server is shutting down", config)
        if not app.state.started or not ready():
            return _error(503, "not ready", config)
        return JSONResponse({"status": "ready"})

    @app.get("/metrics", tags=["service"], summary="Prometheus metrics (text format 0.0.4)")
    async def metrics() -> PlainTextResponse:
        return PlainTextResponse(app.state.metrics.render(), media_type="text/plain; version=0.0.4")

    for router in routers:
        app.include_router(router)
    return app


def _error(status: int, message: str, config: ServeConfig, headers: dict | None = None):
    headers = dict(headers or {})
    if status in (503, 429):
        headers.setdefault("Retry-After", str(config.retry_after_s))
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _validation_message(exc: RequestValidationError) -> str:
    """pydantic's errors -> one line: ``field.item: what is wrong`` (union branches merged)."""
    by_loc: dict[str, list[str]] = {}
    extra = [
        ".".join(map(str, e["loc"][1:]))[:40]
        for e in exc.errors()
        if e["type"] == "extra_forbidden"
    ]
    if extra:
        return f"unknown keys {', '.join(extra[:10])}; see /docs for the request fields"
    for err in exc.errors():
        if err.get("type") == "json_invalid":
            ctx = (err.get("ctx") or {}).get("error", "")
            return f"body: not valid JSON ({str(ctx)[:100]})"
        # Drop "body" and pydantic's union-branch tags ("list[constrained-int]", "function-after").
        parts = [str(x) for x in err.get("loc", ()) if x != "body"]
        loc = ".".join(p for p in parts if "[" not in p and "-" not in p) or "body"
        by_loc.setdefault(loc[:80], []).append(str(err.get("msg", "invalid"))[:120])
    # An item-level error (seeds.0) says more than "not a list / not an int / not a string".
    deepest = max(loc.count(".") for loc in by_loc)
    lines = []
    for loc, msgs in by_loc.items():
        if loc.count(".") < deepest and loc.split(".")[0] in {
            k.split(".")[0] for k in by_loc if k != loc
        }:
            continue
        lines.append(f"{loc}: {' or '.join(dict.fromkeys(msgs))}")
    return "; ".join(lines[:3]) + (f" (+{len(lines) - 3} more)" if len(lines) > 3 else "")


def _add_error_handlers(app: FastAPI, config: ServeConfig) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(400, _validation_message(exc), config)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        message = str(exc.detail)
        if exc.status_code == 404:
            message = f"no route {request.url.path[:100]}; see /docs for the endpoints"
        elif exc.status_code == 405:
            message = f"method {request.method} not allowed on {request.url.path[:100]}"
        elif exc.status_code == 400 and "parsing the body" in message:
            message = "body: not valid JSON (too deeply nested, or a number too large)"
        return _error(exc.status_code, message, config, getattr(exc, "headers", None))

    @app.exception_handler(RequestError)
    async def bad_request(request: Request, exc: RequestError) -> JSONResponse:
        return _error(exc.status, str(exc), config)

    @app.exception_handler(Overloaded)
    async def overloaded(request: Request, exc: Overloaded) -> JSONResponse:
        return _error(503, str(exc), config)

    @app.exception_handler(Exception)
    async def server_fault(request: Request, exc: Exception) -> JSONResponse:
        return _error(500, f"server error: {type(exc).__name__}: {str(exc)[:300]}", config)


class _Guard:
    """ASGI middleware: metrics for every request, and the body-size limit (read before routing)."""

    def __init__(self, app: Any, config: ServeConfig, metrics: Metrics) -> None:
        self.app, self.config, self.metrics = app, config, metrics

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start, status = time.monotonic(), [0]

        async def send_status(message: dict) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        self.metrics.add("in_flight", 1)
        try:
            replay = await self._read_body(scope, receive, send_status)
            if replay is not None:
                await self.app(scope, replay, send_status)
        finally:
            self.metrics.add("in_flight", -1)
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            self.metrics.request_done(route, scope["method"], status[0], time.monotonic() - start)

    async def _read_body(self, scope: dict, receive: Callable, send: Callable) -> Callable | None:
        """The whole body, at most max_body_bytes, replayed to the app; None when answered here."""
        if scope["method"] not in BODY_METHODS:
            return receive
        limit = self.config.max_body_bytes
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (len(length) > 15 or int(length) > limit):  # digits (h11)
            self.metrics.reject("body_too_large")
            await _error(413, f"body: {length[:20].decode()} bytes; at most {limit}", self.config)(
                scope, receive, send
            )
            return None
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None  # the client left (or the read timeout dropped it)
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > limit:
                self.metrics.reject("body_too_large")
                await _error(413, f"body: over {limit} bytes", self.config)(scope, receive, send)
                return None
            if not message.get("more_body", False):
                break
        body, sent = b"".join(chunks), [False]

        async def replay() -> dict:
            if not sent[0]:
                sent[0] = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return replay
