"""Serve a translator over HTTP: ``POST /translate``, ``GET /info`` (+ the service routes).

Runs in ``deploy.service`` like ``/generate`` (limits, /health, /ready, /metrics, /docs, drain
on SIGTERM, JSON errors). ``ganforge serve --model <translator>`` picks this server when the
model's export is ``kind: translator``.

Request, either:
- JSON ``{"image": "<base64 PNG/JPEG>", "direction": "a2b", "size": "auto", "format": "png"}``
  (validated by the pydantic model ``TranslateRequest``: unknown keys, wrong types and values
  are 400 with the field named), or
- the image itself as the body (``Content-Type: image/png``, ``image/jpeg`` or ``image/webp``)
  with the options as query parameters: ``POST /translate?direction=b2a&size=native``.

Answer: ``png`` -> ``image/png``; ``base64`` -> JSON ``{"direction", "height", "width",
"channels", "image": "<base64 PNG>"}``. Sizes as ``ganforge translate`` (``training.networks.
translation``). A body that is not an image, bad base64, a wrong direction, an image over the
pixel limit: 4xx with ``{"error": ...}``, never a 5xx.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any, Literal

import numpy as np
from fastapi import APIRouter, Depends, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from training.networks.translation import MAX_BYTES, TranslationInputError

from .serve import png_bytes
from .service import RequestError, ServeConfig, Service, admitted, create_app, run_blocking
from .translate import LoadedTranslator

IMAGE_TYPES = ("image/png", "image/jpeg", "image/jpg", "image/webp")
DEFAULT_BODY_BYTES = 16 * 2**20
"""Body limit of a translator server when ``--max-body-bytes`` is left at the generator default."""


class TranslateOptions(BaseModel):
    """How to translate (query parameters of an image body, or keys of the JSON body)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    direction: Literal["a2b", "b2a"] = Field("a2b", description="a2b: domain A -> B; b2a")
    size: Literal["auto", "own", "native"] = Field(
        "auto",
        description="auto: own size if a multiple of 4, else native; own; native: the model's "
        "resolution (resize + centre crop)",
    )
    format: Literal["png", "base64"] = Field(
        "png", description="png: the image; base64: JSON with a base64 PNG"
    )


class TranslateRequest(TranslateOptions):
    """POST /translate as JSON: the image (base64 PNG/JPEG/WebP) and the options."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={"examples": [{"image": "<base64 PNG>", "direction": "a2b"}]},
    )

    image: str = Field(
        min_length=1,
        max_length=MAX_BYTES * 4 // 3 + 4,
        description="base64 PNG/JPEG/WebP (a data: URL prefix is accepted)",
    )


def _decode_b64(text: str) -> bytes:
    payload = text.split(",", 1)[1] if text.startswith("data:") else text
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise RequestError("image: not valid base64") from None


def _translate(translator: LoadedTranslator, data: bytes, options: TranslateOptions) -> np.ndarray:
    try:
        translator.check_direction(options.direction)
        return translator.translate_bytes(data, options.direction, options.size)
    except TranslationInputError as exc:
        status = 413 if "pixels" in str(exc) or "bytes;" in str(exc) else 400
        raise RequestError(str(exc), status) from None


def _encode(image: np.ndarray, options: TranslateOptions) -> Response:
    body = png_bytes(image)
    if options.format == "png":
        return Response(body, media_type="image/png")
    answer = {
        "direction": options.direction,
        "height": int(image.shape[0]),
        "width": int(image.shape[1]),
        "channels": int(image.shape[2]),
        "image": base64.b64encode(body).decode(),
    }
    return Response(json.dumps(answer), media_type="application/json")


def _validated(model: type[BaseModel], data: Any, from_json: bool) -> Any:
    try:
        return model.model_validate_json(data) if from_json else model.model_validate(data)
    except ValidationError as exc:
        # the service turns this into one 400 line naming the field, as for /generate
        where = "body" if from_json else "query"
        errors = [{**e, "loc": (where, *e.get("loc", ()))} for e in exc.errors()]
        raise RequestValidationError(errors) from None


def translator_router(translator: LoadedTranslator, info: dict[str, Any]) -> APIRouter:
    """``POST /translate`` and ``GET /info`` for one loaded translator."""
    router = APIRouter(tags=["translator"])

    @router.post(
        "/translate",
        dependencies=[Depends(admitted)],
        responses={200: {"content": {"image/png": {}, "application/json": {}}}},
        response_class=Response,
        summary="Translate one image (JSON with base64, or the image as the body)",
        openapi_extra={
            "requestBody": {
                "content": {
                    "application/json": {
                        "schema": {"$ref": "#/components/schemas/TranslateRequest"}
                    },
                    "image/png": {"schema": {"type": "string", "format": "binary"}},
                    "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
                },
                "required": True,
            }
        },
    )
    async def translate(request: Request) -> Response:
        ctype = (request.headers.get("content-type") or "application/json").split(";")[0]
        ctype = ctype.strip().lower()
        body = await request.body()
        if not body:
            raise RequestError("body: empty; send an image or JSON with an 'image' field")
        if ctype == "application/json":
            req = _validated(TranslateRequest, body, from_json=True)
            options = TranslateOptions(direction=req.direction, size=req.size, format=req.format)
            data = _decode_b64(req.image)
        elif ctype in IMAGE_TYPES:
            options = _validated(TranslateOptions, dict(request.query_params), from_json=False)
            data = body
        else:
            raise RequestError(
                f"Content-Type: {ctype[:80]!r}; send application/json or an image "
                f"({', '.join(IMAGE_TYPES)})",
                415,
            )
        image = await run_blocking(_translate, translator, data, options)
        return await run_blocking(_encode, image, options)

    @router.get("/info", summary="The model: family, directions, resolution")
    async def info_route() -> dict[str, Any]:
        return info

    return router


class TranslatorServer(Service):
    """``Service`` serving one LoadedTranslator (``ganforge serve``; ``start()`` in tests)."""

    def __init__(
        self,
        translator: LoadedTranslator,
        *,
        model_uri: str | None = None,
        config: ServeConfig | None = None,
    ) -> None:
        config = config or ServeConfig(port=0, max_body_bytes=DEFAULT_BODY_BYTES)
        self.translator = translator
        info = {
            "model": model_uri or translator.source,
            "kind": "translator",
            "family": translator.config["family"],
            "directions": translator.directions,
            "resolution": translator.resolution,
            "channels": translator.channels,
            "max_body_bytes": config.max_body_bytes,
        }
        app = create_app(
            config,
            [translator_router(translator, info)],
            title="ganforge translator",
            description=f"{translator!r}",
        )
        super().__init__(app, config)
