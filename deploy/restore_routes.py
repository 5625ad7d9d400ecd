"""HTTP endpoints for restoration: ``POST /inpaint`` and ``POST /upscale`` (``deploy.restore``).

Mounted into the generator server (``GeneratorServer(..., routers=(restore_router(g),))``;
``ganforge serve`` mounts it through ``deploy.serve.EXTRA_ROUTERS``). Requests are JSON
validated by pydantic like ``/generate`` (unknown keys, wrong types and out-of-range values get a
4xx ``{"error": ...}``); images travel as base64-encoded PNGs:

- ``/inpaint``: ``{"image": b64png, "mask": b64png, "steps": 200, "feather": 1.5,
  "label": 3, "format": "png" | "base64"}``; image at the model's resolution, mask the same size
  with white (non-zero) pixels marking the hole.
- ``/upscale``: ``{"image": b64png, "steps": 200, "label": 3, "format": ...}``; a square image
  whose side divides the model's resolution.

``png`` answers ``image/png``; ``base64`` answers JSON ``{"image", "height", "width",
"channels", "distance"}``. Each request is one projection of ``steps`` optimiser steps (at most
``max_steps``), run off the event loop in a work slot of the service.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
from typing import Annotated, Literal

import numpy as np
from fastapi import APIRouter, Depends, Response
from pydantic import BaseModel, ConfigDict, Field

from .generator import LoadedGenerator
from .project import ProjectConfig
from .restore import inpaint, upscale
from .service import RequestError, admitted, require_json, run_blocking

MAX_IMAGE_CHARS = 8 * 1024 * 1024  # base64 characters per image field (the body limit applies too)

Label = Annotated[int, Field(ge=0, le=2**31)] | Annotated[str, Field(max_length=200)]
B64Image = Annotated[str, Field(min_length=1, max_length=MAX_IMAGE_CHARS)]


class _Restore(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    image: B64Image = Field(description="base64-encoded PNG (or any image Pillow reads)")
    steps: int = Field(200, ge=1, le=100_000, description="projection steps")
    label: Label | None = Field(None, description="class id or name (conditional models)")
    format: Literal["png", "base64"] = "png"


class InpaintRequest(_Restore):
    """POST /inpaint: an image and the mask of its hole."""

    mask: B64Image = Field(description="base64 PNG, same size: white = hole to fill")
    feather: float = Field(1.5, ge=0.0, le=64.0, allow_inf_nan=False, description="seam px")


class UpscaleRequest(_Restore):
    """POST /upscale: a small square image."""


def decode_image(text: str, field: str, channels: int) -> np.ndarray:
    """base64 image -> uint8 [H, W, C] with the model's channels; RequestError when it is not."""
    from PIL import Image, UnidentifiedImageError

    try:
        raw = base64.b64decode(text, validate=True)
        img = Image.open(io.BytesIO(raw))
        if img.width * img.height > 4096 * 4096:
            raise RequestError(f"{field}: {img.width}x{img.height} px is too large", 413)
        img.load()
    except (binascii.Error, ValueError) as exc:
        if isinstance(exc, RequestError):
            raise
        raise RequestError(f"{field}: not valid base64 ({str(exc)[:80]})") from None
    except (UnidentifiedImageError, OSError):
        raise RequestError(f"{field}: not a readable image; send a base64-encoded PNG") from None
    arr = np.asarray(img.convert("L" if channels == 1 else "RGB"), dtype=np.uint8)
    return arr[:, :, None] if arr.ndim == 2 else arr


def _answer(image: np.ndarray, fmt: str, distance: str) -> Response:
    from .serve import png_bytes

    if fmt == "png":
        return Response(png_bytes(image), media_type="image/png")
    body = {
        "image": base64.b64encode(png_bytes(image)).decode(),
        "height": int(image.shape[0]),
        "width": int(image.shape[1]),
        "channels": int(image.shape[2]),
        "distance": distance,
    }
    return Response(json.dumps(body), media_type="application/json")


def restore_router(generator: LoadedGenerator, max_steps: int = 1000) -> APIRouter:
    """``POST /inpaint`` and ``POST /upscale`` for one loaded generator."""
    router = APIRouter(tags=["restore"])
    deps = [Depends(require_json), Depends(admitted)]
    responses = {200: {"content": {"image/png": {}, "application/json": {}}}}

    def config(request: _Restore) -> ProjectConfig:
        steps = request.steps if "steps" in request.model_fields_set else min(200, max_steps)
        if steps > max_steps:
            raise RequestError(f"steps: {steps} is more than this server allows ({max_steps})")
        return ProjectConfig(steps=steps, frames=0, w_avg_samples=2000)

    def run_inpaint(request: InpaintRequest) -> Response:
        cfg = config(request)
        image = decode_image(request.image, "image", generator.channels)
        mask = decode_image(request.mask, "mask", 1)[:, :, 0] > 127
        r = generator.resolution
        if image.shape[:2] != (r, r) or mask.shape != (r, r):
            raise RequestError(
                f"image/mask: must both be {r}x{r} px (the model's resolution), got "
                f"{image.shape[1]}x{image.shape[0]} and {mask.shape[1]}x{mask.shape[0]}"
            )
        try:
            result = inpaint(
                generator, image, mask, cfg, feather=request.feather, labels=_labels(request)
            )
        except ValueError as exc:
            raise RequestError(str(exc)) from None
        return _answer(result.images[0], request.format, result.projection.distance)

    def run_upscale(request: UpscaleRequest) -> Response:
        cfg = config(request)
        image = decode_image(request.image, "image", generator.channels)
        try:
            result = upscale(generator, image, cfg, labels=_labels(request))
        except ValueError as exc:
            raise RequestError(str(exc)) from None
        return _answer(result.images[0], request.format, result.projection.distance)

    @router.post(
        "/inpaint",
        dependencies=deps,
        responses=responses,
        response_class=Response,
        summary="Fill the masked hole of an image (projection on the known pixels)",
    )
    async def inpaint_route(request: InpaintRequest) -> Response:
        return await run_blocking(run_inpaint, request)

    @router.post(
        "/upscale",
        dependencies=deps,
        responses=responses,
        response_class=Response,
        summary="Super-resolve a small image to the model's resolution (PULSE-style)",
    )
    async def upscale_route(request: UpscaleRequest) -> Response:
        return await run_blocking(run_upscale, request)

    return router


def _labels(request: _Restore):
    return None if request.label is None else [request.label]


def serve_router(generator: LoadedGenerator, config) -> APIRouter:
    """``deploy.serve.EXTRA_ROUTERS`` entry: /inpaint and /upscale in ``ganforge serve``."""
    return restore_router(generator)
