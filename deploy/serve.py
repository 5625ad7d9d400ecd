"""Serve a generator over HTTP: ``POST /generate``, ``GET /info`` (+ the service routes).

Runs in ``deploy.service`` (FastAPI on uvicorn: limits, /health, /ready, /metrics, /docs, drain
on SIGTERM). Requests are validated by the pydantic model ``GenerateRequest``; their seeds become
latents, and a single worker thread that owns the generator merges queued requests that share
(psi, noise_mode) into one pass of up to ``max_batch`` images, so N clients cost about one
batch, not N. Batching never changes a pixel: ``deploy.sampling.synthesize`` runs every chunk
at the same fixed size, so a seed gives the same image here, alone or with others, as through
``LoadedGenerator.generate`` and ``ganforge generate``.

Request (JSON): ``{"seeds": [0, 1] | 3 | "0-7", "psi": 0.7, "labels": [3] | ["cat"] | 3,
"noise_mode": "const", "format": "png" | "base64"}``. ``png`` answers ``image/png`` (one image,
or a grid of all of them); ``base64`` answers JSON ``{"seeds", "height", "width", "channels",
"images": [base64 PNG, ...]}``. Every malformed request gets a 4xx with ``{"error": ...}``.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import numpy as np
from fastapi import APIRouter, Depends, Response
from pydantic import BaseModel, ConfigDict, Field

from training.networks.samples import make_grid

from . import sampling
from .generator import LoadedGenerator
from .metrics import Metrics
from .service import (
    Overloaded,
    RequestError,
    ServeConfig,
    Service,
    admitted,
    create_app,
    require_json,
    run_blocking,
)

EXTRA_ROUTERS: tuple[str, ...] = ("deploy.restore_routes:serve_router",)
"""Endpoints served next to /generate for the same generator by ``ganforge serve``: each entry
``"module:function"``, the function taking (LoadedGenerator, ServeConfig) -> APIRouter (e.g.
/inpaint, /upscale). Add one line per module; the function builds its router as
``generator_router`` does (pydantic model, ``require_json``, ``admitted``, ``run_blocking``)."""

MAX_LIST = 4096  # longest seeds/labels list the request model accepts (max_images is lower)

Seed = Annotated[int, Field(ge=0, le=sampling.MAX_SEED)]
Label = Annotated[int, Field(ge=0, le=2**31)] | Annotated[str, Field(max_length=200)]


class GenerateRequest(BaseModel):
    """POST /generate: which images, and how."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={"examples": [{"seeds": "0-3", "psi": 0.7, "format": "base64"}]},
    )

    seeds: (
        Annotated[list[Seed], Field(max_length=MAX_LIST)]
        | Seed
        | Annotated[str, Field(max_length=1000, pattern=r"^[0-9,\- ]+$")]
    ) = Field(description='a list of seeds, one seed, or ranges like "0-7" or "1,5,9"')
    psi: float = Field(
        1.0, ge=-2.0, le=2.0, allow_inf_nan=False, description="truncation (1: none)"
    )
    labels: Annotated[list[Label], Field(max_length=MAX_LIST)] | Label | None = Field(
        None, description="class ids or names: one for all images, or one per seed"
    )
    noise_mode: Literal["const", "random", "none"] = "const"
    format: Literal["png", "base64"] = Field(
        "png", description="png: one image or a grid; base64: JSON with one PNG per seed"
    )


@dataclass
class _Job:
    z: np.ndarray
    c: np.ndarray | None
    psi: float
    noise_mode: str
    future: Future = field(default_factory=Future)


