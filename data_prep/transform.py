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
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .config import PrepConfig
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
_SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N")

# We check the pixel count ourselves (max_image_pixels) before decoding, with our own reason.
Image.MAX_IMAGE_PIXELS = None


def prepare_image(
    raw: bytes | np.ndarray, cfg: PrepConfig, *, exempt_min_size: bool = False
) -> tuple[bytes, tuple[int, int]]:
    """Raw input -> (encoded image bytes, original (width, height) as displayed)."""
    image = decode(raw, cfg.max_image_pixels)
    original_size = image.size
    image = to_channels(image, cfg.channels)
    width, height = image.size
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
    image = crop_resize(image, cfg.resolution, cfg.transform, cfg.resize_filter)
    return encode(image, cfg.image_format, cfg.jpeg_quality), original_size


def decode(raw: bytes | np.ndarray, max_pixels: int) -> Image.Image:
    """Bytes or uint8 [H, W, C] -> a loaded, upright PIL image (first frame)."""
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
    try:
        image.load()  # first frame of GIF/TIFF/WebP animations
    except OSError as exc:
        text = str(exc)
        raise SkipInput(TRUNCATED if "truncated" in text else CORRUPT, text) from None
    except Exception as exc:  # noqa: BLE001
        raise SkipInput(CORRUPT, f"{type(exc).__name__}: {exc}") from None
    if width <= 0 or height <= 0:
        raise SkipInput(CORRUPT, f"{width}x{height} image")
    try:
        if image.getexif().get(_EXIF_ORIENTATION, 1) != 1:
            image = ImageOps.exif_transpose(image)
    except Exception:  # noqa: BLE001 - a broken EXIF block only loses the orientation
        pass
    return image


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
    image: Image.Image, resolution: int, transform: str, resize_filter: str
) -> Image.Image:
    width, height = image.size
    resample = FILTERS[resize_filter]
    if transform == "none":
        return image
    if transform == "center-crop":
        side = min(width, height)
        left, top = (width - side) // 2, (height - side) // 2
        if side != width or side != height:
            image = image.crop((left, top, left + side, top + side))
        if image.size != (resolution, resolution):
            image = image.resize((resolution, resolution), resample)
        return image
    # center-crop-wide: the central 2:1 strip on a black square canvas
    crop_w, crop_h = (2 * height, height) if width >= 2 * height else (width, max(1, width // 2))
    left, top = (width - crop_w) // 2, (height - crop_h) // 2
    strip = image.crop((left, top, left + crop_w, top + crop_h))
    strip = strip.resize((resolution, resolution // 2), resample)
    canvas = Image.new(image.mode, (resolution, resolution), 0)
    canvas.paste(strip, (0, (resolution - resolution // 2) // 2))
    return canvas


def encode(image: Image.Image, image_format: str, jpeg_quality: int = 95) -> bytes:
    """Deterministic encoding: same pixels and library versions -> same bytes."""
    buffer = io.BytesIO()
    if image_format == "png":
        image.save(buffer, "PNG")
    elif image_format == "webp":
        image.save(buffer, "WEBP", lossless=True, exact=True)
    else:  # jpeg, 4:4:4 chroma: GAN training data should not lose colour resolution
        image.save(buffer, "JPEG", quality=jpeg_quality, subsampling=0)
    return buffer.getvalue()
