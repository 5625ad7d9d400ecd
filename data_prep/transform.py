"""One input -> one training image: decode, orient, colour mode, crop, resize, encode.

``prepare_image(raw, cfg)`` accepts encoded bytes in any format Pillow reads (JPEG, PNG, WebP,
BMP, GIF - first frame -, TIFF, ...) or a uint8 ``[H, W, C]`` array, and returns the encoded
``resolution x resolution`` image. Anything wrong with one input raises ``SkipInput`` with a
reason; nothing else is swallowed.

Colour: EXIF orientation is applied; 16-bit and float images are scaled (not clipped) to 8 bit;
alpha (RGBA, LA, palette transparency) is composited onto white, so transparent areas never
become whatever colour the encoder left under them; CMYK, palette, 1-bit and others convert to
RGB, or to L for ``channels: 1``.

Geometry, as NVlabs dataset_tool: ``center-crop`` takes the central square; ``center-crop-wide``
the central 2:1 strip, resized to ``resolution x resolution/2`` and centred on a black square
canvas; ``none`` requires the input to already be ``resolution x resolution``. The resize
filter matters for FID: published setups that downsampled with a box filter need ``box``.

Exact by default: full decode, integer crop, one resize - the pixels of NVlabs dataset_tool.
``fast`` (opt-in) asks the JPEG decoder for a power-of-two reduced image (DCT scaling, "draft")
that still covers the crop at >= ``resolution``, resizes the crop box mapped onto it (float
coordinates, so the geometry matches the exact path) with Pillow's ``reducing_gap``; the result
differs slightly from the exact pixels (measured in docs/benchmarks.md).

PNG is written by ``png.encode_png`` (same pixels as Pillow's encoder, several times faster).
"""

from __future__ import annotations

import io
import math

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .config import PrepConfig
from .png import encode_png
from .skips import (
    CORRUPT,
    DECOMPRESSION_BOMB,
    EMPTY,
    NOT_AN_IMAGE,
    TOO_SMALL,
    TRUNCATED,
    WRONG_SIZE,
    SkipInput,
)

FILTERS = {
    "box": Image.Resampling.BOX,
    "lanczos": Image.Resampling.LANCZOS,
    "bicubic": Image.Resampling.BICUBIC,
}
EXTENSIONS = {"png": "png", "webp": "webp", "jpeg": "jpg"}
"""image_format -> the sample key (file extension) inside the shards."""

_EXIF_ORIENTATION = 0x0112
_TRANSPOSED = (5, 6, 7, 8)  # EXIF orientations that swap width and height
FAST_REDUCING_GAP = 3.0
"""Pillow's reducing_gap in fast mode (3.0: "indistinguishable in most cases" per its docs)."""
_SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N")

# We check the pixel count ourselves (max_image_pixels) before decoding, with our own reason.
Image.MAX_IMAGE_PIXELS = None


def prepare_image(
    raw: bytes | np.ndarray, cfg: PrepConfig, *, exempt_min_size: bool = False
) -> tuple[bytes, tuple[int, int]]:
    """Raw input -> (encoded image bytes, original (width, height) as displayed)."""
    image = _open(raw, cfg.max_image_pixels)
    full_size, scale = None, 1.0
    if cfg.fast and cfg.transform != "none" and image.format == "JPEG":
        full_size = _displayed_size(image)  # JPEG: EXIF is in the header, nothing decoded yet
        if min(full_size) >= cfg.effective_min_size:
            scale = _draft(image, full_size, cfg.resolution, cfg.transform)
    image = _load(image)
    full_size = full_size or image.size
    image = to_channels(image, cfg.channels)
    width, height = full_size
    if cfg.transform == "none":
        if image.size != (cfg.resolution, cfg.resolution):
            raise SkipInput(
                WRONG_SIZE,
                f"{width}x{height}, need {cfg.resolution}x{cfg.resolution} (transform none)",
            )
    elif not exempt_min_size and min(width, height) < cfg.effective_min_size:
        raise SkipInput(
            TOO_SMALL, f"{width}x{height}, shorter side below min_size {cfg.effective_min_size}"
        )
    if cfg.fast:
        image = crop_resize(
            image,
            cfg.resolution,
            cfg.transform,
            cfg.resize_filter,
            full_size=full_size,
            scale=scale,
            reducing_gap=FAST_REDUCING_GAP,
        )
    else:
        image = crop_resize(image, cfg.resolution, cfg.transform, cfg.resize_filter)
    return encode(image, cfg.image_format, cfg.jpeg_quality, cfg.png_compress_level), full_size


