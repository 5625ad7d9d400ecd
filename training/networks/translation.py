"""Image in, image out for translator exports: decoding, the size policy, and running a direction.

The one home of these helpers for every caller (``ganforge translate``, ``POST /translate``, the
MLflow pyfunc): it lives in ``training.networks`` because the registry vendors this package into
the model, so the pyfunc uses the very same code without ganforge installed. numpy, PIL and
torch only.

Size policy (``size``):

- ``auto`` (default): the image's own size when both sides are multiples of 4 (the generators
  are fully convolutional: two stride-2 downsamplings), else ``native``.
- ``own``: the image's own size; sides that are not multiples of 4 are reflect-padded up to the
  next multiple and the output cropped back, so the output always has the input's size.
- ``native``: as ``ganforge prep`` does: resize the shorter side to the model's resolution
  (Lanczos) and centre-crop to a square; the output is resolution x resolution.

Images are converted to the model's channels (RGB or L); at most ``MAX_PIXELS`` per image.
"""

from __future__ import annotations

import base64
import binascii
import io
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from .samples import quantize

SizePolicy = Literal["auto", "own", "native"]
SIZE_POLICIES = ("auto", "own", "native")
MAX_PIXELS = 4096 * 4096
MAX_BYTES = 32 * 2**20


class TranslationInputError(ValueError):
    """A bad image or option; the message says which one and what to do."""


def decode_image(data: bytes | str, channels: int, what: str = "image") -> np.ndarray:
    """PNG/JPEG/WebP bytes (or their base64 text) -> uint8 [H, W, channels]."""
    from PIL import Image, UnidentifiedImageError

    if isinstance(data, str):
        text = data.split(",", 1)[1] if data.startswith("data:") else data
        try:
            data = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise TranslationInputError(
                f"{what}: a string must be base64-encoded PNG/JPEG bytes"
            ) from None
    if not isinstance(data, (bytes, bytearray, memoryview)) or len(data) == 0:
        raise TranslationInputError(f"{what}: expected PNG/JPEG bytes, got {type(data).__name__}")
    if len(data) > MAX_BYTES:
        raise TranslationInputError(f"{what}: {len(data)} bytes; at most {MAX_BYTES}")
    try:
        with Image.open(io.BytesIO(bytes(data))) as img:
            if img.width * img.height > MAX_PIXELS:
                raise TranslationInputError(
                    f"{what}: {img.width}x{img.height} is over {MAX_PIXELS} pixels"
                )
            array = np.asarray(img.convert("L" if channels == 1 else "RGB"), dtype=np.uint8)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        if isinstance(exc, TranslationInputError):
            raise
        raise TranslationInputError(f"{what}: not a readable image ({exc})") from None
    return array[:, :, None] if array.ndim == 2 else array


def as_uint8_image(array: np.ndarray, channels: int, what: str = "image") -> np.ndarray:
    """A uint8 [H, W], [H, W, 1|3|4] array -> uint8 [H, W, channels]."""
    array = np.asarray(array)
    if array.dtype != np.uint8:
        raise TranslationInputError(f"{what}: arrays must be uint8, got {array.dtype}")
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[-1] not in (1, 3, 4) or min(array.shape[:2]) < 1:
        raise TranslationInputError(
            f"{what}: expected an [H, W, C] image with C in 1, 3, 4, got shape {array.shape}"
        )
    if array.shape[0] * array.shape[1] > MAX_PIXELS:
        raise TranslationInputError(f"{what}: over {MAX_PIXELS} pixels")
    array = array[:, :, :3]
    if channels == 1 and array.shape[-1] == 3:  # ITU-R 601 luma, as PIL's convert("L")
        luma = array.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
        array = np.round(luma).clip(0, 255).astype(np.uint8)[:, :, None]
    elif channels == 3 and array.shape[-1] == 1:
        array = np.repeat(array, 3, axis=-1)
    return np.ascontiguousarray(array)


def native_crop(image: np.ndarray, resolution: int) -> np.ndarray:
    """Shorter side -> ``resolution`` (Lanczos), then a centre square crop (as ``ganforge prep``)."""
    from PIL import Image

    h, w = image.shape[:2]
    scale = resolution / min(h, w)
    size = (max(resolution, round(w * scale)), max(resolution, round(h * scale)))
    pil = Image.fromarray(image.squeeze(-1) if image.shape[-1] == 1 else image)
    resized = np.asarray(pil.resize(size, Image.Resampling.LANCZOS), dtype=np.uint8)
    if resized.ndim == 2:
        resized = resized[:, :, None]
    top, left = (size[1] - resolution) // 2, (size[0] - resolution) // 2
    return resized[top : top + resolution, left : left + resolution]


def resolve_size(policy: str, height: int, width: int) -> Literal["own", "native"]:
    if policy not in SIZE_POLICIES:
        raise TranslationInputError(
            f"size: {policy!r} is not valid; choose one of {', '.join(SIZE_POLICIES)}"
        )
    if policy == "auto":
        return "own" if height % 4 == 0 and width % 4 == 0 else "native"
    return policy  # type: ignore[return-value]


@torch.no_grad()
def translate_array(
    generator: torch.nn.Module,
    image: np.ndarray,
    *,
    resolution: int,
    size: str = "auto",
) -> np.ndarray:
    """One uint8 [H, W, C] image through ``generator`` -> uint8 [H', W', C] (see the policy)."""
    mode = resolve_size(size, *image.shape[:2])
    if mode == "native":
        image = native_crop(image, resolution)
    device = next(generator.parameters()).device
    x = torch.from_numpy(np.array(image)).to(device).permute(2, 0, 1)[None].float() / 127.5 - 1.0
    h, w = x.shape[-2:]
    pad_h, pad_w = -h % 4, -w % 4
    if pad_h or pad_w:  # reflect needs the pad below the size: replicate for tiny images
        pad_mode = "reflect" if pad_h < h and pad_w < w else "replicate"
        x = F.pad(x, (0, pad_w, 0, pad_h), mode=pad_mode)
    y = generator(x)[..., :h, :w]
    return quantize(y)[0].permute(1, 2, 0).cpu().numpy()


def translate_batch(
    generator: torch.nn.Module,
    images: np.ndarray,
    *,
    batch: int = 16,
) -> np.ndarray:
    """uint8 [N, H, W, C] with H, W multiples of 4 -> uint8 [N, H, W, C], ``batch`` at a time
    (the fast path for same-size images; instance norm makes it equal to one at a time)."""
    device = next(generator.parameters()).device
    out = []
    for i in range(0, len(images), batch):
        x = torch.from_numpy(np.ascontiguousarray(images[i : i + batch])).to(device)
        x = x.permute(0, 3, 1, 2).float() / 127.5 - 1.0
        with torch.no_grad():
            y = generator(x)
        out.append(quantize(y).permute(0, 2, 3, 1).cpu())
    return torch.cat(out).numpy() if out else np.zeros((0, *images.shape[1:]), np.uint8)