class BatchingWorker:
    """Runs the generator on one thread, merging queued jobs with the same (psi, noise_mode)."""

    def __init__(
        self,
        generator: LoadedGenerator,
        max_batch: int = 32,
        window_s: float = 0.005,
        max_jobs: int = 1024,
        metrics: Metrics | None = None,
    ) -> None:
        self.generator = generator
        self.max_batch = max_batch
        self.window_s = window_s
        self.metrics = metrics
        self.batches_run = 0  # for tests and /info: how many passes served the requests
        self._queue: queue.Queue[_Job | None] = queue.Queue(maxsize=max_jobs)
        self._thread = threading.Thread(target=self._work, name="generator-worker", daemon=True)
        self._thread.start()

    def submit_async(
        self, z: np.ndarray, c: np.ndarray | None, psi: float, noise_mode: str
    ) -> Future:
        """Queue a job -> a Future of uint8 [N, H, W, C]; Overloaded when the queue is full."""
        job = _Job(z, c, psi, noise_mode)
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            raise Overloaded("server busy: the generator queue is full") from None
        return job.future

    def submit(
        self, z: np.ndarray, c: np.ndarray | None, psi: float, noise_mode: str
    ) -> np.ndarray:
        return self.submit_async(z, c, psi, noise_mode).result()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def close(self) -> None:
        """Finish the queued jobs, then stop the thread."""
        self._queue.put(None)
        self._thread.join(timeout=60)

    def _work(self) -> None:
        pending: list[_Job] = []
        stopping = False
        while True:
            if not pending:
                if stopping:
                    return
                job = self._queue.get()
                if job is None:
                    return
                pending.append(job)
            # Gather whatever else arrives within the window: concurrent requests share a batch.
            deadline = time.monotonic() + self.window_s
            while not stopping and sum(len(j.z) for j in pending) < self.max_batch:
                try:
                    job = self._queue.get(timeout=max(1e-4, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if job is None:
                    stopping = True
                else:
                    pending.append(job)
            key = (pending[0].psi, pending[0].noise_mode)
            batch, rest, rows = [], [], 0
            for job in pending:
                if not batch or (
                    (job.psi, job.noise_mode) == key and rows + len(job.z) <= self.max_batch
                ):
                    batch.append(job)
                    rows += len(job.z)
                else:
                    rest.append(job)
            pending = rest
            self._run(batch)

    def _run(self, batch: list[_Job]) -> None:
        try:
            z = np.concatenate([j.z for j in batch])
            c = None if batch[0].c is None else np.concatenate([j.c for j in batch])
            images = sampling.synthesize(
                self.generator.generator, z, c, psi=batch[0].psi, noise_mode=batch[0].noise_mode
            )
            self.batches_run += 1
            if self.metrics is not None:
                self.metrics.batch(len(z))
        except Exception as exc:  # noqa: BLE001 - every waiting request must get an answer
            for job in batch:
                job.future.set_exception(exc)
            return
        start = 0
        for job in batch:
            job.future.set_result(images[start : start + len(job.z)])
            start += len(job.z)


def prepare(
    request: GenerateRequest, generator: LoadedGenerator, max_images: int
) -> tuple[list[int], np.ndarray, np.ndarray | None]:
    """A validated request -> (seeds, z, c); RequestError (400/413) when it cannot be served."""
    count = sampling.count_seeds(request.seeds)
    if count > max_images:
        raise RequestError(
            f"seeds: {count} images requested; at most {max_images} per request", 413
        )
    try:
        seeds = sampling.parse_seeds(request.seeds, limit=max_images)
        c = sampling.labels_to_onehot(
            request.labels, len(seeds), generator.c_dim, generator.class_names
        )
    except sampling.SamplingError as exc:
        raise RequestError(str(exc)) from None
    return seeds, sampling.seeds_to_latents(seeds, generator.z_dim), c


def png_bytes(image: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image[:, :, 0] if image.shape[2] == 1 else image).save(buf, format="PNG")
    return buf.getvalue()


def _encode(images: np.ndarray, seeds: list[int], fmt: str) -> Response:
    if fmt == "png":
        body = png_bytes(images[0] if len(images) == 1 else make_grid(images))
        return Response(body, media_type="image/png")
    answer = {
        "seeds": seeds,
        "height": int(images.shape[1]),
        "width": int(images.shape[2]),
        "channels": int(images.shape[3]),
        "images": [base64.b64encode(png_bytes(img)).decode() for img in images],
    }
    return Response(json.dumps(answer), media_type="application/json")


def generator_router(
    generator: LoadedGenerator, worker: BatchingWorker, max_images: int, info: dict[str, Any]
) -> APIRouter:
    """``POST /generate`` and ``GET /info`` for one loaded generator."""
    router = APIRouter(tags=["generator"])

    @router.post(
        "/generate",
        dependencies=[Depends(require_json), Depends(admitted)],
        responses={200: {"content": {"image/png": {}, "application/json": {}}}},
        response_class=Response,
        summary="Images for seeds (PNG, or JSON with base64 PNGs)",
    )
    async def generate(request: GenerateRequest) -> Response:
        seeds, z, c = await run_blocking(prepare, request, generator, max_images)
        future = worker.submit_async(z, c, request.psi, request.noise_mode)
        images = await asyncio.wrap_future(future)
        return await run_blocking(_encode, images, seeds, request.format)

    @router.get("/info", summary="The model: family, resolution, classes, limits")
    async def info_route() -> dict[str, Any]:
        return {**info, "batches_run": worker.batches_run}

    return router


def extra_routers(generator: LoadedGenerator, config: ServeConfig) -> list[APIRouter]:
    """The routers of ``EXTRA_ROUTERS`` for this generator."""
    import importlib

    routers = []
    for entry in EXTRA_ROUTERS:
        module, _, function = entry.partition(":")
        routers.append(getattr(importlib.import_module(module), function)(generator, config))
    return routers


class GeneratorServer(Service):
    """``Service`` serving one LoadedGenerator (``ganforge serve``; ``start()`` in tests)."""

    def __init__(
        self,
        generator: LoadedGenerator,
        host: str = "127.0.0.1",
        port: int = 8080,
        max_images: int = 64,
        max_batch: int = 32,
        model_uri: str | None = None,
        config: ServeConfig | None = None,
        routers: tuple[APIRouter, ...] = (),
    ) -> None:
        if max_images < 1 or max_batch < 1:
            raise ValueError(
                f"max_images and max_batch must be >= 1, got {max_images} and {max_batch}"
            )
        config = config or ServeConfig(host=host, port=port)
        self.generator = generator
        self.max_images = max_images
        self.model_uri = model_uri or generator.source
        g = generator
        info = {
            "model": self.model_uri,
            "family": g.config["family"],
            "resolution": g.resolution,
            "channels": g.channels,
            "z_dim": g.z_dim,
            "c_dim": g.c_dim,
            "class_names": g.class_names,
            "max_images": max_images,
            "max_batch": max_batch,
        }
        app = create_app(
            config,
            title="ganforge generator",
            description=f"{generator!r}",
            ready=lambda: self.worker.alive,
            on_shutdown=[lambda: self.worker.close()],
        )
        self.worker = BatchingWorker(
            generator,
            max_batch=max_batch,
            max_jobs=config.max_concurrency + config.max_queue + 1,
            metrics=app.state.metrics,
        )
        app.include_router(generator_router(generator, self.worker, max_images, info))
        for router in routers:
            app.include_router(router)
        super().__init__(app, config)
