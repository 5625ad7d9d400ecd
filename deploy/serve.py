"""A small HTTP server for a generator: ``POST /generate``, ``GET /health``, ``GET /info``.

Standard library only (``http.server``): one thread per connection parses and validates the
request and turns seeds into latents; a single worker thread owns the generator and batches
concurrent requests that share (psi, noise_mode) into one forward pass of up to ``max_batch``
images, so N clients cost about one batch, not N. Per-image results do not depend on the batch
they ran in (each image's conv uses its own styles), so a seed gives the same image here as
through ``LoadedGenerator.generate``.

Request (JSON): ``{"seeds": [0, 1] | "0-7", "psi": 0.7, "labels": [3] | ["cat"],
"noise_mode": "const", "format": "png" | "base64"}``. ``png`` answers ``image/png`` (one image,
or a grid of all of them); ``base64`` answers JSON ``{"seeds", "images": [base64 PNG, ...]}``.
Every malformed request gets a 4xx with ``{"error": "<what is wrong and what is valid>"}``.
"""

from __future__ import annotations

import base64
import io
import json
import queue
import sys
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np

from . import sampling
from .generator import LoadedGenerator, make_grid

REQUEST_KEYS = ("seeds", "psi", "labels", "noise_mode", "format")
FORMATS = ("png", "base64")
MAX_BODY_BYTES = 64 * 1024