def decode(raw: bytes | np.ndarray, max_pixels: int) -> Image.Image:
    """Bytes or uint8 [H, W, C] -> a loaded, upright PIL image (first frame)."""
    return _load(_open(raw, max_pixels))


def _open(raw: bytes | np.ndarray, max_pixels: int) -> Image.Image:
    """Identify the image and check its pixel count; nothing is decoded yet."""
    if isinstance(raw, np.ndarray):
        return Image.fromarray(raw[..., 0] if raw.shape[-1] == 1 else raw)
    if len(raw) == 0:
        raise SkipInput(EMPTY, "zero bytes")
    try:
        image = Image.open(io.BytesIO(raw))
    except UnidentifiedImageError:
        raise SkipInput(NOT_AN_IMAGE, "no image format recognises this file") from None
    except Exception as exc:  # noqa: BLE001 - any decoder failure is this input's fault
        raise SkipInput(CORRUPT, f"{type(exc).__name__}: {exc}") from None
    width, height = image.size
    if width * height > max_pixels:
        raise SkipInput(DECOMPRESSION_BOMB, f"{width}x{height} > max_image_pixels {max_pixels}")
    if width <= 0 or height <= 0:
        raise SkipInput(CORRUPT, f"{width}x{height} image")
    return image


def _orientation(image: Image.Image) -> int:
    try:
        return int(image.getexif().get(_EXIF_ORIENTATION, 1))
    except Exception:  # noqa: BLE001 - a broken EXIF block only loses the orientation
        return 1


def _displayed_size(image: Image.Image) -> tuple[int, int]:
    width, height = image.size
    return (height, width) if _orientation(image) in _TRANSPOSED else (width, height)


def _load(image: Image.Image) -> Image.Image:
    """Decode (first frame of GIF/TIFF/WebP animations) and apply the EXIF orientation."""
    try:
        image.load()
    except OSError as exc:
        text = str(exc)
        raise SkipInput(TRUNCATED if "truncated" in text else CORRUPT, text) from None
    except Exception as exc:  # noqa: BLE001
        raise SkipInput(CORRUPT, f"{type(exc).__name__}: {exc}") from None
    if _orientation(image) != 1:
        try:
            image = ImageOps.exif_transpose(image)
        except Exception:  # noqa: BLE001 - a broken EXIF block only loses the orientation
            pass
    return image


def _crop_width(full_size: tuple[int, int], transform: str) -> int:
    width, height = full_size
    if transform == "center-crop":
        return min(width, height)
    return 2 * height if width >= 2 * height else width  # center-crop-wide


def _draft(
    image: Image.Image, full_size: tuple[int, int], resolution: int, transform: str
) -> float:
    """Fast mode: ask the JPEG decoder for the smallest power-of-two reduction whose crop still
    covers ``resolution`` pixels; returns decoded / full size (1.0: not reduced)."""
    factor = resolution / _crop_width(full_size, transform)
    wanted = (max(1, math.ceil(image.width * factor)), max(1, math.ceil(image.height * factor)))
    width = image.width
    result = image.draft(None, wanted)
    if result is None:
        return 1.0
    return result[1][2] / width  # the decoded image covers (0, 0, width / s, height / s)


