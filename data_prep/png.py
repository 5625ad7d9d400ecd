"""A fast, exact PNG encoder for 8-bit grey/RGB images (numpy filters + zlib).

Pillow's PNG encoder tries all five row filters on every row and keeps the best ("adaptive"
filtering): at 256x256 RGB that costs about 3 ms before any compression, and 20 ms at its
default zlib level 6. For the levels that favour speed, one filter is applied to the whole
image with numpy (PNG spec, section 9: filters predict from *unfiltered* neighbours, so they
vectorise) and zlib compresses the result. The pixels are identical whatever the level; only
size and time change.

``compress_level`` (measured on 256x256 photos in docs/benchmarks.md):

- 0: no filter, stored (what NVlabs dataset_tool writes: ``compress_level=0``); largest files.
- 1 (default): "Up" filter + zlib level 1 with the run-length strategy: faster than Pillow at
  level 0 and about as small as Pillow at level 1.
- 2..9: Pillow's encoder (adaptive filters) at that zlib level: a few percent smaller, 3-30x
  slower.

Deterministic: the same pixels and zlib/Pillow versions give the same bytes.
"""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image

_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_NONE, _UP = 0, 2


def _chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))


def encode_png(pixels: np.ndarray, compress_level: int = 1) -> bytes:
    """uint8 ``[H, W]`` (grey) or ``[H, W, 3]`` (RGB) -> PNG bytes (8 bits per channel)."""
    if pixels.dtype != np.uint8 or pixels.ndim not in (2, 3):
        raise ValueError(
            f"encode_png needs uint8 [H, W] or [H, W, 3], got {pixels.dtype} {pixels.shape}"
        )
    if not 0 <= compress_level <= 9:
        raise ValueError(f"compress_level: must be in 0..9, got {compress_level}")
    height, width = pixels.shape[:2]
    channels = 1 if pixels.ndim == 2 else pixels.shape[2]
    if channels not in (1, 3):
        raise ValueError(f"encode_png needs 1 or 3 channels, got {channels}")
    if compress_level >= 2:  # smallest files: Pillow's adaptive per-row filters
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, "PNG", compress_level=compress_level)
        return buffer.getvalue()
    rows = np.ascontiguousarray(pixels).reshape(height, width * channels)
    if compress_level == 0:
        kind, filtered, strategy = _NONE, rows, zlib.Z_DEFAULT_STRATEGY
    else:
        kind, filtered, strategy = _UP, rows.copy(), zlib.Z_RLE
        filtered[1:] -= rows[:-1]  # uint8 arithmetic wraps modulo 256
    scanlines = np.empty((height, width * channels + 1), np.uint8)
    scanlines[:, 0] = kind
    scanlines[:, 1:] = filtered
    compressor = zlib.compressobj(compress_level, zlib.DEFLATED, 15, 9, strategy)
    data = compressor.compress(scanlines.tobytes()) + compressor.flush()
    color_type = 0 if channels == 1 else 2
    header = struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0)
    return _SIGNATURE + _chunk(b"IHDR", header) + _chunk(b"IDAT", data) + _chunk(b"IEND", b"")