class RequestError(ValueError):
    """A bad request: answered with ``status`` and the message."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


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
        self, generator: LoadedGenerator, max_batch: int = 32, window_s: float = 0.005
    ) -> None:
        self.generator = generator
        self.max_batch = max_batch
        self.window_s = window_s
        self.batches_run = 0  # for tests and /info: how many forward passes served the requests
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._thread = threading.Thread(target=self._work, name="generator-worker", daemon=True)
        self._thread.start()

    def submit(
        self, z: np.ndarray, c: np.ndarray | None, psi: float, noise_mode: str
    ) -> np.ndarray:
        job = _Job(z, c, psi, noise_mode)
        self._queue.put(job)
        return job.future.result()

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=10)

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
                self.generator.generator,
                z,
                c,
                psi=batch[0].psi,
                noise_mode=batch[0].noise_mode,
                batch_size=max(len(z), 1),
            )
            self.batches_run += 1
        except Exception as exc:  # noqa: BLE001 - every waiting request must get an answer
            for job in batch:
                job.future.set_exception(exc)
            return
        start = 0
        for job in batch:
            job.future.set_result(images[start : start + len(job.z)])
            start += len(job.z)


def parse_request(body: Any, generator: LoadedGenerator, max_images: int) -> dict[str, Any]:
    """Validate a decoded JSON body -> {seeds, z, c, psi, noise_mode, format}; RequestError if bad."""
    if not isinstance(body, dict):
        raise RequestError(f"body: expected a JSON object with keys {', '.join(REQUEST_KEYS)}")
    unknown = sorted(set(body) - set(REQUEST_KEYS))
    if unknown:
        raise RequestError(f"unknown keys {', '.join(unknown)}; valid: {', '.join(REQUEST_KEYS)}")
    if "seeds" not in body:
        raise RequestError('seeds: required, e.g. [0, 1, 2] or "0-7"')
    seeds = body["seeds"]
    if isinstance(seeds, bool) or not isinstance(seeds, (int, str, list)):
        raise RequestError(
            'seeds: expected a list of integers, an integer or a range string like "0-7"'
        )
    if isinstance(seeds, str):
        # Check the size of a range before expanding it ("0-4000000000" must not allocate).
        try:
            count = sum(
                int(b) - int(a) + 1 if "-" in p else 1
                for p in seeds.split(",")
                if p.strip()
                for a, _, b in [p.partition("-")]
            )
        except ValueError:
            count = 0  # parse_seeds gives the precise message
        if count > max_images:
            raise RequestError(
                f"seeds: {count} images requested; at most {max_images} per request", 413
            )
    elif isinstance(seeds, list) and len(seeds) > max_images:
        raise RequestError(
            f"seeds: {len(seeds)} images requested; at most {max_images} per request", 413
        )
    try:
        seeds = sampling.parse_seeds(seeds)
        if len(seeds) > max_images:
            raise RequestError(
                f"seeds: {len(seeds)} images requested; at most {max_images} per request", 413
            )
        psi = sampling.check_psi(body.get("psi", 1.0))
        noise_mode = body.get("noise_mode", "const")
        if not isinstance(noise_mode, str):
            raise RequestError(f"noise_mode: expected one of {', '.join(sampling.NOISE_MODES)}")
        sampling.check_noise_mode(noise_mode)
        labels = body.get("labels")
        if labels is not None and not isinstance(labels, (list, int, str)):
            raise RequestError(
                "labels: expected a list of class ids/names, or one id/name for all images"
            )
        if isinstance(labels, list) and any(
            isinstance(x, (bool, float, list, dict)) or x is None for x in labels
        ):
            raise RequestError("labels: each label must be an integer class id or a class name")
        c = sampling.labels_to_onehot(labels, len(seeds), generator.c_dim, generator.class_names)
    except sampling.SamplingError as exc:
        raise RequestError(str(exc)) from None
    fmt = body.get("format", "png")
    if fmt not in FORMATS:
        raise RequestError(f"format: {fmt!r} is not one of {', '.join(FORMATS)}")
    z = sampling.seeds_to_latents(seeds, generator.z_dim)
    return {"seeds": seeds, "z": z, "c": c, "psi": psi, "noise_mode": noise_mode, "format": fmt}


def png_bytes(image: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image[:, :, 0] if image.shape[2] == 1 else image).save(buf, format="PNG")
    return buf.getvalue()


class GeneratorServer:
    """``ThreadingHTTPServer`` + ``BatchingWorker`` around a LoadedGenerator."""

    def __init__(
        self,
        generator: LoadedGenerator,
        host: str = "127.0.0.1",
        port: int = 8080,
        max_images: int = 64,
        max_batch: int = 32,
        model_uri: str | None = None,
    ) -> None:
        self.generator = generator
        self.max_images = max_images
        self.model_uri = model_uri or generator.source
        self.worker = BatchingWorker(generator, max_batch=max_batch)
        handler = type("Handler", (_Handler,), {"app": self})
        self.httpd = ThreadingHTTPServer((host, port), handler)
        self.httpd.daemon_threads = True

    @property
    def address(self) -> tuple[str, int]:
        return self.httpd.server_address[:2]

    @property
    def url(self) -> str:
        host, port = self.address
        return f"http://{host}:{port}"

    def info(self) -> dict[str, Any]:
        g = self.generator
        return {
            "model": self.model_uri,
            "family": g.config["family"],
            "resolution": g.resolution,
            "channels": g.channels,
            "z_dim": g.z_dim,
            "c_dim": g.c_dim,
            "class_names": g.class_names,
            "max_images": self.max_images,
            "batches_run": self.worker.batches_run,
        }

    def serve_forever(self) -> None:
        try:
            self.httpd.serve_forever()
        finally:
            self.close()

    def start(self) -> GeneratorServer:
        """Serve on a background thread (tests, notebooks); ``close()`` stops it."""
        threading.Thread(target=self.httpd.serve_forever, name="http", daemon=True).start()
        return self

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.worker.close()


class _Handler(BaseHTTPRequestHandler):
    app: GeneratorServer
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt: str, *args: Any) -> None:  # one line per request on stderr
        sys.stderr.write(f"{self.address_string()} {fmt % args}\n")

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, obj: Any) -> None:
        self._send(status, json.dumps(obj).encode(), "application/json")

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        if self.path in ("/health", "/ping"):
            self._json(200, {"status": "ok"})
        elif self.path == "/info":
            self._json(200, self.app.info())
        else:
            self._json(
                404,
                {"error": f"no route {self.path}; use POST /generate, GET /health or GET /info"},
            )

    def do_POST(self) -> None:  # noqa: N802
        if self.path != "/generate":
            self._json(404, {"error": f"no route {self.path}; use POST /generate"})
            return
        try:
            request = self._read_request()
            images = self.app.worker.submit(
                request["z"], request["c"], request["psi"], request["noise_mode"]
            )
        except RequestError as exc:
            self._json(exc.status, {"error": str(exc)})
            return
        except Exception as exc:  # noqa: BLE001 - a server error must still answer
            self._json(500, {"error": f"generation failed: {type(exc).__name__}: {exc}"})
            return
        if request["format"] == "png":
            self._send(
                200, png_bytes(images[0] if len(images) == 1 else make_grid(images)), "image/png"
            )
        else:
            self._json(
                200,
                {
                    "seeds": request["seeds"],
                    "height": int(images.shape[1]),
                    "width": int(images.shape[2]),
                    "channels": int(images.shape[3]),
                    "images": [base64.b64encode(png_bytes(img)).decode() for img in images],
                },
            )

    def _read_request(self) -> dict[str, Any]:
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            raise RequestError("Content-Length: required (send a JSON body)", 411)
        if int(length) > MAX_BODY_BYTES:
            raise RequestError(f"body: {length} bytes; at most {MAX_BODY_BYTES}", 413)
        raw = self.rfile.read(int(length))
        content_type = (
            (self.headers.get("Content-Type") or "application/json").split(";")[0].strip()
        )
        if content_type != "application/json":
            raise RequestError(f"Content-Type: {content_type!r}; send application/json", 415)
        try:
            body = json.loads(raw or b"null")
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise RequestError(f"body: not valid JSON ({exc})") from None
        return parse_request(body, self.app.generator, self.app.max_images)