def to_channels(image: Image.Image, channels: int) -> Image.Image:
    """Any mode -> "RGB" (channels 3) or "L" (channels 1); see the module docstring."""
    mode = image.mode
    if mode in _SIXTEEN_BIT or mode in ("I", "F"):
        image = Image.fromarray(_to_uint8(np.asarray(image), mode))
    elif mode == "1":
        image = image.convert("L")
    elif mode in ("P", "L", "RGB") and "transparency" in image.info:
        image = image.convert("RGBA" if mode != "L" else "LA")
    elif mode == "P":
        image = image.convert("RGB")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        canvas = Image.new("RGBA", image.size, (255, 255, 255, 255))
        canvas.alpha_composite(image.convert("RGBA"))
        image = canvas
    target = "L" if channels == 1 else "RGB"
    return image if image.mode == target else image.convert(target)


def _to_uint8(array: np.ndarray, mode: str) -> np.ndarray:
    if array.ndim == 3:
        array = array[..., 0]
    if array.dtype.kind == "f":
        peak = float(np.nanmax(array)) if array.size else 0.0
        scale = 255.0 if peak <= 1.0 else 1.0
        return np.nan_to_num(array * scale).clip(0, 255).round().astype(np.uint8)
    wide = array.astype(np.int64)
    if mode in _SIXTEEN_BIT or (wide.max(initial=0) > 255):
        return (wide.clip(0, 65535) / 257.0).round().astype(np.uint8)  # 65535 -> 255
    return wide.clip(0, 255).astype(np.uint8)


def crop_resize(
    image: Image.Image,
    resolution: int,
    transform: str,
    resize_filter: str,
    *,
    full_size: tuple[int, int] | None = None,
    scale: float = 1.0,
    reducing_gap: float | None = None,
) -> Image.Image:
    """Crop and resize to ``resolution``. Exact (default): integer crop, then one resize.
    With ``reducing_gap`` (fast mode): the crop box of the ``full_size`` image, mapped by
    ``scale`` onto a reduced decode, is resized directly (float box, no crop copy)."""
    resample = FILTERS[resize_filter]
    if transform == "none":
        return image
    fast = reducing_gap is not None
    width, height = full_size or image.size
    if transform == "center-crop":
        side = min(width, height)
        left, top = (width - side) // 2, (height - side) // 2
        box, size = (left, top, left + side, top + side), (resolution, resolution)
    else:  # center-crop-wide: the central 2:1 strip on a black square canvas
        crop_w, crop_h = (
            (2 * height, height) if width >= 2 * height else (width, max(1, width // 2))
        )
        left, top = (width - crop_w) // 2, (height - crop_h) // 2
        box, size = (left, top, left + crop_w, top + crop_h), (resolution, resolution // 2)
    if fast:
        scaled = tuple(v * scale for v in box)
        resized = image.resize(size, resample, box=scaled, reducing_gap=reducing_gap)
    else:
        if box != (0, 0, width, height):
            image = image.crop(box)
        resized = image if image.size == size else image.resize(size, resample)
    if transform == "center-crop":
        return resized
    canvas = Image.new(image.mode, (resolution, resolution), 0)
    canvas.paste(resized, (0, (resolution - resolution // 2) // 2))
    return canvas


def encode(
    image: Image.Image, image_format: str, jpeg_quality: int = 95, png_compress_level: int = 1
) -> bytes:
    """Deterministic encoding: same pixels and library versions -> same bytes."""
    if image_format == "png":
        return encode_png(np.asarray(image), png_compress_level)
    buffer = io.BytesIO()
    if image_format == "webp":
        image.save(buffer, "WEBP", lossless=True, exact=True)
    else:  # jpeg, 4:4:4 chroma: GAN training data should not lose colour resolution
        image.save(buffer, "JPEG", quality=jpeg_quality, subsampling=0)
    return buffer.getvalue()
